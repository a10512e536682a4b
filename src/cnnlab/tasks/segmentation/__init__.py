"""Semantic segmentation: a class for every pixel (the task is `task.Segmentation`)."""
