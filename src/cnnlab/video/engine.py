"""The video library cnnlab decodes and encodes with: PyAV (FFmpeg's libraries, bound for Python),
an optional dependency (`pip install 'cnnlab[video]'`)."""

from __future__ import annotations

from typing import Any

from cnnlab.errors import CnnlabError


class VideoEngineMissing(CnnlabError):
    """PyAV is not installed."""


def pyav() -> Any:
    """The `av` module, FFmpeg's own log lines silenced (cnnlab says what went wrong, once, naming the file)."""
    try:
        import av
    except ImportError:
        raise VideoEngineMissing("video sources need PyAV: pip install 'cnnlab[video]' (or pip install av)") from None
    av.logging.set_level(None)
    return av


def ffmpeg_errors() -> tuple[type[BaseException], ...]:
    """The exceptions PyAV raises for unreadable or unreachable media (FFmpegError subclasses OSError
    in some versions, ValueError in others: both named here)."""
    av = pyav()
    return (av.FFmpegError, OSError, EOFError)
