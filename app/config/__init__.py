"""Run configs: configs/default.yaml <- the model's or family's YAML <- a recipe <- -o, checked."""
