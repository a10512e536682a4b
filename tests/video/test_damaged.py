"""A damaged or cut-short video: a clear error naming the file, the frames before the damage kept;
Debian's opencv-doc videos (a real camera's, and one cut short) where the package is installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.video.conftest import decoded_frames, requires_fashion_mnist

pytestmark = requires_fashion_mnist

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
needs_opencv_doc = pytest.mark.skipif(not (OPENCV_DATA / "vtest.avi").exists(),
                                      reason="Debian's opencv-doc is not installed: apt-get install opencv-doc")


def test_a_video_cut_short_names_itself_and_keeps_the_frames_before(classifier, tmp_path):
    from cnnlab.video.moving_items import write_moving_items
    from tests.conftest import FASHION_DIR

    clip = write_moving_items(tmp_path / "whole.mkv", fashion_mnist_dir=FASHION_DIR, frames=40, canvas=64, items=2)
    data = clip.path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    outcome = run_cli("predict", classifier, cut, "-o", tmp_path / "rows.json", "--draw", tmp_path / "cut-drawn.mkv")
    assert outcome.exit_code == 2
    assert f"error: {cut}: damaged or cut short: decoding stopped at" in outcome.stderr
    assert "of its 1.60 s" in outcome.stderr
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert 1 <= len(rows) < 40 and [row["frame"] for row in rows] == list(range(len(rows)))
    assert f"{len(rows)} frame(s) before it were predicted and written" in outcome.stderr
    assert len(decoded_frames(tmp_path / "cut-drawn.mkv")) == len(rows)  # the annotated video plays to there


def test_a_file_that_is_not_a_video_is_named(classifier, tmp_path):
    bogus = tmp_path / "holiday.mp4"
    bogus.write_bytes(b"\x00\x01 not a video" * 100)
    outcome = run_cli("predict", classifier, bogus)
    assert outcome.exit_code == 2
    assert f"error: {bogus}: not a video cnnlab can read, or damaged" in outcome.stderr
    outcome = run_cli("predict", classifier, tmp_path / "missing.mp4")
    assert outcome.exit_code == 2 and "missing.mp4: no such video file" in outcome.stderr


@needs_opencv_doc
def test_a_real_camera_video_and_a_real_one_cut_short(classifier, tmp_path):
    outcome = run_cli("predict", classifier, OPENCV_DATA / "vtest.avi", "--end", 1, "-o", tmp_path / "rows.json")
    assert outcome.exit_code == 0, outcome.stderr
    assert len(json.loads((tmp_path / "rows.json").read_text())) == 10  # 10 frames/s pedestrians, first second
    cut = tmp_path / "Megamind-cut.avi"  # a face, 270 MPEG-4 frames; cut at 700 kB of 1.2 MB
    cut.write_bytes((OPENCV_DATA / "Megamind.avi").read_bytes()[:700_000])
    outcome = run_cli("predict", classifier, cut, "--stride", 10, "-o", tmp_path / "cut.json")
    assert outcome.exit_code == 2
    assert f"{cut}: damaged or cut short: decoding stopped at" in outcome.stderr and "of its 11.26 s" in outcome.stderr
    assert len(json.loads((tmp_path / "cut.json").read_text())) == 16  # frames 0, 10, ..., 150 came before the cut
