"""What an entry of a view is: its attributes and the reference of what it shows (a merged
directory, a layer file, a view-private entry, a persistent entry). Plain values, shared by
the View, the pending persistent paths and the daemon's inode table."""

from __future__ import annotations

import stat
from typing import NamedTuple

from .entry import Entry
from .layers import Meta
from .onesis_rules import RamPath
from .onesis_view import Linked
from .provenance import Provenance


class Attr(NamedTuple):
    ino: int
    generation: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


class DirRef(NamedTuple):
    """A directory of a view: its view path, and where its merged content comes from."""

    entry: Entry
    path: str  # in the view
    source: str  # the merged directory's path in the layers (differs under a LINKBACK)
    contribution: tuple[tuple[int, ...], ...]
    layer: int  # metadata winner
    meta: Meta
    linkback: Linked | None = None  # the LINKBACK that shows this variant here, for provenance
    # A persistent directory not made yet, as the mount would make it (a view that makes no
    # state: preview, explain): the rule that makes it. Its children are the copies -d makes.
    pending: RamPath | None = None
    # Under a LINKBACK'd directory: that directory's view path (symlinks inside it that climb
    # out of it resolve from the variant's place: onesis_view.chained_link_text).
    link_root: str | None = None


class FileRef(NamedTuple):
    """A layer's non-directory, the same in every view that shows it."""

    layer: int
    path: str
    meta: Meta


class PrivateRef(NamedTuple):
    """A view-private non-directory or synthetic entry: a LINKBACK path, a /ram link."""

    entry: Entry
    path: str
    meta: Meta
    layer: int | None  # backing layer of a LINKBACK'd file; None for synthetic entries
    source: str  # backing path, or the symlink text of a synthetic link
    provenance: Provenance


class StateRef(NamedTuple):
    """A node's persistent, writable entry (``persistent`` policy)."""

    entry: Entry
    path: str  # view path = path inside the node's state directory
    writable_root: str  # the view path the RAM*/LINK* rule made writable
    rule: RamPath  # that rule, for provenance


# The `layer` of a DirRef no layer has: /ram, an unused persistent directory (always empty).
SYNTHETIC_LAYER = -1
# What such a directory's origin says (for an unused persistent directory too, as before).
RAM_MOUNT_POINT = Provenance.synthetic("mount point of the /ram tmpfs", None, is_dir=True)
Ref = DirRef | FileRef | PrivateRef | StateRef


class Node(NamedTuple):
    """An entry of a view reached by path from the view's root, with what it shows: what a
    one-pass reader holds instead of an inode number (nothing is registered for it)."""

    name: str
    attr: Attr
    ref: Ref

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.attr.mode)


