"""Run folders: a run is always written into a new or cnnlab-owned folder strictly inside the runs
folder, and `--exist-ok` only ever removes files cnnlab can prove it wrote."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.runs import RUN_MARKER, create_run_dir, is_cnnlab_run
from tests.helpers import run_cli

TRAIN = ("train", "--image-size", 18, "--epochs", 1, "--limit", 100)


@pytest.fixture
def project(tmp_path) -> Path:
    """A user's project folder: their own config.yaml and data beside runs/."""
    (tmp_path / "config.yaml").write_text("my: settings\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("precious")
    (tmp_path / "runs").mkdir()
    return tmp_path


def _train(data: Path, runs: Path, *extra: object):
    return run_cli(*TRAIN, "--data", data, "--runs-dir", runs, *extra)


def _user_files_intact(project: Path) -> None:
    assert (project / "config.yaml").read_text() == "my: settings\n"
    assert (project / "data" / "notes.txt").read_text() == "precious"
    assert not (project / "weights").exists() and not (project / "metrics.csv").exists()


def test_name_dot_dot_cannot_write_into_the_parent_of_the_runs_folder(digits_split_folder, project):
    """Hazard: `--name ..` wrote config.yaml and weights/ into the runs folder's parent,
    overwriting the user's config.yaml there."""
    outcome = _train(digits_split_folder, project / "runs", "--name", "..")
    assert outcome.exit_code == 2
    assert "--name '..'" in outcome.stderr and "inside" in outcome.stderr
    _user_files_intact(project)


def test_name_dot_dot_with_exist_ok_deletes_nothing(digits_split_folder, project):
    """Hazard: `--name .. --exist-ok` emptied the runs folder's parent: the user's data and files."""
    outcome = _train(digits_split_folder, project / "runs", "--name", "..", "--exist-ok")
    assert outcome.exit_code == 2, outcome.stderr
    _user_files_intact(project)
    assert (project / "runs").is_dir()


def test_name_dot_with_exist_ok_does_not_delete_another_run(digits_split_folder, project):
    """Hazard: `--name . --exist-ok` deleted another run (the runs folder itself, or the run that
    --runs-dir pointed into)."""
    runs = project / "runs"
    assert _train(digits_split_folder, runs, "--name", "first").exit_code == 0
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    for runs_dir in (runs, runs / "first"):
        outcome = _train(digits_split_folder, runs_dir, "--name", ".", "--exist-ok")
        assert outcome.exit_code == 2 and "--name '.'" in outcome.stderr
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before
    assert (runs / "first" / "weights" / "best.safetensors").is_file()


@pytest.mark.parametrize("name", ["a/b", "../escape", "/tmp/elsewhere", "", "  ", "sub/..", "..\\x"])
def test_names_with_separators_absolute_or_empty_are_refused(tmp_path, name):
    """Hazard: a --name with a path separator, an absolute path or nothing in it could put a run
    anywhere (or silently somewhere else than asked)."""
    with pytest.raises(CnnlabError, match="--name"):
        create_run_dir(tmp_path / "runs", name, "default", exist_ok=True)
    assert not any(tmp_path.rglob("weights"))


def test_a_link_that_leads_out_of_the_runs_folder_is_refused(tmp_path):
    """Hazard: runs/NAME as a symbolic link to a folder elsewhere: --exist-ok would empty that folder."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.yaml").write_text("name: link\nmodel: x\ndata: y\n")  # even one that looks like a run
    (outside / "thesis.tex").write_text("years of work")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "link").symlink_to(outside)
    with pytest.raises(CnnlabError, match="outside"):
        create_run_dir(tmp_path / "runs", "link", "default", exist_ok=True)
    assert sorted(p.name for p in outside.iterdir()) == ["config.yaml", "thesis.tex"]


def test_exist_ok_refuses_a_folder_whose_config_yaml_is_not_cnnlabs(digits_split_folder, tmp_path):
    """Hazard: any folder holding a file called config.yaml was taken for a run and deleted whole."""
    runs = tmp_path / "runs"
    mine = runs / "experiment"
    mine.mkdir(parents=True)
    (mine / "config.yaml").write_text("learning_rate: 0.1\n")
    (mine / "results.csv").write_text("a,b\n")
    outcome = _train(digits_split_folder, runs, "--name", "experiment", "--exist-ok")
    assert outcome.exit_code == 2 and "not a cnnlab run folder" in outcome.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml", "results.csv"]
    assert (mine / "config.yaml").read_text() == "learning_rate: 0.1\n"


def test_exist_ok_replaces_only_cnnlabs_own_files_in_a_run(digits_split_folder, tmp_path):
    """Hazard: --exist-ok deleted the user's own files that they had put into a run folder."""
    runs = tmp_path / "runs"
    assert _train(digits_split_folder, runs, "--name", "run").exit_code == 0
    run = runs / "run"
    assert is_cnnlab_run(run) and (run / RUN_MARKER).is_file()
    (run / "notes.txt").write_text("what I tried")
    (run / "weights" / "my-export.onnx").write_bytes(b"onnx")
    (run / "eval-x-test").mkdir()
    (run / "eval-x-test" / "metrics.json").write_text("{}")
    (run / "eval-x-test" / "my-plot.svg").write_text("<svg/>")
    old_best = (run / "weights" / "best.safetensors").stat().st_mtime_ns
    outcome = _train(digits_split_folder, runs, "--name", "run", "--exist-ok")
    assert outcome.exit_code == 0, outcome.stderr
    assert (run / "notes.txt").read_text() == "what I tried"
    assert (run / "weights" / "my-export.onnx").read_bytes() == b"onnx"
    assert (run / "eval-x-test" / "my-plot.svg").read_text() == "<svg/>"
    assert not (run / "eval-x-test" / "metrics.json").exists()  # the old run's evaluation went with it
    assert (run / "weights" / "best.safetensors").stat().st_mtime_ns != old_best
    assert "kept 3 file(s) cnnlab did not write" in outcome.stderr and "notes.txt" in outcome.stderr


def test_a_run_folder_from_before_the_marker_is_still_recognised(tmp_path):
    """Hazard (the other way round): runs made before cnnlab wrote its marker must stay replaceable
    with --exist-ok (`make demo` does it), by the config.yaml cnnlab wrote into them."""
    run = tmp_path / "runs" / "demo"
    (run / "weights").mkdir(parents=True)
    (run / "config.yaml").write_text("data: fashion-mnist\nmodel: guide-cnn\nname: demo\nruns_dir: runs\n")
    (run / "weights" / "best.safetensors").write_bytes(b"old")
    assert is_cnnlab_run(run)
    assert create_run_dir(tmp_path / "runs", "demo", "default", exist_ok=True) == run
    assert not (run / "weights" / "best.safetensors").exists() and (run / RUN_MARKER).is_file()


def test_concurrent_starts_get_distinct_run_folders(tmp_path):
    """Hazard: two runs starting at once raced between the existence check and mkdir, and one died
    with a raw FileExistsError."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race shows within a few rounds
    try:
        for round_number in range(20):
            runs = tmp_path / f"runs-{round_number}"
            barrier = threading.Barrier(12)
            made: list[Path] = []
            errors: list[BaseException] = []

            def start() -> None:
                barrier.wait()
                try:
                    made.append(create_run_dir(runs, None, "race", exist_ok=False))
                except BaseException as error:  # noqa: BLE001 - the test reports any
                    errors.append(error)

            threads = [threading.Thread(target=start) for _ in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not errors, errors
            assert len(set(made)) == 12
            assert sorted(p.name for p in made) == sorted(["race"] + [f"race-{n}" for n in range(2, 13)])
    finally:
        sys.setswitchinterval(interval)


def test_concurrent_starts_with_the_same_name_one_wins_the_other_is_told(tmp_path):
    """Hazard: the same --name started twice at once: exactly one gets the folder, the other a
    clear error rather than a raw FileExistsError (or both writing into one folder)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_number in range(10):
            runs = tmp_path / f"runs-{round_number}"
            barrier = threading.Barrier(8)
            made, refused, other = [], [], []

            def start() -> None:
                barrier.wait()
                try:
                    made.append(create_run_dir(runs, "same", "default", exist_ok=False))
                except CnnlabError as error:
                    refused.append(error)
                except BaseException as error:  # noqa: BLE001
                    other.append(error)

            threads = [threading.Thread(target=start) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not other, other
            assert len(made) == 1 and len(refused) == 7
            assert all("already exists" in str(error) for error in refused)
    finally:
        sys.setswitchinterval(interval)
