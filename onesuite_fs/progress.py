"""One progress line on stderr for anything that takes more than a few seconds: entries (and
bytes, against totals when known), shown only on a terminal so pipes and logs stay clean."""

from __future__ import annotations

import sys
import time
from typing import TextIO

QUIET_START = 0.5  # a transient line waits this long: short runs print nothing at all
REDRAW = 0.2  # seconds between two redraws


def human(size: float) -> str:
    """A size as people read it: 512 B, 1.5 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


class Progress:
    """`entry(size)`/`add_bytes(size)` from a writer, or `tick(count)` from a walk that
    counts. A transient line (preview, diff) is erased by `close()`; a writer's stays, with
    its totals."""

    def __init__(self, label: str, total_entries: int = 0, total_bytes: int = 0,
                 stream: TextIO | None = None, enabled: bool | None = None, *,
                 transient: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.total_entries, self.total_bytes = total_entries, total_bytes
        self.entries = self.bytes = 0
        self.transient = transient
        self.started = time.monotonic()
        self._next = self.started + (QUIET_START if transient else 0.0)
        self._shown = False

    def entry(self, size: int = 0) -> None:
        self.entries += 1
        self.bytes += size
        self._maybe_draw()

    def add_bytes(self, size: int) -> None:
        self.bytes += size
        self._maybe_draw()

    def tick(self, count: int) -> None:
        """A walk has seen `count` entries (checked every 256, so a walk pays nothing)."""
        if count % 256 == 0:
            self.entries = count
            self._maybe_draw()

    def _maybe_draw(self) -> None:
        if self.enabled and time.monotonic() >= self._next:
            self.draw()

    def draw(self) -> None:
        now = time.monotonic()
        self._next = now + REDRAW
        self._shown = True
        share = ""
        if self.total_bytes or self.total_entries:
            done = (self.bytes / self.total_bytes if self.total_bytes
                    else self.entries / self.total_entries)
            filled = int(min(done, 1.0) * 24)
            share = f"[{'#' * filled}{'.' * (24 - filled)}] {min(done, 1.0):4.0%} "
        entries = f"{self.entries:,}" + (f"/{self.total_entries:,}" if self.total_entries else "")
        if self.transient:
            rest = f"{now - self.started:.1f} s"
        else:
            rest = human(self.bytes) + (f"/{human(self.total_bytes)}" if self.total_bytes else "")
        self.stream.write(f"\r{self.label}: {share}{entries} entries, {rest}\033[K")
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.transient:
            if self._shown:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._shown = False
            return
        self.draw()
        self.stream.write("\n")
        self.stream.flush()
