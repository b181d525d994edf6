"""A root as a POSIX (pax) tar stream: numeric owners, nanosecond mtimes, extended
attributes as SCHILY.xattr records (what GNU tar --xattrs reads and writes), and hard links
kept: a second path of the same inode is a hard-link entry to the first."""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable
from typing import BinaryIO

from .progress import Progress
from .walk import Item, Root

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


def tar_info(root: Root, item: Item, name: str) -> tarfile.TarInfo:
    """The tar header of one entry (content and link target aside)."""
    attr = item.attr
    info = tarfile.TarInfo(name)
    info.type = _TYPES[stat.S_IFMT(attr.mode)]
    info.mode = stat.S_IMODE(attr.mode)
    info.uid, info.gid = attr.uid, attr.gid
    info.uname = info.gname = ""  # numeric owners only: names mean nothing off the node
    info.mtime = attr.mtime_ns // 10**9
    # tarfile would write a float mtime with float precision; an explicit pax record wins.
    seconds, nanos = divmod(attr.mtime_ns, 10**9)
    info.pax_headers["mtime"] = f"{seconds}.{nanos:09d}" if nanos else str(seconds)
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
              prefix: str = "./", on_skip: Callable[[str, str], None] | None = None) -> int:
    """Write the root to `out` as a pax tar stream; returns the number of entries written.
    Sockets cannot be stored in tar and are skipped (reported through `on_skip`)."""
    written = 0
    # backing file -> first name, only for multiply-linked files
    first_path: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
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
            info = tar_info(root, item, name)
            if item.is_reg and item.attr.nlink > 1:
                linked = first_path.get(item.link_key)
                if linked is not None:
                    info.type, info.linkname, info.size = tarfile.LNKTYPE, linked, 0
                    tar.addfile(info)
                    tar.members.clear()
                    written += 1
                    continue
                first_path[item.link_key] = name
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
