"""What happens around the loop: progress, metrics.csv, curves, checkpoints, early stopping."""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from torch import Tensor

from cnnlab.io import write_text_atomic
from cnnlab.train.loop import FitState


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class ProgressBar:
    """A live bar per epoch (images, images/s, ETA, running loss and headline metric), then one
    summary line per epoch with the validation scores and the time left for the whole run."""

    def __init__(self, headline: str, *, stream: TextIO | None = None, refresh_seconds: float = 0.5,
                 enabled: bool = True, running_headline: bool = True):
        """`running_headline`: whether the headline is a per-image mean that the bar can show while an
        epoch runs (accuracy, MAE); mAP is only known after validation."""
        self.headline = headline
        self.running_headline = running_headline
        self.stream = stream or sys.stderr
        self.refresh_seconds = refresh_seconds
        self.enabled = enabled
        self._bar: Any = None
        self._shown = 0
        self._last_refresh = 0.0
        self._epoch_seconds: list[float] = []

    def on_epoch_begin(self, state: FitState, epoch: int, num_images: int) -> None:
        from tqdm.auto import tqdm

        self._shown = 0
        self._bar = tqdm(total=num_images, unit="img", unit_scale=False, desc=f"epoch {epoch}/{state.epochs}",
                         file=self.stream, leave=False, dynamic_ncols=True,
                         disable=None if self.enabled else True)  # None: off when not a terminal

    def on_batch_end(self, state: FitState, images: int, loss_sum: Tensor, headline_sum: Tensor) -> None:
        if self._bar is None or self._bar.disable:
            return
        self._bar.update(images - self._shown)
        self._shown = images
        now = time.monotonic()
        if now - self._last_refresh >= self.refresh_seconds:
            self._last_refresh = now
            # Reading the sums waits for the device; doing it only twice a second keeps it cheap.
            running = {self.headline: f"{float(headline_sum) / images:.4f}"} if self.running_headline else {}
            self._bar.set_postfix(loss=f"{float(loss_sum) / images:.4f}", **running, refresh=False)

    def on_epoch_end(self, state: FitState, row: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._epoch_seconds.append(row["seconds"])
        if not self.enabled:
            return
        remaining = (state.epochs - row["epoch"]) * (sum(self._epoch_seconds) / len(self._epoch_seconds))
        headline = self.headline
        parts = [
            f"epoch {row['epoch']}/{state.epochs}",
            f"train loss {row['train_loss']:.4f}" +
            (f" {headline} {row[f'train_{headline}']:.4f}" if f"train_{headline}" in row else ""),
        ]
        if not math.isnan(row["val_loss"]):
            parts.append(f"val loss {row['val_loss']:.4f} {headline} {row[f'val_{headline}']:.4f}")
        parts.append(f"{row['seconds']:.1f}s, {row['images_per_s']:,.0f} img/s")
        if remaining > 0:
            parts.append(f"ETA {_format_duration(remaining)}")
        if state.improved:
            parts.append("best")
        print(" | ".join(parts), file=self.stream, flush=True)


class MetricsCsv:
    """metrics.csv: one row per epoch, rewritten whole (atomically) after each epoch."""

    def __init__(self, path: Path):
        self.path = path

    def on_epoch_end(self, state: FitState, row: dict[str, Any]) -> None:
        write_metrics_csv(self.path, state.history)


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({key: (f"{value:.6g}" if isinstance(value, float) else value) for key, value in row.items()})
    write_text_atomic(path, buffer.getvalue())


class TrainingCurves:
    """training_curves.png: loss and the headline metric per epoch, train and validation."""

    def __init__(self, path: Path, headline: str, loss_name: str = ""):
        self.path, self.headline, self.loss_name = path, headline, loss_name

    def on_epoch_end(self, state: FitState, row: dict[str, Any]) -> None:
        from cnnlab.train.curves import plot_training_curves

        plot_training_curves(state.history, self.headline, self.path, best_epoch=state.best_epoch,
                             loss_name=self.loss_name)


class EarlyStopping:
    """Stop when the validation loss has not improved for `patience` epochs (the trainer prints why
    the run stopped, whichever callback stopped it)."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_epoch_end(self, state: FitState, row: dict[str, Any]) -> None:
        if state.epochs_without_improvement >= self.patience:
            state.stop_reason = (f"early stopping: validation loss has not improved for {self.patience} "
                                 f"epoch(s); best was epoch {state.best_epoch}")


class Checkpointer:
    """weights/last.safetensors every epoch, weights/best.safetensors when validation loss improves,
    and weights/train-state.safetensors (model + optimizer + schedule + progress) for --resume."""

    def __init__(self, folder: Path, save: Callable[[Path, str, FitState], None], saved_epoch: int = 0):
        """`saved_epoch`: the epoch a resumed run's training state already holds (0 for a new run)."""
        self.folder, self.save = folder, save
        self.saved_epoch = saved_epoch  # the epoch --resume would continue after
        self._saved_stop_reason: str | None = None
        self._saved_any = False

    def on_epoch_end(self, state: FitState, row: dict[str, Any]) -> None:
        if state.improved:
            self.save(self.folder / "best.safetensors", "model", state)
        self.save(self.folder / "last.safetensors", "model", state)
        self._save_training_state(state)

    def on_train_end(self, state: FitState) -> None:
        # A callback after this one (the user's) may have ended the run once the epoch was saved:
        # record why, so that --resume can say the run had stopped. The weights are the same.
        if self._saved_any and state.stop_reason != self._saved_stop_reason:
            self._save_training_state(state)

    def _save_training_state(self, state: FitState) -> None:
        self.save(self.folder / "train-state.safetensors", "training", state)
        self._saved_stop_reason, self._saved_any = state.stop_reason, True
        self.saved_epoch = state.epoch
