"""Images on disk to batches: decoding, split folders, transforms, the dataset, augmentation, folds."""
