"""Count the FUSE requests the kernel sends to one mount, by opcode, with the
`fuse:fuse_request_send` tracepoint (every request: the daemon's own counters miss RELEASE,
RELEASEDIR, READDIRPLUS, READLINK and FORGET).

A private trace instance (tracefs `instances/`), so nothing else using the tracer is disturbed,
filtered in the kernel on the mount's connection (its device number). Needs root and a kernel
with the fuse tracepoints (6.x); `available()` says why not otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
EVENT = "events/fuse/fuse_request_send"
_LINE = re.compile(rb"opcode \d+ \((\w+)\)")
_ENTRIES = re.compile(rb"entries-in-buffer/entries-written: (\d+)/(\d+)")


def _mounted() -> bool:
    if (TRACEFS / "events").is_dir():
        return True
    subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True,
                   check=False)
    return (TRACEFS / "events").is_dir()


def available() -> str | None:
    """None if requests can be counted here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    if not _mounted():
        return f"no tracefs at {TRACEFS}"
    if not (TRACEFS / EVENT).is_dir():
        return "the kernel has no fuse:fuse_request_send tracepoint"
    return None


def connection_of(path: Path) -> int:
    """The tracepoint's `connection`: the mount's device number in the kernel's encoding."""
    dev = os.stat(path).st_dev
    return (os.major(dev) << 20) | os.minor(dev)


class FuseRequests:
    """A trace instance counting one connection's requests; `phase()` counts one phase."""

    def __init__(self, mountpoint: Path, buffer_kib: int = 65536) -> None:
        why = available()
        if why:
            raise RuntimeError(f"cannot count FUSE requests: {why}")
        self.connection = connection_of(mountpoint)
        self.dir = TRACEFS / "instances" / f"onesuite-bench-{os.getpid()}"
        self.buffer_kib = buffer_kib

    def __enter__(self) -> FuseRequests:
        self.dir.mkdir()
        (self.dir / "buffer_size_kb").write_text(str(self.buffer_kib))
        (self.dir / EVENT / "filter").write_text(f"connection == {self.connection}")
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            (self.dir / EVENT / "enable").write_text("0")
        self.dir.rmdir()  # tracefs removes the instance with its buffers

    @contextlib.contextmanager
    def phase(self, into: Counter[str]) -> Iterator[Counter[str]]:
        """Count the requests sent while the block runs into `into` (opcode names without
        FUSE_, and "lost" if the buffer overflowed)."""
        (self.dir / "trace").write_text("")
        (self.dir / EVENT / "enable").write_text("1")
        try:
            yield into
        finally:
            (self.dir / EVENT / "enable").write_text("0")
            text = (self.dir / "trace").read_bytes()
            for match in _LINE.finditer(text):
                into[match.group(1).decode().removeprefix("FUSE_")] += 1
            entries = _ENTRIES.search(text)
            if entries and entries.group(1) != entries.group(2):
                into["lost"] += int(entries.group(2)) - int(entries.group(1))
