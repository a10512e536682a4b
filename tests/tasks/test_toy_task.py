"""A task written outside cnnlab goes through train → evaluate → predict → explain → report.

The toy task, "where is the digit?", predicts one point per image: the centre of a small digit
pasted somewhere on a larger canvas. It is deliberately unlike classification: its targets are
positions in the image (they must move when augmentation shifts the pixels, and be scaled when
images are resized), its answer is in each file's own pixels, and its headline (the mean distance
in pixels) is lower-is-better. It plugs in as one class registered in `cnnlab.tasks.TASKS`; nothing
in cnnlab's loop, evaluate, predict, explain or report knows it exists. docs/architecture.md walks
through it as the example of adding a task.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import torch
from torch import Tensor

import cnnlab
from cnnlab.data.source import Source
from cnnlab.errors import ConfigError
from cnnlab.report.html import Section, paragraph, table
from cnnlab.tasks import TASKS
from cnnlab.tasks.base import ExplainTarget, ReportContext, Task
from cnnlab.tasks.vector import SumMeter

CANVAS, DIGIT = 24, 16


class PointTargets:
    """One (x, y) per image in the image's own pixels: a target container (cnnlab.data.targets)."""

    def __init__(self, points: np.ndarray):
        self.points = np.asarray(points, dtype=np.float32).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: np.ndarray) -> "PointTargets":
        return PointTargets(self.points[index])

    def dense(self, origins: Sequence[tuple[int, int]], geometry: Any) -> Tensor:
        # The task only takes --fit squash (see for_training): each axis is scaled on its own.
        scale = np.array([geometry.width, geometry.height], np.float32) / np.asarray(origins, np.float32)
        return torch.from_numpy(self.points * scale)

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.zeros(num_classes, dtype=np.int64)


def to_unit(points: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixels → the −1..1 coordinates `F.affine_grid(align_corners=False)` uses."""
    height, width = size
    return torch.stack([2 * points[:, 0] / width - 1, 2 * points[:, 1] / height - 1], dim=1)


def to_pixels(unit: Tensor, size: tuple[int, int]) -> Tensor:
    height, width = size
    return torch.stack([(unit[:, 0] + 1) * width / 2, (unit[:, 1] + 1) * height / 2], dim=1)


class PointMeter:
    def __init__(self, size: tuple[int, int]):
        self.size, self.sums = size, SumMeter(["images", "distance"])

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        distance = (to_pixels(outputs.float(), self.size) - targets).norm(dim=1).sum()
        self.sums.add(torch.tensor(float(len(targets)), device=outputs.device), distance)

    def compute(self) -> dict[str, Any]:
        totals = self.sums.totals()
        return {"images": int(totals["images"]), "pixel_error": totals["distance"] / max(totals["images"], 1)}


class WhereIsTheDigit(Task):
    name = "toy-point"
    description = "where is the digit: one (x, y) per image"
    headline_name = "pixel_error"
    headline_higher_is_better = False
    loss_name = "smooth L1 of the position"
    moves_with_image = True
    per_image_headline = True

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    @classmethod
    def open_data(cls, spec, *, split="train", data_dir=None) -> Source:
        """A CSV of path,x,y (x, y in the image's own pixels)."""
        rows = list(csv.DictReader(Path(spec).read_text().splitlines()))
        paths = [Path(spec).parent / row["path"] for row in rows]
        points = np.array([[float(row["x"]), float(row["y"])] for row in rows], np.float32)
        return Source(f"{spec} ({len(rows)} images)", [str(p) for p in paths], PointTargets(points),
                      target_names=["x", "y"], paths=paths)

    @classmethod
    def for_training(cls, source, config=None) -> "WhereIsTheDigit":
        if config is not None and config.fit != "squash":
            raise ConfigError("the toy task scales points axis by axis: use --fit squash")
        size = cnnlab.config.parse_image_size(config.image_size) if config and config.image_size else (CANVAS, CANVAS)
        return cls(size)

    def move_targets(self, targets: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
        # theta maps output coordinates to input ones: in = A·out + b, so out = A⁻¹·(in − b).
        moved = torch.linalg.solve(theta[:, :, :2], (to_unit(targets, size) - theta[:, :, 2]).unsqueeze(-1))
        return to_pixels(moved.squeeze(-1), size)

    def build_model(self, architecture, *, in_channels, image_size):
        from cnnlab.models.build import build_model

        return build_model(architecture, in_channels=in_channels, num_outputs=2, image_size=image_size)

    def describe_outputs(self) -> str:
        return "2 values (x, y)"

    @property
    def output_names(self) -> list[str]:
        return ["x", "y"]

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return torch.nn.functional.smooth_l1_loss(outputs.float(), to_unit(targets, self.size))

    def describe_loss(self) -> str:
        return "loss: smooth L1 of the position in −1..1 image coordinates"

    def headline_sum(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (to_pixels(outputs.float(), self.size) - targets).norm(dim=1).sum()

    def meter(self, *, full: bool = True) -> PointMeter:
        return PointMeter(self.size)

    def predictions(self, outputs, *, top_k=1, origins=None) -> list[dict[str, Any]]:
        points = to_pixels(outputs.float().cpu(), self.size)
        height, width = self.size
        origins = origins or [(width, height)] * len(points)
        return [{"x": float(x) * ow / width, "y": float(y) * oh / height}
                for (x, y), (ow, oh) in zip(points.tolist(), origins)]

    def table_line(self, prediction, top_k=1) -> str:
        return f"x = {prediction['x']:.1f}, y = {prediction['y']:.1f}"

    def csv_columns(self, predictions) -> list[str]:
        return ["x", "y"]

    def csv_lines(self, prediction, columns) -> list[list[str]]:
        return [[f"{prediction[column]:.2f}" for column in columns]]

    def prediction_table(self, outputs, targets, origins=None):
        points = to_pixels(outputs.float().cpu(), self.size)
        return ["true_x", "true_y", "x", "y"], [[[f"{v:.2f}" for v in (*truth, *guess)]]
                                                 for truth, guess in zip(targets.tolist(), points.tolist())]

    def explain_target(self, outputs, choice=None) -> ExplainTarget:
        return ExplainTarget("x", lambda scores: scores[0, 0])

    def plots(self, metrics, meter, folder: Path) -> list[Path]:
        return []

    def summary_line(self, metrics) -> str:
        return f"mean distance {metrics['pixel_error']:.2f} px on {metrics['images']} images"

    def report_sections(self, context: ReportContext) -> list[Section]:
        metrics = context.evaluation.metrics
        body = paragraph(self.summary_line(metrics)) + table(["metric", "value"],
                                                              [("pixel_error", f"{metrics['pixel_error']:.3f}")])
        return [Section("where", "Where the digit is", body)]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": list(self.size)}

    @classmethod
    def from_json(cls, values) -> "WhereIsTheDigit":
        return cls(tuple(values["size"]))


@pytest.fixture
def toy_task():
    TASKS.add(WhereIsTheDigit.name, f"{__name__}:WhereIsTheDigit", description=WhereIsTheDigit.description)
    yield WhereIsTheDigit
    TASKS.remove(WhereIsTheDigit.name)


def write_canvases(folder: Path, count: int, seed: int) -> Path:
    """Digits (scikit-learn's, 8×8 → 16×16) pasted at random places on 24×24 canvases, with a CSV of
    each digit's centre."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = np.rint(load_digits().images * (255 / 16)).astype(np.uint8)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = ["path,x,y"]
    for index in range(count):
        canvas = np.zeros((CANVAS, CANVAS), np.uint8)
        left, top = rng.integers(0, CANVAS - DIGIT + 1, size=2)
        digit = np.kron(digits[rng.integers(len(digits))], np.ones((2, 2), np.uint8))
        canvas[top:top + DIGIT, left:left + DIGIT] = digit
        Image.fromarray(canvas).save(folder / f"{index:04d}.png")
        lines.append(f"{index:04d}.png,{left + DIGIT / 2},{top + DIGIT / 2}")
    (folder / "points.csv").write_text("\n".join(lines) + "\n")
    return folder / "points.csv"


def test_augmentation_moves_the_point_with_the_pixels():
    """A bright pixel's place after a random shift and zoom is where the task moved its point."""
    from cnnlab.data.augment import build_augmentation

    torch.manual_seed(0)
    task = WhereIsTheDigit((CANVAS, CANVAS))
    images = torch.zeros(16, 1, CANVAS, CANVAS)
    rows, columns = torch.randint(6, 18, (16,)), torch.randint(6, 18, (16,))
    images[torch.arange(16), 0, rows, columns] = 255.0
    points = torch.stack([columns + 0.5, rows + 0.5], dim=1).float()  # pixel centres
    moved_images, moved = build_augmentation("light", task.move_targets).apply(images, points)
    brightest = moved_images.flatten(1).argmax(dim=1)
    found = torch.stack([brightest % CANVAS + 0.5, brightest // CANVAS + 0.5], dim=1).float()
    assert (found - moved).abs().max() <= 1.0  # bilinear resampling spreads a pixel over its neighbours
    assert (moved - points).abs().max() > 1.0  # and the points did move


@pytest.mark.slow
def test_a_task_from_outside_goes_through_every_command(toy_task, tmp_path):
    train_csv = write_canvases(tmp_path / "train", 600, seed=0)
    test_csv = write_canvases(tmp_path / "test", 100, seed=1)
    result = cnnlab.train(data=str(train_csv), task="toy-point", model="guide-cnn", epochs=6, batch_size=32,
                          augment="light", lr=0.002, runs_dir=str(tmp_path / "runs"), quiet=True)
    assert "train_pixel_error" in result.history[-1] and "val_pixel_error" in result.history[-1]

    evaluation = cnnlab.evaluate(result.run_dir, str(test_csv), quiet=True)
    # Guessing the canvas centre is off by 3.55 px on average here; trained, the network finds the digit
    # to within 0.71-0.79 px (seeds 0-2, fp32).
    baseline = np.mean([np.hypot(float(r["x"]) - 12, float(r["y"]) - 12)
                        for r in csv.DictReader(test_csv.read_text().splitlines())])
    assert baseline > 3.0
    assert evaluation.metrics["pixel_error"] < 0.4 * baseline
    assert evaluation.summary.startswith("mean distance")
    lines = (evaluation.output_dir / "predictions.csv").read_text().splitlines()
    assert lines[0] == "file,true_x,true_y,x,y" and len(lines) == 101

    rows = cnnlab.predict(result.run_dir, [str(test_csv.parent / "0000.png")])
    assert set(rows[0]) == {"file", "x", "y"} and 0 <= rows[0]["x"] <= CANVAS
    assert rows.table().endswith(f"x = {rows[0]['x']:.1f}, y = {rows[0]['y']:.1f}")

    from cnnlab.explain.explain import explain
    from cnnlab.report.report import report

    explained = explain(result.run_dir, [test_csv.parent / "0001.png"], output_dir=tmp_path / "explain")
    assert explained[0].files["gradcam"].is_file() and explained[0].target_label == "x"
    page = report(result.run_dir, data=str(test_csv), quiet=True).read_text()
    assert 'id="where"' in page and "mean distance" in page
