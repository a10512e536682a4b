"""Ctrl-C during a video run: the annotated video is finished properly and plays to the last frame
written, and the rows up to there are saved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.video.conftest import decoded_frames, requires_fashion_mnist

pytestmark = requires_fashion_mnist

# The `cnnlab` command with a model that takes at least 20 ms a batch (150 batches: 3 s), so the run is
# still going when the interrupt lands on any machine: an idle one predicted the 600 frames in 2.5 s,
# before the annotated video had passed 100 kB on disk. SIGINT is given back Python's handler, as in a
# terminal: a pytest-xdist worker ignores SIGINT, and a child inherits that (cnnlab then rightly leaves
# an ignored SIGINT ignored, as under nohup, and the run finished with exit 0).
SLOWED_CLI = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from cnnlab.trained import TrainedModel
from cnnlab.cli import main

fast = TrainedModel.outputs
def slowed(self, images):
    time.sleep(0.02)
    return fast(self, images)
TrainedModel.outputs = slowed
sys.argv[0] = "cnnlab"
main()
"""


def test_ctrl_c_leaves_a_playable_video_and_the_rows_so_far(classifier, tmp_path):
    from cnnlab.video.moving_items import write_moving_items
    from tests.conftest import FASHION_DIR

    # noisy 160×160 frames encode large (~15 kB each), so the annotated video (the source's size) grows
    # past the 100 kB below within its first frames, long before the 600th
    clip = write_moving_items(tmp_path / "long.mp4", fashion_mnist_dir=FASHION_DIR, frames=600, canvas=160, items=1,
                              noise=40.0)
    output, rows = tmp_path / "drawn.mp4", tmp_path / "rows.json"
    arguments = ["predict", str(classifier), str(clip.path), "--draw", str(output), "-o", str(rows), "--batch-size", "4"]
    process = subprocess.Popen([sys.executable, "-c", SLOWED_CLI, *arguments],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.monotonic() + 120
    while not (output.exists() and output.stat().st_size > 100_000):  # frames are being written
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 130, errors
    assert "interrupted (Ctrl-C)" in errors
    predicted = json.loads(rows.read_text())
    assert 0 < len(predicted) < 600
    assert len(decoded_frames(output)) == len(predicted)  # every frame predicted is in the finished file
