"""Detection metrics: the same numbers as pycocotools' COCOeval on randomised and hand-made scenes,
streaming and merging that change nothing, difficult boxes, and the detection confusion matrix."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cnnlab.errors import ConfigError, DataError
from cnnlab.tasks.detection.metrics import COCO_IOU_THRESHOLDS, CROWD, DIFFICULT, NORMAL, DetectionMeter

CLASSES = ["cat", "dog", "bird", "fish", "cow"]


# ---- pycocotools, the reference ---------------------------------------------------------------

class _DifficultAsVoc(COCOeval):
    """pycocotools with Pascal VOC's difficult boxes: written as iscrowd=1 (ignored, may take any
    number of detections) but with the plain IoU, not a crowd region's."""

    def computeIoU(self, imgId, catId):  # noqa: N802, N803 (pycocotools' names)
        truths, detections = self._gts[imgId, catId], self._dts[imgId, catId]
        if not truths and not detections:
            return []
        order = np.argsort([-d["score"] for d in detections], kind="mergesort")
        detections = [detections[i] for i in order][: self.params.maxDets[-1]]
        crowd = [int(t["iscrowd"] and not t.get("difficult", 0)) for t in truths]
        return coco_mask.iou([d["bbox"] for d in detections], [t["bbox"] for t in truths], crowd)


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(value) for value in box)
    return [x1, y1, x2 - x1, y2 - y1]


def coco_reference(predictions, truths, classes: int = len(CLASSES), max_detections: int = 100) -> dict:
    """COCOeval's results for our per-image inputs, via the COCO dicts (category ids with gaps)."""
    category_ids = [3 * index + 7 for index in range(classes)]
    images, annotations, results = [], [], []
    difficult = False
    for image_id, (prediction, truth) in enumerate(zip(predictions, truths), start=1):
        images.append({"id": image_id, "width": 640, "height": 480})
        flags = truth.get("flags", np.zeros(len(truth["labels"]), int))
        for box, label, flag in zip(np.asarray(truth["boxes"]).reshape(-1, 4), truth["labels"], flags):
            x, y, w, h = _xywh(box)
            annotation = {"id": len(annotations) + 1, "image_id": image_id, "bbox": [x, y, w, h],
                          "area": w * h, "category_id": category_ids[int(label)],
                          "iscrowd": int(flag != NORMAL)}  # crowd, or difficult written as ignored
            if flag == DIFFICULT:
                annotation["difficult"], difficult = 1, True
            annotations.append(annotation)
        for box, score, label in zip(np.asarray(prediction["boxes"]).reshape(-1, 4), prediction["scores"],
                                     prediction["labels"]):
            results.append({"image_id": image_id, "category_id": category_ids[int(label)], "bbox": _xywh(box),
                            "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO()
        ground.dataset = {"images": images, "annotations": annotations,
                          "categories": [{"id": c, "name": str(c)} for c in category_ids]}
        ground.createIndex()
        evaluator = (_DifficultAsVoc if difficult else COCOeval)(ground, ground.loadRes(results), "bbox")
        if max_detections != 100:  # the last of COCO's (sorted) maxDets is the one evaluated
            evaluator.params.maxDets = [max_detections]
        evaluator.evaluate()
        evaluator.accumulate()
        if max_detections == 100:  # summarize() knows only COCO's own maxDets
            evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # area "all", the last maxDets

    def mean_or_none(values):
        return float(values[values > -1].mean()) if (values > -1).any() else None

    summary = {"map": evaluator.stats[0], "map50": evaluator.stats[1], "map75": evaluator.stats[2],
               "mar": evaluator.stats[8]} if max_detections == 100 else {}
    return {**summary, "ap": [mean_or_none(precision[:, :, k]) for k in range(classes)],
            "ap50": [mean_or_none(precision[0, :, k]) for k in range(classes)], "precision50": precision[0]}


def assert_same_as_pycocotools(predictions, truths, max_detections: int = 100) -> dict:
    meter = DetectionMeter(CLASSES, max_detections=max_detections)
    meter.update(predictions, truths)
    ours, reference = meter.compute(), coco_reference(predictions, truths, max_detections=max_detections)
    for key in ("map", "map50", "map75", "mar"):
        if key in reference:
            assert ours[key] == pytest.approx(reference[key], abs=1e-6), key
    for index, name in enumerate(CLASSES):
        for key in ("ap", "ap50"):
            expected = reference[key][index]
            if expected is None:
                assert ours["per_class"][name][key] is None, (name, key)
            else:
                assert ours["per_class"][name][key] == pytest.approx(expected, abs=1e-6), (name, key)
        curve = ours["precision_recall"]["precision"][name]
        if curve is not None:
            np.testing.assert_allclose(curve, reference["precision50"][:, index], atol=1e-6)
    return ours


# ---- scenes -----------------------------------------------------------------------------------

def _jitter(rng, boxes: np.ndarray, amount: float) -> np.ndarray:
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    return boxes + rng.normal(0.0, amount, boxes.shape) * size


def random_scenes(seed: int, *, images: int = 60, difficult: bool = False) -> tuple[list, list]:
    """Images with 0-8 objects of classes 0-3 (class 3 is never detected, class 4 has no ground truth),
    crowd regions with detections inside, tiny boxes, scores on a coarse grid (many ties), duplicates,
    wrong classes, images without detections, and one image with 150 detections of one class."""
    rng = np.random.default_rng(seed)
    predictions, truths = [], []
    for index in range(images):
        count = int(rng.choice([0, 0, 1, 2, 3, 5, 8]))
        corner = rng.uniform(0, 400, (count, 2))
        tiny = rng.random((count, 1)) < 0.1
        size = np.where(tiny, rng.uniform(0.3, 3, (count, 2)), rng.uniform(8, 120, (count, 2)))
        boxes = np.concatenate([corner, corner + size], axis=1)
        labels = rng.integers(0, 4, count)
        flags = rng.choice([NORMAL, CROWD, DIFFICULT] if difficult else [NORMAL, CROWD],
                           p=[0.8, 0.1, 0.1] if difficult else [0.88, 0.12], size=count)
        found = (labels != 3) & (rng.random(count) < 0.85)
        copies = np.where(found, rng.integers(1, 4, count), 0)  # duplicates too
        detected = np.repeat(np.arange(count), copies)
        detection_boxes = _jitter(rng, boxes[detected], 0.08)
        detection_labels = np.where(rng.random(len(detected)) < 0.1, rng.integers(0, 5, len(detected)),
                                    labels[detected])
        # Several detections inside each crowd region: COCO lets the region take them all.
        for region in np.flatnonzero(flags == CROWD):
            inner = rng.uniform(boxes[region, :2], boxes[region, 2:], (3, 2))
            low, high = np.minimum(inner[:2], inner[1:]), np.maximum(inner[:2], inner[1:])
            inner_boxes = np.concatenate([low, high], axis=1)
            detection_boxes = np.concatenate([detection_boxes, inner_boxes])
            detection_labels = np.concatenate([detection_labels, np.full(2, labels[region])])
        strays = int(rng.poisson(1.5))
        stray_corner = rng.uniform(0, 400, (strays, 2))
        detection_boxes = np.concatenate([detection_boxes, np.concatenate(
            [stray_corner, stray_corner + rng.uniform(5, 80, (strays, 2))], axis=1)])
        detection_labels = np.concatenate([detection_labels, rng.integers(0, 5, strays)])
        if index == 7:  # 150 of one class: the low-scored ones past 100 are dropped, per image and class
            many = rng.uniform(0, 400, (150, 2))
            detection_boxes = np.concatenate([detection_boxes, np.concatenate([many, many + 30], axis=1)])
            detection_labels = np.concatenate([detection_labels, np.zeros(150, int)])
        if rng.random() < 0.1:
            detection_boxes, detection_labels = detection_boxes[:0], detection_labels[:0]
        scores = np.round(rng.uniform(0.05, 1.0, len(detection_labels)), 1)  # 10 levels: ties everywhere
        predictions.append({"boxes": detection_boxes, "scores": scores, "labels": detection_labels})
        truths.append({"boxes": boxes, "labels": labels, "flags": flags})
    return predictions, truths


def _image(boxes=(), labels=(), scores=None, flags=None) -> dict:
    image = {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "labels": np.asarray(labels, int)}
    if scores is not None:
        image["scores"] = np.asarray(scores, dtype=np.float64)
    if flags is not None:
        image["flags"] = np.asarray(flags, int)
    return image


def corner_case_scenes() -> tuple[list, list]:
    """Hand-made images where a naive evaluation goes wrong."""
    predictions, truths = [], []

    def add(prediction, truth):
        predictions.append(prediction)
        truths.append(truth)

    # Two cats overlap; the first detection has the same IoU (9/11) with both: COCO gives it the
    # later box, which leaves the earlier one for the second detection (IoU 1). A first-box rule
    # leaves it IoU 2/3 and a false positive from IoU .7 up.
    add(_image([[1, 0, 11, 10], [0, 0, 10, 10]], [0, 0], [0.9, 0.8]),
        _image([[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0]))
    # A crowd of dogs takes three detections (ignored, not false positives); a lone dog is found lower.
    add(_image([[10, 10, 40, 40], [50, 60, 90, 80], [120, 20, 190, 90], [300, 300, 340, 340]], [1, 1, 1, 1],
               [0.9, 0.85, 0.8, 0.6]),
        _image([[0, 0, 200, 200], [300, 300, 340, 340]], [1, 1], flags=[CROWD, NORMAL]))
    # A detection on a dog (IoU ≈ .62) inside a crowd: the dog below .62, the crowd above.
    add(_image([[400, 400, 440, 440]], [1], [0.7]),
        _image([[395, 395, 440, 435], [350, 350, 500, 500]], [1, 1], flags=[NORMAL, CROWD]))
    # 140 confident false birds, then the 10 true ones scored lowest: past the first 100, so dropped.
    rng = np.random.default_rng(5)
    birds = np.array([[30.0 * i, 300, 30.0 * i + 20, 320] for i in range(10)])
    stray = rng.uniform(0, 200, (140, 2))
    add(_image(np.concatenate([np.concatenate([stray, stray + 10], 1), birds]), [2] * 150,
               np.concatenate([rng.uniform(0.5, 0.99, 140), np.full(10, 0.1)])),
        _image(birds, [2] * 10))
    # A bird found with a score tied with a false bird of the image before it: image order decides.
    add(_image([[0, 0, 10, 10]], [2], [0.5]), _image())
    add(_image([[0, 0, 10, 10], [50, 50, 60, 60]], [2, 2], [0.5, 0.5]), _image([[50, 50, 60, 60]], [2]))
    # Fish only predicted (no ground truth anywhere: AP undefined); a cow never found (AP 0).
    add(_image([[5, 5, 25, 25]], [3], [0.4]), _image())
    add(_image(scores=[]), _image([[5, 5, 25, 25]], [4]))
    # Tiny boxes, under a pixel.
    add(_image([[5.05, 5.0, 5.72, 5.41]], [0], [0.3]), _image([[5.0, 5.0, 5.7, 5.4]], [0]))
    return predictions, truths


# ---- agreement with pycocotools ---------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_map_and_ap_per_class_equal_pycocotools_on_random_scenes(seed):
    predictions, truths = random_scenes(seed)
    ours = assert_same_as_pycocotools(predictions, truths)
    assert ours["per_class"]["cow"]["ap"] is None and ours["per_class"]["cow"]["detections"] > 0
    assert ours["per_class"]["fish"]["ap"] == 0.0 and ours["per_class"]["fish"]["gt"] > 0
    assert 0.1 < ours["map"] < 0.9  # a scene where matching decides the numbers


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_difficult_boxes_equal_pycocotools_with_difficult_written_as_ignored(seed):
    predictions, truths = random_scenes(seed, difficult=True)
    ours = assert_same_as_pycocotools(predictions, truths)
    assert sum(entry["gt_ignored"] for entry in ours["per_class"].values()) > 0


def test_corner_cases_equal_pycocotools_and_the_hand_computed_values():
    predictions, truths = corner_case_scenes()
    ours = assert_same_as_pycocotools(predictions, truths)
    # The three detections in the crowd, scored above the lone dog, are ignored: precision stays 1.
    assert ours["per_class"]["dog"]["ap50"] == pytest.approx(1.0)
    assert ours["per_class"]["dog"]["gt"] == 2 and ours["per_class"]["dog"]["gt_ignored"] == 2
    assert ours["per_class"]["fish"]["ap"] is None and ours["per_class"]["cow"]["ap"] == 0.0
    assert ours["per_class"]["bird"]["detections"] == 100 + 1 + 2  # 150 cut to 100 in that image


def test_fewer_detections_per_image_equal_pycocotools_with_that_max_dets():
    predictions, truths = random_scenes(8)
    fewer = assert_same_as_pycocotools(predictions, truths, max_detections=3)["per_class"]["cat"]["ap"]
    assert fewer != assert_same_as_pycocotools(predictions, truths)["per_class"]["cat"]["ap"]


def test_equal_iou_goes_to_the_later_box_as_in_pycocotools():
    predictions, truths = corner_case_scenes()
    meter = DetectionMeter(CLASSES)
    meter.update(predictions[:1], truths[:1])
    result = meter.compute()
    one = 1 / (1 + np.spacing(1))
    # IoU .5-.8 (7 thresholds): both cats found. .85-.95: the first detection matches nothing.
    expected = (7 * one + 3 * 51 * (1 / (2 + np.spacing(1))) / 101) / 10
    assert result["per_class"]["cat"]["ap"] == pytest.approx(expected, abs=1e-12)
    assert result["map"] == pytest.approx(expected, abs=1e-12)


def test_torch_tensors_in_float32_give_the_numbers_of_their_values():
    torch = pytest.importorskip("torch")
    predictions, truths = random_scenes(3)
    as_tensors = [{"boxes": torch.tensor(p["boxes"], dtype=torch.float32), "scores": torch.tensor(
        p["scores"], dtype=torch.float32), "labels": torch.tensor(p["labels"])} for p in predictions]
    truth_tensors = [{"boxes": torch.tensor(t["boxes"], dtype=torch.float32), "labels": torch.tensor(
        t["labels"]), "flags": torch.tensor(t["flags"], dtype=torch.uint8)} for t in truths]
    meter = DetectionMeter(CLASSES)
    meter.update(as_tensors, truth_tensors)
    same_values = [{key: value.double().numpy() if value.is_floating_point() else value.numpy()
                    for key, value in image.items()} for image in as_tensors]
    same_truths = [{key: value.double().numpy() if value.is_floating_point() else value.numpy()
                    for key, value in image.items()} for image in truth_tensors]
    assert meter.compute() == assert_same_as_pycocotools(same_values, same_truths)


# ---- streaming and merging --------------------------------------------------------------------

def test_batches_of_any_size_and_merged_halves_equal_one_update():
    predictions, truths = random_scenes(7, images=50, difficult=True)
    whole = DetectionMeter(CLASSES)
    whole.update(predictions, truths)
    expected = whole.compute()
    for size in (1, 3, 7, 49):
        meter = DetectionMeter(CLASSES)
        for start in range(0, len(predictions), size):
            meter.update(predictions[start:start + size], truths[start:start + size])
        assert meter.compute() == expected, size
    first, second = DetectionMeter(CLASSES), DetectionMeter(CLASSES)
    first.update(predictions[:23], truths[:23])
    second.update(predictions[23:], truths[23:])
    # As DDP does it: each rank's state pickled, gathered, rebuilt and merged in rank order.
    states = [pickle.loads(pickle.dumps(meter.state())) for meter in (first, second)]
    merged = DetectionMeter.from_state(states[0]).merge(DetectionMeter.from_state(states[1]))
    assert merged.compute() == expected
    assert DetectionMeter.from_state(states[0]).merge(states[1]).compute() == expected
    assert json.loads(json.dumps(expected)) == expected  # JSON-ready as it is
    assert expected["images"] == 50 and expected["objects"] == sum(len(t["labels"]) for t in truths)


def test_merging_meters_with_different_settings_is_refused():
    with pytest.raises(ConfigError, match="different settings"):
        DetectionMeter(CLASSES).merge(DetectionMeter(CLASSES, max_detections=10))


def test_an_empty_meter_has_no_map():
    result = DetectionMeter(CLASSES).compute()
    assert result["map"] is None and result["map50"] is None and result["images"] == 0


# ---- difficult boxes, by hand -----------------------------------------------------------------

def test_a_detection_on_a_difficult_box_is_neither_true_nor_false_positive():
    truth = _image([[0, 0, 10, 10], [50, 50, 90, 90]], [0, 0], flags=[NORMAL, DIFFICULT])
    # Above the true find: one detection on the difficult box and a duplicate of it. Counted as
    # false positives, precision would start at 0 and AP50 be 1/3 or 1/2; counted as found, the
    # difficult box would double the objects to find.
    prediction = _image([[50, 50, 90, 90], [51, 50, 90, 90], [0, 0, 10, 10]], [0, 0, 0], [0.95, 0.93, 0.9])
    meter = DetectionMeter(CLASSES)
    meter.update([prediction], [truth])
    cat = meter.compute()["per_class"]["cat"]
    assert cat["ap50"] == pytest.approx(1.0) and cat["ap"] == pytest.approx(1.0)
    assert (cat["gt"], cat["gt_ignored"]) == (1, 1)
    assert meter.confusion_matrix()[-1].sum() == 0  # nor a false positive in the confusion matrix


def test_a_difficult_box_uses_the_plain_iou_where_a_crowd_region_would_not():
    # A small detection inside a large ignored box: plain IoU .04 (a false positive), crowd IoU 1.
    prediction = _image([[10, 10, 30, 30], [200, 200, 220, 220]], [0, 0], [0.97, 0.9])
    results = {}
    for flag in (DIFFICULT, CROWD):
        meter = DetectionMeter(CLASSES)
        truth = _image([[0, 0, 100, 100], [200, 200, 220, 220]], [0, 0], flags=[flag, NORMAL])
        meter.update([prediction], [truth])
        results[flag] = meter.compute()["per_class"]["cat"]["ap50"]
    assert results[DIFFICULT] == pytest.approx(0.5)  # false positive first, then the find: precision 1/2
    assert results[CROWD] == pytest.approx(1.0)


# ---- the confusion matrix, by hand ------------------------------------------------------------

def test_detection_confusion_matrix_by_hand():
    names = ["cat", "dog", "bird"]
    truth = _image([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0, 1, 2])
    prediction = _image(
        [[0, 0, 10, 10],  # a cat found
         [0, 0, 10, 9],   # a duplicate of it, lower IoU: a false cat from the background
         [20, 0, 30, 10],  # the dog, called a cat: a confusion
         [60, 0, 70, 10],  # a bird where nothing is: a false positive
         [40, 0, 50, 10]],  # the bird, but scored under confusion_score: the bird is missed
        [0, 0, 0, 2, 2], [0.9, 0.95, 0.8, 0.7, 0.1])
    meter = DetectionMeter(names, confusion_iou=0.5, confusion_score=0.25)
    meter.update([prediction], [truth])
    #                               cat dog bird background  (predicted)
    assert meter.confusion_matrix().tolist() == [[1, 0, 0, 0],   # cat
                                               [1, 0, 0, 0],   # dog
                                               [0, 0, 0, 1],   # bird
                                               [1, 0, 1, 0]]   # background
    confusion = meter.compute()["confusion_matrix"]
    assert confusion["labels"] == [*names, "background"]
    assert confusion["counts"] == meter.confusion_matrix().tolist()


def test_crowd_regions_absorb_confusion_matrix_detections_and_are_never_missed():
    truth = _image([[0, 0, 100, 100], [200, 200, 220, 220]], [0, 1], flags=[CROWD, NORMAL])
    prediction = _image([[10, 10, 30, 30], [40, 40, 60, 60]], [0, 1], [0.9, 0.8])
    meter = DetectionMeter(["cat", "dog"])
    meter.update([prediction], [truth])
    assert meter.confusion_matrix().tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 0]]  # only the dog, missed


# ---- inputs -----------------------------------------------------------------------------------

def test_inputs_that_cannot_be_right_are_named():
    meter = DetectionMeter(CLASSES)
    good_truth = _image([[0, 0, 1, 1]], [0])
    with pytest.raises(DataError, match="labels must be class indices 0 to 4"):
        meter.update([_image([[0, 0, 1, 1]], [5], [0.5])], [good_truth])
    with pytest.raises(DataError, match=r"shape \(1, 3\)"):
        meter.update([_image([[0, 0, 1, 1]], [0], [0.5]) | {"boxes": np.zeros((1, 3))}], [good_truth])
    with pytest.raises(DataError, match="has no 'scores'"):
        meter.update([_image([[0, 0, 1, 1]], [0])], [good_truth])
    with pytest.raises(DataError, match="flags must be 0"):
        meter.update([_image(scores=[])], [_image([[0, 0, 1, 1]], [0], flags=[3])])
    with pytest.raises(DataError, match="2 predictions for 1"):
        meter.update([_image(), _image()], [good_truth])
    assert meter.images == 0


def test_objects_with_attributes_count_as_dictionaries_do():
    predictions, truths = random_scenes(9, images=20)
    with_attributes = DetectionMeter(CLASSES)
    with_attributes.update([SimpleNamespace(**p) for p in predictions], [SimpleNamespace(**t) for t in truths])
    as_dicts = DetectionMeter(CLASSES)
    as_dicts.update(predictions, truths)
    assert with_attributes.compute() == as_dicts.compute()


def test_default_thresholds_are_cocos():
    np.testing.assert_array_equal(COCO_IOU_THRESHOLDS, COCOeval(iouType="bbox").params.iouThrs)
