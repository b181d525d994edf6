"""Writing entries of a root to a real directory tree with everything the view shows: type,
content, numeric owner, mode (setuid bits included), extended attributes, nanosecond times.

The order matters: owner before mode (chown clears setuid bits), extended attributes after
the owner (chown clears security.capability), times last, and a directory's times only once
its children are written (writing them changes it).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from ..progress import Progress
from .link_table import LinkTable
from .walk import Item, Root, merged_children


class Writer:
    """Copies entries from roots into a destination tree. Files of one backing inode are
    written once and hard-linked after (a view's hard links stay links, and identical
    content shared by many nodes costs its space once).

    Memory: files with another name in the root (`Root.links`) are remembered for the whole
    run, in a `LinkTable` (on disk in `spill_dir` past a few thousand); any other file only
    until `release`, which a caller calls once nothing it wrote since can come back (the
    variants of one path are written). `close` when done."""

    def __init__(self, progress: Progress | None = None, *,
                 spill_dir: Path | None = None) -> None:
        self.progress = progress  # told of the bytes written, when given
        self._linked = LinkTable(spill_dir)
        self._recent: dict[tuple[int, int], bytes] = {}
        self.entries = 0
        self.bytes = 0

    def entry(self, root: Root, item: Item, dest: Path, *, directory_meta: bool = True) -> None:
        """Write one entry at `dest` (a directory: empty, its metadata set by `finish_dir`
        unless `directory_meta` is false)."""
        attr = item.attr
        self.entries += 1
        if item.is_dir:
            dest.mkdir()
            return
        if item.is_reg:
            linked = self._recent.get(item.link_key)
            if linked is None and item.attr.nlink > 1:
                linked = self._linked.get(item.link_key)
            if linked is not None:
                os.link(linked, dest)
                return
            fd = root.open(item)
            try:
                with open(fd, "rb", closefd=False) as src, open(dest, "xb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            finally:
                os.close(fd)
            self.bytes += attr.size
            if self.progress is not None:
                self.progress.add_bytes(attr.size)
            remembered = self._linked if root.links.may_recur(item) else self._recent
            remembered[item.link_key] = os.fsencode(dest)
        elif item.is_link:
            os.symlink(os.fsdecode(root.readlink(item)), dest)
        else:
            os.mknod(dest, attr.mode, attr.rdev)
        self.set_meta(root, item, dest)

    def release(self) -> None:
        """Forget the files written since the last release that have no other name in the
        root: they are copied again if they come back. A long run keeps only the files that
        can still come back (real hard links), so memory stays flat."""
        self._recent.clear()

    def close(self) -> None:
        self._recent.clear()
        self._linked.close()

    def set_meta(self, root: Root, item: Item, dest: Path) -> None:
        attr = item.attr
        os.chown(dest, attr.uid, attr.gid, follow_symlinks=False)
        if not item.is_link:
            os.chmod(dest, stat.S_IMODE(attr.mode))
        for name, value in root.xattrs(item).items():
            try:
                os.setxattr(dest, name, value, follow_symlinks=False)
            except OSError as exc:
                # user.* on a symlink: the kernel refuses it; the view cannot show it either.
                if exc.errno not in (errno.EPERM, errno.ENOTSUP):
                    raise
        os.utime(dest, ns=(attr.atime_ns, attr.mtime_ns), follow_symlinks=False)

    def finish_dir(self, root: Root, item: Item, dest: Path) -> None:
        self.set_meta(root, item, dest)

    def subtrees(self, copies: Sequence[tuple[Root, Item, Path]]) -> None:
        """Copy entries with everything below them from several roots at once (the variants
        of one path): walked in lockstep, so a file the copies share at a path is written
        once and linked, and only the current path's files are remembered (`release` after
        each name)."""
        roots = [root for root, _, _ in copies]
        for root, item, dest in copies:
            self.entry(root, item, dest)
        self._below(roots, {n: item for n, (_, item, _) in enumerate(copies)},
                    {n: dest for n, (_, _, dest) in enumerate(copies)})

    def _below(self, roots: Sequence[Root], items: dict[int, Item],
               dests: dict[int, Path]) -> None:
        """The entries below the directories among `items`, then the directories' metadata
        (writing entries changed their times). Recursion as deep as the tree."""
        directories = {n: item for n, item in items.items() if item.is_dir}
        if not directories:
            return
        for name, present in merged_children(roots, directories):
            below = {n: dests[n] / name for n in present}
            for n, child in present.items():
                self.entry(roots[n], child, below[n])
            self._below(roots, present, below)
            self.release()
        for n, item in directories.items():
            self.finish_dir(roots[n], item, dests[n])
