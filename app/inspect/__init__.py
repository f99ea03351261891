"""Looking at trained models: prediction, evaluation, figures, Grad-CAM, attention maps, export."""
