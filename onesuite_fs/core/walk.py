"""The one way a root is read: by path, lazily, depth first, parent before children.

A root is read through the View's path API (``root_node``/``children``/``child``), never by
inode number, so nothing it passes is registered; with the View's bounded caches only the
listings of the directories on the current path and a bounded number of recent ones are held.
Memory does not grow with the size of the root. preview, explain, diff, export and convert all
read roots through `Root`.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .entry import Entry
from .provenance import Provenance
from .view import Attr, ChangedOnDisk, FileRef, Node, PrivateRef, View

# Provenance the View adds to every entry: it describes the server, not the node's root.
PROVENANCE_PREFIXES = ("user.onesuite.", "trusted.onesuite.")
CHUNK = 1 << 20
T = TypeVar("T")


def walk(children: Callable[[T], Iterator[T]], top: T, depth: int | None = None,
         is_dir: Callable[[T], bool] = lambda entry: entry.is_dir  # type: ignore[attr-defined]
         ) -> Iterator[T]:
    """`top` and everything below it down to `depth` levels (None: all), depth first in name
    order, as `find` lists a tree; each level's listing is read lazily."""
    yield top
    if not is_dir(top) or depth == 0:
        return
    stack: list[Iterator[T]] = [children(top)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        yield entry
        if is_dir(entry) and (depth is None or len(stack) < depth):
            stack.append(children(entry))


@dataclass(frozen=True, slots=True)
class Item:
    """One entry of a root: its path inside the root ("" is the root itself)."""

    path: str
    node: Node

    @property
    def attr(self) -> Attr:
        return self.node.attr

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.attr.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.attr.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.attr.mode)

    @property
    def link_key(self) -> tuple[int, int]:
        """What names the file behind the entry: the backing layer file's (st_dev, st_ino),
        the same for every name of a hard-linked file and for one file shown in several
        roots; for anything else (node state, synthetic links) its own inode number."""
        ref = self.node.ref
        if isinstance(ref, FileRef) or (isinstance(ref, PrivateRef) and ref.layer is not None):
            return ref.meta.dev, ref.meta.ino
        return -1, self.node.attr.ino


class Root:
    """One root of the View (a node's, a group's or an image's) to walk and read by path:
    what preview, explain, diff, export and convert all read."""

    def __init__(self, view: View, entry: Entry) -> None:
        self.view = view
        self.entry = entry
        # Which files have two names in this root (`measure` finds out); until then, any
        # multiply-linked file may.
        self.links: HardLinks = HardLinks(measured=False)

    def top(self) -> Item:
        """The root directory itself."""
        return Item("", self.view.root_node(self.entry))

    def children(self, item: Item) -> Iterator[Item]:
        """A directory's entries in name order (nothing for a non-directory)."""
        parent = item.path
        for node in self.view.children(item.node):
            yield Item(f"{parent}/{node.name}" if parent else node.name, node)

    def child(self, item: Item, name: str) -> Item | None:
        """One entry of a directory by name (None if it has none)."""
        node = self.view.child(item.node, name)
        if node is None:
            return None
        return Item(f"{item.path}/{name}" if item.path else name, node)

    def walk(self, top: Item | None = None, depth: int | None = None) -> Iterator[Item]:
        """`top` (default: the root) and every entry below it down to `depth` levels (None:
        all); names in sorted order, each directory's entries right after it (tar and cpio
        readers expect parents first). One listing per level is held."""
        return walk(self.children, self.top() if top is None else top, depth)

    def lookup(self, path: str) -> Item | None:
        """The entry at `path` (no leading '/'), symlinks not followed; None if absent."""
        node = self.view.root_node(self.entry)
        for part in path.split("/") if path else []:
            found = self.view.child(node, part)
            if found is None:
                return None
            node = found
        return Item(path, node)

    def chunks(self, item: Item) -> Iterator[bytes]:
        """A regular file's content, a megabyte at a time."""
        fd = self.open(item)
        try:
            while True:
                data = os.read(fd, CHUNK)
                if not data:
                    return
                yield data
        finally:
            os.close(fd)

    def open(self, item: Item) -> int:
        """A read-only fd on a regular file (the caller closes it)."""
        try:
            return self.view.open_node(item.node)
        except ChangedOnDisk:
            # Its size is already in a header: never write other bytes under it.
            raise OSError(errno.ESTALE, f"/{item.path} was changed on the server while "
                                        f"{self.entry.name}'s root was read; run again") from None

    def readlink(self, item: Item) -> bytes:
        return self.view.readlink_node(item.node)

    def digest(self, item: Item) -> bytes:
        """SHA-256 of a regular file's content: what every comparison of content uses."""
        sha = hashlib.sha256()
        for chunk in self.chunks(item):
            sha.update(chunk)
        return sha.digest()

    def provenance(self, item: Item) -> Provenance:
        return self.view.node_provenance(item.node)

    def xattrs(self, item: Item) -> dict[str, bytes]:
        """The entry's extended attributes, without the View's provenance."""
        return {name: value for name, value in self.view.node_xattrs(item.node).items()
                if not name.startswith(PROVENANCE_PREFIXES)}


def merged_children(roots: Sequence[Root], items: dict[int, Item]
                    ) -> Iterator[tuple[str, dict[int, Item]]]:
    """The entries of one directory in several roots (`items`: root index -> the directory
    there), merged in name order: each name with what the roots that have it show, in root
    order. One entry per root is held at a time: a walk of many roots in lockstep costs the
    directories' own listings, not a copy of them per root."""
    heads: list[tuple[str, int, Item]] = []
    sources: dict[int, Iterator[Item]] = {}
    for n, item in items.items():
        sources[n] = roots[n].children(item)
        first = next(sources[n], None)
        if first is not None:
            heads.append((first.node.name, n, first))
    heapq.heapify(heads)
    while heads:
        name = heads[0][0]
        present: dict[int, Item] = {}
        while heads and heads[0][0] == name:
            _, n, child = heapq.heappop(heads)
            present[n] = child
            following = next(sources[n], None)
            if following is not None:
                heapq.heappush(heads, (following.node.name, n, following))
        yield name, dict(sorted(present.items()))


class HardLinks:
    """Which multiply-linked files have two names in the same root, so that a writer
    remembers the first name of those only. An image kept with hard links (`cp -al` copies,
    one cache for many sites) has nlink > 1 on every file while the other names are outside
    the root: remembering each would grow with the root. Counted in a fixed table (at most
    4 MiB, touched pages only): a collision only keeps a name that was not needed. Until a
    walk has counted (`measured=False`), every multiply-linked file may recur."""

    SLOTS = 1 << 22

    def __init__(self, *, measured: bool = True) -> None:
        self._counts = bytearray(self.SLOTS) if measured else None

    def _slot(self, item: Item) -> int | None:
        if not item.is_reg or item.attr.nlink < 2:
            return None
        return hash(item.link_key) % self.SLOTS

    def add(self, item: Item) -> None:
        slot = self._slot(item)
        if slot is not None and self._counts is not None and self._counts[slot] < 2:
            self._counts[slot] += 1

    def may_recur(self, item: Item) -> bool:
        """Whether another name of this file may come later in the root."""
        slot = self._slot(item)
        if slot is None:
            return False
        return self._counts is None or self._counts[slot] >= 2


