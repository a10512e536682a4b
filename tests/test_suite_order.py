"""The suite's own scheduling list (tests/conftest.py, LONGEST_FIRST) names files that exist: a
renamed or removed file would otherwise drop out of it without a word and run last again."""

from pathlib import Path

from tests.conftest import LONGEST_FIRST

ROOT = Path(__file__).resolve().parents[1]


def test_every_file_run_first_exists_and_is_named_once():
    assert [path for path in LONGEST_FIRST if not (ROOT / path).is_file()] == []
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
