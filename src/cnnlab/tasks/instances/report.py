"""The report's instance-segmentation sections: mask and box AP per class, the mask precision-recall
curves, the box confusion matrix, and the best and worst test images with their masks painted."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.report.html import Section, image, paragraph, table
from cnnlab.report.sections import evaluation_header, picture, short_name
from cnnlab.tasks.base import ReportContext
from cnnlab.tasks.detection.report import _errors, _fitted, _origin, _per_image, _score

if TYPE_CHECKING:
    from cnnlab.tasks.instances.task import InstanceSegmentation


def instance_sections(task: "InstanceSegmentation", context: ReportContext) -> list[Section]:
    return [_evaluation(context), _images(task, context)]


def _evaluation(context: ReportContext) -> Section:
    metrics, folder = context.evaluation.metrics, context.evaluation.folder
    parts = evaluation_header(context)
    rows = [(name, _score(v.get("mask_ap")), _score(v.get("mask_ap50")), _score(v.get("box_ap")),
             _score(v.get("box_ap50")), f"{v.get('gt', 0):,}", f"{v.get('detections', 0):,}")
            for name, v in (metrics.get("per_class") or {}).items()]
    parts.append(table(["class", "mask AP@[.5:.95]", "mask AP@.5", "box AP@[.5:.95]", "box AP@.5", "objects",
                        "detections"], rows, numeric=[False, True, True, True, True, True, True]))
    parts.append(paragraph("Mask AP is COCO's segm score: a detection is right when its mask overlaps a true "
                           "object's mask of its class (intersection over union of their pixels) by at least the "
                           "threshold; box AP asks the same of their boxes. A mask AP below the box AP means the "
                           "objects are found but their outlines are rough.", "note"))
    parts.append(picture(folder, "mask_precision_recall.png", "mask precision-recall curves"))
    parts.append(picture(folder, "detection_confusion_matrix.png", "box confusion matrix"))
    return Section("evaluation", "Evaluation", "\n".join(parts))


def _images(task: "InstanceSegmentation", context: ReportContext) -> Section:
    images = _per_image(context.evaluation.rows)
    ranked = sorted(images, key=lambda name: (-_errors(images[name]), -len(images[name]["true"]), name))
    worst = [name for name in ranked if _errors(images[name])][:context.count // 2 or 1]
    best = [name for name in sorted(images, key=lambda n: (-len(images[n]["true"]), n))
            if not _errors(images[name]) and images[name]["true"]][:context.count // 2 or 1]
    pixels = context.images_by_name(worst + best)
    cards = [_card(task, context, name, images[name], pixels.get(name), kind, number)
             for kind, names in (("worst", worst), ("best", best)) for number, name in enumerate(names, start=1)]
    if not cards:
        return Section("images", "Best and worst images", paragraph("No evaluated image to show.", "note"))
    intro = ("The test images with the most mistakes (missed objects and wrong masks, at mask IoU 0.5), then the "
             "best ones. Each object the model found is painted in its own colour with its box and score; the "
             "true boxes are dashed.")
    return Section("images", "Best and worst images",
                   paragraph(intro, "note") + f'<div class="cards">{"".join(cards)}</div>')


def _card(task: "InstanceSegmentation", context: ReportContext, name: str, objects: dict[str, list[dict[str, str]]],
          pixels: np.ndarray | None, kind: str, number: int) -> str:
    import torch

    misses = sum(row["found"] == "0" for row in objects["true"])
    wrong = sum(row["found"] == "0" for row in objects["predicted"])
    facts = (f"<p>{len(objects['true'])} true object(s), {len(objects['predicted'])} found: "
             f"<span class=\"{'wrong' if misses else ''}\">{misses} missed</span>, "
             f"<span class=\"{'wrong' if wrong else ''}\">{wrong} wrong</span></p>")
    if pixels is None:
        return f'<div class="card"><p><b>{kind} {number}. {escape(name)}</b></p>{facts}' + \
            paragraph("(image not found: it has moved, or its dataset is not available here)", "note") + "</div>"
    origin = _origin(name, pixels)
    prediction: dict[str, Any] = context.trained.predict_arrays(torch.from_numpy(np.ascontiguousarray(pixels))[None])[0]
    truth = np.array([_fitted(row, origin, pixels, task) for row in objects["true"]], np.float32).reshape(-1, 4)
    path = context.work / "images" / f"{kind}-{number}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    task.draw(pixels, prediction, truth).save(path)
    return (f'<div class="card"><p><b>{kind} {number}. {escape(short_name(name))}</b></p>{facts}'
            f'{image(path, f"masks on {name}")}</div>')
