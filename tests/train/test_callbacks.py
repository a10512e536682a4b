"""Your own callbacks in `cnnlab.train(callbacks=[...])`: when they are called, what they see,
stopping a run from one, and the errors for things that are not callbacks."""

from __future__ import annotations

import json
import re
import time

import pytest

import cnnlab
from cnnlab.errors import ConfigError
from cnnlab.checkpoint import load_training_state

# A small real run: scikit-learn's digits, scaled to guide-cnn's smallest input.
RUN = {"data": "digits", "model": "guide-cnn", "image_size": "18", "batch_size": 64, "quiet": True}


class Recorder:
    """Writes down every call, and where the run's files stand when the epoch ends."""

    def __init__(self, run_dir_of=None):
        self.calls: list[tuple] = []
        self.batches_seen: list[int] = []
        self.checkpoint_epochs: list[int] = []
        self.run_dir_of = run_dir_of

    def on_train_begin(self, state):
        self.calls.append(("train_begin", state.epoch))

    def on_epoch_begin(self, state, epoch, num_images):
        self.calls.append(("epoch_begin", epoch, num_images))
        self.batches_seen.clear()

    def on_batch_end(self, state, images, loss_sum, headline_sum):
        self.batches_seen.append(images)

    def on_epoch_end(self, state, row):
        self.calls.append(("epoch_end", row["epoch"], len(self.batches_seen), self.batches_seen[-1]))
        sidecar = self.run_dir_of() / "weights" / "last.json"
        self.checkpoint_epochs.append(json.loads(sidecar.read_text())["epoch"])

    def on_train_end(self, state):
        self.calls.append(("train_end", state.epoch))


def test_a_callback_is_called_at_every_hook_after_the_epoch_is_saved(tmp_path):
    runs = tmp_path / "runs"
    recorder = Recorder(run_dir_of=lambda: runs / "cb")
    result = cnnlab.train(**RUN, epochs=3, runs_dir=str(runs), name="cb", callbacks=[recorder])

    train_images = json.loads((result.run_dir / "data.json").read_text())["train"]["images"]
    batches = -(-train_images // 64)
    assert recorder.calls == [
        ("train_begin", 0),
        ("epoch_begin", 1, train_images), ("epoch_end", 1, batches, train_images),
        ("epoch_begin", 2, train_images), ("epoch_end", 2, batches, train_images),
        ("epoch_begin", 3, train_images), ("epoch_end", 3, batches, train_images),
        ("train_end", 3),
    ]
    # cnnlab's own callbacks ran first: each epoch's checkpoint was on disk when ours saw the epoch.
    assert recorder.checkpoint_epochs == [1, 2, 3]


def test_a_callback_stops_the_run_and_its_epoch_is_kept(tmp_path):
    class StopAtTwo:
        def on_epoch_end(self, state, row):
            if row["epoch"] == 2:
                state.stop_reason = "stopped by my callback"

    result = cnnlab.train(**RUN, epochs=6, runs_dir=str(tmp_path), name="stop", callbacks=[StopAtTwo()])
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.stop_reason == "stopped by my callback"
    assert json.loads((result.run_dir / "weights" / "last.json").read_text())["epoch"] == 2


def test_a_run_stopped_by_a_callback_says_so_when_resumed(tmp_path, capsys):
    class StopAtOne:
        def on_epoch_end(self, state, row):
            state.stop_reason = "stopped by my callback"

    first = cnnlab.train(**RUN, epochs=3, runs_dir=str(tmp_path), name="stop", callbacks=[StopAtOne()])
    saved = load_training_state(first.run_dir / "weights" / "train-state.safetensors")
    assert saved.progress["epoch"] == 1 and saved.progress["stop_reason"] == "stopped by my callback"

    resumed = cnnlab.train(resume=first.run_dir, epochs=2, quiet=False)
    assert "note: the run had stopped (stopped by my callback); continuing anyway" in capsys.readouterr().err
    assert [row["epoch"] for row in resumed.history] == [1, 2] and resumed.stop_reason is None


def _train_seconds(result) -> float:
    images = json.loads((result.run_dir / "data.json").read_text())["train"]["images"]
    return images / result.history[0]["images_per_s"]


def test_time_in_on_epoch_begin_is_not_counted_in_images_per_second(tmp_path):
    # The pause is sized from the same epoch without it, so a loaded machine cannot blur the difference:
    # counted, the pause would add all of itself; the assertion allows half of it.
    plain = _train_seconds(cnnlab.train(**RUN, epochs=1, runs_dir=str(tmp_path), name="plain"))
    pause = max(1.0, 5 * plain)

    class Pause:
        def on_epoch_begin(self, state, epoch, num_images):
            time.sleep(pause)

    result = cnnlab.train(**RUN, epochs=1, runs_dir=str(tmp_path), name="pause", callbacks=[Pause()])
    row = result.history[0]
    train_seconds = _train_seconds(result)
    assert train_seconds < plain + pause / 2, (plain, pause, train_seconds)
    assert row["seconds"] >= train_seconds  # the row's wall seconds start after the callbacks too


def test_callbacks_follow_a_resumed_run_from_where_it_stopped(tmp_path):
    first = cnnlab.train(**RUN, epochs=1, runs_dir=str(tmp_path), name="resume")
    recorder = Recorder(run_dir_of=lambda: first.run_dir)
    cnnlab.train(resume=first.run_dir, epochs=2, quiet=True, callbacks=[recorder])
    assert [call[:2] for call in recorder.calls] == [("train_begin", 1), ("epoch_begin", 2), ("epoch_end", 2),
                                                   ("train_end", 2)]


class NoHooks:
    def on_epoch_finished(self, state, row):  # a typo of on_epoch_end
        pass


@pytest.mark.parametrize("callbacks, message", [
    (Recorder(), "expected a list of callback objects, got Recorder; write callbacks=[Recorder(...)]"),
    ([Recorder], "callbacks[0]: Recorder is a class; pass an instance, Recorder(...)"),
    ([NoHooks()], "callbacks[0]: a NoHooks has none of the hook methods on_train_begin, on_epoch_begin"),
])
def test_what_is_not_a_callback_is_refused_before_training(tmp_path, callbacks, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        cnnlab.train(**RUN, epochs=1, runs_dir=str(tmp_path), name="bad", callbacks=callbacks)
    assert not (tmp_path / "bad").exists()
