"""Following objects from frame to frame: each box gets an id that persists (`cnnlab track`).

The association is ByteTrack's (Zhang et al., 2022), simplified:

1. every track's box is carried to this frame (a constant-velocity Kalman filter, `kalman.py`, or
   the last box seen, with `kalman=False`);
2. confident boxes (score ≥ `high`) are matched to the tracks by IoU (at least `match_iou`; both
   boxes grown by `buffer` of their size first, see `buffered`), the
   assignment maximising the total IoU (SciPy's `linear_sum_assignment` where SciPy is installed,
   else greedily, best pair first);
3. tracks still unmatched get a second chance with the weak boxes (`low` ≤ score < `high`), at IoU ≥
   `weak_iou`: an object the detector is unsure of for a frame (blurred, half hidden) keeps its id
   instead of being lost and reborn, which is ByteTrack's contribution;
4. a confident box left unmatched starts a new track; a track unseen for more than `max_lost`
   frames ends (until then its predicted box is matched as usual, so an object briefly missed
   comes back under its id).

Matching ignores the class (a detector may hesitate between two classes of one object); a track's
class is the one it was most often detected as.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from cnnlab.video.kalman import BoxKalman


@dataclass
class Track:
    id: int
    box: np.ndarray  # the latest box: seen, or predicted while the object is unseen
    first_frame: int
    last_frame: int  # last frame it was seen in
    frames_seen: int = 1
    lost: int = 0  # frames since it was last seen
    labels: Counter = field(default_factory=Counter)
    motion: BoxKalman | None = None
    centres: list[tuple[int, float, float]] = field(default_factory=list)  # (frame, cx, cy) where seen

    @property
    def label(self) -> str:
        return self.labels.most_common(1)[0][0] if self.labels else ""


@dataclass
class TrackedBox:
    """One box of one frame, with the id of the track it belongs to."""

    track_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]


def iou_matrix(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU of every box of `first` (n, 4) with every box of `second` (m, 4): (n, m).

    >>> iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]])).round(3)
    array([[0.333, 0.   ]])
    """
    first, second = np.asarray(first, np.float64).reshape(-1, 4), np.asarray(second, np.float64).reshape(-1, 4)
    left = np.maximum(first[:, None, 0], second[None, :, 0])
    top = np.maximum(first[:, None, 1], second[None, :, 1])
    right = np.minimum(first[:, None, 2], second[None, :, 2])
    bottom = np.minimum(first[:, None, 3], second[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # noqa: E731
    union = area(first)[:, None] + area(second)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def buffered(boxes: np.ndarray, buffer: float) -> np.ndarray:
    """Boxes grown by `buffer` times their width and height on every side (C-BIoU, Yang et al., 2023):
    a small or thin object that moves more than its own width between two frames still overlaps
    where it was expected, which plain IoU would call a new object.

    >>> buffered(np.array([[10.0, 10.0, 20.0, 30.0]]), 0.5)
    array([[ 5.,  0., 25., 40.]])
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1) * buffer
    return boxes + size * np.array([-1, -1, 1, 1])


def match(similarity: np.ndarray, minimum: float) -> list[tuple[int, int]]:
    """Pairs (row, column) maximising the total similarity, each pair at least `minimum`."""
    if not similarity.size:
        return []
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:  # SciPy is optional: the greedy matching is as good when pairs are clear
        return _greedy(similarity, minimum)
    rows, columns = linear_sum_assignment(-similarity)
    return [(r, c) for r, c in zip(rows.tolist(), columns.tolist()) if similarity[r, c] >= minimum]


def _greedy(similarity: np.ndarray, minimum: float) -> list[tuple[int, int]]:
    pairs, used_rows, used_columns = [], set(), set()
    for flat in np.argsort(-similarity, axis=None):
        r, c = np.unravel_index(flat, similarity.shape)
        if similarity[r, c] < minimum:
            break
        if r not in used_rows and c not in used_columns:
            pairs.append((int(r), int(c)))
            used_rows.add(r)
            used_columns.add(c)
    return pairs


class Tracker:
    """ByteTrack-style association (see the module docstring). `update` once per frame, in order."""

    def __init__(self, *, high: float = 0.5, low: float = 0.1, match_iou: float = 0.2, weak_iou: float = 0.4,
                 max_lost: int = 30, kalman: bool = True, buffer: float = 0.5):
        if not 0 <= low <= high <= 1:
            raise ValueError(f"need 0 ≤ low ≤ high ≤ 1 (got low={low}, high={high})")
        self.high, self.low, self.match_iou, self.weak_iou = high, low, match_iou, weak_iou
        self.max_lost, self.kalman, self.buffer = max_lost, kalman, buffer
        self.active: list[Track] = []
        self.finished: list[Track] = []
        self._next_id = 1

    @property
    def tracks(self) -> list[Track]:
        """Every track so far, in the order they started."""
        return sorted(self.finished + self.active, key=lambda track: track.id)

    def update(self, frame: int, boxes: np.ndarray, scores: Sequence[float], labels: Sequence[str]) -> list[TrackedBox]:
        """This frame's boxes (k, 4), scores and labels → the boxes that belong to a track, with its id."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64)
        for track in self.active:
            track.box = track.motion.predict() if track.motion is not None else track.box
        strong = np.flatnonzero(scores >= self.high)
        weak = np.flatnonzero((scores >= self.low) & (scores < self.high))
        grown = buffered(boxes, self.buffer)
        seen, waiting = self._associate(list(self.active), grown, strong, self.match_iou, self.buffer)
        weakly_seen, waiting = self._associate(waiting, grown, weak, self.weak_iou, self.buffer)
        taken = {index for _, index in seen}
        for track, index in seen + weakly_seen:
            self._observe(track, frame, boxes[index], labels[index])
        for track in waiting:
            track.lost += 1
        found = seen + weakly_seen
        for index in strong:
            if index not in taken:
                track = self._start(frame, boxes[index], labels[index])
                self.active.append(track)
                found.append((track, int(index)))
        self.finished += [track for track in self.active if track.lost > self.max_lost]
        self.active = [track for track in self.active if track.lost <= self.max_lost]
        return [TrackedBox(track.id, labels[index], float(scores[index]), tuple(float(v) for v in boxes[index]))
                for track, index in sorted(found, key=lambda pair: pair[1])]

    @staticmethod
    def _associate(tracks: list[Track], boxes: np.ndarray, candidates: np.ndarray, minimum: float, buffer: float
                   ) -> tuple[list[tuple[Track, int]], list[Track]]:
        """(track, box index) pairs among `candidates` (boxes already grown by `buffer`), and the tracks
        left unmatched."""
        if not len(candidates) or not tracks:
            return [], tracks
        expected = buffered(np.array([track.box for track in tracks]), buffer)
        pairs = match(iou_matrix(expected, boxes[candidates]), minimum)
        matched = {t for t, _ in pairs}
        return ([(tracks[t], int(candidates[d])) for t, d in pairs],
                [track for number, track in enumerate(tracks) if number not in matched])

    def _start(self, frame: int, box: np.ndarray, label: str) -> Track:
        track = Track(self._next_id, box.copy(), frame, frame, motion=BoxKalman(box) if self.kalman else None)
        track.labels[label] += 1
        track.centres.append((frame, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
        self._next_id += 1
        return track

    @staticmethod
    def _observe(track: Track, frame: int, box: np.ndarray, label: str) -> None:
        track.box = track.motion.update(box) if track.motion is not None else box.copy()
        track.last_frame, track.lost = frame, 0
        track.frames_seen += 1
        track.labels[label] += 1
        track.centres.append((frame, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2))


def idf1(truth: Sequence[Sequence[tuple[int, Sequence[float]]]],
         predicted: Sequence[Sequence[tuple[int, Sequence[float]]]], *, iou: float = 0.5) -> float:
    """IDF1 (Ristani et al., 2016): per frame lists of (id, box) for the truth and the tracker.

    Each true id is paired with at most one predicted id for the whole clip (the pairing that agrees
    on the most frames, a box pair agreeing in a frame when their IoU is at least `iou`); IDF1 is
    2·(frames they agree) / (true boxes + predicted boxes). An id switch halfway costs about half of
    that object's frames.

    >>> idf1([[(1, (0, 0, 10, 10))]] * 4, [[(7, (1, 0, 11, 10))]] * 4)
    1.0
    """
    agree: Counter = Counter()
    true_count = sum(len(frame) for frame in truth)
    predicted_count = sum(len(frame) for frame in predicted)
    for true_frame, predicted_frame in zip(truth, predicted):
        if not true_frame or not predicted_frame:
            continue
        overlaps = iou_matrix(np.array([box for _, box in true_frame]), np.array([box for _, box in predicted_frame]))
        for t, p in zip(*np.nonzero(overlaps >= iou)):
            agree[true_frame[t][0], predicted_frame[p][0]] += 1
    if not agree:
        return 0.0
    true_ids = sorted({t for t, _ in agree})
    predicted_ids = sorted({p for _, p in agree})
    table = np.array([[agree[t, p] for p in predicted_ids] for t in true_ids], np.float64)
    matched = sum(table[r, c] for r, c in match(table, 1))
    return float(2 * matched / (true_count + predicted_count))
