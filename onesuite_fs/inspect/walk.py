"""A view's entries as plain records: a node, group or image of the Tree (exactly what the
mount serves, oneSIS rules included) or a directory on disk (e.g. a root rsync built), walked
the same way so that preview and diff treat both alike."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ..core.provenance import Provenance
from ..core.view import DirRef, View
from ..core.walk import Item, Root
from ..core.walk import walk as walk_entries
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
    handle: object  # the view's own reference: an Item of a root, or a path on disk
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


class RecordSource(Protocol):
    label: str

    def stat(self, path: str) -> Record | None: ...
    def children(self, record: Record) -> Iterable[Record]: ...
    def target(self, record: Record) -> str: ...
    def digest(self, record: Record) -> bytes: ...
    def identity(self, record: Record) -> object: ...


class TreeView:
    """A node, group or image root of the View, read by path through the one root walker
    (core/walk.py's Root): nothing is registered and, with the View's bounded caches,
    memory does not grow with the root (preview and diff of any size)."""

    def __init__(self, view: View, target: Target) -> None:
        assert target.entry is not None
        self.root, self.subject, self.label = Root(view, target.entry), target, target.spec

    def _record(self, item: Item, parent: Item | None) -> Record:
        attr = item.attr
        ref = None if parent is None else parent.node.ref
        keeps = (self.root.view.install_keeps(ref, item.node.name)
                 if isinstance(ref, DirRef) else None)
        return Record("/" + item.path, attr.mode, attr.uid, attr.gid, attr.size, attr.rdev,
                      self.root.provenance(item), item, keeps)

    def stat(self, path: str) -> Record | None:
        parts = path_parts(path)
        parent = self.root.lookup("/".join(parts[:-1])) if parts else None
        item = self.root.lookup("/".join(parts))
        return None if item is None else self._record(item, parent)

    def children(self, record: Record) -> Iterator[Record]:
        """Made one at a time: a walk holds one entry per level, not each listing twice."""
        parent = self._item(record)
        return (self._record(item, parent) for item in self.root.children(parent))

    @staticmethod
    def _item(record: Record) -> Item:
        assert isinstance(record.handle, Item)
        return record.handle

    def target(self, record: Record) -> str:
        return os.fsdecode(self.root.readlink(self._item(record)))

    def digest(self, record: Record) -> bytes:
        return self.root.digest(self._item(record))

    def identity(self, record: Record) -> object:
        """The backing file: two entries with the same identity have the same content."""
        return ("backing", self._item(record).link_key)


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

    def children(self, record: Record) -> Iterable[Record]:
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


def make_view(view: View, target: Target) -> RecordSource:
    return DirView(target) if target.kind == "dir" else TreeView(view, target)


def walk(view: RecordSource, top: Record, depth: int | None = None,
         tick: Callable[[int], None] | None = None) -> Iterator[Record]:
    """`top` and everything below it down to `depth` levels (None: all), depth first in
    name order, as `find` lists a tree (the one walk, core/walk.py)."""
    for seen, record in enumerate(walk_entries(lambda r: iter(view.children(r)), top, depth),
                                  start=1):
        yield record
        if tick is not None:
            tick(seen)


def mode_string(mode: int) -> str:
    """The permission bits as 4 octal digits ("0644", "4755"): what --json shows."""
    return f"{stat.S_IMODE(mode):04o}"


def record_json(view: RecordSource, record: Record) -> dict[str, object]:
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
