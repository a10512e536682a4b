"""torchvision's Mask R-CNN behind cnnlab's model interface: boxes and one mask per object.

The wrapper is `TorchvisionDetector`'s (models/torchvision_detectors.py: the detector's parts under
torchvision's own names, its transform replaced by one that neither normalises nor resizes, class k
of cnnlab being torchvision's k + 1), with masks added on both sides:

    model(images)             → (N, max_detections, 6 + H·W) rows of [x1, y1, x2, y2, score, class,
                                then the object's mask at the model's input, 0/1 row-major], best first,
                                padded with class −1 (eval mode)
    model(images, targets)    → {part: loss} (box classifier, box regression, mask, RPN's two) for
                                the instance task's dense targets (N, 2, H, W): plane 0 the instance
                                id of each pixel (0: none), plane 1 its class + 1 (0: background);
                                a pixel with a class and no instance is a crowd region, not learned

Models registered here:

    maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2   torchvision's, with their COCO weights
                                                      (--weights coco, offline first, as the detectors)
    maskrcnn_resnet18_fpn_small                       a small Mask R-CNN to train from scratch on a CPU:
                                                      ResNet-18 with batch norm, a 64-channel FPN,
                                                      anchors 16-256 px, a 256-wide box head, a
                                                      two-layer 32-channel mask head, its 20 best
                                                      objects per image
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cnnlab.models.registry import check_input_size, register_model
from cnnlab.models.torchvision_detectors import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_DETECTIONS,
    TorchvisionDetector,
    _pass_through_transform,
    _Spec,
    _thresholds,
)

MASK_THRESHOLD = 0.5  # a pixel belongs to the object where the mask head's probability reaches this (torchvision's)
SMALL = "maskrcnn_resnet18_fpn_small"
# The small model keeps its 20 best objects per image, not 100: on a CPU the mask head's cost at evaluation
# grows with the objects kept, and the images it is meant for (small canvases) hold a few objects each.
SMALL_DETECTIONS = 20

_SPECS = (
    _Spec("maskrcnn_resnet50_fpn", "rcnn", "backbone.body.conv1", "roi_heads", "backbone.body", "backbone.body.layer3",
          "MaskRCNN_ResNet50_FPN_Weights.COCO_V1", "ResNet50_Weights.IMAGENET1K_V1", IMAGENET_MEAN, IMAGENET_STD,
          32, 64, "torchvision's Mask R-CNN, ResNet-50 FPN (RPN + box head + mask head), 44.4M params"),
    _Spec("maskrcnn_resnet50_fpn_v2", "rcnn", "backbone.body.conv1", "roi_heads", "backbone.body",
          "backbone.body.layer3", "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1", "ResNet50_Weights.IMAGENET1K_V1",
          IMAGENET_MEAN, IMAGENET_STD, 32, 64,
          "torchvision's Mask R-CNN v2, ResNet-50 FPN with group-norm heads, 46.4M params"),
)
SPECS = {spec.name: spec for spec in _SPECS}
_SMALL_SPEC = _Spec(SMALL, "rcnn", "backbone.body.conv1", "roi_heads", "backbone.body", "backbone.body.layer3",
                    "", "", IMAGENET_MEAN, IMAGENET_STD, 32, 64,
                    "a small Mask R-CNN for CPUs: ResNet-18 (batch norm) + 64-channel FPN, small heads; from scratch")


# --- targets and detections ------------------------------------------------------------------------------

def instance_targets(targets: Tensor) -> list[dict[str, Tensor]]:
    """Dense instance targets (N, 2, H, W) → torchvision's [{"boxes", "labels", "masks"}] per image: one
    entry per instance id present, its box the tight box of its pixels (x2, y2 one past the last pixel),
    its class the class plane's value there − 1 + torchvision's background shift (+1).

    >>> planes = torch.zeros(1, 2, 4, 5, dtype=torch.uint8)
    >>> planes[0, 0, 1:3, 2:4], planes[0, 1, 1:3, 2:4] = 1, 3
    >>> found = instance_targets(planes)[0]
    >>> found["boxes"].tolist(), found["labels"].tolist(), int(found["masks"].sum())
    ([[2.0, 1.0, 4.0, 3.0]], [3], 4)
    """
    from torchvision.ops import masks_to_boxes

    result = []
    for planes in targets:
        ids, classes = planes[0].long(), planes[1].long()
        present = torch.unique(ids)
        present = present[present > 0]
        masks = ids.unsqueeze(0) == present.view(-1, 1, 1)  # (k, H, W)
        labels = torch.stack([classes[mask].max() for mask in masks]) if len(present) else present.new_zeros(0)
        boxes = masks_to_boxes(masks) + masks.new_tensor([0, 0, 1, 1], dtype=torch.float32) if len(present) else \
            torch.zeros(0, 4, device=targets.device)
        result.append({"boxes": boxes, "labels": labels.long(), "masks": masks.to(torch.uint8)})
    return result


def pack_instances(detections: list[dict[str, Tensor]], max_detections: int, size: tuple[int, int]) -> Tensor:
    """torchvision's detections with masks → (N, max_detections, 6 + H·W): the detectors' rows (see
    `pack_detections`), each followed by its mask thresholded at 0.5, flattened."""
    height, width = size
    device = detections[0]["boxes"].device if detections else torch.device("cpu")
    packed = torch.zeros(len(detections), max_detections, 6 + height * width, device=device)
    packed[..., 5] = -1.0
    for index, found in enumerate(detections):
        count = min(len(found["scores"]), max_detections)
        packed[index, :count, :4] = found["boxes"][:count].float()
        packed[index, :count, 4] = found["scores"][:count].float()
        packed[index, :count, 5] = found["labels"][:count].float() - 1
        masks = found["masks"][:count, 0, :height, :width] >= MASK_THRESHOLD
        packed[index, :count, 6:] = masks.reshape(count, height * width).float()
    return packed


# --- the wrapper -----------------------------------------------------------------------------------------

class TorchvisionMaskDetector(TorchvisionDetector):
    """Mask R-CNN as a cnnlab model (see the module docstring)."""

    finds_masks = True

    def forward(self, images: Tensor, targets: Tensor | None = None) -> Tensor | dict[str, Tensor]:
        self.detector.training = self.training
        if targets is not None:
            return self._losses(images, targets)
        if self.training:
            raise RuntimeError(f"{self.spec.name} computes its own loss in training mode: call it with the "
                               f"targets, model(images, targets)")
        return pack_instances(self.detector(list(images.float())), self.max_detections,
                              (images.shape[-2], images.shape[-1]))

    def _wanted(self, targets: Tensor) -> list[dict[str, Tensor]]:
        return instance_targets(targets)


# --- building --------------------------------------------------------------------------------------------

def build_maskrcnn(name: str, *, in_channels: int, num_classes: int, image_size: tuple[int, int],
                   max_detections: int = MAX_DETECTIONS) -> TorchvisionMaskDetector:
    """Mask R-CNN `name`, untrained, for `num_classes` classes (+ the background)."""
    import torchvision

    from cnnlab.models.detectors import check_multiple
    from cnnlab.models.zoo import _replace_first_conv

    spec = _SMALL_SPEC if name == SMALL else SPECS[name]
    check_input_size(name, image_size, spec.min_size)
    check_multiple(name, image_size, 32)
    if name == SMALL:
        max_detections = min(max_detections, SMALL_DETECTIONS)
        detector = _small_maskrcnn(num_classes + 1, max_detections)
    else:
        detector = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                                num_classes=num_classes + 1, **_thresholds("rcnn", max_detections))
    detector.transform = _pass_through_transform(in_channels, spec.size_divisible)
    if in_channels != 3:
        _replace_first_conv(detector, spec.first_conv, in_channels)
    return TorchvisionMaskDetector(detector, spec=spec, num_classes=num_classes, max_detections=max_detections)


def _small_maskrcnn(classes: int, max_detections: int) -> nn.Module:
    """ResNet-18 (trainable batch norm) + FPN of 64 channels over its 4 stages (+ a pooled level), anchors
    16-256 px (objects on small images), a 256-wide box head, a two-layer 32-channel mask head; 64 regions
    sampled per image for the heads (torchvision: 512)."""
    from torchvision.models import resnet18
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    channels, mask_channels = 64, 32
    backbone = BackboneWithFPN(resnet18(weights=None), {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
                               [64, 128, 256, 512], channels, extra_blocks=LastLevelMaxPool())
    anchors = AnchorGenerator(((16,), (32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 5)
    return MaskRCNN(backbone, num_classes=None, rpn_anchor_generator=anchors,
                    box_head=TwoMLPHead(channels * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, classes),
                    mask_head=MaskRCNNHeads(channels, (mask_channels, mask_channels), 1),
                    mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, classes),
                    rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
                    rpn_post_nms_top_n_test=100, box_batch_size_per_image=64,
                    **_thresholds("rcnn", max_detections))


def _register(spec: _Spec) -> None:
    def build(*, in_channels: int, num_outputs: int, image_size: tuple[int, int]) -> TorchvisionMaskDetector:
        return build_maskrcnn(spec.name, in_channels=in_channels, num_classes=num_outputs, image_size=image_size)

    build.__name__ = build.__qualname__ = spec.name
    weights: dict[str, Any] = {}
    if spec.weights:
        weights = dict(torchvision_name=spec.name, weights=spec.weights, backbone_weights=spec.backbone_weights,
                       backbone=spec.backbone, weights_mean=spec.mean, weights_std=spec.std)
    register_model(spec.name, description=spec.description, family="instance-segmentation",
                   first_conv=spec.first_conv, classifier=spec.classifier, min_size=spec.min_size,
                   task="instance-segmentation", **weights)(build)


for _spec in (*_SPECS, _SMALL_SPEC):
    _register(_spec)
