"""Images on disk to batches: decoding, split folders, transforms, dataset, augmentation, folds."""
