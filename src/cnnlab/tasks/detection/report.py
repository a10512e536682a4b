"""The report's detection sections: AP per class, precision-recall curves, the confusion matrix with
background, and the best and worst test images with their true and predicted boxes drawn."""

from __future__ import annotations

from collections import defaultdict
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.report.html import Section, image, paragraph, table
from cnnlab.report.sections import evaluation_header, picture, short_name
from cnnlab.tasks.base import ReportContext

if TYPE_CHECKING:
    from cnnlab.tasks.detection.task import Detection


def detection_sections(task: "Detection", context: ReportContext) -> list[Section]:
    return [_evaluation(task, context), _images(task, context)]


def _evaluation(task: "Detection", context: ReportContext) -> Section:
    metrics, folder = context.evaluation.metrics, context.evaluation.folder
    parts = evaluation_header(context)
    rows = [(name, _score(values.get("ap")), _score(values.get("ap50")), f"{values.get('gt', 0):,}",
             f"{values.get('detections', 0):,}") for name, values in (metrics.get("per_class") or {}).items()]
    parts.append(table(["class", "AP@[.5:.95]", "AP@.5", "true boxes", "detections"], rows,
                       numeric=[False, True, True, True, True]))
    parts.append(paragraph("AP is the area under a class's precision-recall curve: boxes are taken best score "
                           "first, and each is right when it overlaps a true box of its class that no better box "
                           "took, by at least the IoU threshold. AP@[.5:.95] averages thresholds 0.5 to 0.95 "
                           "(COCO's main number), so it rewards boxes that fit tightly; AP@.5 asks only for a "
                           "rough overlap.", "note"))
    parts.append(picture(folder, "precision_recall.png", "precision-recall curves"))
    parts.append(paragraph("The confusion matrix pairs each true box with a detection of IoU ≥ 0.5 and score ≥ "
                           "0.25: the background row counts detections of nothing, the background column true "
                           "boxes nobody found.", "note"))
    parts.append(picture(folder, "detection_confusion_matrix.png", "detection confusion matrix"))
    return Section("evaluation", "Evaluation", "\n".join(parts))


def _per_image(rows: list[dict[str, str]]) -> dict[str, dict[str, list[dict[str, str]]]]:
    images: dict[str, dict[str, list[dict[str, str]]]] = defaultdict(lambda: {"predicted": [], "true": []})
    for row in rows:
        images[row["file"]]  # an image without any box still counts
        if row.get("kind") in ("predicted", "true"):
            images[row["file"]][row["kind"]].append(row)
    return images


def _errors(boxes: dict[str, list[dict[str, str]]]) -> int:
    """Missed true boxes plus wrong detections."""
    return sum(row["found"] == "0" for row in boxes["true"]) + sum(row["found"] == "0" for row in boxes["predicted"])


def _images(task: "Detection", context: ReportContext) -> Section:
    images = _per_image(context.evaluation.rows)
    ranked = sorted(images, key=lambda name: (-_errors(images[name]), -len(images[name]["true"]), name))
    worst = [name for name in ranked if _errors(images[name])][:context.count // 2 or 1]
    best = [name for name in sorted(images, key=lambda n: (-len(images[n]["true"]), n))
            if not _errors(images[name]) and images[name]["true"]][:context.count // 2 or 1]
    pixels = context.images_by_name(worst + best)
    cards = [_card(task, context, name, images[name], pixels.get(name), "worst", number)
             for number, name in enumerate(worst, start=1)]
    cards += [_card(task, context, name, images[name], pixels.get(name), "best", number)
              for number, name in enumerate(best, start=1)]
    intro = ("The test images with the most mistakes (missed objects and wrong boxes), then the best ones with "
             "many objects all found. Thick boxes are the detector's (class and score), thin ones the truth; "
             "Grad-CAM shows what raised the score of the detector's best box.")
    if not cards:
        return Section("images", "Best and worst images", paragraph("No evaluated image to show.", "note"))
    return Section("images", "Best and worst images", paragraph(intro, "note") + f'<div class="cards">{"".join(cards)}</div>')


def _card(task: "Detection", context: ReportContext, name: str, boxes: dict[str, list[dict[str, str]]],
          pixels: np.ndarray | None, kind: str, number: int) -> str:
    misses = sum(row["found"] == "0" for row in boxes["true"])
    wrong = sum(row["found"] == "0" for row in boxes["predicted"])
    facts = (f"<p>{len(boxes['true'])} true box(es), {len(boxes['predicted'])} detected: "
             f"<span class=\"{'wrong' if misses else ''}\">{misses} missed</span>, "
             f"<span class=\"{'wrong' if wrong else ''}\">{wrong} wrong</span></p>")
    if pixels is None:
        shown = paragraph("(image not found: it has moved, or its dataset is not available here)", "note")
    else:
        origin = _origin(name, pixels)
        predicted = {"objects": [{"label": row["label"], "score": float(row["score"] or 0),
                                  "box": _fitted(row, origin, pixels, task)} for row in boxes["predicted"]]}
        truth = np.array([_fitted(row, origin, pixels, task) for row in boxes["true"]], np.float32).reshape(-1, 4)
        drawn = task.draw(pixels, predicted, truth)
        path = context.work / "images" / f"{kind}-{number}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        drawn.save(path)
        explained = context.explain(pixels, context.work / "images" / f"{kind}-{number}-cam", name=short_name(name),
                                    layer=context.layer, maps=False, filters=False, compact=True)
        shown = image(path, f"boxes on {name}") + image(explained.files["gradcam"], f"Grad-CAM for {name}")
    return f'<div class="card"><p><b>{kind} {number}. {escape(name)}</b></p>{facts}{shown}</div>'


def _origin(name: str, pixels: np.ndarray) -> tuple[int, int]:
    """The file's own (width, height): the boxes in predictions.csv are in its pixels."""
    from cnnlab.tasks.detection.formats_base import upright_size

    try:
        width, height, _ = upright_size(Path(name))
        return width, height
    except Exception:  # noqa: BLE001 - not a file (a dataset image): it is already at the model's size
        return pixels.shape[2], pixels.shape[1]


def _fitted(row: dict[str, str], origin: tuple[int, int], pixels: np.ndarray, task: "Detection") -> list[float]:
    from cnnlab.tasks.detection.boxes import fit_boxes

    box = np.array([[float(row[key]) for key in ("x1", "y1", "x2", "y2")]], np.float32)
    return fit_boxes(box, origin, tuple(pixels.shape[1:]), task.fit)[0].tolist()


def _score(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"
