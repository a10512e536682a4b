"""The report's task sections for classification and regression: the evaluation and the worst cases.

A task's `report_sections(context)` returns these; `cnnlab.report.report` puts them between the
run's training and its filters, and never asks which task it is. Other tasks (detection) write
their own, with the same building blocks (`evaluation_header`, `cards`).
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Callable, Sequence

from cnnlab.report.html import Section, image, paragraph, table
from cnnlab.tasks.base import ReportContext


def evaluation_header(context: ReportContext) -> list[str]:
    """The summary line with where the score comes from, and what a validation or training split means."""
    evaluation = context.evaluation
    metrics = evaluation.metrics
    parts = [paragraph(f"{context.trained.task.summary_line(metrics)} — {metrics.get('data', '')}, split "
                       f"{evaluation.split} ({evaluation.folder.name}/)")]
    if evaluation.split == "val":
        parts.append(paragraph("These are validation images: they chose the best epoch, so the score leans "
                               "optimistic. Evaluate on images the model has never seen (cnnlab evaluate RUN "
                               "--data ...) for an unbiased one.", "note"))
    elif evaluation.split == "train":
        parts.append(paragraph("These are the images the model trained on: a score far above the validation "
                               "one means it memorised them (over-fitting). Evaluate on images the model has "
                               "never seen (cnnlab evaluate RUN --data ...) for what it will do on new ones.",
                               "note"))
    overlap = metrics.get("overlaps_training") or {}
    if overlap.get("images") and evaluation.split != "train":
        parts.append(paragraph(f"Warning: {overlap['images']:,} of the {overlap['of']:,} images scored are images the "
                               "model trained on, so this score leans optimistic: evaluate on images it has never "
                               "seen (cnnlab evaluate RUN --data ...) for an unbiased one.", "warning"))
    return parts


def picture(folder: Path, name: str, alt: str) -> str:
    path = folder / name
    return image(path, alt) if path.is_file() else ""


def cards(context: ReportContext, worst: Sequence[dict[str, str]], *, title: str, intro: str,
          facts: Callable[[dict[str, str]], str],
          section_id: str = "mistakes") -> Section:
    """One card per row: its facts and Grad-CAM of the model's answer on the image (found by name)."""
    if not worst:
        return Section(section_id, title, paragraph("No mistakes on this evaluation: every image was right."))
    pixels = context.images_by_name([row["file"] for row in worst])
    shown = []
    for number, row in enumerate(worst, start=1):
        name = row["file"]
        if name in pixels:
            explained = context.explain(pixels[name], context.work / section_id / str(number), name=short_name(name),
                                        layer=context.layer, maps=False, filters=False, compact=True)
            shown_picture = image(explained.files["gradcam"], f"Grad-CAM for {name}")
        else:
            shown_picture = paragraph("(image not found: it has moved, or its dataset is not available here)",
                                      "note")
        shown.append(f'<div class="card"><p><b>{number}. {escape(name)}</b></p>{facts(row)}{shown_picture}</div>')
    return Section(section_id, title, paragraph(intro, "note") + f'<div class="cards">{"".join(shown)}</div>')


def short_name(name: str) -> str:
    """A file's own name; a dataset image's whole name ('fashion-mnist/test/00042')."""
    return Path(name).name if Path(name).is_file() else name


# --- classification ------------------------------------------------------------------------------

def _scores(values: dict) -> tuple[str, str, str]:
    return f"{values['precision']:.3f}", f"{values['recall']:.3f}", f"{values['f1']:.3f}"


def _auc(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def classification_sections(task: Any, context: ReportContext) -> list[Section]:
    metrics, folder = context.evaluation.metrics, context.evaluation.folder
    parts = evaluation_header(context)
    auc = (metrics.get("roc_auc") or {}).get("per_class", {})  # evaluations from before ROC AUC have none
    rows = [(name, *_scores(s), _auc(auc.get(name)), f"{s['support']:,}")
            for name, s in metrics.get("per_class", {}).items()]
    if "macro_avg" in metrics:
        rows += [("macro average", *_scores(metrics["macro_avg"]), _auc((metrics.get("roc_auc") or {}).get("macro")),
                  ""), ("weighted average", *_scores(metrics["weighted_avg"]), "", "")]
    parts.append(table(["class", "precision", "recall", "F1", "ROC AUC", "images"], rows,
                       numeric=[False, True, True, True, True, True]))
    parts.append(picture(folder, "confusion_matrix.png", "confusion matrix"))
    if (folder / "roc_curves.png").is_file():
        parts.append(paragraph("Recall and precision above are the model's own answers (its most probable "
                               "class). ROC AUC scores every threshold instead: the chance that an image of "
                               "the class gets a higher probability for it than an image of another class. "
                               "The curves show what a different threshold would trade: more of the class "
                               "found for more false alarms.", "note"))
        parts.append(picture(folder, "roc_curves.png", "ROC and precision-recall curves"))
    wrong = [row for row in context.evaluation.rows if row.get("correct") == "0"]
    worst = sorted(wrong, key=lambda row: float(row["confidence"]), reverse=True)[:context.count]
    mistakes = cards(context, worst, title="Worst mistakes",
                     intro="The wrong predictions made with the highest confidence, with Grad-CAM for the predicted "
                           "class: where the network found its (misleading) evidence.",
                     facts=lambda row: (f'<p>true <b>{escape(row["true_label"])}</b>, predicted <span class="wrong">'
                                        f'{escape(row["predicted_label"])}</span> with '
                                        f'{float(row["confidence"]):.1%} confidence</p>'),)
    return [Section("evaluation", "Evaluation", "\n".join(parts)), mistakes]


# --- regression ----------------------------------------------------------------------------------

def regression_sections(task: Any, context: ReportContext) -> list[Section]:
    metrics, folder = context.evaluation.metrics, context.evaluation.folder
    parts = evaluation_header(context)
    rows = [(name, f"{s['mae']:.4g}", f"{s['rmse']:.4g}", f"{s['r2']:.4f}")
            for name, s in metrics.get("per_target", {}).items()]
    parts.append(table(["target", "MAE", "RMSE", "R²"], rows, numeric=[False, True, True, True]))
    if "baseline_rmse" in metrics:
        parts.append(paragraph(f"Always predicting the mean would give RMSE {metrics['baseline_rmse']:.4g}.", "note"))
    parts.append(picture(folder, "predicted_vs_true.png", "predicted vs true"))
    names = task.target_names

    def error(row: dict[str, str]) -> float:
        return sum(abs(float(row[f"predicted_{name}"]) - float(row[f"true_{name}"])) for name in names)

    worst = sorted(context.evaluation.rows, key=error, reverse=True)[:context.count]
    largest = cards(context, worst, title="Largest errors",
                    intro="The images with the largest errors, with Grad-CAM for the predicted value.",
                    facts=lambda row: "".join(
                        f'<p>{escape(name)}: true {escape(row["true_" + name])}, predicted '
                        f'<span class="wrong">{escape(row.get("predicted_" + name, "?"))}</span></p>' for name in names))
    return [Section("evaluation", "Evaluation", "\n".join(parts)), largest]
