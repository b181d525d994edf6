"""Give a new FUSE mount the device number the previous one had, so NFS handles survive.

ganesha puts the exported file system's id into every file handle, and for FUSE (``f_fsid``
is 0) that id is the mount's anonymous device number (``st_dev``, major 0). The kernel hands
those out lowest-free, so after a restart the mount gets its old number back only if every
lower number is still taken and the old one is free. `DevicePin` arranges that: before the
mount it occupies lower free numbers with empty tmpfs mounts (they come from the same
allocator), frees the target, and releases the placeholders once the mount exists. If the
old number is held by another mount, nothing can be done; the caller reports it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

MAX_PLACEHOLDERS = 256


def read_recorded(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def describe(dev: int) -> str:
    return f"{os.major(dev)}:{os.minor(dev)}"


class DevicePin:
    """Context manager: `prepare(target)` before mounting, placeholders released on exit."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.held: list[Path] = []

    def _place(self, index: int) -> tuple[Path, int] | None:
        path = self.work_dir / f"pin{index}"
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k,mode=0700",
                               "onesuite-devpin", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            path.rmdir()
            return None
        return path, os.stat(path).st_dev

    def _release(self, path: Path) -> None:
        subprocess.run(["umount", str(path)], capture_output=True, check=False)
        try:
            path.rmdir()
        except OSError:
            pass

    def prepare(self, target: int) -> bool:
        """Make `target` the lowest free anonymous device number; False if it is taken."""
        if os.major(target) != 0:
            return False
        for index in range(MAX_PLACEHOLDERS):
            placed = self._place(index)
            if placed is None:
                return False
            path, dev = placed
            if dev == target:  # free, and now the lowest free one: give it back for the mount
                self._release(path)
                return True
            if os.minor(dev) > os.minor(target):  # target is held by another mount
                self._release(path)
                return False
            self.held.append(path)
        return False

    def __enter__(self) -> DevicePin:
        return self

    def __exit__(self, *exc: object) -> None:
        while self.held:
            self._release(self.held.pop())
        try:
            self.work_dir.rmdir()
        except OSError:
            pass
