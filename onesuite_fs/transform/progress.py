"""A one-line progress bar (entries and bytes) on stderr, shown only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .output import human


class Progress:
    """Counts entries and bytes; redraws at most five times a second when enabled."""

    def __init__(self, label: str, total_entries: int = 0, total_bytes: int = 0,
                 stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.total_entries, self.total_bytes = total_entries, total_bytes
        self.entries = self.bytes = 0
        self._drawn = 0.0

    def entry(self, size: int = 0) -> None:
        self.entries += 1
        self.bytes += size
        self._maybe_draw()

    def add_bytes(self, size: int) -> None:
        self.bytes += size
        self._maybe_draw()

    def _maybe_draw(self) -> None:
        if self.enabled and time.monotonic() - self._drawn >= 0.2:
            self.draw()

    def draw(self) -> None:
        self._drawn = time.monotonic()
        share = ""
        if self.total_bytes or self.total_entries:
            done = (self.bytes / self.total_bytes if self.total_bytes
                    else self.entries / self.total_entries)
            filled = int(min(done, 1.0) * 24)
            share = f"[{'#' * filled}{'.' * (24 - filled)}] {min(done, 1.0):4.0%} "
        entries = f"{self.entries:,}" + (f"/{self.total_entries:,}" if self.total_entries else "")
        size = human(self.bytes) + (f"/{human(self.total_bytes)}" if self.total_bytes else "")
        self.stream.write(f"\r{self.label}: {share}{entries} entries, {size}\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
