"""Command-line data tools: the train/eval split, the demo set, safe archive extraction."""
