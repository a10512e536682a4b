"""Flip test-time augmentation: the prediction averages the image's and its mirror image's probabilities."""

from __future__ import annotations

import json

import torch

import cnnlab
from tests.helpers import run_cli


def test_flip_tta_averages_probabilities(digits_split_folder, tmp_path):
    result = cnnlab.train(data=str(digits_split_folder), model="fast-cnn", image_size="16", epochs=2, tta="flip",
                          runs_dir=str(tmp_path), quiet=True)
    trained = cnnlab.load(result.run_dir)
    assert trained.tta == "flip"
    pixels = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    combined = torch.softmax(trained.outputs(pixels), dim=1)
    plain = cnnlab.load(result.run_dir, tta="none")
    expected = (torch.softmax(plain.outputs(pixels), 1) + torch.softmax(plain.outputs(pixels.flip(-1)), 1)) / 2
    torch.testing.assert_close(combined, expected, atol=1e-5, rtol=1e-4)

    with_tta = json.loads(run_cli("evaluate", result.run_dir, "--json").stdout)
    without = json.loads(run_cli("evaluate", result.run_dir, "--json", "--tta", "none").stdout)
    assert with_tta["tta"] == "flip" and without["tta"] == "none"


def test_explain_quotes_the_prediction_predict_makes(digits_split_folder, tmp_path):
    """explain (and the report's mistake cards) describe the prediction `predict` makes, test-time
    augmentation included, and Grad-CAM explains that class."""
    from cnnlab.explain.explain import explain

    result = cnnlab.train(data=str(digits_split_folder), model="fast-cnn-v2", image_size="16", epochs=2,
                          tta="flip", runs_dir=str(tmp_path), quiet=True)
    files = sorted((digits_split_folder / "test").rglob("*.png"))[:4]
    predicted = {row["file"]: row for row in cnnlab.predict(result.run_dir, [str(f) for f in files], device="cpu")}
    explained = explain(result.run_dir, files, output_dir=tmp_path / "explain", device="cpu")
    for file, explanation in zip(files, explained):
        row = predicted[str(file)]
        assert explanation.prediction == f"{row['label']} {row['confidence']:.1%}"
        assert explanation.target_label == row["label"]
        assert explanation.heading.endswith(f"Grad-CAM for {row['label']} (predicted)")
    # --class naming the predicted class is still "predicted" (the report's example passes the true
    # class of a correctly predicted image); another class is "asked for"
    first = predicted[str(files[0])]["label"]
    other = next(name for name in cnnlab.load(result.run_dir).class_names if name != first)
    same, different = (explain(result.run_dir, files[:1], target=name, output_dir=tmp_path / name, device="cpu")[0]
                       for name in (first, other))
    assert same.heading.endswith(f"Grad-CAM for {first} (predicted)")
    assert different.heading.endswith(f"Grad-CAM for {other} (asked for)")
