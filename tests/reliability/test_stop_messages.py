"""Every stop says why (issue 20, item 16)."""

from __future__ import annotations

import re

import cnnlab
from tests.helpers import run_cli

RUN = {"data": "digits", "model": "guide-cnn", "image_size": "18", "limit": 300, "batch_size": 64}


def test_a_callback_that_stops_the_run_has_its_reason_printed(tmp_path, capsys):
    """Hazard: a callback's `state.stop_reason` ended the run without a word (only run.json had it)."""

    class StopAtOne:
        def on_epoch_end(self, state, row):
            state.stop_reason = "the validation accuracy is good enough for me"

    result = cnnlab.train(**RUN, epochs=3, runs_dir=str(tmp_path), name="cb", callbacks=[StopAtOne()])
    assert result.stop_reason == "the validation accuracy is good enough for me"
    printed = capsys.readouterr().err
    assert "stopped after epoch 1 of 3: the validation accuracy is good enough for me" in printed


def test_early_stopping_says_why_once(tmp_path):
    """Hazard: the one stop that was printed (--patience) would now be printed twice."""
    outcome = run_cli("train", "--data", "digits", "--image-size", 18, "--limit", 300, "--optimizer", "adam",
                      "--lr", "0.1", "--schedule", "constant", "--patience", 1, "--epochs", 8,
                      "--runs-dir", tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    said = re.findall(r"stopped after epoch (\d) of 8: early stopping: validation loss has not improved for 1 "
                      r"epoch\(s\); best was epoch (\d)", outcome.stderr)
    assert len(said) == 1 and outcome.stderr.count("early stopping") == 1, outcome.stderr
    stopped, best = map(int, said[0])
    assert stopped == best + 1 and stopped < 8
