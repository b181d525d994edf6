"""Walking one root of the Tree lazily, depth first, parent before children.

A root is read by path (``Tree.root_node``/``children``), never by inode number, so nothing
it passes is registered in the Tree; with the Tree's bounded caches (``bounded_caches``) only
the listings of the directories on the current path and a bounded number of recent ones are
held. Memory does not grow with the size of the root.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ConfigError
from ..tree import Attr, Entry, FileRef, Node, PrivateRef, Tree

# Provenance the Tree adds to every entry: it describes the server, not the node's root.
PROVENANCE_PREFIXES = ("user.onesuite.", "trusted.onesuite.")
CHUNK = 1 << 20


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
    """One view of the Tree (a node's root by default) as something to walk and read."""

    def __init__(self, tree: Tree, name: str, namespace: str = "nodes") -> None:
        entry = tree.entries[namespace].get(name)
        if entry is None:
            known = sorted(tree.entries[namespace])
            shown = ", ".join(known[:8]) + (" ..." if len(known) > 8 else "")
            raise ConfigError(f"no {namespace[:-1]} named {name!r} on this image server",
                              hint=f"known: {shown}" if known else "cluster.xml names none")
        self.tree = tree
        self.entry: Entry = entry

    def top(self) -> Item:
        """The root directory itself."""
        return Item("", self.tree.root_node(self.entry))

    def children(self, item: Item) -> Iterator[Item]:
        """A directory's entries in name order (nothing for a non-directory)."""
        parent = item.path
        for node in self.tree.children(item.node):
            yield Item(f"{parent}/{node.name}" if parent else node.name, node)

    def listing(self, item: Item) -> dict[str, Item]:
        """A directory's entries by name."""
        return {child.name: child for child in self.children(item)}

    def walk(self) -> Iterator[Item]:
        """Every entry, the root first; names in sorted order, each directory's entries
        right after it (tar and cpio readers expect parents first)."""
        top = self.top()
        yield top
        stack: list[Iterator[Item]] = [self.children(top)]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            yield item
            if item.is_dir:
                stack.append(self.children(item))

    def lookup(self, path: str) -> Item | None:
        """The entry at `path` (no leading '/'), symlinks not followed; None if absent."""
        node = self.tree.root_node(self.entry)
        for part in path.split("/") if path else []:
            found = self.tree.child(node, part)
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
        return self.tree.open_node(item.node)

    def readlink(self, item: Item) -> bytes:
        return self.tree.readlink_node(item.node)

    def xattrs(self, item: Item) -> dict[str, bytes]:
        """The entry's extended attributes, without the Tree's provenance."""
        return {name: value for name, value in self.tree.node_xattrs(item.node).items()
                if not name.startswith(PROVENANCE_PREFIXES)}


@dataclass
class Totals:
    entries: int = 0
    bytes: int = 0  # regular files' content


def measure(root: Root) -> Totals:
    """How many entries and content bytes the root has (one walk)."""
    totals = Totals()
    for item in root.walk():
        totals.entries += 1
        if item.is_reg:
            totals.bytes += item.attr.size
    return totals
