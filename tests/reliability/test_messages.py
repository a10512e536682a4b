"""Messages that misled: each says what happened, to which images, and never advises anything unsafe."""

from __future__ import annotations

import functools
import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.errors import DataError
from tests.helpers import run_cli
from tests.reliability.images import two_digit_classes


@pytest.fixture(scope="module")
def named_run(tmp_path_factory) -> tuple[Path, Path]:
    """fast-cnn on two classes with names of different lengths ("ox" and "giraffe"), 1 epoch."""
    data = two_digit_classes(tmp_path_factory.mktemp("data") / "animals", names=("ox", "giraffe"))
    runs = tmp_path_factory.mktemp("runs")
    outcome = run_cli("train", "--data", data, "--epochs", 1, "--model", "fast-cnn", "--name", "animals",
                      "--runs-dir", runs)
    assert outcome.exit_code == 0, outcome.stderr
    return runs / "animals", data


def _broken(path: Path) -> None:
    good = Image.new("L", (20, 20), 128)
    good.save(path)
    path.write_bytes(path.read_bytes()[:30])  # cut short: unreadable


def test_skip_warnings_say_which_images_they_were_among(tmp_path):
    """Hazard: two separate "skipped N unreadable" warnings, one for training and one for
    validation images, without saying which was which."""
    data = two_digit_classes(tmp_path / "photos")
    for klass in ("0", "1"):
        for index in range(10):  # enough that both the training images and the 10% held out get some
            _broken(data / klass / f"{index:03d}-broken.png")
    outcome = run_cli("train", "--data", data, "--epochs", 1, "--model", "fast-cnn", "--runs-dir", tmp_path / "runs")
    assert outcome.exit_code == 0, outcome.stderr
    found = re.findall(r"skipped (\d+) unreadable image file\(s\) of the (\w+) images:", outcome.stderr)
    assert sorted(part for _, part in found) == ["training", "validation"], outcome.stderr
    assert sum(int(count) for count, _ in found) == 20


def test_no_size_message_when_no_file_could_be_read(tmp_path):
    """Hazard: "images have different sizes; making all 224×224" when every file a CSV named was
    missing: it should say that none could be read."""
    rows = "\n".join(f"missing-{index}.png,{'ab'[index % 2]}" for index in range(6))
    (tmp_path / "labels.csv").write_text(f"path,label\n{rows}\n")
    outcome = run_cli("train", "--data", tmp_path / "labels.csv", "--epochs", 1, "--runs-dir", tmp_path / "runs")
    assert outcome.exit_code == 2
    assert "different sizes" not in outcome.stderr
    assert "none of the first 5 image file(s) could be read" in outcome.stderr  # 1 of the 6 held out
    assert f"none of the images could be read ({tmp_path / 'missing-0.png'}: file does not exist" in outcome.stderr


def test_the_imbalance_warning_counts_the_images_loaded_not_the_files_named(tmp_path):
    """Hazard: the class-imbalance warning counted files that were missing: 10 real images of each
    class, plus 30 rows naming missing files of one, were called imbalanced."""
    data = two_digit_classes(tmp_path / "photos", per_class=10)
    rows = [f"{path.relative_to(tmp_path)},{path.parent.name}" for path in sorted(data.rglob("*.png"))]
    rows += [f"photos/1/missing-{index}.png,1" for index in range(30)]
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    outcome = run_cli("train", "--data", tmp_path / "labels.csv", "--epochs", 1, "--model", "fast-cnn",
                      "--val-fraction", "0.2", "--runs-dir", tmp_path / "runs")
    assert outcome.exit_code == 0, outcome.stderr
    assert "missing-0.png: file does not exist" in outcome.stderr  # they were skipped, and named
    assert "imbalanced" not in outcome.stderr


def test_a_pickle_refusal_never_suggests_unpickling(tmp_path, digits_split_folder):
    """Hazard: refusing a pickled .pth, cnnlab repeated torch's advice that `weights_only=False` "will
    likely succeed": cnnlab never suggests unpickling a file it cannot vouch for."""
    evil = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(2), "hook": functools.partial(print, "ran")}, evil)
    outcome = run_cli("train", "--data", digits_split_folder, "--model", "resnet18", "--weights", evil,
                      "--image-size", 32, "--epochs", 1, "--limit", 50, "--runs-dir", tmp_path / "runs")
    assert outcome.exit_code == 2
    message = outcome.stderr
    assert "weights_only" not in message and "likely succeed" not in message and "\x1b[" not in message
    assert f"{evil}: not a PyTorch weights file that can be read safely" in message
    assert "functools.partial" in message and "cnnlab never unpickles" in message and "safetensors" in message
    assert "warning" not in message.lower()  # nor torch's notes on pickle protocols


def test_a_regression_target_beyond_float32_is_named_with_file_line_and_column(tmp_path):
    """Hazard: a CSV regression target of 1e300 passed the finite check, then became inf as float32."""
    data = two_digit_classes(tmp_path / "photos", per_class=4)
    files = sorted(data.rglob("*.png"))
    rows = [f"{path.relative_to(tmp_path)},{index * 0.5},{index}" for index, path in enumerate(files)]
    rows[2] = f"{files[2].relative_to(tmp_path)},1.5,1e300"
    (tmp_path / "targets.csv").write_text("path,angle,size\n" + "\n".join(rows) + "\n")
    outcome = run_cli("train", "--data", tmp_path / "targets.csv", "--task", "regression", "--epochs", 1,
                      "--runs-dir", tmp_path / "runs")
    assert outcome.exit_code == 2
    assert f"{tmp_path / 'targets.csv'}, line 4, column 3 (size): '1e300' is beyond" in outcome.stderr
    from cnnlab.data.sources import open_value_csv

    with pytest.raises(DataError, match="32-bit floats"):
        open_value_csv(tmp_path / "targets.csv")


def test_predict_table_lines_up_the_confidences(named_run):
    """Hazard: predict's table did not line up: labels of different lengths pushed the confidences
    of each rank to different columns."""
    run, data = named_run
    images = [data / "ox" / "000.png", data / "giraffe" / "000.png", data / "ox" / "001.png"]
    outcome = run_cli("predict", run, *images, "--top-k", 2)
    assert outcome.exit_code == 0, outcome.stderr
    lines = outcome.stdout.splitlines()
    assert len(lines) == 3
    percents = [[match.end() for match in re.finditer(r"\d%", line)] for line in lines]
    assert all(len(ends) == 2 for ends in percents), lines
    assert len({ends[0] for ends in percents}) == 1 and len({ends[1] for ends in percents}) == 1, lines


def test_top_k_on_a_regression_run_is_refused(tmp_path):
    """Hazard: `predict --top-k 3` on a regression run was silently ignored."""
    data = two_digit_classes(tmp_path / "photos", per_class=10)
    files = sorted(data.rglob("*.png"))
    rows = [f"{path.relative_to(tmp_path)},{index * 0.5}" for index, path in enumerate(files)]
    (tmp_path / "targets.csv").write_text("path,angle\n" + "\n".join(rows) + "\n")
    assert run_cli("train", "--data", tmp_path / "targets.csv", "--task", "regression", "--epochs", 1,
                   "--model", "fast-cnn", "--name", "angles", "--runs-dir", tmp_path / "runs").exit_code == 0
    outcome = run_cli("predict", tmp_path / "runs" / "angles", files[0], "--top-k", 3)
    assert outcome.exit_code == 2
    assert "--top-k 3" in outcome.stderr and "regression" in outcome.stderr


def test_explain_conv_without_at_does_not_call_its_box_your_at_position(tmp_path):
    """Hazard: `explain-conv` without --at still labelled the orange box "your --at position" (cnnlab
    had chosen it: where the kernel responds most strongly)."""
    from skimage import data as photos

    from cnnlab.teach.conv_steps import write_scan_animation
    from cnnlab.teach.filtering import read_image
    from cnnlab.teach.kernels import get_kernel

    Image.fromarray(photos.camera()[200:260, 200:260]).save(tmp_path / "crop.png")
    outcome = run_cli("explain-conv", tmp_path / "crop.png", "--kernel", "sobel-x", "--positions", 2,
                      "-o", tmp_path / "cli.gif")
    assert outcome.exit_code == 0, outcome.stderr
    x, y = map(int, re.search(r"--at (\d+),(\d+): where sobel-x responds most strongly", outcome.stdout).groups())
    gray, kernel = read_image(tmp_path / "crop.png", gray=True)[0], get_kernel("sobel-x")
    frames = {}
    for chosen_by_user in (False, True):
        folder = tmp_path / f"frames-{chosen_by_user}"
        write_scan_animation(gray, kernel, x, y, tmp_path / f"{chosen_by_user}.gif", positions=2, frames_dir=folder,
                             chosen_by_user=chosen_by_user)
        frames[chosen_by_user] = [np.asarray(Image.open(path)) for path in sorted(folder.iterdir())]
    assert (tmp_path / "cli.gif").read_bytes() == (tmp_path / "False.gif").read_bytes()  # the CLI's choice
    # The same scan and numbers: the frames differ only where the orange box is named (title, legend).
    height = frames[True][0].shape[0]
    for chosen, given in zip(frames[False], frames[True]):
        rows = np.flatnonzero((chosen != given).any(axis=(1, 2)))
        assert len(rows) and ((rows < 40) | (rows > height - 45)).all(), rows


def test_filter_sharpen_and_emboss_show_the_filtered_photo(tmp_path):
    """Hazard: `filter --kernel sharpen` (and emboss) drew the output at ±max around mid-grey, a flat
    grey wash, where a person expects the sharpened photo: a kernel whose weights add up to 1 makes
    an image, clipped to 0–255; an edge detector's (weights adding up to 0) stays a signed map."""
    from skimage import data as photos

    from cnnlab.teach.kernels import get_kernel

    camera = photos.camera()
    Image.fromarray(camera).save(tmp_path / "camera.png")
    for name in ("sharpen", "emboss"):
        outcome = run_cli("filter", tmp_path / "camera.png", "--kernel", name, "-o", tmp_path / f"{name}.png")
        assert outcome.exit_code == 0, outcome.stderr
        assert "pixel values, clipped to 0–255" in outcome.stdout
        weights = get_kernel(name).weights
        windows = np.lib.stride_tricks.sliding_window_view(camera.astype(np.float64), (3, 3))
        expected = np.clip(np.rint((windows * weights).sum(axis=(2, 3))), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"{name}.png")), expected)
    outcome = run_cli("filter", tmp_path / "camera.png", "--kernel", "sobel-x", "-o", tmp_path / "edges.png")
    assert "mid-grey = 0" in outcome.stdout


@pytest.fixture(scope="module")
def limited_report(tmp_path_factory) -> tuple[str, Path]:
    data = two_digit_classes(tmp_path_factory.mktemp("data") / "animals", names=("ox", "giraffe"))
    runs = tmp_path_factory.mktemp("runs")
    assert run_cli("train", "--data", data, "--epochs", 1, "--model", "fast-cnn", "--name", "limited",
                   "--limit", 30, "--runs-dir", runs).exit_code == 0
    outcome = run_cli("report", runs / "limited", "--mistakes", 8, "--samples", 2)
    assert outcome.exit_code == 0, outcome.stderr
    return (runs / "limited" / "report.html").read_text(), runs / "limited"


def test_a_worst_mistake_card_does_not_repeat_its_title(limited_report):
    """Hazard: each worst-mistake card in the report repeated its title (file name, truth and
    prediction) in its picture, right under the card's own."""
    from cnnlab.explain.explain import explain_pixels
    from cnnlab.trained import load

    html, run = limited_report
    cards = re.findall(r'<div class="card">(.*?)</div>', html, flags=re.S)
    assert cards
    for card in cards:
        text = unescape(re.sub(r"<[^>]+>", " ", re.sub(r'alt="[^"]*"', "", card)))
        name = re.search(r"\d+\. (\S+)", text).group(1)
        assert text.count(name) == 1, text
    trained = load(run)
    pixels = np.zeros(trained.input.shape, dtype=np.uint8)
    card = explain_pixels(trained, pixels, run / "card-test", name="x.png", maps=False, filters=False, compact=True)
    assert card.heading == ""  # the picture carries no title of its own


def test_the_sample_grid_counts_the_limit_subset_that_was_used(limited_report):
    """Hazard: with --limit, the report's sample-grid labels counted the whole folder (40 + 40), not
    the subset the run used (30)."""
    from cnnlab.report.report import _training_data
    from cnnlab.report.data import read_run
    from cnnlab.trained import load

    _, run = limited_report
    source = _training_data(read_run(run), load(run), None)
    assert sum(source.class_counts().values()) == 30
