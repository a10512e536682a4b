"""Object detection: boxes around the objects in an image."""
