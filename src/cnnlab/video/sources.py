"""What a SOURCE names, decided without opening anything (so `cnnlab predict` stays quick to refuse).

    >>> describe_source("road.mp4").kind, describe_source("0").kind, describe_source("rtsp://cam/1").kind
    ('file', 'camera', 'stream')
    >>> is_video_source("shoe.png"), is_video_source("frames/")
    (False, False)

A folder or glob of frames is images, read as images (every frame a row); a video file, a camera
index or a stream URL is a video source. Torch-free and PyAV-free: imported by the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://", "udp://", "tcp://", "srt://")


@dataclass(frozen=True)
class SourceSpec:
    """A video source: `kind` is "file", "camera" or "stream"; `live` sources (cameras, streams) run
    in real time: frames the model cannot keep up with are dropped, oldest first."""

    text: str
    kind: str

    @property
    def live(self) -> bool:
        return self.kind != "file"

    @property
    def camera_index(self) -> int:
        return int(self.text)

    @property
    def stem(self) -> str:
        """A name for outputs made from this source: the file's stem, "camera0", or "stream"."""
        if self.kind == "file":
            return Path(self.text).stem
        return f"camera{self.text}" if self.kind == "camera" else "stream"


def describe_source(text: str) -> SourceSpec | None:
    """The video source `text` names, or None when it is an image, a folder or a glob (images)."""
    lowered = text.lower()
    if lowered.startswith(STREAM_SCHEMES):
        return SourceSpec(text, "stream")
    if text.isdigit() and not Path(text).exists():
        return SourceSpec(text, "camera")
    if Path(lowered).suffix in VIDEO_SUFFIXES and not Path(text).is_dir():
        return SourceSpec(text, "file")
    return None


def is_video_source(text: str) -> bool:
    return describe_source(text) is not None
