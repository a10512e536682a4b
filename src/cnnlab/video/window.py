"""--show: the annotated frames in a window (OpenCV's), where there is a display to open one on."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError


class NoDisplayError(CnnlabError):
    """--show where no window can be opened."""


def check_display() -> None:
    """Refuse --show before any work where no window can open: no display, or OpenCV without its GUI
    (the opencv-python-headless wheel)."""
    if platform.system() == "Linux" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise NoDisplayError("--show: there is no display here (DISPLAY and WAYLAND_DISPLAY are not set); "
                             "write the annotated video with --draw out.mp4 instead")
    try:
        import cv2
    except ImportError:
        raise NoDisplayError("--show opens a window with OpenCV: pip install opencv-python") from None
    if "GUI" in cv2.getBuildInformation() and "NONE" in cv2.getBuildInformation().split("GUI:")[-1][:80]:
        raise NoDisplayError("--show: this OpenCV has no windows (opencv-python-headless); pip install "
                             "opencv-python, or write the annotated video with --draw out.mp4")


class Window:
    """One window showing each picture as it comes; pressing q or Esc in it stops the run (Ctrl-C does too)."""

    def __init__(self, title: str):
        check_display()
        import cv2

        self.cv2, self.title = cv2, title
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def show(self, picture: Any) -> None:
        pixels = np.asarray(picture.convert("RGB") if hasattr(picture, "convert") else picture)
        self.cv2.imshow(self.title, pixels[..., ::-1])  # OpenCV wants BGR
        if self.cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise KeyboardInterrupt  # ends the run as Ctrl-C does: outputs finished, summary printed

    def close(self) -> None:
        self.cv2.destroyWindow(self.title)
