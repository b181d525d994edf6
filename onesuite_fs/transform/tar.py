"""A root as a POSIX (pax) tar stream: numeric owners, nanosecond mtimes, extended
attributes as SCHILY.xattr records (what GNU tar --xattrs reads and writes), and hard links
kept: a second path of the same inode is a hard-link entry to the first."""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..progress import Progress
from .link_table import LinkTable
from .walk import Item, Root, clamped_seconds

_TYPES = {stat.S_IFDIR: tarfile.DIRTYPE, stat.S_IFREG: tarfile.REGTYPE,
          stat.S_IFLNK: tarfile.SYMTYPE, stat.S_IFCHR: tarfile.CHRTYPE,
          stat.S_IFBLK: tarfile.BLKTYPE, stat.S_IFIFO: tarfile.FIFOTYPE}


class _Reader:
    """A file object over an fd for tarfile.addfile, counting bytes for the progress bar."""

    def __init__(self, fd: int, progress: Progress) -> None:
        self.fd, self.progress = fd, progress

    def read(self, size: int = -1) -> bytes:
        data = os.read(self.fd, size if size >= 0 else 1 << 30)
        self.progress.add_bytes(len(data))
        return data


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def pax_time(ns: int) -> str:
    """A pax time record: decimal seconds with all nine digits of fraction. Always a
    fraction: mksquashfs 4.5.1 cannot parse a whole number ("Failed to parse pax header").
    The sign goes in front: -1.5 s is "-1.500000000", not floor division's -2 + 0.5."""
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    seconds, nanos = divmod(ns, 10**9)
    return f"{sign}{seconds}.{nanos:09d}"


_USTAR_TIME_LIMIT = 8**11  # the header's 11 octal digits


def tar_info(root: Root, item: Item, name: str, mtime_ns: int | None = None) -> tarfile.TarInfo:
    """The tar header of one entry (content and link target aside); `mtime_ns` replaces the
    entry's time (a format that holds a smaller range)."""
    attr = item.attr
    info = tarfile.TarInfo(name)
    info.type = _TYPES[stat.S_IFMT(attr.mode)]
    info.mode = stat.S_IMODE(attr.mode)
    info.uid, info.gid = attr.uid, attr.gid
    info.uname = info.gname = ""  # numeric owners only: names mean nothing off the node
    mtime_ns = attr.mtime_ns if mtime_ns is None else mtime_ns
    info.mtime = mtime_ns // 10**9
    # Whole seconds fit the header; anything else gets an exact pax record (tarfile's own
    # would be a float, or a whole number mksquashfs refuses).
    if mtime_ns % 10**9 or not 0 <= info.mtime < _USTAR_TIME_LIMIT:
        info.pax_headers["mtime"] = pax_time(mtime_ns)
    if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = os.major(attr.rdev), os.minor(attr.rdev)
    elif info.type == tarfile.SYMTYPE:
        info.linkname = _decode(root.readlink(item))
    elif info.type == tarfile.REGTYPE:
        info.size = attr.size
    if not item.is_link:
        for key, value in root.xattrs(item).items():
            info.pax_headers[f"SCHILY.xattr.{key}"] = _decode(value)
    return info



def write_tar(root: Root, out: BinaryIO, progress: Progress, *, include_root: bool = True,
              prefix: str = "./", on_skip: Callable[[str, str], None] | None = None,
              time_range: tuple[int, int] | None = None,
              spill_dir: Path | None = None) -> int:
    """Write the root to `out` as a pax tar stream; returns the number of entries written.
    Sockets cannot be stored in tar and are skipped (reported through `on_skip`). With
    `time_range` (seconds, for squashfs), times outside it are clamped and reported. The
    table of hard links spills to `spill_dir` when large (`LinkTable`)."""
    written = 0
    # backing file -> first name, only for files whose other names are in this root
    with LinkTable(spill_dir) as first_path, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                         errors="surrogateescape") as tar:
        for item in root.walk():
            progress.entry()
            if not item.path and not include_root:
                continue
            if stat.S_ISSOCK(item.attr.mode):
                if on_skip:
                    on_skip(item.path, "a socket cannot be stored in tar")
                continue
            name = prefix + item.path if item.path else "."
            info = tar_info(root, item, name, _clamped(item, time_range, on_skip))
            if item.is_reg and item.attr.nlink > 1:
                linked = first_path.get(item.link_key)
                if isinstance(linked, bytes):
                    info.type, info.size = tarfile.LNKTYPE, 0
                    info.linkname = os.fsdecode(linked)
                    tar.addfile(info)
                    tar.members.clear()
                    written += 1
                    continue
                if root.links.may_recur(item):
                    first_path[item.link_key] = os.fsencode(name)
            if item.is_reg:
                fd = root.open(item)
                try:
                    tar.addfile(info, _Reader(fd, progress))  # type: ignore[arg-type]
                finally:
                    os.close(fd)
            else:
                tar.addfile(info)
            written += 1
            # TarFile keeps every member it wrote (for getmembers); a stream needs none of
            # them, and 50,000 kept headers are tens of megabytes.
            tar.members.clear()
    return written


def _clamped(item: Item, time_range: tuple[int, int] | None,
             on_skip: Callable[[str, str], None] | None) -> int | None:
    """The entry's time in nanoseconds, moved into `time_range` (None: no range)."""
    if time_range is None:
        return None
    seconds = clamped_seconds(item, *time_range, on_skip=on_skip)
    return item.attr.mtime_ns if seconds == item.attr.mtime_ns // 10**9 else seconds * 10**9
