"""Data in: sources on disk, decoding, splitting, augmentation and batching."""
