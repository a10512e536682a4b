"""--threshold CLASS=P: answer CLASS whenever its probability reaches P (a diagnosis model's operating
point), in evaluate and predict."""

from __future__ import annotations

import json

import pytest
import torch

import cnnlab
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.tasks.classification import Classification
from tests.helpers import run_cli


def test_the_threshold_class_wins_from_its_threshold_on_and_otherwise_the_most_probable_other():
    task = Classification(["cat", "dog", "fox"])
    probabilities = torch.tensor([[0.70, 0.25, 0.05],   # dog below 0.3: the most probable, cat
                                  [0.59, 0.31, 0.10],   # dog above 0.3: dog
                                  [0.10, 0.20, 0.70],   # dog below: fox, the most probable other
                                  [0.05, 0.90, 0.05]])  # dog anyway
    outputs = probabilities.log()
    assert task.decide(outputs).tolist() == [0, 0, 2, 1]
    task.set_threshold("dog=0.3")
    assert task.decide(outputs).tolist() == [0, 1, 2, 1]
    rows = task.predictions(outputs, top_k=2)
    assert [row["label"] for row in rows] == ["cat", "dog", "fox", "dog"]
    assert rows[1]["confidence"] == pytest.approx(0.31) and rows[1]["top_k"][1]["label"] == "cat"
    task.set_threshold(None)
    assert task.decide(outputs).tolist() == [0, 0, 2, 1]


@pytest.mark.parametrize("spec, message", [("dog", "CLASS=PROBABILITY"), ("dog=1.5", "between 0 and 1"),
                                           ("dog=0", "between 0 and 1"), ("dog=much", "between 0 and 1"),
                                           ("wolf=0.3", "there is no class 'wolf'; the classes are cat, dog, fox")])
def test_a_wrong_threshold_is_named(spec, message):
    with pytest.raises(ConfigError, match=message):
        Classification(["cat", "dog", "fox"]).set_threshold(spec)


@pytest.fixture(scope="module")
def digits_run(digits_split_folder, tmp_path_factory):
    return cnnlab.train(data=str(digits_split_folder), model="fast-cnn-v2", image_size="16", epochs=1,
                        runs_dir=str(tmp_path_factory.mktemp("runs")), quiet=True, device="cpu").run_dir


def test_a_low_threshold_finds_more_of_the_class_for_more_false_alarms(digits_run):
    plain = cnnlab.evaluate(digits_run, quiet=True, device="cpu", precision="fp32")
    eager = cnnlab.evaluate(digits_run, threshold="8=0.02", quiet=True, device="cpu", precision="fp32")
    before, after = plain.metrics["per_class"]["8"], eager.metrics["per_class"]["8"]
    assert after["recall"] >= before["recall"] and after["precision"] < before["precision"]
    matrix = torch.tensor(eager.metrics["confusion_matrix"]["matrix"])
    assert int(matrix[:, 8].sum()) > int(torch.tensor(plain.metrics["confusion_matrix"]["matrix"])[:, 8].sum())
    assert eager.metrics["roc_auc"] == plain.metrics["roc_auc"]  # the ranking is the same model's
    assert eager.metrics["threshold"] == {"class": "8", "probability": 0.02}
    assert eager.output_dir.name == "eval-digits-test-8-0.02" and plain.output_dir.name == "eval-digits-test"
    assert "(answering 8 at probability ≥ 0.02)" in eager.summary


def test_predict_answers_with_the_threshold_and_leaves_a_loaded_model_as_it_was(digits_run, digits_split_folder):
    files = [str(path) for path in sorted((digits_split_folder / "test").rglob("*.png"))[:60]]
    trained = cnnlab.load(digits_run, device="cpu", precision="fp32")
    plain = cnnlab.predict(trained, files, top_k=10)  # every probability
    eager = cnnlab.predict(trained, files, threshold="8=0.02")
    for before, after in zip(plain, eager):
        eight = next((entry["confidence"] for entry in before["top_k"] if entry["label"] == "8"), 0.0)
        if eight >= 0.02:
            assert after["label"] == "8"
        else:
            assert after["label"] == before["label"]
    assert sum(row["label"] == "8" for row in eager) > sum(row["label"] == "8" for row in plain)
    assert trained.task.threshold is None and cnnlab.predict(trained, files) == [
        {key: row[key] for key in ("file", "label", "confidence")} | {"top_k": row["top_k"][:1]} for row in plain]

    outcome = run_cli("predict", digits_run, *files[:5], "--threshold", "8=0.02", "--device", "cpu",
                      "-o", digits_run / "p.json")
    assert outcome.exit_code == 0, outcome.stderr
    assert [row["label"] for row in json.loads((digits_run / "p.json").read_text())] == [
        row["label"] for row in eager[:5]]


def test_a_regression_model_refuses_a_threshold(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = ["path,brightness"]
    for index in range(24):
        level = int(rng.integers(0, 256))
        Image.new("L", (12, 12), level).save(tmp_path / f"{index}.png")
        lines.append(f"{index}.png,{level / 255:.4f}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    result = cnnlab.train(data=str(tmp_path / "labels.csv"), task="regression", model="fast-cnn-v2", epochs=1,
                          runs_dir=str(tmp_path / "runs"), quiet=True, device="cpu")
    with pytest.raises(CnnlabError, match="--threshold: not an option of a regression model"):
        cnnlab.predict(result.run_dir, [str(tmp_path / "0.png")], threshold="x=0.5")
