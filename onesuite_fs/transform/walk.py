"""What export and convert add to the one root walker (core/walk.py): a root by name, its
size, and time clamping for formats that hold less."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.errors import ConfigError
from ..core.view import View
from ..core.walk import CHUNK, PROVENANCE_PREFIXES, HardLinks, Item, Root, merged_children

__all__ = ["CHUNK", "PROVENANCE_PREFIXES", "HardLinks", "Item", "Root", "Totals", "measure",
           "merged_children", "named_root", "clamped_seconds"]


def named_root(view: View, name: str, namespace: str = "nodes") -> Root:
    """The root of the node (group, image) `name`; ConfigError naming the known ones."""
    entry = view.entries[namespace].get(name)
    if entry is None:
        known = sorted(view.entries[namespace])
        shown = ", ".join(known[:8]) + (" ..." if len(known) > 8 else "")
        raise ConfigError(f"no {namespace[:-1]} named {name!r} on this image server",
                          hint=f"known: {shown}" if known else "cluster.xml names none")
    return Root(view, entry)


@dataclass
class Totals:
    entries: int = 0
    bytes: int = 0  # regular files' content
    links: HardLinks = field(default_factory=lambda: HardLinks(measured=False))


def measure(root: Root) -> Totals:
    """How many entries and content bytes the root has, and which files have two names in
    it (one walk; the latter also becomes `root.links`, for the writers)."""
    totals = Totals(links=HardLinks())
    for item in root.walk():
        totals.entries += 1
        if item.is_reg:
            totals.bytes += item.attr.size
            totals.links.add(item)
    root.links = totals.links
    return totals


def clamped_seconds(item: Item, low: int, high: int, *,
                    on_skip: Callable[[str, str], None] | None = None) -> int:
    """The entry's mtime in whole seconds, moved into [low, high] for a format that holds no
    more (squashfs and cpio: unsigned 32 bits); a moved time is reported through `on_skip`."""
    seconds = item.attr.mtime_ns // 10**9
    if low <= seconds <= high:
        return seconds
    if on_skip:
        span = "..".join(time.strftime("%Y-%m-%d", time.gmtime(t)) for t in (low, high))
        on_skip(item.path or "/", f"times outside {span} cannot be stored: clamped")
    return min(max(seconds, low), high)
