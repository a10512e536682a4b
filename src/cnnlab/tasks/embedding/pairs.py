"""Verification pairs: read from a file (LFW's `pairs.txt`, or a CSV `a,b,same`) or drawn, seeded, from
a labelled set. Torch-free.

LFW's `pairs.txt` (and `pairsDevTrain.txt`, `pairsDevTest.txt`): a header line — the number of pairs,
or "folds pairs-per-fold" — then one pair a line, tab- or space-separated:

    Abel_Pacheco    1   4                 the same person: images 1 and 4
    Abel_Pacheco    1   Jong_Thae_Hwa 2   two people

image n of NAME being `ROOT/NAME/NAME_000n.jpg` (n padded to 4 digits). The CSV has two file paths
(relative to the CSV's folder unless absolute) and 1/0 (or true/false, same/different) in a third
column; a first line `a,b,same` is a header. A malformed line is named as `file:line`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError

_TRUE = {"1", "true", "yes", "same"}
_FALSE = {"0", "false", "no", "different"}


@dataclass(frozen=True)
class Pairs:
    """Pairs of image files and whether each shows one identity."""

    first: list[Path]
    second: list[Path]
    same: np.ndarray  # bool, one per pair

    def __len__(self) -> int:
        return len(self.same)

    def files(self) -> list[Path]:
        """Every file the pairs name, once each, in order of first appearance."""
        return list(dict.fromkeys([*self.first, *self.second]))


def read_pairs(path: str | Path, root: str | Path | None = None) -> Pairs:
    """The pairs in `path`: a .csv of `a,b,same`, anything else LFW's pairs.txt format (images under
    `root`, default: the pairs file's folder)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such pairs file (LFW's pairs.txt format, or a CSV of a,b,same)")
    folder = Path(root).expanduser() if root is not None else path.parent
    reader = _read_csv_pairs if path.suffix.lower() == ".csv" else _read_lfw_pairs
    pairs = reader(path, folder)
    if not len(pairs):
        raise DataError(f"{path}: no pairs in it")
    return pairs


def _read_csv_pairs(path: Path, folder: Path) -> Pairs:
    first, second, same = [], [], []
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            cells = [cell.strip() for cell in row]
            if number == 1 and [cell.lower() for cell in cells] == ["a", "b", "same"]:
                continue
            if len(cells) != 3 or not cells[0] or not cells[1]:
                raise DataError(f"{path}:{number}: expected 3 columns a,b,same (two image files, then 1 or 0); "
                                f"got {','.join(row)!r}")
            first.append(_under(folder, cells[0]))
            second.append(_under(folder, cells[1]))
            same.append(_same(cells[2], path, number))
    return Pairs(first, second, np.array(same, dtype=bool))


def _same(cell: str, path: Path, number: int) -> bool:
    value = cell.lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise DataError(f"{path}:{number}: the third column says whether the two images show one identity: 1 or 0 "
                    f"(or true/false); got {cell!r}")


def _under(folder: Path, name: str) -> Path:
    candidate = Path(name).expanduser()
    return candidate if candidate.is_absolute() else folder / candidate


def _read_lfw_pairs(path: Path, folder: Path) -> Pairs:
    first, second, same = [], [], []
    lines = path.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if number == 1 and all(field.isdigit() for field in fields) and len(fields) <= 2:
            continue  # the header: pairs, or folds and pairs per fold
        if len(fields) == 3:
            name, one, two = fields
            first.append(_lfw_image(folder, name, one, path, number))
            second.append(_lfw_image(folder, name, two, path, number))
            same.append(True)
        elif len(fields) == 4:
            name_one, one, name_two, two = fields
            first.append(_lfw_image(folder, name_one, one, path, number))
            second.append(_lfw_image(folder, name_two, two, path, number))
            same.append(False)
        else:
            raise DataError(f"{path}:{number}: expected 'NAME N M' (one person, images N and M) or "
                            f"'NAME N OTHER M' (two people), separated by tabs or spaces; got {line.strip()!r}")
    return Pairs(first, second, np.array(same, dtype=bool))


def _lfw_image(folder: Path, name: str, number: str, path: Path, line: int) -> Path:
    if not number.isdigit():
        raise DataError(f"{path}:{line}: an image number must be a whole number such as 1 or 12; got {number!r}")
    return folder / name / f"{name}_{int(number):04d}.jpg"


def draw_pairs(labels: np.ndarray, count: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to `count` genuine and `count` impostor pairs of distinct images, drawn without repeats from a
    labelled set, seeded; returned as (first indices, second indices, same) in a shuffled order (so
    the 10 folds each hold both kinds). Every genuine pair is used when there are fewer."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    if len(labels) <= 4000:  # all n(n−1)/2 pairs fit in memory: choose among them exactly
        first, second = np.triu_indices(len(labels), k=1)
    else:  # too many to list: a large seeded sample of them (a repeat among millions is negligible)
        first = rng.integers(0, len(labels), size=40 * count)
        second = rng.integers(0, len(labels), size=40 * count)
        keep = first != second
        first, second = first[keep], second[keep]
    same = labels[first] == labels[second]
    chosen = []
    for kind in (same, ~same):
        candidates = np.flatnonzero(kind)
        chosen.append(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
    picked = rng.permutation(np.concatenate(chosen))
    return first[picked], second[picked], same[picked]


def gallery_and_probes(labels: np.ndarray, *, seed: int = 0, max_probes: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """(gallery indices, probe indices): one seeded image per identity with at least two images is its
    gallery entry; up to `max_probes` of the others (seeded) probe it."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    gallery = []
    for identity in np.unique(labels):
        members = np.flatnonzero(labels == identity)
        if len(members) >= 2:
            gallery.append(int(rng.choice(members)))
    gallery_array = np.array(sorted(gallery), dtype=np.int64)
    enrolled = np.isin(labels, labels[gallery_array])
    probes = np.setdiff1d(np.flatnonzero(enrolled), gallery_array)
    if len(probes) > max_probes:
        probes = np.sort(rng.choice(probes, size=max_probes, replace=False))
    return gallery_array, probes
