"""Walking one root of the Tree lazily, depth first, parent before children.

Only the listings of the directories on the current path are held, so memory does not grow
with the size of the root (the Tree's own caches of merged directories aside).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ConfigError
from ..tree import Attr, Entry, Tree

# Provenance the Tree adds to every entry: it describes the server, not the node's root.
PROVENANCE_PREFIXES = ("user.onesuite.", "trusted.onesuite.")
CHUNK = 1 << 20


@dataclass(frozen=True)
class Item:
    """One entry of a root: its path inside the root ("" is the root itself)."""

    path: str
    attr: Attr

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
        self.root_ino = tree.entry_root_ino(entry)

    def walk(self) -> Iterator[Item]:
        """Every entry, the root first; names in sorted order, each directory's entries
        right after it (tar and cpio readers expect parents first)."""
        tree = self.tree
        yield Item("", tree.attr(self.root_ino))
        stack: list[tuple[str, Iterator[tuple[str, Attr]]]] = [
            ("", iter(tree.listdir(self.root_ino)))]
        while stack:
            parent, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                continue
            name, attr = child
            item = Item(f"{parent}/{name}" if parent else name, attr)
            yield item
            if item.is_dir:
                stack.append((item.path, iter(tree.listdir(attr.ino))))

    def lookup(self, path: str) -> Item | None:
        """The entry at `path` (no leading '/'), symlinks not followed; None if absent."""
        from ..tree import TreeError

        ino, attr = self.root_ino, self.tree.attr(self.root_ino)
        for part in path.split("/") if path else []:
            try:
                attr = self.tree.lookup(ino, part)
            except TreeError:
                return None
            ino = attr.ino
        return Item(path, attr)

    def chunks(self, item: Item) -> Iterator[bytes]:
        """A regular file's content, a megabyte at a time."""
        fd = self.tree.open(item.attr.ino)
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
        return self.tree.open(item.attr.ino)

    def readlink(self, item: Item) -> bytes:
        return self.tree.readlink(item.attr.ino)

    def xattrs(self, item: Item) -> dict[str, bytes]:
        """The entry's extended attributes, without the Tree's provenance."""
        return {name: value for name, value in self.tree.xattrs(item.attr.ino).items()
                if not name.startswith(PROVENANCE_PREFIXES)}


@dataclass
class Totals:
    entries: int = 0
    bytes: int = 0  # regular files' content


def measure(root: Root) -> Totals:
    """How many entries and content bytes the root has (one walk; it also warms the Tree's
    caches for the walk that writes)."""
    totals = Totals()
    for item in root.walk():
        totals.entries += 1
        if item.is_reg:
            totals.bytes += item.attr.size
    return totals
