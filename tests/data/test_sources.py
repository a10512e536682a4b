"""`--data` resolution: class folders, split folders, CSV files, IDX files, named datasets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.pipeline import limit_source
from cnnlab.data.sources import open_data
from cnnlab.errors import DataError
from tests.conftest import FASHION_DIR, requires_fashion_mnist


def _image(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6), value, dtype=np.uint8)).save(path)


def test_class_folders_give_sorted_classes_and_targets(digits_folder):
    source = open_data(digits_folder)
    assert source.class_names == [str(d) for d in range(10)]
    assert len(source) == 1797
    assert source.class_counts()["0"] == 178  # scikit-learn's digits: 178 zeros
    # every file's target is its folder
    for name, target in zip(source.names[::97], source.targets[::97]):
        assert f"/{target}/" in name


def test_non_image_and_hidden_files_are_ignored(tmp_path):
    _image(tmp_path / "cats" / "a.png")
    _image(tmp_path / "dogs" / "b.png")
    (tmp_path / "dogs" / "README.txt").write_text("notes")
    _image(tmp_path / "dogs" / ".hidden.png")
    source = open_data(tmp_path)
    assert [p.name for p in source.paths] == ["a.png", "b.png"]


def test_split_folders_are_chosen_with_split(tmp_path):
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        for i in range(count):
            _image(tmp_path / split / "cat" / f"{i}.png")
            _image(tmp_path / split / "dog" / f"{i}.png")
    assert len(open_data(tmp_path)) == 6
    assert len(open_data(tmp_path, split="val")) == 4
    assert len(open_data(tmp_path, split="test")) == 2
    with pytest.raises(DataError, match="choose one of"):
        open_data(tmp_path, split="holdout")


def test_csv_classification_with_relative_paths_and_numeric_labels(tmp_path):
    for i in range(4):
        _image(tmp_path / "img" / f"{i}.png")
    (tmp_path / "labels.csv").write_text("path,label\nimg/0.png,10\nimg/1.png,2\nimg/2.png,2\nimg/3.png,10\n")
    source = open_data(tmp_path / "labels.csv")
    assert source.class_names == ["2", "10"]  # numeric order, not "10" < "2"
    assert source.targets.tolist() == [1, 0, 0, 1]
    assert source.paths[0] == tmp_path / "img" / "0.png"


def test_csv_regression_with_several_targets(tmp_path):
    (tmp_path / "t.csv").write_text("file,angle,scale\na.png,12.5,1\nb.png,-3,0.5\n")
    source = open_data(tmp_path / "t.csv", task="regression")
    assert source.target_names == ["angle", "scale"]
    np.testing.assert_allclose(source.targets, [[12.5, 1.0], [-3.0, 0.5]])
    assert source.targets.dtype == np.float32


@pytest.mark.parametrize("text, message", [
    ("path,label,extra\na.png,1,2\n", "exactly two columns"),
    ("path,label\n", "at least one data row"),
    ("path,label\na.png\n", "line 2: 1 columns"),
])
def test_bad_classification_csv(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        open_data(tmp_path / "bad.csv")


def test_regression_csv_with_a_non_number_names_line_and_column(tmp_path):
    (tmp_path / "t.csv").write_text("path,angle\na.png,1\nb.png,north\n")
    with pytest.raises(DataError, match=r"line 3: angle = 'north' is not a number"):
        open_data(tmp_path / "t.csv", task="regression")


def test_regression_on_class_folders_is_refused(digits_folder):
    with pytest.raises(DataError, match="regression needs numeric targets"):
        open_data(digits_folder, task="regression")


def test_regression_on_a_flat_folder_asks_for_a_csv_not_for_class_folders(tmp_path):
    (tmp_path / "scans").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "scans" / "a.png")
    with pytest.raises(DataError) as caught:
        open_data(tmp_path / "scans", task="regression")
    message = str(caught.value)
    assert "regression needs numeric targets from a CSV of path,target" in message
    assert f"{tmp_path / 'scans'}/img001.png,4.2" in message and "expected one sub-folder" not in message


def test_missing_path_names_it_and_lists_named_datasets(tmp_path):
    with pytest.raises(DataError) as caught:
        open_data(tmp_path / "nowhere")
    assert "nowhere" in str(caught.value) and "fashion-mnist" in str(caught.value)


def test_folder_without_class_folders(tmp_path):
    _image(tmp_path / "loose.png")
    with pytest.raises(DataError, match="one sub-folder per class"):
        open_data(tmp_path)


@requires_fashion_mnist
def test_idx_images_file_finds_its_labels(tmp_path):
    source = open_data(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    assert len(source) == 10_000 and source.pixels.shape == (10_000, 28, 28)
    assert np.bincount(source.targets).tolist() == [1000] * 10


@requires_fashion_mnist
def test_named_dataset_and_limit_is_stratified_and_seeded():
    source = open_data("fashion-mnist", split="train")
    small = limit_source(source, 1000, seed=3)
    assert len(small) == 1000
    assert np.bincount(small.targets).tolist() == [100] * 10
    again = limit_source(source, 1000, seed=3)
    assert list(small.names) == list(again.names)
    other = limit_source(source, 1000, seed=4)
    assert list(small.names) != list(other.names)


def test_training_on_one_class_is_refused_before_any_image_is_decoded(digits_folder, tmp_path):
    import shutil

    from tests.helpers import run_cli

    shutil.copytree(digits_folder / "7", tmp_path / "sevens" / "7")
    (tmp_path / "sevens" / "7" / "broken.png").write_bytes(b"not a png")  # --strict would stop at it if decoded
    outcome = run_cli("train", "--data", tmp_path / "sevens", "--strict", "--runs-dir", tmp_path / "runs")
    assert outcome.exit_code == 2
    assert (f"--data {tmp_path / 'sevens'} (1 class, 180 images): only 7 has training images; a classifier "
            "learns to tell classes apart, so it needs images of at least 2") in outcome.stderr
    assert not (tmp_path / "runs").exists()


def test_an_empty_class_folder_is_trained_with_a_warning_naming_it(digits_folder, tmp_path):
    import shutil

    import cnnlab
    from tests.helpers import run_cli

    for digit in ("0", "1"):
        shutil.copytree(digits_folder / digit, tmp_path / "data" / digit)
    (tmp_path / "data" / "2").mkdir()
    outcome = run_cli("train", "--data", tmp_path / "data", "--image-size", 18, "--epochs", 1,
                      "--runs-dir", tmp_path / "runs", "--name", "empty")
    assert outcome.exit_code == 0, outcome.stderr
    assert "warning: no training images for class 2: the model still gets an output for it" in outcome.stderr
    assert cnnlab.load(tmp_path / "runs" / "empty").class_names == ["0", "1", "2"]


@pytest.mark.parametrize("flags, expected", [
    (["--recipe", "fast"], "warning: --augment flip and --tta flip (from --recipe fast) mirror images, but in digits a "
                           "mirror image is not the same class (a mirrored 2 or 7 is no digit); add --augment none "
                           "--tta none to train without mirror images"),
    (["--augment", "standard", "--model", "fast-cnn-v2"], "warning: --augment standard mirrors images, but in digits a mirror image is not the "
                                "same class (a mirrored 2 or 7 is no digit); add --augment light to train without "
                                "mirror images"),
    (["--recipe", "fast", "--augment", "none", "--tta", "none"], None),
])
def test_flips_on_digits_are_warned_about(flags, expected, tmp_path):
    """A mirrored digit is no digit: training on a named dataset that says so warns about flips,
    and says which flags turn them off."""
    from tests.helpers import run_cli

    outcome = run_cli("train", "--data", "digits", *flags, "--epochs", 1, "--limit", 200, "--runs-dir", tmp_path,
                      "--name", "r")
    assert outcome.exit_code == 0, outcome.stderr
    warnings = [line for line in outcome.stderr.splitlines() if "mirror" in line]
    assert warnings == ([expected] if expected else [])


def test_only_named_digit_datasets_say_a_mirror_image_changes_the_class(tmp_path, monkeypatch):
    from cnnlab.data.named import dataset_spec
    from cnnlab.data.sources import named_dataset

    assert dataset_spec("fashion-mnist").mirror_invariant and dataset_spec("cifar10").mirror_invariant
    assert not dataset_spec("mnist").mirror_invariant and not dataset_spec("digits").mirror_invariant
    assert named_dataset("digits").name == "digits"
    (tmp_path / "digits").mkdir()  # a folder of that name is the user's own data: no claim about it
    monkeypatch.chdir(tmp_path)
    assert named_dataset("digits") is None
