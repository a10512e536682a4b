"""`report()`: one self-contained HTML page about a run — `RUN/report.html` by default.

Sections (their ids are the page's anchors): config, data (class counts, sample images per
class), training (curves, per-epoch table), evaluation (metrics, confusion matrix or scatter
plot), mistakes (the most confident wrong predictions — or the largest errors, for regression —
with their file names and Grad-CAM), filters (the first convolution's) and feature-maps (one
example image through every stage). Every picture is embedded as a data URI; the page loads
nothing else and needs no JavaScript, so it can be mailed or archived as one file.

    >>> path = report("runs/demo")        # doctest: +SKIP
"""

from __future__ import annotations

import functools
import tempfile
from datetime import datetime
from html import escape
from pathlib import Path

from cnnlab.console import Console
from cnnlab.data.source import Source
from cnnlab.explain.explain import Explanation, explain_pixels
from cnnlab.explain.filters import first_conv_weights, plot_filters
from cnnlab.report.html import Section, image, page, paragraph, table
from cnnlab.pictures import image_rows, save
from cnnlab.report.data import (Evaluation, RunRecord, find_or_run_evaluation, images_by_name,
                                        open_source, read_run, samples_per_class, source_images)
from cnnlab.report.sections import short_name
from cnnlab.tasks.base import ReportContext
from cnnlab.io import write_text_atomic
from cnnlab.trained import TrainedModel, load, refuse_exported


def report(run: str | Path, *, output: str | Path | None = None, data: str | None = None,
           split: str | None = None, limit: int | None = None, mistakes: int = 8, samples: int = 6,
           max_maps: int = 32, layer: str | None = None, device: str = "auto", runs_dir: str | Path = "runs",
           data_dir: str | None = None, quiet: bool = False, max_image_pixels: int | None = None) -> Path:
    """Write the HTML report for `run` and return its path; `max_image_pixels`: the pixel budget of
    every image file it reads (--max-image-pixels)."""
    from cnnlab.data.images import DEFAULT_MAX_IMAGE_PIXELS, check_max_image_pixels

    console = Console(quiet=quiet)
    budget = check_max_image_pixels(max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    refuse_exported(run, "report")
    trained = load(run, device=device, runs_dir=runs_dir)
    record = read_run(trained.run_dir)
    evaluation = find_or_run_evaluation(trained, data=data, split=split, limit=limit, data_dir=data_dir,
                                        console=console, max_image_pixels=budget)
    eval_source = open_source(trained, evaluation.data, evaluation.split, data_dir)
    with tempfile.TemporaryDirectory(prefix="cnnlab-report-") as temp:
        work = Path(temp)
        context = ReportContext(trained, evaluation, lambda names: images_by_name(trained, names, eval_source, budget),
                                functools.partial(explain_pixels, trained), work, count=mistakes, layer=layer)
        sections = [
            _config_section(record),
            _model_section(trained),
            _data_section(record, trained, samples, data_dir, work, budget),
            _training_section(record),
            *trained.task.report_sections(context),
            _filters_section(trained, work),
            _feature_maps_section(_example(trained, evaluation, eval_source, work, layer, max_maps, budget)),
        ]
    shape = "×".join(map(str, trained.input.shape))
    subtitle = (f"{trained.info.architecture.short_name} · {trained.task.name} · input {shape} · "
                f"checkpoint {trained.checkpoint.name} (epoch {trained.info.epoch}) · "
                f"written {datetime.now():%Y-%m-%d %H:%M}")
    path = Path(output) if output else trained.run_dir / "report.html"
    write_text_atomic(path, page(f"cnnlab report: {trained.run_dir.name}", subtitle, sections))
    console.info(f"report written to {path}")
    return path


# --- sections -----------------------------------------------------------------------------------


def _imbalance_note(counts: dict[str, int], trained: TrainedModel) -> str | None:
    """What imbalanced classes mean for this run's scores, and what it was trained with."""
    from cnnlab.data.pipeline import imbalanced_classes

    imbalance = imbalanced_classes(counts)
    if imbalance is None:
        return None
    (largest, most), (smallest, fewest) = imbalance
    weighting = getattr(trained.task, "weighting", "none")
    counted = trained.task.counted
    how = (f"It was trained with --class-weights {weighting}, so each of a rarer class's {counted} weighed more in "
           "the loss." if weighting != "none" else
           f"It was trained without class weights, so scores over all {counted} favour the large classes: read "
           "each class's own score in the evaluation (or train with --class-weights balanced).")
    return f"The classes are imbalanced: {largest} has {most:,} training {counted}, {smallest} {fewest:,}. {how}"


def _config_section(record: RunRecord) -> Section:
    rows = [(key, "" if value is None else value) for key, value in record.config.items()]
    again = f"cnnlab train -c {record.run_dir / 'config.yaml'} --name <new name>"
    body = paragraph(f"Reproduce the run with: {again}", "note") + table(["setting", "value"], rows)
    return Section("config", "Configuration", body)


def _model_section(trained: TrainedModel) -> Section:
    """The layer table (`cnnlab summary`): output shapes, parameters and multiply-adds per layer."""
    from cnnlab.models.summary import percent, shape_text, summarize

    summary = summarize(trained.model, tuple(trained.input.shape))
    rows = [(row.name or "(own parameters)", row.type, shape_text(row.output_shape), f"{row.params:,}",
             f"{row.mult_adds:,}" if row.mult_adds else "") for row in summary.rows]
    parts = [paragraph(f"{trained.info.architecture.short_name}: {summary.total_params:,} parameters "
                       f"({summary.trainable_params:,} trainable), {summary.mult_adds:,} multiply-adds per "
                       f"{shape_text(summary.input_shape)} image.")]
    conv_params, conv_work = summary.share("conv")
    if 0 < conv_work < 1:
        parts.append(paragraph(f"The convolutions hold {percent(conv_params)} of the parameters and do "
                               f"{percent(conv_work)} of the multiply-adds: a filter's few weights are reused at "
                               "every position of the image.", "note"))
    parts.append(table(["layer", "type", "output shape", "parameters", "multiply-adds"], rows,
                       numeric=[False, False, False, True, True]))
    return Section("model", "Model", "\n".join(parts))


def _data_section(record: RunRecord, trained: TrainedModel, samples: int, data_dir: str | None,
                  work: Path, budget: int) -> Section:
    summary = record.data_summary
    parts = []
    for split in ("train", "val"):
        described = summary.get(split)
        if described:
            count, origin = described.get("images", 0), described.get("source", "?")
            parts.append(paragraph(f"{split}: {count:,} images from {origin}"))
    if summary.get("val_origin"):
        parts.append(paragraph(f"validation: {summary['val_origin']}", "note"))
    counts = {split: (summary.get(split) or {}).get("class_counts") or {} for split in ("train", "val")}
    if counts["train"]:
        top = max(counts["train"].values()) or 1
        rows = [(escape(name), f"{count:,}", f"{counts['val'].get(name, 0):,}",
                 f'<span class="bar" style="width:{int(200 * count / top)}px"></span>')
                for name, count in counts["train"].items()]
        counted = trained.task.counted
        parts.append(table(["class", f"train {counted}", f"validation {counted}", ""], rows,
                           numeric=[False, True, True, False], raw=True))
        imbalance = _imbalance_note(counts["train"], trained)
        if imbalance:
            parts.append(paragraph(imbalance, "note"))
    else:
        described = trained.task.training_targets_table()
        if described is not None:
            headers, rows = described
            parts.append(table(headers, rows, numeric=[False] + [True] * (len(headers) - 1)))
    skipped = sum(len(files) for files in (summary.get("skipped_files") or {}).values())
    if skipped:
        note = f"{skipped} unreadable file(s) were skipped in training (see data.json)."
        parts.append(paragraph(note, "note"))
    source = _training_data(record, trained, data_dir)
    parts.append(_samples(record, trained, source, samples, work, budget))
    parts.append(_augmentation(record, trained, source, work, budget))
    return Section("data", "Data", "\n".join(parts))


def _training_data(record: RunRecord, trained: TrainedModel, data_dir: str | None) -> Source | None:
    """The data the run trained on, as it used it: with --limit, the same seeded subset."""
    from cnnlab.data.pipeline import limit_source

    source = open_source(trained, None, record.config.get("split", "train"), data_dir)
    limit, seed = record.config.get("limit"), record.config.get("seed", 0)
    if source is None or not limit:
        return source
    return limit_source(source, int(limit), int(seed or 0))


def _augmentation(record: RunRecord, trained: TrainedModel, source: Source | None, work: Path,
                  budget: int) -> str:
    """A few training images, each followed by versions its --augment preset draws: what "the network
    sees a slightly different image every epoch" looks like."""
    from cnnlab.teach.augmentation import augmentation_figure

    preset = record.config.get("augment") or "none"
    if preset == "none" or source is None:
        return ""
    picks = [(name, indices[0]) for name, indices in samples_per_class(source, 1, seed=1) if len(indices)][:4]
    images = source_images(source, [index for _, index in picks], trained, budget)
    figure = augmentation_figure([(name or "sample", image) for (name, _), image in zip(picks, images)], preset)
    text = (f"Augmentation ({preset}): in training the network never sees the same picture twice; it sees "
            "versions like these, so it has to learn what stays the same across them.")
    return paragraph(text, "note") + image(save(figure, work / "augmentation.png"), "augmented versions")


def _samples(record: RunRecord, trained: TrainedModel, source: Source | None, samples: int, work: Path,
             budget: int) -> str:
    if source is None or samples < 1:
        return paragraph(f"Sample images: the training data ({record.config.get('data')}) could not be "
                         "opened here, so none are shown.", "note")
    rows, captions = [], None
    labels, task = source.stratify_labels, trained.task
    for name, indices in samples_per_class(source, samples):
        images = [task.sample_picture(pixels, source, index)
                  for pixels, index in zip(source_images(source, indices, trained, budget), indices)]
        if labels is None:  # no class per image: one row, each image captioned with its targets
            rows.append(("samples", images))
            captions = [[task.target_caption(source, index) for index in indices]]
        else:
            total = int((labels == source.class_names.index(name)).sum())
            rows.append((f"{name} ({total:,})", images))
    what = ("class (images in the split)" if labels is not None else
            ", ".join(source.target_names or []) or task.describe_outputs())
    shape = "×".join(map(str, trained.input.shape))
    title = f"{source.description}\nas the model sees them ({shape}); rows: {what}"
    figure = image_rows(rows, title, captions=captions, cell=0.7)
    return image(save(figure, work / "samples.png"), "sample images per class")


def _training_section(record: RunRecord) -> Section:
    parts = []
    if record.curves:
        parts.append(image(record.curves, "training curves"))
    else:
        parts.append(paragraph("No training_curves.png in the run folder.", "note"))
    if record.history:
        headers = list(record.history[0])
        rows = [[row[key] for key in headers] for row in record.history]
        parts.append(f"<details><summary>per-epoch metrics ({len(rows)} epochs, metrics.csv)</summary>"
                     f"{table(headers, rows, numeric=[True] * len(headers))}</details>")
    if record.sessions:
        parts.append(_sessions_table(record.sessions))
    return Section("training", "Training", "\n".join(parts))


def _sessions_table(sessions: list[dict]) -> str:
    """run.json, a row per session (the first run, then each --resume): how the steps ran and where."""
    headers = ["started", "epochs", "outcome", "training s", "images/s", "arithmetic", "machine", "PyTorch"]
    rows = []
    for entry in sessions:
        epochs = entry.get("epochs") or {}
        machine = entry.get("machine") or {}
        processes = machine.get("processes") or 1
        where = f"{machine.get('name', '?')} ({machine.get('device', '?')}, {machine.get('cpu_threads', '?')} threads"
        where += f", {processes} processes)" if processes > 1 else ")"
        speed = entry.get("images_per_s")
        rows.append([str(entry.get("started", "")).replace("T", " ").replace("+00:00", " UTC"),
                     f"{epochs.get('first', '?')}–{epochs.get('last') or '?'}", entry.get("outcome", ""),
                     entry.get("training_seconds", ""), f"{speed:,.0f}" if isinstance(speed, (int, float)) else "",
                     (entry.get("arithmetic") or {}).get("summary", ""), where,
                     (entry.get("software") or {}).get("torch", "")])
    return (f"<p>How the steps ran and where (run.json):</p>"
            f"{table(headers, rows, numeric=[False, False, False, True, True, False, False, False])}")


def _filters_section(trained: TrainedModel, work: Path) -> Section:
    layer, weights = first_conv_weights(trained.model, trained.info.architecture.name)
    text = ("The kernels the first convolution learned. Compare them with the classic ones (cnnlab kernels): "
            "edge detectors have a negative and a positive side, blurs are all one sign.")
    picture = image(plot_filters(weights, work / "filters.png", layer=layer), "first-layer filters")
    return Section("filters", "First-layer filters", paragraph(text, "note") + picture)


def _example(trained: TrainedModel, evaluation: Evaluation, source: Source | None, work: Path,
             layer: str | None, max_maps: int, budget: int) -> Explanation | None:
    """Feature maps and Grad-CAM for one evaluation image the model got right (the task picks the
    candidates), the first found on disk or in its dataset."""
    rows = trained.task.example_rows(evaluation.rows)[:20] or evaluation.rows[:20]
    pixels = images_by_name(trained, [row["file"] for row in rows], source, budget)
    for row in rows:
        if row["file"] in pixels:
            return explain_pixels(trained, pixels[row["file"]], work / "example", name=short_name(row["file"]),
                                  target=trained.task.example_target(row), layer=layer, max_maps=max_maps,
                                  filters=False)
    return None


def _feature_maps_section(example: Explanation | None) -> Section:
    if example is None:
        note = "None of the evaluated images could be found here, so there is no example to show."
        return Section("feature-maps", "Feature maps", paragraph(note, "note"))
    text = (f"One image, {example.name} (predicted {example.prediction}), through every stage of the "
            "network: early stages respond to edges and textures, later ones to larger parts; pooling "
            "shrinks the maps.")
    pictures = "".join(image(path, path.stem) for path in example.feature_map_files)
    gradcam = image(example.files["gradcam"], "Grad-CAM of the example")
    return Section("feature-maps", "Feature maps", paragraph(text, "note") + gradcam + pictures)
