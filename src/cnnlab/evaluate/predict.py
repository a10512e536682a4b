"""`predict()`: run a trained model on image files, folders and glob patterns.

Each file gets one row: its prediction (top-k labels with confidences, or values), or the reason
it could not be read — one bad file never stops the others.
"""

from __future__ import annotations

import copy

import contextlib
import csv
import glob
import io
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from cnnlab.data.images import (DEFAULT_MAX_IMAGE_PIXELS, check_max_image_pixels, describe_non_regular,
                                image_files_below)
from cnnlab.data.prepare import Geometry, decode_files, decodes_in_process
from cnnlab.device import intra_op_threads
from cnnlab.errors import CnnlabError, UnreadableImageError
from cnnlab.io import write_text_atomic
from cnnlab.trained import InferenceModel, load

log = logging.getLogger(__name__)


def expand_paths(patterns: Iterable[str | Path]) -> list[tuple[str, Path | None, str | None]]:
    """Files, folders (every image below them) and globs -> [(name, path, error)] in a stable order.

    A path that is there but is not a regular file or a folder (a FIFO, a device, a socket) is named
    for what it is; it is never opened."""
    found: list[tuple[str, Path | None, str | None]] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            images = image_files_below(path)
            found.extend((str(p), p, None) for p in images)
            if not images:
                found.append((str(path), None, "folder holds no image files"))
        elif path.is_file():
            found.append((str(path), path, None))
        elif os.path.lexists(path):
            found.append((str(path), None, _not_a_file(path)))
        elif glob.has_magic(str(pattern)):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if not Path(p).is_dir())
            found.extend((str(p), p, None) if p.is_file() else (str(p), None, _not_a_file(p)) for p in matches)
            if not matches:
                found.append((str(pattern), None, "pattern matches no files"))
        else:
            found.append((str(pattern), None, "no such file or folder"))
    return found


class Predictions(list):
    """predict()'s rows (one dict per file, in order), with the task that made them: it knows how
    its predictions read in the terminal (`table`) and in a CSV file (`write`)."""

    def __init__(self, rows: Iterable[dict[str, Any]], task: Any):
        super().__init__(rows)
        self.task = task

    def table(self, top_k: int = 1) -> str:
        return format_table(self, top_k, self.task)

    def write(self, path: str | Path) -> Path:
        return write_predictions(self, path, self.task)

    def draw(self, folder: str | Path, *, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> list[Path]:
        return draw_predictions(self, folder, self.task, max_image_pixels=max_image_pixels)


def _not_a_file(path: Path) -> str:
    """Why `path`, which exists, is not read: what it is (or a link to nothing)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return f"a link to {os.readlink(path)}, which does not exist" if os.path.islink(path) else "cannot be read"
    return f"{describe_non_regular(path, mode)}, not a regular file; cnnlab reads images only from regular files"


def predict(run: str | Path | InferenceModel, paths: Sequence[str | Path], *, top_k: int = 1,
            device: str = "auto", batch_size: int = 256, workers: int | None = None,
            runs_dir: str | Path = "runs", tta: str | None = None,
            precision: str = "auto", threshold: str | None = None,
            max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, conf: float | None = None,
            iou: float | None = None) -> Predictions:
    """One dict per file: its prediction as the task gives it ({"file", "label", "confidence", "top_k"}
    for a classifier, {"file", "values"} for regression, {"file", "objects"} for a detector), or
    {"file", "error"}.

    Large jobs are decoded in worker processes while the model runs on the batches already
    decoded; small ones (under 32 MiB of files) in this process, where starting workers would cost
    more than it saves, on a thread one batch ahead of the model. On a CPU the model may compute
    with one thread fewer meanwhile (PyTorch's thread count is process-wide; it is put back).

    >>> rows = cnnlab.predict("runs/demo", ["shoe.png"], top_k=3)  # doctest: +SKIP
    >>> rows[0]["label"], round(rows[0]["confidence"], 2)           # doctest: +SKIP
    ('Sneaker', 0.97)

    `threshold` ("NAME=P") answers NAME whenever its probability is at least P (see
    `TrainedModel.set_threshold`); a TrainedModel passed in keeps its own setting afterwards.
    `max_image_pixels`: files of more pixels are not decoded, their rows say so (--max-image-pixels).
    """
    if top_k < 1:
        raise CnnlabError(f"--top-k must be at least 1 (got {top_k})")
    check_max_image_pixels(max_image_pixels)
    if not isinstance(run, InferenceModel):
        run = load(run, device=device, runs_dir=runs_dir, tta=tta, precision=precision, conf=conf, iou=iou)
        run.set_threshold(threshold)
        run.task.check_top_k(top_k)
        return Predictions(_predict(run, paths, top_k, batch_size, workers, max_image_pixels), run.task)
    # A model passed in keeps its own options afterwards: these apply to a copy of its task.
    original = run.task
    run.task = copy.copy(original)
    try:
        run.task.configure(threshold=threshold, conf=conf, iou=iou)
        run.task.check_top_k(top_k)
        return Predictions(_predict(run, paths, top_k, batch_size, workers, max_image_pixels), run.task)
    finally:
        run.task = original


def _predict(trained: InferenceModel, paths: Sequence[str | Path], top_k: int, batch_size: int,
             workers: int | None, max_image_pixels: int) -> list[dict[str, Any]]:
    found = expand_paths(paths)
    rows: list[dict[str, Any]] = [{"file": name} if error is None else {"file": name, "error": error}
                                  for name, _, error in found]
    readable = [index for index, (_, path, error) in enumerate(found) if error is None]
    geometry = replace(trained.input.geometry, max_pixels=max_image_pixels)
    files = [found[index][1] for index in readable]
    fitted: list[tuple[str, tuple[int, int, bool]]] = []  # files that differ from what the model takes

    def predict_batch(batch: list, offset: int) -> None:
        decoded = []
        for position, result in batch:
            row = rows[readable[offset + position]]
            if isinstance(result, UnreadableImageError):
                row["error"] = result.reason
            else:
                pixels, origin = result
                if _differs(origin, geometry):
                    fitted.append((row["file"], origin))
                decoded.append((row, pixels, origin[:2]))
        if decoded:
            images = torch.from_numpy(np.stack([pixels for _, pixels, _ in decoded]))
            origins = [origin for _, _, origin in decoded]
            for (row, _, _), prediction in zip(decoded, trained.predict_arrays(images, top_k=top_k,
                                                                              origins=origins)):
                row.update(prediction)

    if decodes_in_process(files, workers) and len(files) > batch_size:
        _decode_ahead_and_predict(files, geometry, batch_size, trained.device, predict_batch)
    else:  # one batch, or worker processes decoding
        for batch in decode_files(files, geometry, workers=workers, batch_size=batch_size, with_origin=True):
            predict_batch(batch, 0)
    if fitted:
        log.warning(_fitted_note(fitted, len(files), geometry, classes=trained.class_names is not None))
    return rows


def _differs(origin: tuple[int, int, bool], geometry: Geometry) -> bool:
    width, height, colour = origin
    return (height, width) != geometry.size or colour != (geometry.channels == 3)


def _fitted_note(fitted: list[tuple[str, tuple[int, int, bool]]], count: int, geometry: Geometry, *,
                 classes: bool) -> str:
    """Say that files were resized or converted to fit the model, with an example: a learner who
    gives a cat photo to a clothing model should know what the model saw."""
    name, (width, height, colour) = fitted[0]
    kind = "grayscale" if geometry.channels == 1 else "colour"
    example = f"{name}: {width}×{height} {'colour' if colour else 'grayscale'}"
    caution = (" It answers with one of its own classes however unlike its training images a picture is."
               if classes else "")
    return (f"note: the model takes {geometry.height}×{geometry.width} {kind} images; {len(fitted)} of {count} "
            f"file(s) were {_FITTED[geometry.fit]} or converted to fit (e.g. {example}).{caution}")


# How `_fitted_note` says a run's --fit changed a file's shape.
_FITTED = {"squash": "resized", "crop": "scaled and centre-cropped (as in training: --fit crop)",
           "pad": "scaled and padded with black (as in training: --fit pad)"}


def _decode_ahead_and_predict(files: list[Path], geometry: Geometry, batch_size: int, device: torch.device,
                              predict_batch: Callable[[list, int], None]) -> None:
    """Decoding in this process, the next batch on a thread while the model runs on this one, from
    the first batch on. On a CPU the model starts with one thread fewer, leaving the decoding thread
    a core; a short first batch (a quarter of `batch_size`) times both sides, and the model takes
    every thread back for the rest unless keeping the core free finishes sooner (see `_worth_a_core`).
    Short, because a large network pays for its thread fewer while it is timed: resnet18 at 96 px,
    1,024 files in batches of 128, took 1.93 s with a whole first batch against 1.76 s before.
    The first batch's model time also wakes the thread pools: an overestimate, so the core is kept
    free only where that clearly pays."""
    threads = torch.get_num_threads()
    spare_a_core = device.type == "cpu" and threads > 1
    batches = decode_files(files, geometry, workers=0, batch_size=batch_size, ahead=True, with_origin=True,
                           first_batch=max(1, batch_size // 4))
    with contextlib.closing(batches), contextlib.ExitStack() as fewer_threads:
        if spare_a_core:
            fewer_threads.enter_context(intra_op_threads(threads - 1))
        started = time.perf_counter()
        first = next(batches, [])
        decoded_at = time.perf_counter()
        predict_batch(first, 0)
        model_seconds = (time.perf_counter() - decoded_at) * (threads - 1) / threads  # as with every thread
        if spare_a_core and not _worth_a_core(decoded_at - started, model_seconds, threads):
            fewer_threads.close()  # the model needs every thread more than decoding needs a core
        for batch in batches:
            predict_batch(batch, 0)


def _worth_a_core(decode_seconds: float, model_seconds: float, threads: int) -> bool:
    """Whether the model, computing with `threads` − 1 threads while one thread decodes the next
    batch, finishes batches sooner than with all `threads` between decodes: per batch that is
    max(decode, model · n/(n−1)) against decode + model. It pays when decoding is the larger part
    (2,000 small PNGs through guide-cnn on 2 cores: 0.160 s instead of 0.195 s), not for a large
    network on a few cores, which needs every thread (resnet18 at 96 px on 2 cores: 1.84 s with
    both, 3.02 s with one)."""
    if threads < 2:
        return False
    return max(decode_seconds, model_seconds * threads / (threads - 1)) < decode_seconds + model_seconds


def format_table(rows: Sequence[dict[str, Any]], top_k: int = 1, task: Any = None) -> str:
    """Rows as an aligned text table for the terminal: each file, then its prediction as `task`
    shows it (default: the task the rows came with)."""
    task = task if task is not None else getattr(rows, "task", None)
    if task is None:
        raise ValueError("format_table needs the task the predictions came from")
    lines = []
    width = min(max((len(row["file"]) for row in rows), default=4), 60)
    for row in rows:
        name = row["file"] if len(row["file"]) <= width else "…" + row["file"][-(width - 1):]
        detail = f"ERROR: {row['error']}" if "error" in row else task.table_line(row, top_k)
        lines.append(f"{name:<{width}}  {detail}".rstrip())
    return "\n".join(lines)


def write_predictions(rows: Sequence[dict[str, Any]], path: str | Path, task: Any = None) -> Path:
    """Save rows as .json (a list of objects) or .csv (a line per file, or per object for a detector)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        write_text_atomic(path, json.dumps(list(rows), indent=2) + "\n")
    elif path.suffix.lower() == ".csv":
        task = task if task is not None else getattr(rows, "task", None)
        if task is None:
            raise ValueError("writing a CSV needs the task the predictions came from")
        write_text_atomic(path, _rows_to_csv(rows, task))
    else:
        raise CnnlabError(f"--output {path}: use a .csv or .json file name")
    return path


def _rows_to_csv(rows: Sequence[dict[str, Any]], task: Any) -> str:
    predicted = [row for row in rows if "error" not in row]
    columns = task.csv_columns(predicted) if predicted else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", *columns, "error"])
    for row in rows:
        if "error" in row:
            writer.writerow([row["file"], *[""] * len(columns), row["error"]])
            continue
        for line in task.csv_lines(row, columns):
            writer.writerow([row["file"], *line, ""])
    return buffer.getvalue()


def draw_predictions(rows: Sequence[dict[str, Any]], folder: str | Path, task: Any = None, *,
                     max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> list[Path]:
    """Each predicted file as a PNG in `folder` (`cnnlab predict --draw`), in its own pixels with its
    prediction drawn as the task draws one (a detector: its boxes); a task whose answer is not a
    picture (a class, values) gets the image with its caption under it. Named after the file
    (`shoe.jpg` → `shoe.png`, numbered when two files share a name); files that could not be
    predicted are left out. Returns the paths written, in the rows' order."""
    from cnnlab.data.images import normalize_mode, open_image

    task = task if task is not None else getattr(rows, "task", None)
    if task is None:
        raise ValueError("drawing predictions needs the task they came from")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CnnlabError(f"--draw {folder}: a file is in the way; name a folder to write the drawings into")
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[str] = set()
    for row in rows:
        if "error" in row:
            continue
        image = normalize_mode(open_image(row["file"], max_pixels=max_image_pixels))
        pixels = np.asarray(image)
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, H, W), its own size
        picture = task.draw(pixels, row)
        if picture is None:
            picture = _captioned(image, task.caption(row))
        path = folder / _free_name(Path(row["file"]).stem, taken)
        picture.save(path)
        written.append(path)
        for suffix, extra in task.prediction_files(row).items():
            extra.save(path.with_name(f"{path.stem}{suffix}.png"))
    return written


def _free_name(stem: str, taken: set[str]) -> str:
    name, number = f"{stem}.png", 1
    while name in taken:
        number += 1
        name = f"{stem}-{number}.png"
    taken.add(name)
    return name


def _captioned(image: Any, text: str, min_side: int = 256) -> Any:
    """The image, enlarged by a whole factor to at least `min_side` on its short side (pixels kept
    square), over a white band holding `text`."""
    import math

    from PIL import Image, ImageDraw, ImageFont

    picture = image.convert("RGB")
    factor = max(1, math.ceil(min_side / min(picture.size)))
    picture = picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)
    font = ImageFont.load_default(size=max(11, round(min(picture.size) / 18)))
    left, top, right, bottom = ImageDraw.Draw(picture).textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 3)
    canvas = Image.new("RGB", (max(picture.width, right - left + 2 * pad), picture.height + bottom - top + 2 * pad),
                       (255, 255, 255))
    canvas.paste(picture, (0, 0))
    ImageDraw.Draw(canvas).text((pad - left, picture.height + pad - top), text, fill=(0, 0, 0), font=font)
    return canvas
