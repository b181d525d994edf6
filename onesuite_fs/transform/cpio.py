"""A root as a gzip'd cpio "newc" archive, the format the Linux kernel unpacks as an
initramfs (Warewulf ships node images this way).

newc carries no extended attributes and whole seconds only; both are documented limits.
Hard links: the first path of an inode carries the data, later ones are empty entries with the
same inode number, which both the kernel (init/initramfs.c maybe_link) and GNU cpio -i turn
into links to the first.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..progress import Progress
from .link_table import LinkTable
from .walk import Item, Root, clamped_seconds

TRAILER = b"TRAILER!!!"
_MAX32 = 0xFFFFFFFF


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def newc_header(*, ino: int, mode: int, uid: int, gid: int, nlink: int, mtime: int,
                size: int, rdev: int, name: bytes) -> bytes:
    fields = (ino, mode, uid, gid, nlink, max(0, min(mtime, _MAX32)), size, 0, 0,
              os.major(rdev), os.minor(rdev), len(name) + 1, 0)
    header = b"070701" + b"".join(b"%08X" % (value & _MAX32) for value in fields)
    return header + name + b"\0" + _pad(len(header) + len(name) + 1)


class _Counter:
    def __init__(self, out: BinaryIO) -> None:
        self.out, self.offset = out, 0

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.offset += len(data)


def write_newc(root: Root, out: BinaryIO, progress: Progress,
               on_skip: Callable[[str, str], None] | None = None,
               spill_dir: Path | None = None) -> int:
    """Write the root as an uncompressed newc stream; returns the number of entries.
    `on_skip(path, why)` hears of what newc cannot hold (extended attributes). The table
    of hard links spills to `spill_dir` when large (`LinkTable`)."""
    # backing file -> archive inode, only for files whose other names are in this root
    with LinkTable(spill_dir) as numbers:
        return _write_newc(root, _Counter(out), progress, on_skip, numbers)


def _write_newc(root: Root, sink: _Counter, progress: Progress,
                on_skip: Callable[[str, str], None] | None, numbers: LinkTable) -> int:
    next_number, written = 1, 0
    for item in root.walk():
        progress.entry()
        attr = item.attr
        name = os.fsencode(item.path) if item.path else b"."
        if on_skip and not item.is_link and root.xattrs(item):
            on_skip(item.path or "/", "cpio newc has no extended attributes")
        # Archive inode numbers are counted, not taken from the tree (62-bit): newc has 32
        # bits, and a truncated number could make two files look like links of each other.
        found = numbers.get(item.link_key) if item.is_reg and attr.nlink > 1 else None
        number = found if isinstance(found, int) else None
        linked = number is not None
        if number is None:
            number, next_number = next_number, next_number + 1
            if root.links.may_recur(item):
                numbers[item.link_key] = number
        body, size = b"", 0
        if item.is_link:
            body = root.readlink(item)
            size = len(body)
        elif item.is_reg and not linked:
            size = attr.size
        mtime = clamped_seconds(item, 0, _MAX32, on_skip=on_skip)
        sink.write(newc_header(ino=number, mode=attr.mode, uid=attr.uid, gid=attr.gid,
                               nlink=attr.nlink if item.is_reg else (2 if item.is_dir else 1),
                               mtime=mtime, size=size, rdev=attr.rdev, name=name))
        if body:
            sink.write(body + _pad(len(body)))
        elif size:
            _copy(root, item, size, sink, progress)
            sink.write(_pad(size))
        written += 1
    sink.write(newc_header(ino=0, mode=0, uid=0, gid=0, nlink=1, mtime=0, size=0, rdev=0,
                           name=TRAILER))
    sink.write(b"\0" * (-sink.offset % 512))
    return written


def _copy(root: Root, item: Item, size: int, sink: _Counter, progress: Progress) -> None:
    remaining = size
    for chunk in root.chunks(item):
        chunk = chunk[:remaining]
        sink.write(chunk)
        progress.add_bytes(len(chunk))
        remaining -= len(chunk)
        if not remaining:
            break
    if remaining:  # the file shrank while we read it: the header already promised `size`
        raise OSError(f"/{item.path} shrank while it was read")


def write_initramfs(root: Root, out: BinaryIO, progress: Progress,
                    on_skip: Callable[[str, str], None] | None = None,
                    level: int = 6, spill_dir: Path | None = None) -> int:
    """The root as a gzip'd newc archive (mtime 0 in the gzip header: reproducible)."""
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=level, mtime=0) as compressed:
        return write_newc(root, compressed, progress, on_skip,  # type: ignore[arg-type]
                          spill_dir)
