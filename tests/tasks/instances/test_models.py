"""Mask R-CNN in the model registry: torchvision's state-dict keys (so COCO weights load as published,
the class-dependent layers replaced), the dense outputs, and the task refusing a model of another task."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.models.registry import MODELS


def test_the_mask_rcnns_are_registered_for_the_task():
    names = [entry.name for entry in MODELS if entry.metadata.get("task") == "instance-segmentation"]
    assert names == ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet18_fpn_small"]
    assert MODELS.get("maskrcnn_resnet50_fpn").metadata["weights"] == "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"


def test_coco_weights_load_with_only_the_class_layers_replaced():
    import torchvision

    from cnnlab.models.torchvision_maskrcnn import build_maskrcnn
    from cnnlab.models.transfer import REINITIALISED

    coco = torchvision.models.get_model("maskrcnn_resnet50_fpn", weights=None, weights_backbone=None, num_classes=91)
    model = build_maskrcnn("maskrcnn_resnet50_fpn", in_channels=3, num_classes=2, image_size=(64, 64))
    report = model.transfer_pretrained(coco.state_dict(), source="COCO-format file")
    assert sorted(report.names(REINITIALISED)) == ["roi_heads.box_predictor.bbox_pred",
                                                   "roi_heads.box_predictor.cls_score",
                                                   "roi_heads.mask_predictor.mask_fcn_logits"]
    assert torch.equal(model.state_dict()["roi_heads.mask_head.0.0.weight"],
                       coco.state_dict()["roi_heads.mask_head.0.0.weight"])


def test_the_small_model_outputs_rows_with_masks_and_the_task_refuses_a_classifier():
    from cnnlab.models.build import Architecture
    from cnnlab.tasks.instances.task import InstanceSegmentation

    task = InstanceSegmentation(["a", "b"])
    model = task.build_model(Architecture("maskrcnn_resnet18_fpn_small"), in_channels=1, image_size=(64, 64)).eval()
    with torch.no_grad():
        rows = model(torch.rand(2, 1, 64, 64))
    assert rows.shape == (2, 20, 6 + 64 * 64)
    masks = rows[..., 6:]
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ConfigError, match="not an instance-segmentation model; use one of maskrcnn_resnet50_fpn"):
        task.build_model(Architecture("fast-cnn"), in_channels=1, image_size=(64, 64))
