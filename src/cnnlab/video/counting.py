"""Counting the tracked objects that cross a line (`cnnlab track --count-line x1,y1,x2,y2`).

A track crosses when its box's centre moves from one side of the line to the other between two
frames it was seen in, and the step between them passes through the segment (not its extension).
Each track counts once per direction: an object dithering on the line is not counted again and
again. "forward" is the side the line's left-hand normal points to (from x1,y1 looking at x2,y2, with
y down as in images, moving from the right of the line to its left).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnlab.errors import ConfigError


def parse_line(text: str) -> tuple[float, float, float, float]:
    """'x1,y1,x2,y2' (pixels of the video's frames) → four floats, the two ends apart."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ConfigError(f"--count-line {text}: give the line's two ends in the frame's pixels as x1,y1,x2,y2")
    if values[:2] == values[2:]:
        raise ConfigError(f"--count-line {text}: the two ends are the same point")
    return values  # type: ignore[return-value]


def _side(line: tuple[float, float, float, float], x: float, y: float) -> float:
    x1, y1, x2, y2 = line
    return (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)


@dataclass
class LineCounter:
    line: tuple[float, float, float, float]
    crossed: dict[int, list[str]] = field(default_factory=dict)  # track id -> directions it crossed in
    _last: dict[int, tuple[float, float]] = field(default_factory=dict)

    def observe(self, track_id: int, x: float, y: float) -> str | None:
        """The track's centre in its next frame; the direction when this step crossed the line."""
        previous = self._last.get(track_id)
        self._last[track_id] = (x, y)
        if previous is None or not _crosses(self.line, previous, (x, y)):
            return None
        direction = "forward" if _side(self.line, x, y) < 0 else "backward"
        done = self.crossed.setdefault(track_id, [])
        if direction in done:
            return None
        done.append(direction)
        return direction

    def totals(self) -> dict[str, int]:
        counts = {"forward": 0, "backward": 0}
        for directions in self.crossed.values():
            for direction in directions:
                counts[direction] += 1
        return counts


def _crosses(line: tuple[float, float, float, float], start: tuple[float, float], end: tuple[float, float]) -> bool:
    """Whether the step start→end and the segment `line` intersect (each one's ends on both sides of the other)."""
    before, after = _side(line, *start), _side(line, *end)
    if before == 0 or (before > 0) == (after > 0):
        return False
    step = (*start, *end)
    return (_side(step, *line[:2]) > 0) != (_side(step, *line[2:]) > 0)
