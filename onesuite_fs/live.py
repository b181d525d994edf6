"""Live updates: a reload builds a new Tree beside the serving one, switches in one step, and
tells the kernel exactly which entries changed.

A generation is one consistent reading of the site: cluster.xml, overrides, images and every
sysimage.conf parsed together, and every layer directory read when it is built (the first
generation's in the background right after the mount starts), so it never answers from a
directory changed on disk after it was built. A reload that fails to parse leaves the old generation
serving and records the error. Before the switch, every directory the old generation had
merged (what clients are using) is merged again in the new one and compared: names that
appeared, vanished or now resolve differently get ``invalidate_entry``, inodes whose
attributes or content changed get ``invalidate_inode``; nothing else is touched, so nodes the
change does not affect keep their kernel caches. Inode numbers are derived from paths and
backing files (inodes.py), so an unchanged path keeps its number in the new generation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ConfigError
from .tree import Attr, DirRef, Tree, TreeError

log = logging.getLogger("onesuite.live")


@dataclass
class Invalidations:
    entries: list[tuple[int, str]] = field(default_factory=list)  # (parent ino, name)
    inodes: list[int] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)
    paths: list[str] = field(default_factory=list)  # "nodes/n1/etc/motd", for the status


@dataclass
class ReloadReport:
    generation: int
    loaded_at: float
    seconds: float
    error: str | None = None
    nodes_affected: list[str] = field(default_factory=list)
    paths_changed: list[str] = field(default_factory=list)
    invalidated_entries: int = 0
    invalidated_inodes: int = 0


def _same(old: Attr, new: Attr) -> bool:
    return (old.ino, old.mode, old.uid, old.gid, old.size, old.mtime_ns, old.rdev) == (
        new.ino, new.mode, new.uid, new.gid, new.size, new.mtime_ns, new.rdev)


def diff_trees(old: Tree, new: Tree) -> Invalidations:
    """What the kernel must forget when `new` replaces `old`: for the namespace directories
    and every directory `old` had merged, the names whose answer changed. On the way, `new`
    learns every number `old` gave out that still exists, so lookups after the switch need
    no recovery walk."""
    changes = Invalidations()
    in_use = old.dirs_in_use()  # before the namespaces are listed below
    for ino in old.fixed_dirs():
        _compare(old, new, ino, ino, old.path_of(ino), None, changes)
    for ino, ref in in_use:
        new_ino = _same_dir(new, ref)
        if new_ino is not None:  # else: it vanished, and its parent's diff says so
            node = ref.entry.name if ref.entry.namespace == "nodes" else None
            _compare(old, new, ino, new_ino, f"{ref.entry.key}/{ref.path}".rstrip("/"), node,
                     changes)
    return changes


def _compare(old: Tree, new: Tree, ino: int, new_ino: int, label: str, node: str | None,
             changes: Invalidations) -> None:
    old_listing = dict(old.listdir(ino))
    try:
        new_listing = dict(new.listdir(new_ino))
    except TreeError:
        return
    if new_ino != ino or not _same(old.attr(ino), new.attr(new_ino)):
        changes.inodes.append(ino)
    for name in sorted(old_listing.keys() | new_listing.keys()):
        before, after = old_listing.get(name), new_listing.get(name)
        if before is not None and after is not None and _same(before, after):
            continue
        changes.entries.append((ino, name))
        if before is not None:
            changes.inodes.append(before.ino)
        changes.paths.append(f"{label}/{name}")
        if node is not None:
            changes.nodes.add(node)
        elif label == "nodes":
            changes.nodes.add(name)


def _same_dir(new: Tree, ref: DirRef) -> int | None:
    """The inode of the same (entry, path) directory in the new tree, or None."""
    entry = new.entries[ref.entry.namespace].get(ref.entry.name)
    if entry is None:
        return None
    try:
        ino = new.entry_root_ino(entry)
        for part in ref.path.split("/") if ref.path else []:
            attr = new.lookup(ino, part)
            ino = attr.ino
        new.attr(ino)
    except TreeError:
        return None
    return ino if new.is_dir(ino) else None


class Generations:
    """The serving Tree and how to build the next one; switches happen in the FUSE thread."""

    def __init__(self, tree: Tree, rebuild: Callable[[], Tree] | None) -> None:
        self.tree = tree
        self.rebuild = rebuild
        self.number = 1
        self.loaded_at = time.time()
        self.last: ReloadReport | None = None
        self.reloads = 0
        self.failed_reloads = 0
        # A few generations back, for inodes that are gone but still open: like a file
        # deleted while open, they keep their attributes until closed.
        self.retired: deque[Tree] = deque(maxlen=3)
        self._lock = threading.Lock()  # one build at a time

    def build_next(self) -> tuple[Tree | None, Invalidations | None, ReloadReport]:
        """Build and diff the next generation (in a worker thread); switch nothing."""
        started = time.monotonic()
        with self._lock:
            if self.rebuild is None:
                return None, None, self._report(started, error="this mount cannot reload")
            try:
                new = self.rebuild()
                new.prescan()  # the whole site as it is now: one consistent reading
            except ConfigError as exc:
                return None, None, self._report(started, error=str(exc))
            except OSError as exc:
                return None, None, self._report(started, error=f"{exc}")
            old = self.tree
            changes = diff_trees(old, new)
            report = self._report(started)
            report.generation = self.number + 1
            report.nodes_affected = sorted(changes.nodes)
            report.paths_changed = changes.paths[:1000]
            report.invalidated_entries = len(changes.entries)
            report.invalidated_inodes = len(set(changes.inodes))
            return new, changes, report

    def _report(self, started: float, error: str | None = None) -> ReloadReport:
        return ReloadReport(self.number, time.time(), time.monotonic() - started, error)

    def switch(self, new: Tree, report: ReloadReport) -> None:
        """Serve `new` from now on (call in the FUSE thread: no handler runs meanwhile)."""
        if len(self.retired) == self.retired.maxlen:
            self.retired.pop().store.close()
        self.retired.appendleft(self.tree)
        self.tree = new
        self.number = report.generation
        self.loaded_at = report.loaded_at
        self.last = report
        self.reloads += 1

    def retired_attr(self, ino: int) -> Attr | None:
        """The attributes an earlier generation gave `ino`, if one knew it."""
        for tree in self.retired:
            try:
                return tree.attr(ino)
            except TreeError:
                continue
        return None

    def failed(self, report: ReloadReport) -> None:
        self.last = report
        self.failed_reloads += 1
        log.error("reload failed, generation %d keeps serving: %s", self.number, report.error)

    def status(self) -> dict[str, object]:
        last = self.last
        return {
            "generation": self.number,
            "prescanned": self.tree.prescanned,
            "layers_elsewhere": self.tree.site.layers_elsewhere(),  # allowed, by real path
            "loaded_at": self.loaded_at,
            "reloads": self.reloads,
            "failed_reloads": self.failed_reloads,
            "last_reload": None if last is None else {
                "generation": last.generation, "at": last.loaded_at,
                "seconds": round(last.seconds, 3), "error": last.error,
                "nodes_affected": last.nodes_affected, "paths_changed": last.paths_changed,
                "invalidated_entries": last.invalidated_entries,
                "invalidated_inodes": last.invalidated_inodes,
            },
        }
