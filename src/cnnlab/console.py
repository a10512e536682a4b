"""Messages for the person running cnnlab: to stderr, so stdout stays clean for --json output."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO


@dataclass
class Console:
    quiet: bool = False  # no progress or information; warnings still show
    stream: TextIO | None = None
    mute: bool = False  # nothing at all: the extra processes of a distributed run

    def _write(self, text: str) -> None:
        if not self.mute:
            print(text, file=self.stream or sys.stderr, flush=True)

    def info(self, text: str) -> None:
        if not self.quiet:
            self._write(text)

    def warn(self, text: str) -> None:
        self._write(f"warning: {text}")
