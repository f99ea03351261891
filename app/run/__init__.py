"""A run folder and its files: RunFolder owns them (config, state, metrics, checkpoints, best
model, predictions, lock, VisualDL records)."""
