"""A root as a squashfs image: our tar stream piped into squashfs-tools' ``mksquashfs -tar``
(4.5.1 and later), so nothing is staged on disk. squashfs keeps whole seconds; the root
directory's mode, owner and time are set by a second, appending run (a tar stream cannot
set them), its extended attributes are not stored."""

from __future__ import annotations

import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from ..core.errors import ConfigError
from ..progress import Progress
from .tar import write_tar
from .walk import Root

# squashfs stores times as unsigned 32-bit seconds; mksquashfs wraps anything else silently.
SQUASHFS_TIMES = (0, 2**32 - 1)


def mksquashfs() -> str:
    found = shutil.which("mksquashfs")
    if found is None:
        raise ConfigError("mksquashfs is not installed", hint="apt-get install squashfs-tools")
    return found


def write_squashfs(root: Root, out: Path, progress: Progress, *, compressor: str = "gzip",
                   on_skip: Callable[[str, str], None] | None = None) -> int:
    command = mksquashfs()
    proc = subprocess.Popen([command, "-", str(out), "-tar", "-no-strip", "-noappend",
                             "-quiet", "-no-progress", "-comp", compressor],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        written = write_tar(root, proc.stdin, progress, include_root=False, prefix="",
                            on_skip=on_skip, time_range=SQUASHFS_TIMES,
                            spill_dir=out.parent)
        proc.stdin.close()
    except BrokenPipeError:
        written = -1
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    messages = proc.stdout.read().decode(errors="replace")
    if proc.wait() != 0 or written < 0:
        raise OSError(f"mksquashfs failed ({proc.returncode}): {messages.strip()}")
    _set_root(command, root, out)
    return written


def _set_root(command: str, root: Root, out: Path) -> None:
    """Give the image's root directory the root's mode, owner and time. mksquashfs 4.5.1
    ignores -root-time when reading a tar stream, but honours it when appending: append an
    empty directory, which adds nothing but rewrites the root directory's inode."""
    top = root.top().attr
    empty = out.with_name(out.name + ".empty")
    empty.mkdir()
    try:
        done = subprocess.run(
            [command, str(empty), str(out), "-quiet", "-no-progress", "-no-recovery",
             "-root-mode", f"{stat.S_IMODE(top.mode):o}", "-root-uid", str(top.uid),
             "-root-gid", str(top.gid), "-root-time",
             str(min(max(SQUASHFS_TIMES[0], top.mtime_ns // 10**9), SQUASHFS_TIMES[1]))],
            capture_output=True, text=True, check=False)
    finally:
        empty.rmdir()
    if done.returncode != 0:
        raise OSError(f"mksquashfs (root directory) failed ({done.returncode}): "
                      f"{(done.stdout + done.stderr).strip()}")
