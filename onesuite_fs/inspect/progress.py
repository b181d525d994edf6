"""A one-line progress report on stderr for long walks, only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`tick(count)` from a walk; redraws at most ten times a second, erases itself on
    `done()`. Silent when the stream is not a TTY, so pipes and logs stay clean."""

    def __init__(self, what: str, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.what = what
        self.started = time.monotonic()
        self._next = self.started + 0.5  # short runs print nothing at all
        self._shown = False

    def tick(self, count: int) -> None:
        if not self.enabled or count % 256:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + 0.1
        self._shown = True
        self.stream.write(f"\r{self.what}: {count:,} entries, {now - self.started:.1f} s ")
        self.stream.flush()

    def done(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False
