"""`predict()`: run a trained model on image files, folders and glob patterns.

Each file gets one row: its prediction (top-k labels with confidences, or values), or the reason
it could not be read — one bad file never stops the others.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from cnnlab.data.images import image_files_below
from cnnlab.data.prepare import Geometry, decode_files, decodes_in_process
from cnnlab.errors import CnnlabError, UnreadableImageError
from cnnlab.io import write_text_atomic
from cnnlab.trained import TrainedModel, load


def expand_paths(patterns: Iterable[str | Path]) -> list[tuple[str, Path | None, str | None]]:
    """Files, folders (every image below them) and globs -> [(name, path, error)] in a stable order."""
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
        elif glob.has_magic(str(pattern)):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            found.extend((str(p), p, None) for p in matches)
            if not matches:
                found.append((str(pattern), None, "pattern matches no files"))
        else:
            found.append((str(pattern), None, "no such file or folder"))
    return found


def predict(run: str | Path | TrainedModel, paths: Sequence[str | Path], *, top_k: int = 1,
            device: str = "auto", batch_size: int = 256, workers: int | None = None,
            runs_dir: str | Path = "runs", tta: str | None = None,
            precision: str = "auto") -> list[dict[str, Any]]:
    """One dict per file: {"file", "label", "confidence", "top_k"} (or {"file", "values"}), or {"file", "error"}.

    Large jobs are decoded in worker processes while the model runs on the batches already
    decoded; small ones (under 32 MiB of files) in this process, where starting workers would cost
    more than it saves.

    >>> rows = cnnlab.predict("runs/demo", ["shoe.png"], top_k=3)  # doctest: +SKIP
    >>> rows[0]["label"], round(rows[0]["confidence"], 2)           # doctest: +SKIP
    ('Sneaker', 0.97)
    """
    if top_k < 1:
        raise CnnlabError(f"--top-k must be at least 1 (got {top_k})")
    if not isinstance(run, TrainedModel):
        run = load(run, device=device, runs_dir=runs_dir, tta=tta, precision=precision)
    trained = run
    found = expand_paths(paths)
    rows: list[dict[str, Any]] = [{"file": name} if error is None else {"file": name, "error": error}
                                  for name, _, error in found]
    readable = [index for index, (_, path, error) in enumerate(found) if error is None]
    geometry = Geometry(*trained.input.shape)
    files = [found[index][1] for index in readable]
    # Decoding in this process runs a batch ahead on a thread, with a core of its own.
    overlap = decodes_in_process(files, workers) and len(files) > batch_size
    with _core_left_for_decoding(trained.device) if overlap else contextlib.nullcontext():
        for batch in decode_files(files, geometry, workers=workers, batch_size=batch_size, ahead=overlap):
            decoded = []
            for position, result in batch:
                row = rows[readable[position]]
                if isinstance(result, UnreadableImageError):
                    row["error"] = result.reason
                else:
                    decoded.append((row, result))
            if decoded:
                images = torch.from_numpy(np.stack([pixels for _, pixels in decoded]))
                for (row, _), prediction in zip(decoded, trained.predict_arrays(images, top_k=top_k)):
                    row.update(prediction)
    return rows


@contextlib.contextmanager
def _core_left_for_decoding(device: torch.device) -> Iterator[None]:
    """On a CPU, the model computes with one thread fewer while a thread decodes the next batch:
    2,000 PNGs on 2 cores took 0.160 s instead of 0.195 s with both threads computing (the model
    got the cores only between batches). PyTorch's thread count is process-wide, so it is put back
    at once."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2:
        yield
        return
    torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def format_table(rows: list[dict[str, Any]], top_k: int = 1) -> str:
    """Rows as an aligned text table for the terminal."""
    lines = []
    width = min(max((len(row["file"]) for row in rows), default=4), 60)
    for row in rows:
        name = row["file"] if len(row["file"]) <= width else "…" + row["file"][-(width - 1):]
        if "error" in row:
            detail = f"ERROR: {row['error']}"
        elif "values" in row:
            detail = "  ".join(f"{k} = {v:.4g}" for k, v in row["values"].items())
        else:
            detail = "  ".join(f"{entry['label']} {entry['confidence']:6.1%}" for entry in row["top_k"][:top_k])
        lines.append(f"{name:<{width}}  {detail}")
    return "\n".join(lines)


def write_predictions(rows: list[dict[str, Any]], path: Path) -> Path:
    """Save rows as .json (a list of objects) or .csv (one line per file, top-k flattened)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        write_text_atomic(path, json.dumps(rows, indent=2) + "\n")
    elif path.suffix.lower() == ".csv":
        write_text_atomic(path, _rows_to_csv(rows))
    else:
        raise CnnlabError(f"--output {path}: use a .csv or .json file name")
    return path


def _rows_to_csv(rows: list[dict[str, Any]]) -> str:
    depth = max((len(row.get("top_k", [])) for row in rows), default=0)
    value_names = next((list(row["values"]) for row in rows if "values" in row), [])
    header = ["file"]
    if depth:
        header += ["label", "confidence"]
        for rank in range(2, depth + 1):
            header += [f"label_{rank}", f"confidence_{rank}"]
    header += value_names + ["error"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = [row["file"]]
        for rank in range(depth):
            entries = row.get("top_k", [])
            cells += [entries[rank]["label"], f"{entries[rank]['confidence']:.6f}"] if rank < len(entries) else ["", ""]
        cells += [f"{row['values'][n]:.6g}" if "values" in row else "" for n in value_names]
        cells.append(row.get("error", ""))
        writer.writerow(cells)
    return buffer.getvalue()
