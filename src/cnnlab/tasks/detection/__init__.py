"""Object detection: boxes with classes, read from COCO, YOLO and Pascal VOC layouts."""
