"""`cnnlab export`: ONNX and TorchScript files that agree with the PyTorch model on real images,
carry their own metadata, and run in `cnnlab predict` / `evaluate` like the run they came from.

Three tiny Fashion-MNIST runs are trained once for the module (guide-cnn, the YAML network
examples/fast3.yaml, resnet18 at 32×32 without pretrained weights); each export is made once
(`exported`) and shared by the tests that read it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.errors import CnnlabError
from tests.conftest import FASHION_DIR, requires_fashion_mnist
from tests.helpers import run_cli

pytestmark = requires_fashion_mnist

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUNS = {  # name -> training arguments: a tiny run of each kind of network
    "guide-cnn": dict(model="guide-cnn", limit=200),
    "yaml": dict(model=str(EXAMPLES / "fast3.yaml"), limit=200),
    "resnet18": dict(model="resnet18", limit=64, batch_size=64, image_size="32"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export-runs")
    return {name: cnnlab.train(data="fashion-mnist", epochs=1, device="cpu", runs_dir=str(folder), name=name,
                               quiet=True, **arguments).run_dir
            for name, arguments in RUNS.items()}


@pytest.fixture(scope="module")
def test_images(tmp_path_factory) -> list[Path]:
    """The first 24 Fashion-MNIST test images as PNG files (images no run trained on)."""
    import gzip

    from PIL import Image

    folder = tmp_path_factory.mktemp("fashion-test-images")
    with gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz") as handle:
        pixels = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:24]
    paths = [folder / f"test-{index:02d}.png" for index in range(len(pixels))]
    for path, image in zip(paths, pixels):
        Image.fromarray(image).save(path)
    return paths


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """exported(run, *flags) → (path, the command's stdout): each distinct export made once."""
    made: dict[tuple, tuple[Path, str]] = {}
    folder = tmp_path_factory.mktemp("exports")

    def export(name: str, *flags: str, suffix: str = ".onnx") -> tuple[Path, str]:
        key = (name, flags, suffix)
        if key not in made:
            path = folder / f"{name}{''.join(flags).replace('-', '_')}{suffix}"
            outcome = run_cli("export", runs[name], "--output", path, *flags)
            assert outcome.exit_code == 0, outcome.stderr
            made[key] = (path, outcome.stdout)
        return made[key]

    return export


def pixels_of(paths: list[Path], size: int) -> torch.Tensor:
    """uint8 (N, 1, size, size), decoded and resized with Pillow: independent of cnnlab's decoder."""
    from PIL import Image

    arrays = [np.asarray(Image.open(path).convert("L").resize((size, size), Image.Resampling.BILINEAR))
              for path in paths]
    return torch.from_numpy(np.stack(arrays)[:, None])


def max_difference(outputs: torch.Tensor, reference: torch.Tensor) -> float:
    return float((outputs - reference).abs().max())


def pytorch_outputs(run: Path, images: torch.Tensor) -> torch.Tensor:
    trained = cnnlab.load(run, device="cpu", precision="fp32", tta="none")
    with torch.inference_mode():
        return trained.model(trained.normalizer()(images)).float()


def onnxruntime_outputs(path: Path, images: torch.Tensor) -> torch.Tensor:
    """The file run by ONNX Runtime directly, uint8 pixels in, as any user would."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


@pytest.mark.parametrize("name", list(RUNS))
def test_onnx_export_agrees_with_pytorch_on_real_images(name, runs, exported, test_images):
    path, stdout = exported(name)
    assert "top-1 agreement 100.0%" in stdout and f"exported {path} (onnx, fp32 weights" in stdout
    size = 32 if name == "resnet18" else 28
    images = pixels_of(test_images, size)
    reference = pytorch_outputs(runs[name], images)
    for batch in (images[:1], images):  # the batch axis is dynamic: one image and 24 alike
        outputs = onnxruntime_outputs(path, batch)
        assert outputs.dtype == torch.float32 and outputs.shape == (len(batch), 10)
        assert torch.equal(outputs.argmax(1), reference[: len(batch)].argmax(1))
        scale = max(1.0, float(reference.abs().max()))
        assert float((outputs - reference[: len(batch)]).abs().max()) <= 1e-4 * scale


def test_the_metadata_alone_rebuilds_the_model_info_and_task(runs, exported):
    import onnx

    from cnnlab.export.metadata import read_metadata
    from cnnlab.tasks import task_from_json

    path, _ = exported("guide-cnn")
    trained = cnnlab.load(runs["guide-cnn"], device="cpu")
    props = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    assert json.loads(props["class_names"]) == trained.class_names
    assert json.loads(props["input_size"]) == [28, 28]
    assert props["channels"] == "1" and props["fit"] == "squash"
    assert json.loads(props["mean"]) == pytest.approx(list(trained.input.mean))
    assert json.loads(props["std"]) == pytest.approx(list(trained.input.std))
    assert props["architecture"] == "guide-cnn" and props["cnnlab_version"] == cnnlab.__version__
    assert task_from_json(json.loads(props["task"])).class_names == trained.class_names
    metadata = read_metadata(path)
    assert metadata.info.to_json() == trained.info.to_json()
    assert metadata.export["input"] == {"name": "images", "dtype": "uint8", "layout": "NCHW",
                                        "normalized_in_graph": True, "dynamic_axes": ["batch"]}
    assert metadata.export["weights"] == "fp32"
    assert metadata.export["exporter"] == "torch.onnx.export(dynamo=True)"
    assert isinstance(metadata.export["opset"], int) and metadata.export["opset"] >= 18


def test_predict_and_evaluate_on_the_onnx_file_answer_as_the_run(runs, exported, test_images, tmp_path):
    path, _ = exported("guide-cnn")
    run = runs["guide-cnn"]
    from_run = run_cli("predict", run, *test_images, "--precision", "fp32", "--top-k", "3",
                       "-o", tmp_path / "r.json")
    from_file = run_cli("predict", path, *test_images, "--top-k", "3", "-o", tmp_path / "f.json")
    assert from_run.exit_code == from_file.exit_code == 0, from_file.stderr
    rows, file_rows = (json.loads((tmp_path / name).read_text()) for name in ("r.json", "f.json"))
    assert [row["label"] for row in file_rows] == [row["label"] for row in rows]
    assert [[entry["label"] for entry in row["top_k"]] for row in file_rows] == \
        [[entry["label"] for entry in row["top_k"]] for row in rows]
    assert max(abs(a["confidence"] - b["confidence"]) for a, b in zip(rows, file_rows)) < 1e-5

    scores = {}
    for source, flags in ((run, ["--precision", "fp32", "--output-dir", tmp_path / "run"]), (path, [])):
        outcome = run_cli("evaluate", source, "--limit", "200", "--json", *flags)
        assert outcome.exit_code == 0, outcome.stderr
        scores[source] = json.loads(outcome.stdout)
    assert scores[path]["accuracy"] == scores[run]["accuracy"] and scores[path]["images"] == 200
    assert scores[path]["checkpoint"] == str(path)
    beside_the_file = path.parent / f"eval-{path.name}-fashion-mnist-test"  # files side by side kept apart
    table, file_table = (_csv_rows(folder / "predictions.csv")
                         for folder in (tmp_path / "run", beside_the_file))
    assert [row["predicted_label"] for row in file_table] == [row["predicted_label"] for row in table]
    assert max(abs(float(a["confidence"]) - float(b["confidence"])) for a, b in zip(table, file_table)) < 1e-5

    # test-time flip on the file is the run's: the mirror image's probabilities averaged in
    images = pixels_of(test_images[:6], 28)
    flipped_file = cnnlab.load(path, tta="flip").outputs(images)
    flipped_run = cnnlab.load(run, tta="flip", precision="fp32", device="cpu").outputs(images)
    assert float((flipped_file - flipped_run).abs().max()) < 1e-4


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_torchscript_export_agrees_and_predicts(runs, exported, test_images):
    from cnnlab.export.metadata import read_metadata

    path, stdout = exported("yaml", "--format", "torchscript", suffix=".pt")
    assert "top-1 agreement 100.0%" in stdout and "(torchscript, fp32 weights" in stdout
    images = pixels_of(test_images, 28)
    loaded = cnnlab.load(path)
    assert loaded.format == "torchscript" and loaded.class_names == cnnlab.load(runs["yaml"]).class_names
    reference = pytorch_outputs(runs["yaml"], images)
    assert max_difference(loaded.outputs(images), reference) <= 1e-4 * max(1.0, float(reference.abs().max()))
    assert read_metadata(path).info.architecture.short_name == "fast3"
    rows = cnnlab.predict(path, test_images)
    assert [row["label"] for row in rows] == [row["label"] for row in
                                              cnnlab.predict(runs["yaml"], test_images, precision="fp32")]


def test_fp16_and_optimized_files_work(runs, exported, test_images):
    import onnx

    plain, _ = exported("yaml")
    half, stdout = exported("yaml", "--fp16")
    assert "(onnx, fp16 weights" in stdout and "top-1 agreement 100.0%" in stdout
    model = onnx.load(str(half))
    kinds = [initializer.data_type for initializer in model.graph.initializer if len(initializer.dims) == 4]
    assert kinds and set(kinds) == {onnx.TensorProto.FLOAT16}  # every convolution's weights
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert 0.4 < half.stat().st_size / plain.stat().st_size < 0.6
    loaded = cnnlab.load(half)
    assert loaded.export["weights"] == "fp16" and loaded.export["optimized"] is False
    images = pixels_of(test_images, 28)
    reference = pytorch_outputs(runs["yaml"], images)
    outputs = loaded.outputs(images)
    assert 0 < float((outputs - reference).abs().max()) <= 1e-2 * max(1.0, float(reference.abs().max()))
    assert (outputs.argmax(1) == reference.argmax(1)).float().mean() >= 0.9  # near ties may flip in float16

    optimized, stdout = exported("yaml", "--optimize")
    assert "top-1 agreement 100.0%" in stdout
    kinds = {node.op_type for node in onnx.load(str(optimized)).graph.node}
    assert "FusedConv" in kinds and "Relu" not in kinds  # ONNX Runtime's conv + activation in one node
    assert "Relu" in {node.op_type for node in onnx.load(str(plain)).graph.node}
    optimized_model = cnnlab.load(optimized)
    assert optimized_model.export["optimized"] is True
    scale = max(1.0, float(reference.abs().max()))
    assert max_difference(optimized_model.outputs(images), reference) <= 1e-4 * scale


def test_an_export_that_disagrees_fails_the_check_and_leaves_no_file(runs, exported, tmp_path):
    import onnx

    from cnnlab.export.check import check_images, compare, require_passed
    from cnnlab.export.exported import onnx_runner

    target = tmp_path / "strict.onnx"
    outcome = run_cli("export", runs["guide-cnn"], "--fp16", "--tolerance", "0", "--output", target)
    assert outcome.exit_code == 2
    assert f"so {target} was not written" in outcome.stderr and "max |Δ|" in outcome.stderr
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary folder

    # a weight changed in the file after export: the check names the figures
    path, _ = exported("guide-cnn")
    model = onnx.load(str(path))
    weights = next(item for item in model.graph.initializer if len(item.dims) == 4)
    values = onnx.numpy_helper.to_array(weights).copy()
    values *= -1.0
    weights.CopyFrom(onnx.numpy_helper.from_array(values, weights.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    trained = cnnlab.load(runs["guide-cnn"], device="cpu", precision="fp32", tta="none")
    images, source = check_images(trained, 16)
    result = compare(trained, onnx_runner(broken, "cpu"), images, source, tolerance=1e-4)
    assert not result.passed and result.max_abs_diff > 1e-2 and result.images == 16
    with pytest.raises(CnnlabError, match=r"disagrees with the PyTorch model.*max \|Δ\|.*top-1 agreement"):
        require_passed(result, broken)


def test_a_file_cnnlab_did_not_write_is_replaced_only_with_force(runs, tmp_path):
    mine = tmp_path / "model.pt"
    mine.write_bytes(b"my own model")
    export = ("export", runs["guide-cnn"], "--format", "torchscript", "--output", mine)
    refused = run_cli(*export)
    assert refused.exit_code == 2 and "a file cnnlab did not export is there" in refused.stderr
    assert mine.read_bytes() == b"my own model"
    assert run_cli(*export, "--force").exit_code == 0
    assert cnnlab.load(mine).class_names[0] == "T-shirt/top"
    again = run_cli(*export, "--check-images", "4")  # cnnlab's own file: replaced without --force
    assert again.exit_code == 0 and "export check on 4 images" in again.stdout
    wrong = run_cli("export", runs["guide-cnn"], "--output", tmp_path / "model.pt")
    assert wrong.exit_code == 2 and "an onnx file's name ends in .onnx" in wrong.stderr


def test_what_an_exported_file_cannot_do_is_said_clearly(runs, exported, test_images, monkeypatch, tmp_path):
    import sys

    import onnx

    path, _ = exported("guide-cnn")
    explained = run_cli("explain", path, test_images[0])
    assert explained.exit_code == 2
    assert "explain needs the run folder it was exported from" in explained.stderr
    assert "--precision bf16" in run_cli("predict", path, test_images[0], "--precision", "bf16").stderr
    assert "export takes the run folder" in run_cli("export", path).stderr

    plain = tmp_path / "plain.onnx"  # an ONNX file of someone else's: no cnnlab metadata
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    tensor = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [tensor("x", onnx.TensorProto.FLOAT, [1])],
                                   [tensor("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(plain))
    with pytest.raises(CnnlabError, match="not a model cnnlab exported"):
        cnnlab.load(plain)
    pickled = tmp_path / "weights.pt"  # torch.save's zip of pickles: refused before anything is unpickled
    torch.save({"weight": torch.ones(2)}, pickled)
    with pytest.raises(CnnlabError, match="not a model cnnlab exported"):
        cnnlab.load(pickled)

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as on a machine without the extra
    with pytest.raises(CnnlabError, match=r"pip install 'cnnlab\[export\]'"):
        cnnlab.load(path)
