"""Training one run: the trainer's steps, hapi callbacks, VisualDL logging, the weight EMA."""
