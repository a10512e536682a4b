"""The report's segmentation sections: IoU, Dice and boundary F per class, the pixel confusion matrix,
and the best and worst test images as image | true mask | predicted mask | error map (with Grad-CAM
of the class the model painted most)."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.report.html import Section, image, paragraph, table
from cnnlab.report.sections import evaluation_header, picture, short_name
from cnnlab.tasks.base import ReportContext

if TYPE_CHECKING:
    from cnnlab.tasks.segmentation.task import Segmentation


def segmentation_sections(task: "Segmentation", context: ReportContext) -> list[Section]:
    return [_evaluation(task, context), _images(task, context)]


def _score(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def _evaluation(task: "Segmentation", context: ReportContext) -> Section:
    from cnnlab.tasks.segmentation.draw import legend

    metrics, folder = context.evaluation.metrics, context.evaluation.folder
    parts = evaluation_header(context)
    rows = [(name, _score(values.get("iou")), _score(values.get("dice")), _score(values.get("boundary_f")),
             f"{values.get('pixels', 0):,}", f"{values.get('predicted', 0):,}")
            for name, values in (metrics.get("per_class") or {}).items()]
    parts.append(table(["class", "IoU", "Dice", "boundary F", "true pixels", "predicted pixels"], rows,
                       numeric=[False, True, True, True, True, True]))
    parts.append(paragraph("IoU is a class's overlap with the truth over their union, Dice twice the overlap over "
                           "their sum (it reads higher for the same masks); both count pixels over the whole test "
                           "set. mIoU, the headline, is the mean IoU over the classes. The boundary F-score asks "
                           "whether the outlines agree, within 0.75% of the image diagonal: masks can overlap well "
                           "and still have ragged edges. Void pixels (255) are left out of every score.", "note"))
    parts.append(legend(task.class_names, task.colours))
    parts.append(picture(folder, "iou_per_class.png", "IoU and Dice per class"))
    parts.append(paragraph("The confusion matrix counts pixels: rows are the true class, columns the predicted "
                           "one; the diagonal is what each class got right.", "note"))
    parts.append(picture(folder, "confusion_matrix.png", "pixel confusion matrix"))
    return Section("evaluation", "Evaluation", "\n".join(parts))


def _images(task: "Segmentation", context: ReportContext) -> Section:
    rows = [row for row in context.evaluation.rows if row.get("predicted_mask")]
    ranked = sorted(rows, key=lambda row: (_value(row["mean_iou"]), row["file"]))
    half = max(1, context.count // 2)
    worst = ranked[:half]
    best = [row for row in reversed(ranked) if row not in worst][:half]
    if not rows:
        return Section("images", "Best and worst images", paragraph("No evaluated image to show.", "note"))
    pixels = context.images_by_name([row["file"] for row in worst + best])
    cards = [_card(task, context, row, pixels.get(row["file"]), "worst", number)
             for number, row in enumerate(worst, start=1)]
    cards += [_card(task, context, row, pixels.get(row["file"]), "best", number)
              for number, row in enumerate(best, start=1)]
    intro = ("The test images with the lowest mean IoU, then those with the highest. Each shows the image, the true "
             "mask, the predicted mask and the error map (wrong pixels red, void white), then Grad-CAM for the class "
             "the model painted most: the gradient of that class's summed score over the pixels it gave it.")
    return Section("images", "Best and worst images",
                   paragraph(intro, "note") + f'<div class="cards">{"".join(cards)}</div>')


def _value(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _card(task: "Segmentation", context: ReportContext, row: dict[str, str], pixels: np.ndarray | None,
          kind: str, number: int) -> str:
    from cnnlab.tasks.segmentation.draw import strip
    from cnnlab.tasks.segmentation.rle import decode_mask

    name = row["file"]
    facts = (f"<p>mean IoU {escape(row['mean_iou'] or '–')}, pixel accuracy {escape(row['pixel_accuracy'] or '–')}, "
             f"<span class=\"{'wrong' if row['wrong_pixels'] != '0' else ''}\">{escape(row['wrong_pixels'])} wrong "
             f"pixels</span></p>")
    truth, predicted = decode_mask(row["true_mask"]), decode_mask(row["predicted_mask"])
    if pixels is None or pixels.shape[1:] != truth.shape:
        shown = paragraph("(image not found: it has moved, or its dataset is not available here)", "note")
    else:
        path = context.work / "images" / f"{kind}-{number}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        strip(pixels, truth, predicted, task.colours).save(path)
        explained = context.explain(pixels, context.work / "images" / f"{kind}-{number}-cam", name=short_name(name),
                                    layer=context.layer, maps=False, filters=False, compact=True)
        shown = (image(path, f"image, true mask, predicted mask and errors of {name}")
                 + image(explained.files["gradcam"], f"Grad-CAM for {name}"))
    return f'<div class="card"><p><b>{kind} {number}. {escape(name)}</b></p>{facts}{shown}</div>'
