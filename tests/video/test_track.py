"""`cnnlab track` end to end with a tiny trained detector: a row per tracked box, per-track rows that
agree with them, ids drawn on a video of as many frames, line crossings counted."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from tests.helpers import run_cli
from tests.video.conftest import (CLIP_FRAMES, STREAM_FRAMES, decoded_frames, requires_fashion_mnist,
                                  requires_ffmpeg, rtmp_stream)

pytestmark = requires_fashion_mnist


def test_track_writes_rows_tracks_and_a_video_with_ids(detector, clip, tmp_path):
    # The 1-epoch detector has barely moved from its prior (every score ~0.01): thresholds below that
    # give it boxes to track, which is all this test needs (the tracker's quality: test_tracking.py).
    outcome = run_cli("track", detector, clip.path, "--high", 0.005, "--low", 0.002, "--iou", 0.3,
                      "--tracks", tmp_path / "tracks.csv", "--draw", tmp_path / "tracked.mkv",
                      "--count-line", "48,0,48,96", "-o", tmp_path / "rows.json")
    assert outcome.exit_code == 0, outcome.stderr
    assert "crossed the line:" in outcome.stderr
    frames = json.loads((tmp_path / "rows.json").read_text())
    assert [row["frame"] for row in frames] == list(range(CLIP_FRAMES))
    seen = Counter(track["id"] for row in frames for track in row["tracks"])
    assert seen  # the detector found something to track
    with (tmp_path / "tracks.csv").open() as handle:
        tracks = {int(row["id"]): row for row in csv.DictReader(handle)}
    assert {identity: int(row["frames_seen"]) for identity, row in tracks.items()} == dict(seen)
    for identity, row in tracks.items():
        shown = [r["frame"] for r in frames if any(t["id"] == identity for t in r["tracks"])]
        assert (int(row["first_frame"]), int(row["last_frame"])) == (shown[0], shown[-1])
    assert len(decoded_frames(tmp_path / "tracked.mkv")) == CLIP_FRAMES


@requires_ffmpeg
@pytest.mark.timeout(120)  # the run bounds itself (--timeout 2, one reconnection): this is the backstop
def test_track_follows_an_rtmp_stream_and_keeps_its_tracks_when_it_stops(detector, rtmp_clip, tmp_path):
    """A real stream on loopback (tests/video/conftest.py): the tracks so far are written and summed
    up in the message that ends the run (a live stream ends with its loss, exit status 2)."""
    with rtmp_stream(rtmp_clip.path) as url:
        outcome = run_cli("track", detector, url, "--high", 0.005, "--low", 0.002, "--iou", 0.3,
                          "--tracks", tmp_path / "tracks.csv", "-o", tmp_path / "rows.json", "--timeout", 2,
                          "--reconnects", 1)
    assert outcome.exit_code == 2, outcome.stderr
    assert f"{url}: the stream stopped after {STREAM_FRAMES} frame(s)" in outcome.stderr
    frames = json.loads((tmp_path / "rows.json").read_text())
    numbers = [row["frame"] for row in frames]
    assert numbers == sorted(set(numbers)) and len(numbers) >= 16  # a batch at least; measured: 50 of 50
    seen = Counter(track["id"] for row in frames for track in row["tracks"])
    assert seen  # the detector found something to track
    with (tmp_path / "tracks.csv").open() as handle:
        tracks = {int(row["id"]): int(row["frames_seen"]) for row in csv.DictReader(handle)}
    assert tracks == dict(seen)
    longest = max(seen.values())
    assert f"{len(tracks)} track(s); the longest seen in {longest} frame(s)" in outcome.stderr


def test_tracking_the_true_boxes_of_the_clip_keeps_every_id(clip):
    """The clip's own boxes, as a perfect detector would give them, through the tracker: IDF1 1."""
    from cnnlab.video.tracking import Tracker, idf1

    tracker = Tracker()
    predicted = []
    for number, frame in enumerate(clip.boxes):
        found = tracker.update(number, [box for _, _, box in frame], [0.9] * len(frame), [str(l) for _, l, _ in frame])
        predicted.append([(item.track_id, item.box) for item in found])
    assert idf1([[(i, box) for i, _, box in frame] for frame in clip.boxes], predicted) == 1.0
    assert len(tracker.tracks) == 3
