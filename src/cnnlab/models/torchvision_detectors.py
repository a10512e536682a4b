"""torchvision's detectors (Faster R-CNN, RetinaNet, FCOS, SSDlite) behind cnnlab's model interface.

A torchvision detector owns its loss and its decoding: in training mode `model(images, targets)`
returns a dict of losses, in eval mode `model(images)` returns a list of dicts of boxes, labels and
scores. `TorchvisionDetector` wraps one so that the rest of cnnlab sees tensors:

    model(images)             → (N, max_detections, 6) rows of [x1, y1, x2, y2, score, class] in
                                model-input pixels, best first, padded with class −1 (eval mode)
    model(images, targets)    → {part: loss} for cnnlab's dense box targets (N, M, 6) of
                                [class, x1, y1, x2, y2, flag] (training mode; in eval mode the same
                                losses with batch norm on its running statistics, for validation)

The detection task knows the outputs are decoded boxes (`decodes_itself`) and calls the second form
through `Task.forward_loss` (tasks/detection/torchvision_head.py).

Preprocessing stays single: cnnlab's Normalizer already scales and normalises the images (with the
weights' own mean and std when it starts from COCO weights), and the images already have the run's
size, so torchvision's GeneralizedRCNNTransform is replaced by one that normalises by 0 and 1 and
never resizes (`_PassThrough`). Labels: torchvision keeps 0 for the background, so cnnlab's class k
is torchvision's k + 1.

The wrapper holds the detector's parts under their own names (`backbone`, `rpn`, `roi_heads`, `head`),
so its state dict has exactly torchvision's keys: COCO weights from torch hub's cache, or a .pth
file in torchvision's format, load as they are (`transfer_pretrained`), only the layers whose size
depends on the number of classes being replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from cnnlab.models.registry import check_input_size, register_model

if TYPE_CHECKING:
    from cnnlab.models.transfer import TransferReport

BUILD_SCORE_THRESHOLD = 0.001  # the detector keeps every box down to COCO evaluation's score; --conf filters later
BUILD_NMS_IOU = 0.7  # the detector's own NMS is loose; the task's --iou (default 0.6) applies after it
MAX_DETECTIONS = 100
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class _Spec:
    name: str  # cnnlab's name = torchvision's builder name
    family: str  # which keyword arguments its builder takes
    first_conv: str
    classifier: str  # the part holding every layer whose size depends on the number of classes
    backbone: str  # the part ImageNet backbone weights fill (--weights imagenet)
    gradcam_layer: str  # the backbone's last stage at stride 16: what Grad-CAM explains by default
    weights: str  # COCO weights entry
    backbone_weights: str  # ImageNet weights entry of the backbone
    mean: tuple[float, ...]  # the normalisation its COCO weights were trained with
    std: tuple[float, ...]
    size_divisible: int
    min_size: int
    description: str


_SPECS = (
    _Spec("fasterrcnn_mobilenet_v3_large_fpn", "rcnn", "backbone.body.0.0", "roi_heads.box_predictor",
          "backbone.body", "backbone.body.12", "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1",
          "MobileNet_V3_Large_Weights.IMAGENET1K_V1", IMAGENET_MEAN, IMAGENET_STD, 32, 64,
          "torchvision's Faster R-CNN, MobileNetV3-Large FPN backbone (two stages: RPN + box head), 19.4M params"),
    _Spec("retinanet_resnet50_fpn", "dense", "backbone.body.conv1", "head.classification_head.cls_logits",
          "backbone.body", "backbone.body.layer3", "RetinaNet_ResNet50_FPN_Weights.COCO_V1", "ResNet50_Weights.IMAGENET1K_V1",
          IMAGENET_MEAN, IMAGENET_STD, 32, 64,
          "torchvision's RetinaNet, ResNet-50 FPN (one stage, anchors, focal loss), 34.0M params"),
    _Spec("retinanet_resnet50_fpn_v2", "dense", "backbone.body.conv1", "head.classification_head.cls_logits",
          "backbone.body", "backbone.body.layer3", "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1", "ResNet50_Weights.IMAGENET1K_V2",
          IMAGENET_MEAN, IMAGENET_STD, 32, 64,
          "torchvision's RetinaNet v2, ResNet-50 FPN with GIoU loss and group-norm heads, 38.2M params"),
    _Spec("fcos_resnet50_fpn", "dense", "backbone.body.conv1", "head.classification_head.cls_logits",
          "backbone.body", "backbone.body.layer3", "FCOS_ResNet50_FPN_Weights.COCO_V1", "ResNet50_Weights.IMAGENET1K_V1",
          IMAGENET_MEAN, IMAGENET_STD, 32, 64,
          "torchvision's FCOS, ResNet-50 FPN (one stage, anchor-free, centre-ness), 32.3M params"),
    _Spec("ssdlite320_mobilenet_v3_large", "ssd", "backbone.features.0.0.0", "head.classification_head",
          "backbone.features", "backbone.features.0", "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1",
          "MobileNet_V3_Large_Weights.IMAGENET1K_V1", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1, 64,
          "torchvision's SSDlite 320, MobileNetV3-Large backbone (one stage, light), 3.4M params"),
)
SPECS = {spec.name: spec for spec in _SPECS}


# --- preprocessing -----------------------------------------------------------------------------------

def _pass_through_transform(channels: int, size_divisible: int) -> nn.Module:
    """torchvision's GeneralizedRCNNTransform that neither normalises (cnnlab's Normalizer did) nor
    resizes (the images have the run's size); it still pads a batch to `size_divisible`."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class _PassThrough(GeneralizedRCNNTransform):
        def resize(self, image: Tensor, target: Any = None) -> tuple[Tensor, Any]:
            return image, target

        def normalize(self, image: Tensor) -> Tensor:
            return image

    return _PassThrough(1, 1, [0.0] * channels, [1.0] * channels, size_divisible=size_divisible)


# --- targets and detections ------------------------------------------------------------------------------

def torchvision_targets(targets: Tensor) -> list[dict[str, Tensor]]:
    """cnnlab's dense targets (N, M, 6) → torchvision's list of {"boxes" (k, 4) pixels, "labels" (k,)}.

    Padding rows (class −1) are dropped, and so are crowd/difficult boxes (flag ≠ 0): torchvision's
    losses have no ignored regions. Labels are shifted by one: torchvision's 0 is the background.

    >>> dense = torch.tensor([[[2.0, 1, 2, 11, 12, 0], [-1, 0, 0, 0, 0, 0]]])
    >>> [(t["boxes"].tolist(), t["labels"].tolist()) for t in torchvision_targets(dense)]
    [([[1.0, 2.0, 11.0, 12.0]], [3])]
    """
    result = []
    for rows in targets.float():
        kept = rows[(rows[:, 0] >= 0) & (rows[:, 5] == 0)]
        result.append({"boxes": kept[:, 1:5].contiguous(), "labels": kept[:, 0].long() + 1})
    return result


def pack_detections(detections: list[dict[str, Tensor]], max_detections: int) -> Tensor:
    """torchvision's detections → (N, max_detections, 6) rows [x1, y1, x2, y2, score, class], class −1
    where an image has fewer. Differentiable in the scores (Grad-CAM could follow them)."""
    device = detections[0]["boxes"].device if detections else torch.device("cpu")
    packed = torch.zeros(len(detections), max_detections, 6, device=device)
    packed[..., 5] = -1.0
    for index, found in enumerate(detections):
        count = min(len(found["scores"]), max_detections)
        packed[index, :count, :4] = found["boxes"][:count].float()
        packed[index, :count, 4] = found["scores"][:count].float()
        packed[index, :count, 5] = found["labels"][:count].float() - 1
    return packed


# --- the wrapper -----------------------------------------------------------------------------------------

class TorchvisionDetector(nn.Module):
    """A torchvision detector as a cnnlab model (see the module docstring)."""

    decodes_itself = True  # its outputs are boxes, not maps a task decodes

    def __init__(self, detector: nn.Module, *, spec: _Spec, num_classes: int,
                 max_detections: int = MAX_DETECTIONS):
        super().__init__()
        # Not a submodule itself: its parts are, under their own names, so the state dict's keys are
        # torchvision's (`backbone.body.conv1.weight`), and published weights load without renaming.
        object.__setattr__(self, "detector", detector)
        for name, part in detector.named_children():
            self.add_module(name, part)
        self.spec, self.num_classes, self.max_detections = spec, num_classes, max_detections
        self.first_conv_path, self.classifier_path = spec.first_conv, spec.classifier
        self.gradcam_layer_path = spec.gradcam_layer

    def forward(self, images: Tensor, targets: Tensor | None = None) -> Tensor | dict[str, Tensor]:
        self.detector.training = self.training  # its forward reads its own flag; .train() set the parts'
        if targets is not None:
            return self._losses(images, targets)
        if self.training:
            raise RuntimeError(f"{self.spec.name} computes its own loss in training mode: call it with the "
                               f"targets, model(images, targets)")
        return pack_detections(self.detector(list(images.float())), self.max_detections)

    def _losses(self, images: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """{part: loss}; in eval mode (validation) computed as in training but with batch norm on its
        running statistics and nothing updated."""
        wanted = self._wanted(targets.to(images.device))
        if self.training:
            return self._named(self.detector(list(images.float()), wanted))
        normalisation = [module for module in self.modules() if isinstance(module, nn.modules.batchnorm._NormBase)]
        try:
            self.detector.train()
            for module in normalisation:
                module.eval()
            return self._named(self.detector(list(images.float()), wanted))
        finally:
            self.detector.eval()

    def _wanted(self, targets: Tensor) -> list[dict[str, Tensor]]:
        """The run's dense targets as torchvision's list of dicts (Mask R-CNN's adds the masks)."""
        return torchvision_targets(targets)

    @staticmethod
    def _named(losses: dict[str, Tensor]) -> dict[str, Tensor]:
        # torchvision's "loss_classifier", "bbox_regression" → metrics.csv's train_loss_classifier, ...
        return {name.removeprefix("loss_"): value for name, value in losses.items()}

    def transfer_pretrained(self, weights: dict[str, Tensor], *, source: str, only: str | None = None
                            ) -> "TransferReport":
        """Copy published weights in (see `transfer_detector_weights`)."""
        return transfer_detector_weights(self, weights, source=source, first_conv=self.first_conv_path,
                                         classifier=self.classifier_path, only=only)


def transfer_detector_weights(model: nn.Module, weights: dict[str, Tensor], *, source: str, first_conv: str,
                              classifier: str, only: str | None = None) -> "TransferReport":
    """Every layer of `weights` that fits, copied into `model` in place. Layers inside `classifier` whose
    size depends on the classes (COCO's 91 against the run's) are replaced: they keep torchvision's own
    initialisation (RetinaNet's and FCOS's start at a 1% prior), not the zeros of a classifier's new
    head. The first convolution is adapted to 1 channel as for classification. Batch norm's
    `num_batches_tracked`, which COCO files (frozen batch norm) lack, is not needed. `only`: the part
    the weights are for (ImageNet backbone weights), every layer outside it is left as it is."""
    from cnnlab.models.transfer import REINITIALISED, SKIPPED, LayerTransfer, TransferReport, _fit_layer, _is_inside

    taken: dict[str, Tensor] = {}
    layers: list[LayerTransfer] = []
    grouped: dict[str, dict[str, Tensor]] = {}
    for key, tensor in model.state_dict().items():
        layer, _, name = key.rpartition(".")
        if name != "num_batches_tracked":
            grouped.setdefault(layer, {})[name] = tensor
    for layer, tensors in grouped.items():
        if only is not None and not _is_inside(layer, only):
            layers.append(LayerTransfer(layer, REINITIALISED, f"outside {only}, which the weights are for"))
            continue
        outcome, values = _fit_layer(layer, tensors, weights, adapt=layer == first_conv)
        if outcome.status == SKIPPED and _is_inside(layer, classifier):
            outputs = next(iter(tensors.values())).shape[0]
            outcome = LayerTransfer(layer, REINITIALISED, f"new class layer, {outputs} outputs ({outcome.detail})")
        layers.append(outcome)
        taken.update(values)
    with torch.no_grad():
        model.load_state_dict(taken, strict=False)
    unused = [key for key in weights if key.rpartition(".")[0] not in grouped
              and key.rpartition(".")[2] != "num_batches_tracked"]
    return TransferReport(source, layers, unused)


# --- building --------------------------------------------------------------------------------------------

def _thresholds(family: str, max_detections: int) -> dict[str, Any]:
    if family == "rcnn":
        # rpn_score_thresh 0 (the mobile Faster R-CNN's default is 0.05): a barely trained RPN still
        # proposes its best regions (at most 150 at inference), so early epochs are scored, not empty.
        return {"box_score_thresh": BUILD_SCORE_THRESHOLD, "box_nms_thresh": BUILD_NMS_IOU,
                "box_detections_per_img": max_detections, "rpn_score_thresh": 0.0}
    return {"score_thresh": BUILD_SCORE_THRESHOLD, "nms_thresh": BUILD_NMS_IOU, "detections_per_img": max_detections}


def build_torchvision_detector(name: str, *, in_channels: int, num_classes: int, image_size: tuple[int, int],
                               max_detections: int = MAX_DETECTIONS) -> TorchvisionDetector:
    """torchvision's detector `name`, untrained, for `num_classes` classes (+ its background) and
    `in_channels`-channel images of `image_size`."""
    import torchvision

    from cnnlab.models.detectors import check_multiple
    from cnnlab.models.zoo import _replace_first_conv

    spec = SPECS[name]
    check_input_size(name, image_size, spec.min_size)
    check_multiple(name, image_size, 32)
    detector = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                            **_thresholds(spec.family, max_detections))
    detector.transform = _pass_through_transform(in_channels, spec.size_divisible)
    if in_channels != 3:
        _replace_first_conv(detector, spec.first_conv, in_channels)
    return TorchvisionDetector(detector, spec=spec, num_classes=num_classes, max_detections=max_detections)


def backbone_weights(name: str, entry: Any) -> dict[str, Tensor]:
    """ImageNet weights `entry` (already in torch hub's cache) as the detector's backbone keys: torchvision
    builds the detector with them (`weights_backbone`), and the backbone's tensors are taken."""
    import torchvision

    from cnnlab.models.registry import model_entry

    backbone = model_entry(name).metadata["backbone"]  # Mask R-CNN's entries (torchvision_maskrcnn.py) too
    detector = torchvision.models.get_model(name, weights=None, weights_backbone=entry, num_classes=91)
    return {key: value for key, value in detector.state_dict().items() if key.startswith(backbone + ".")}


def _register(spec: _Spec) -> None:
    def build(*, in_channels: int, num_outputs: int, image_size: tuple[int, int]) -> TorchvisionDetector:
        return build_torchvision_detector(spec.name, in_channels=in_channels, num_classes=num_outputs,
                                          image_size=image_size)

    build.__name__ = build.__qualname__ = spec.name
    register_model(spec.name, description=spec.description, family="detection", first_conv=spec.first_conv,
                   classifier=spec.classifier, min_size=spec.min_size, task="detection", torchvision_name=spec.name,
                   weights=spec.weights, backbone_weights=spec.backbone_weights, backbone=spec.backbone,
                   weights_mean=spec.mean, weights_std=spec.std)(build)


for _spec in _SPECS:
    _register(_spec)
