"""run.json: each session of a run records what every `auto` became, where, and how it ended."""

from __future__ import annotations

import csv
import json
import platform

import pytest
import torch
import yaml

import cnnlab
from cnnlab.train.run_record import KILLED, cpu_name

QUICK = {"model": "guide-cnn", "image_size": "18,18", "batch_size": 64, "limit": 400, "seed": 3, "quiet": True}


def _record(run) -> dict:
    return json.loads((run / "run.json").read_text())


def _metrics(run) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def test_a_run_records_its_resolved_arithmetic_machine_software_and_speed(digits_split_folder, runs_dir):
    result = cnnlab.train(data=str(digits_split_folder), epochs=2, name="r", runs_dir=str(runs_dir), **QUICK)
    record = _record(result.run_dir)
    assert record["format"] == "cnnlab.run/1" and len(record["sessions"]) == 1
    session = record["sessions"][0]
    assert session["outcome"] == "completed" and session["epochs"] == {"first": 1, "last": 2}
    assert session["started"] <= session["finished"]
    # What config.yaml leaves as "auto" is resolved here, and agrees with what train() returned.
    config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert config["precision"] == "auto" and config["batch_threads"] == "auto"
    arithmetic = session["arithmetic"]
    assert arithmetic["summary"] == result.arithmetic
    assert arithmetic["precision"] in ("fp32", "bf16") and arithmetic["precision"] in result.arithmetic
    assert arithmetic["batch_threads"] >= 1 and isinstance(arithmetic["channels_last"], bool)
    assert session["machine"] == {"device": "cpu", "name": cpu_name(), "cpu_threads": torch.get_num_threads(),
                                  "processes": 1}
    assert session["software"]["torch"] == torch.__version__
    assert session["software"]["python"] == platform.python_version()
    assert session["software"]["cnnlab"] is not None
    # The session's totals are metrics.csv's epochs added up.
    rows = _metrics(result.run_dir)
    seconds = sum(float(row["seconds"]) for row in rows)
    images = sum(float(row["seconds"]) * float(row["images_per_s"]) for row in rows)
    assert session["training_seconds"] == pytest.approx(seconds, abs=2e-3)
    assert session["images_per_s"] == pytest.approx(images / seconds, rel=1e-3)


def test_forced_settings_are_recorded_as_given(digits_split_folder, runs_dir):
    result = cnnlab.train(data=str(digits_split_folder), epochs=1, name="f", runs_dir=str(runs_dir),
                          precision="fp32", channels_last=False, batch_threads=1, **QUICK)
    assert _record(result.run_dir)["sessions"][0]["arithmetic"] == {
        "summary": "fp32", "precision": "fp32", "channels_last": False, "compile": False, "batch_threads": 1}


def test_each_resume_adds_a_session_and_a_killed_one_is_marked(digits_split_folder, runs_dir):
    first = cnnlab.train(data=str(digits_split_folder), epochs=1, name="r", runs_dir=str(runs_dir), **QUICK)
    # As a SIGKILL leaves it: the entry was written at the start and never closed.
    record = _record(first.run_dir)
    record["sessions"][0].update(outcome="running", finished=None)
    (first.run_dir / "run.json").write_text(json.dumps(record))
    cnnlab.train(resume=first.run_dir, epochs=3, quiet=True)
    sessions = _record(first.run_dir)["sessions"]
    assert [s["outcome"] for s in sessions] == [KILLED, "completed"]
    assert sessions[1]["epochs"] == {"first": 2, "last": 3}
    rows = _metrics(first.run_dir)
    assert sessions[1]["training_seconds"] == pytest.approx(sum(float(r["seconds"]) for r in rows[1:]), abs=2e-3)


class _Raise:
    def __init__(self, error: BaseException):
        self.error = error

    def on_epoch_end(self, state, row):
        raise self.error


@pytest.mark.parametrize("error, outcome", [
    (KeyboardInterrupt(), "interrupted"),
    (RuntimeError("disk on fire"), "failed: RuntimeError: disk on fire"),
])
def test_how_a_session_ended_is_recorded(digits_split_folder, runs_dir, error, outcome):
    with pytest.raises(type(error)):
        cnnlab.train(data=str(digits_split_folder), epochs=3, name="x", runs_dir=str(runs_dir),
                     callbacks=[_Raise(error)], **QUICK)
    session = _record(runs_dir / "x")["sessions"][0]
    assert session["outcome"] == outcome
    assert session["epochs"] == {"first": 1, "last": 1} and session["finished"] is not None


def test_early_stopping_is_the_outcome(digits_split_folder, runs_dir):
    class Stop:
        def on_epoch_end(self, state, row):
            state.stop_reason = "enough for a test"

    result = cnnlab.train(data=str(digits_split_folder), epochs=3, name="s", runs_dir=str(runs_dir),
                          callbacks=[Stop()], **QUICK)
    session = _record(result.run_dir)["sessions"][0]
    assert session["outcome"] == "stopped early: enough for a test" and session["epochs"]["last"] == 1


def test_an_unreadable_run_json_is_set_aside_not_lost(digits_split_folder, runs_dir):
    first = cnnlab.train(data=str(digits_split_folder), epochs=1, name="u", runs_dir=str(runs_dir), **QUICK)
    (first.run_dir / "run.json").write_text("{ not json")
    cnnlab.train(resume=first.run_dir, epochs=2, quiet=True)
    assert (first.run_dir / "run.json.unreadable").read_text() == "{ not json"
    sessions = _record(first.run_dir)["sessions"]
    assert len(sessions) == 1 and sessions[0]["epochs"] == {"first": 2, "last": 2}
    (first.run_dir / "run.json").write_text("[]")  # a second bad one does not replace the first
    cnnlab.train(resume=first.run_dir, epochs=3, quiet=True)
    assert (first.run_dir / "run.json.unreadable").read_text() == "{ not json"
    assert (first.run_dir / "run.json.unreadable-2").read_text() == "[]"


def test_the_report_shows_each_session(digits_split_folder, runs_dir):
    from cnnlab.report.report import _sessions_table
    from cnnlab.report.data import read_run

    result = cnnlab.train(data=str(digits_split_folder), epochs=1, name="p", runs_dir=str(runs_dir), **QUICK)
    run = read_run(result.run_dir)
    assert len(run.sessions) == 1
    html = _sessions_table(run.sessions)
    assert result.arithmetic in html and "completed" in html and torch.__version__ in html
    assert "1–1" in html and "(cpu, " in html and " UTC" in html
    (result.run_dir / "run.json").write_text("garbage")
    assert read_run(result.run_dir).sessions == []  # a report still comes out, without the table


def test_recording_the_machine_starts_no_process(monkeypatch):
    """platform.platform() and platform.processor() run `uname -p`; a run's start should not fork."""
    import subprocess

    from cnnlab.train.run_record import software

    monkeypatch.setattr(platform, "_uname_cache", None, raising=False)
    monkeypatch.setattr(platform, "_platform_cache", {}, raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError(f"started a process: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    described = software()
    assert described["platform"].startswith(f"{platform.system()}-{platform.release()}")
    assert cpu_name()
