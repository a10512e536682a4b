"""Instance segmentation: a class, a box and a mask for every object (Mask R-CNN), scored by mask mAP."""
