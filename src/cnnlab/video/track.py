"""`track_video()`: a detector on every frame, each object followed under one id (`cnnlab track`).

    >>> result = cnnlab.video.track_video("runs/det", "road.mp4", draw="road-tracks.mp4",
    ...                                   tracks="tracks.csv", count_line="0,120,320,120")  # doctest: +SKIP

It runs `predict_video`'s loop; each frame's boxes come from the task (`Task.tracked_boxes`, so any
task that finds boxes can be tracked, and one that does not is refused before the video is opened),
go through the `Tracker` (tracking.py), and come out as rows with a track id, per-track rows, ids
drawn on the video and, with a counting line, crossings counted.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from cnnlab.errors import ConfigError
from cnnlab.io import write_text_atomic
from cnnlab.video.counting import LineCounter, parse_line
from cnnlab.video.decode import Frame
from cnnlab.video.annotate import label_font, picture_of
from cnnlab.video.run import (Annotated, VideoOptions, VideoResult, _trained, _window, finish, open_source,
                              output_fps, run_frames, video_path_for)
from cnnlab.video.tracking import TrackedBox, Tracker

TRACK_COLUMNS = ["id", "class", "first_frame", "last_frame", "frames_seen", "first_time", "last_time", "crossed"]


class Tracking:
    """The sink that tracks: for each frame, the task's boxes → tracker → `row["tracks"]` (and crossings)."""

    def __init__(self, task: Any, tracker: Tracker, counter: LineCounter | None):
        self.task, self.tracker, self.counter = task, tracker, counter
        self.times: dict[int, float] = {}

    def __call__(self, frame: Frame, row: dict[str, Any]) -> None:
        boxes, scores, labels = self.task.tracked_boxes(row)
        found = self.tracker.update(frame.index, boxes, scores, labels)
        self.times[frame.index] = frame.time
        row["tracks"] = [{"id": item.track_id, "label": item.label, "score": round(item.score, 4),
                          "box": [round(v, 2) for v in item.box]} for item in found]
        if self.counter is not None:
            for item in found:
                x1, y1, x2, y2 = item.box
                direction = self.counter.observe(item.track_id, (x1 + x2) / 2, (y1 + y2) / 2)
                if direction:
                    row.setdefault("crossings", []).append({"id": item.track_id, "direction": direction})

    def tracks_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(TRACK_COLUMNS)
        for track in self.tracker.tracks:
            crossed = " ".join(self.counter.crossed.get(track.id, [])) if self.counter else ""
            writer.writerow([track.id, track.label, track.first_frame, track.last_frame, track.frames_seen,
                             f"{self.times.get(track.first_frame, 0):.4f}", f"{self.times.get(track.last_frame, 0):.4f}",
                             crossed])
        return buffer.getvalue()

    def notes(self) -> list[str]:
        tracks = self.tracker.tracks
        lines = [f"{len(tracks)} track(s); the longest seen in {max((t.frames_seen for t in tracks), default=0)} frame(s)"]
        if self.counter is not None:
            totals = self.counter.totals()
            lines.append(f"crossed the line: {totals['forward'] + totals['backward']} "
                         f"({totals['forward']} forward, {totals['backward']} backward)")
        return lines


def draw_tracks(task: Any, frame: Frame, row: dict[str, Any], line: tuple[float, ...] | None) -> Any:
    """The frame as the task draws its prediction, with each tracked box's id ("#3") at its top-left
    corner and the counting line, if any."""
    from PIL import ImageDraw

    picture = picture_of(task, frame, row).convert("RGB")
    scale = picture.width / frame.image.shape[1]  # the task may draw on an enlarged copy
    draw = ImageDraw.Draw(picture)
    font = label_font(max(11, round(12 * scale)))
    for item in row.get("tracks", []):
        x1, y1, x2, y2 = (v * scale for v in item["box"])
        text = f"#{item['id']}"
        left, top, right, bottom = draw.textbbox((x1 + 2, y2 - 2), text, font=font, anchor="lb")
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
        draw.text((x1 + 2, y2 - 2), text, fill=(255, 255, 0), font=font, anchor="lb")
    if line is not None:
        draw.line([v * scale for v in line], fill=(255, 0, 255), width=max(1, round(scale)))
    return picture


def track_video(run: Any, source: Any, *, output: str | Path | None = None, tracks: str | Path | None = None,
                draw: str | Path | None = None, show: bool = False, options: VideoOptions | None = None,
                count_line: str | None = None, kalman: bool = True, high: float = 0.5, low: float = 0.1,
                max_lost: int = 30, device: str = "auto", runs_dir: str | Path = "runs", tta: str | None = None,
                precision: str = "auto", conf: float | None = None, iou: float | None = None,
                open_timeout: float = 10.0, read_timeout: float = 10.0, reconnects: int = 3) -> VideoResult:
    """Track RUN's detections through SOURCE. `output`: a row per frame (.json with each frame's tracks;
    .csv a line per tracked box); `tracks`: a CSV line per track (id, class, first/last frame, frames
    seen, crossings); `draw`: the video with boxes and ids. The detector's --conf is lowered to `low`
    by default, so that the weak boxes ByteTrack recovers objects with reach the tracker."""
    options = options or VideoOptions()
    if tracks is not None and Path(tracks).suffix.lower() != ".csv":
        raise ConfigError(f"--tracks {tracks}: name a .csv file")
    trained = _trained(run, device, runs_dir, tta, precision, None, None, None, options)
    if not trained.task.finds_boxes:
        trained.task.tracked_boxes({})  # raises: this task's answers are not boxes
    trained.task.configure(conf=low if conf is None else conf, iou=iou)
    line = parse_line(count_line) if count_line else None
    tracking = Tracking(trained.task, Tracker(high=high, low=low, max_lost=max_lost, kalman=kalman),
                        LineCounter(line) if line else None)
    reader = open_source(source, open_timeout=open_timeout, read_timeout=read_timeout, reconnects=reconnects)
    window = _window(show, reader.name)
    sinks: list[Any] = [tracking]
    annotated = None
    try:
        if draw is not None:
            name = Path(str(reader.name))
            annotated = Annotated(video_path_for(draw, name.stem if not reader.live else "live", name.suffix,
                                                 "tracked"),
                                  output_fps(reader.info, options), reader.info.codec,
                                  lambda frame, row: draw_tracks(trained.task, frame, row, line))
            sinks.append(annotated)
        if window is not None:
            sinks.append(lambda frame, row: window.show(draw_tracks(trained.task, frame, row, line)))
        pictures = annotated is not None or window is not None  # only drawing needs the RGB frames
        result = run_frames(trained, reader, options, sinks, pictures=pictures)
    finally:
        if annotated is not None:
            annotated.close()
        if window is not None:
            window.close()
    result.notes += tracking.notes()
    if annotated is not None and annotated.writer.frames:
        result.written["annotated video"] = annotated.writer.path
    if tracks is not None:
        write_text_atomic(Path(tracks), tracking.tracks_csv())
        result.written["tracks"] = Path(tracks)
    result.tracker = tracking.tracker  # type: ignore[attr-defined]
    if output is not None and Path(output).suffix.lower() == ".csv":
        write_text_atomic(Path(output), tracked_rows_csv(result.rows))
        result.written["rows"] = Path(output)
        output = None
    return finish(result, output)


def tracked_rows_csv(rows: list[dict[str, Any]]) -> str:
    """A line per tracked box: frame, time, id, class, score, box (a frame without any: its line, empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["frame", "time", "id", "class", "score", "x1", "y1", "x2", "y2"])
    for row in rows:
        for item in row.get("tracks", []) or [None]:
            cells = (["", "", ""] + [""] * 4 if item is None else
                     [item["id"], item["label"], f"{item['score']:.4f}", *(f"{v:.2f}" for v in item["box"])])
            writer.writerow([row["frame"], f"{row['time']:.4f}", *cells])
    return buffer.getvalue()


def tracked_boxes_of(result: VideoResult) -> list[list[TrackedBox]]:
    """Per frame, the tracked boxes (for measuring a run against known positions)."""
    return [[TrackedBox(t["id"], t["label"], t["score"], tuple(t["box"])) for t in row.get("tracks", [])]
            for row in result.rows]

