"""A view's entries as plain records: a node, group or image of the Tree (exactly what the
mount serves, oneSIS rules included) or a directory on disk (e.g. a root rsync built), walked
the same way so that preview and diff treat both alike."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ..provenance import Provenance
from ..tree import Tree, TreeError
from .targets import Target, path_parts

KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
         stat.S_IFIFO: "fifo", stat.S_IFCHR: "chr", stat.S_IFBLK: "blk",
         stat.S_IFSOCK: "sock"}


@dataclass(frozen=True, slots=True)
class Record:
    """One entry of a view, as lstat would show it, with where it comes from."""

    path: str  # absolute inside the view: "/" or "/etc/fstab"
    mode: int  # full st_mode
    uid: int
    gid: int
    size: int
    rdev: int
    provenance: Provenance  # where it comes from (a directory on disk: "dir:ROOT", path)
    handle: int | str  # the view's own reference: a Tree inode or a path on disk
    # (layer whose bytes a 4.3 install keeps, layer whose entry came last): rsync's quick
    # check skipped the file (same size and mtime); None when an install copies it.
    install_keeps: tuple[str, str] | None = None

    @property
    def origin(self) -> str:
        """The mount's user.onesuite.origin text (for a directory on disk: "dir:ROOT /path")."""
        return self.provenance.xattr_text()

    @property
    def kind(self) -> str:
        return KINDS.get(stat.S_IFMT(self.mode), "unknown")

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]


def child_path(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


class View(Protocol):
    label: str

    def stat(self, path: str) -> Record | None: ...
    def children(self, record: Record) -> list[Record]: ...
    def target(self, record: Record) -> str: ...
    def digest(self, record: Record) -> bytes: ...
    def identity(self, record: Record) -> object: ...


class TreeView:
    """A node, group or image of the Tree, read through the same calls the mount makes."""

    def __init__(self, tree: Tree, target: Target) -> None:
        assert target.entry is not None
        self.tree, self.subject, self.label = tree, target, target.spec
        self.root_ino = tree.entry_root_ino(target.entry)

    def _record(self, path: str, attr, parent: int | None = None  # type: ignore[no-untyped-def]
                ) -> Record:
        keeps = None if parent is None else self.tree.install_keeps(
            parent, path.rpartition("/")[2])
        return Record(path, attr.mode, attr.uid, attr.gid, attr.size, attr.rdev,
                      self.tree.provenance(attr.ino), attr.ino, keeps)

    def stat(self, path: str) -> Record | None:
        attr = self.tree.attr(self.root_ino)
        parent = None
        try:
            for part in path_parts(path):
                parent, attr = attr.ino, self.tree.lookup(attr.ino, part)
        except TreeError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise
        return self._record(path, attr, parent)

    def children(self, record: Record) -> list[Record]:
        parent = int(record.handle)
        return [self._record(child_path(record.path, name), attr, parent)
                for name, attr in self.tree.listdir(parent)]

    def target(self, record: Record) -> str:
        return os.fsdecode(self.tree.readlink(int(record.handle)))

    def digest(self, record: Record) -> bytes:
        with open(self.tree.open(int(record.handle)), "rb", closefd=True) as f:
            return hashlib.file_digest(f, "sha256").digest()

    def identity(self, record: Record) -> object:
        """The backing file: two entries with the same identity have the same content."""
        found = record.provenance
        return ("layer", found.layer, found.source) if found.source is not None else None


class DirView:
    """A plain directory tree (e.g. a node root built by rsync), never following links."""

    def __init__(self, target: Target) -> None:
        assert target.directory is not None
        self.root, self.label = target.directory, target.spec

    def _record(self, path: str, full: str) -> Record:
        st = os.lstat(full)
        return Record(path, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_rdev,
                      Provenance.on_disk(self.label, path, is_dir=stat.S_ISDIR(st.st_mode)),
                      full)

    def stat(self, path: str) -> Record | None:
        full = os.path.join(self.root, *path_parts(path))
        try:
            return self._record(path, full)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def children(self, record: Record) -> list[Record]:
        with os.scandir(record.handle) as entries:
            names = sorted(entry.name for entry in entries)
        return [self._record(child_path(record.path, n), os.path.join(str(record.handle), n))
                for n in names]

    def target(self, record: Record) -> str:
        return os.readlink(record.handle)

    def digest(self, record: Record) -> bytes:
        fd = os.open(record.handle, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "rb", closefd=True) as f:
            return hashlib.file_digest(f, "sha256").digest()

    def identity(self, record: Record) -> object:
        st = os.lstat(record.handle)
        return ("inode", st.st_dev, st.st_ino)


def make_view(tree: Tree, target: Target) -> View:
    return DirView(target) if target.kind == "dir" else TreeView(tree, target)


def walk(view: View, top: Record, depth: int | None = None,
         tick: Callable[[int], None] | None = None) -> Iterator[Record]:
    """`top` and everything below it down to `depth` levels (None: all), depth first in
    name order, as `find` lists a tree."""
    pending = [(top, 0)]
    seen = 0
    while pending:
        record, level = pending.pop()
        yield record
        seen += 1
        if tick is not None:
            tick(seen)
        if record.is_dir and (depth is None or level < depth):
            pending += [(child, level + 1) for child in reversed(view.children(record))]


def mode_string(mode: int) -> str:
    """The permission bits as 4 octal digits ("0644", "4755"): what --json shows."""
    return f"{stat.S_IMODE(mode):04o}"


def record_json(view: View, record: Record) -> dict[str, object]:
    """One entry in --json output (docs/json.md)."""
    return {
        "path": record.path,
        "type": record.kind,
        "mode": mode_string(record.mode),
        "uid": record.uid,
        "gid": record.gid,
        "size": record.size,
        "rdev": [os.major(record.rdev), os.minor(record.rdev)]
        if record.kind in ("chr", "blk") else None,
        "target": view.target(record) if record.kind == "symlink" else None,
        **record.provenance.json_fields(),
        "install_keeps": None if record.install_keeps is None else {
            "layer": record.install_keeps[0], "under": record.install_keeps[1],
            "why": install_keeps_text(record.install_keeps)},
    }


def install_keeps_text(keeps: tuple[str, str]) -> str:
    """The note preview and explain give a file a 4.3 install does not copy."""
    kept, by = keeps
    return (f"an install keeps {kept}'s bytes: same size and mtime as {by}'s file, which "
            "rsync -av does not copy (it sets only its mode and owner)")
