"""`cnnlab export` for the tasks whose outputs are maps, not class scores: a detector's heatmaps and
box sizes, a segmenter's class scores per pixel. The export asks the task nothing new: the file runs
in `cnnlab predict` and `evaluate` and answers exactly as the run does on the same arithmetic (fp32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cnnlab
from tests.conftest import FASHION_DIR, requires_fashion_mnist
from tests.helpers import run_cli

pytestmark = requires_fashion_mnist

SMALL = {"canvas": 64, "train_images": 48, "val_images": 16, "test_images": 8}
RUNS = {  # task -> (the data's writer, training arguments)
    "detection": ("cnnlab.data.canvases:write_fashion_canvases", dict(batch_size=16)),
    "segmentation": ("cnnlab.data.mask_canvases:write_mask_canvases", dict(model="unet-small", batch_size=16)),
}


def _write(writer: str, root: Path) -> Path:
    from importlib import import_module

    module, name = writer.split(":")
    return getattr(import_module(module), name)(root, fashion_mnist_dir=FASHION_DIR, **SMALL)


@pytest.fixture(scope="module", params=sorted(RUNS))
def run_and_data(request, tmp_path_factory) -> tuple[Path, Path]:
    task = request.param
    writer, arguments = RUNS[task]
    folder = tmp_path_factory.mktemp(f"export-{task}")
    data = _write(writer, folder / "data")
    run = cnnlab.train(data=str(data), task=task, epochs=1, seed=0, device="cpu", runs_dir=str(folder / "runs"),
                       name=task, quiet=True, **arguments).run_dir
    return run, data


def test_the_exported_file_predicts_and_evaluates_as_the_run(run_and_data, tmp_path):
    run, data = run_and_data
    outcome = run_cli("export", run, "--output", tmp_path / "model.onnx")
    assert outcome.exit_code == 0, outcome.stderr
    check = outcome.stdout.splitlines()[0]
    assert check.startswith("export check on 16 images (the run's validation images")
    assert float(check.split("max |Δ| ")[1].split()[0]) < 1e-4

    images = sorted((data / "images" / "test").glob("*.png"))
    rows = {}
    for name, model, precision in [("run", run, ["--precision", "fp32"]), ("onnx", tmp_path / "model.onnx", [])]:
        predicted = run_cli("predict", model, *images, "-o", tmp_path / f"{name}.csv", *precision)
        assert predicted.exit_code == 0, predicted.stderr
        rows[name] = (tmp_path / f"{name}.csv").read_text()
    assert len(rows["run"].splitlines()) > len(images)  # a row per box or per class present, not per image
    assert rows["onnx"] == rows["run"]

    scores = {}
    for name, model, precision in [("run", run, ["--precision", "fp32"]), ("onnx", tmp_path / "model.onnx", [])]:
        evaluated = run_cli("evaluate", model, "--data", data, "--split", "test", "--json", *precision)
        assert evaluated.exit_code == 0, evaluated.stderr
        scores[name] = json.loads(evaluated.stdout)
    headline = {"detection": "map", "segmentation": "miou"}[run.name]  # each run is named after its task
    assert scores["onnx"]["images"] == scores["run"]["images"] == SMALL["test_images"]
    assert scores["onnx"][headline] == pytest.approx(scores["run"][headline], abs=1e-9)
