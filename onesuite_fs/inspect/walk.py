"""A view's entries as plain records: a node, group or image of the Tree (exactly what the
mount serves, oneSIS rules included) or a directory on disk (e.g. a root rsync built), walked
the same way so that preview and diff treat both alike."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ..tree import Tree, TreeError
from .targets import Target, path_parts

KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
         stat.S_IFIFO: "fifo", stat.S_IFCHR: "chr", stat.S_IFBLK: "blk",
         stat.S_IFSOCK: "sock"}


class Provenance(NamedTuple):
    """An origin split into its parts: which layer, which path in it, which rule."""

    layer: str  # "image:rhel9", "override:n1", "onesis", "state:n1", "dir:/path"
    source: str | None  # the path inside that layer (None for a synthetic oneSIS entry)
    rule: str | None  # file:line of the oneSIS rule that put it there, if any


_LINKBACK = re.compile(r" \(LINKBACK (.*?:\d+): .*\)$")
_SYNTHETIC_RULE = re.compile(r" \(([^()]*:\d+)\)$")


def parse_origin(origin: str) -> Provenance:
    """Split a `user.onesuite.origin` value (format: docs/semantics.md)."""
    if origin.startswith("onesis:"):
        match = _SYNTHETIC_RULE.search(origin)
        return Provenance("onesis", None, match[1] if match else None)
    if origin.startswith("state:"):
        label, _, rest = origin.partition(" /")
        source, _, rule = rest.partition(" (persistent: ")
        return Provenance(label, "/" + source, rule.rstrip(")") or None)
    # A layer label is kind:name and a name never holds "/", so the first " /" ends it.
    label, _, rest = origin.partition(" /")
    match = _LINKBACK.search(rest)
    if match is not None:
        return Provenance(label, "/" + rest[:match.start()], match[1])
    return Provenance(label, "/" + rest, None)


@dataclass(frozen=True, slots=True)
class Record:
    """One entry of a view, as lstat would show it, with where it comes from."""

    path: str  # absolute inside the view: "/" or "/etc/fstab"
    mode: int  # full st_mode
    uid: int
    gid: int
    size: int
    rdev: int
    origin: str  # user.onesuite.origin (for a directory on disk: "dir:ROOT /path")
    handle: int | str  # the view's own reference: a Tree inode or a path on disk

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
    def provenance(self, record: Record) -> Provenance: ...


class TreeView:
    """A node, group or image of the Tree, read through the same calls the mount makes."""

    def __init__(self, tree: Tree, target: Target) -> None:
        assert target.entry is not None
        self.tree, self.subject, self.label = tree, target, target.spec
        self.root_ino = tree.entry_root_ino(target.entry)
        self.onesis = tree.node_onesis(target.entry)

    def _record(self, path: str, attr) -> Record:  # type: ignore[no-untyped-def]
        return Record(path, attr.mode, attr.uid, attr.gid, attr.size, attr.rdev,
                      self.tree.origin(attr.ino), attr.ino)

    def stat(self, path: str) -> Record | None:
        attr = self.tree.attr(self.root_ino)
        try:
            for part in path_parts(path):
                attr = self.tree.lookup(attr.ino, part)
        except TreeError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise
        return self._record(path, attr)

    def children(self, record: Record) -> list[Record]:
        return [self._record(child_path(record.path, name), attr)
                for name, attr in self.tree.listdir(int(record.handle))]

    def target(self, record: Record) -> str:
        return os.fsdecode(self.tree.readlink(int(record.handle)))

    def digest(self, record: Record) -> bytes:
        with open(self.tree.open(int(record.handle)), "rb", closefd=True) as f:
            return hashlib.file_digest(f, "sha256").digest()

    def provenance(self, record: Record) -> Provenance:
        found = parse_origin(record.origin)
        if found.rule is None and self.onesis is not None and found.layer != "onesis":
            # A LINKBACK'd directory's origin names only the variant; say which line chose it.
            linkback = self.onesis.rules.linkback_for(record.path)
            if linkback is not None:
                found = found._replace(rule=f"{linkback.file}:{linkback.line}")
        return found

    def identity(self, record: Record) -> object:
        """The backing file: two entries with the same identity have the same content."""
        found = self.provenance(record)
        return ("layer", found.layer, found.source) if found.source is not None else None


class DirView:
    """A plain directory tree (e.g. a node root built by rsync), never following links."""

    def __init__(self, target: Target) -> None:
        assert target.directory is not None
        self.root, self.label = target.directory, target.spec

    def _record(self, path: str, full: str) -> Record:
        st = os.lstat(full)
        return Record(path, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_rdev,
                      f"{self.label} {path}", full)

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

    def provenance(self, record: Record) -> Provenance:
        return Provenance(self.label, record.path, None)

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
    found = view.provenance(record)
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
        "layer": found.layer,
        "source": found.source,
        "rule": found.rule,
        "origin": record.origin,
    }
