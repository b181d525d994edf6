"""Live updates: a reload builds a new InodeTree beside the serving one, switches in one step, and
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
from pathlib import Path

from ..core.errors import ConfigError
from ..core.view import Attr, DirRef, TreeError
from ..inspect.plan import configuration_digest
from .history import Configuration, History, Record
from .inode_tree import InodeTree


@dataclass(frozen=True)
class LiveOptions:
    """How a running mount follows the image server (see watch.py). It lives here, not in
    mount.py, so the CLI can describe a mount without importing pyfuse3 or trio."""

    rebuild: Callable[[], InodeTree]  # reads the site again; raises ConfigError when it can't
    watch_paths: tuple[Path, ...] = ()  # watched with inotify; empty: reload on demand only
    poll_every: float = 60.0  # the fallback check's period, seconds
    quiet: float = 1.0  # a burst of changes ends after this long without one

log = logging.getLogger("onesuite.live")


@dataclass
class Invalidations:
    entries: list[tuple[int, str]] = field(default_factory=list)  # (parent ino, name)
    inodes: list[int] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)
    paths: list[str] = field(default_factory=list)  # "nodes/n1/etc/motd", for the status
    compared: set[int] = field(default_factory=set)  # the old generation's dirs diffed
    marks: tuple[int, int] = (0, 0)  # old.merge_marks() before they were listed
    # Directories (new numbers) whose names appeared, vanished or name another object now:
    # they report a later mtime from the switch on (listing_dates.py).
    listings: set[int] = field(default_factory=set)


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
    trigger: str = "reload"  # what asked for it (history.py)
    digest: str | None = None  # configuration_digest of the new generation
    based_on: int | None = None  # the generation whose configuration it was built from


def describe_failure(exc: BaseException) -> str:
    """The error a failed reload reports: a ConfigError says file, line and what to do;
    anything else is a failure the parsers did not foresee, logged with its traceback."""
    if isinstance(exc, ConfigError | OSError):
        return str(exc)
    log.error("reload failed with an unexpected %s", type(exc).__name__, exc_info=exc)
    text = str(exc)[:2000]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _count(report: ReloadReport, changes: Invalidations) -> None:
    report.nodes_affected = sorted(changes.nodes)
    report.paths_changed = changes.paths[:1000]
    report.invalidated_entries = len(changes.entries)
    report.invalidated_inodes = len(set(changes.inodes))


def _same(old: Attr, new: Attr) -> bool:
    return (old.ino, old.mode, old.uid, old.gid, old.size, old.mtime_ns, old.rdev) == (
        new.ino, new.mode, new.uid, new.gid, new.size, new.mtime_ns, new.rdev)


def diff_trees(old: InodeTree, new: InodeTree) -> Invalidations:
    """What the kernel must forget when `new` replaces `old`: for the namespace directories
    and every directory `old` had merged, the names whose answer changed. On the way, `new`
    learns every number `old` gave out that still exists, so lookups after the switch need
    no recovery walk."""
    changes = Invalidations()
    changes.marks = old.merge_marks()  # before listing what is in use: see catch_up_diff
    in_use = old.dirs_in_use()  # before the namespaces are listed below
    for ino in old.fixed_dirs():
        _compare(old, new, ino, ino, old.path_of(ino), None, changes)
    _compare_dirs(old, new, in_use, changes)
    return changes


def catch_up_diff(old: InodeTree, new: InodeTree, changes: Invalidations) -> int:
    """Diff the directories `old` merged since `changes` was made (the old generation goes
    on serving while the new one is built and diffed: a directory first listed meanwhile
    has numbers the kernel holds that `new` must know, and attributes it must compare).
    Returns how many there were; 0 means `new` knows all that `old` has given out."""
    marks = old.merge_marks()  # first: a merge after this changes them again
    if marks == changes.marks:
        return 0
    late = [(ino, ref) for ino, ref in old.dirs_in_use() if ino not in changes.compared]
    changes.marks = marks
    _compare_dirs(old, new, late, changes)
    return len(late)


def _compare_dirs(old: InodeTree, new: InodeTree, in_use: list[tuple[int, DirRef]],
                  changes: Invalidations) -> None:
    for ino, ref in in_use:
        changes.compared.add(ino)
        new_ino = _same_dir(new, ref)
        if new_ino is not None:  # else: it vanished, and its parent's diff says so
            node = ref.entry.name if ref.entry.namespace == "nodes" else None
            _compare(old, new, ino, new_ino, f"{ref.entry.key}/{ref.path}".rstrip("/"), node,
                     changes)


def _compare(old: InodeTree, new: InodeTree, ino: int, new_ino: int, label: str, node: str | None,
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
        renamed = before is None or after is None or before.ino != after.ino
        if renamed and new_ino not in changes.listings:
            changes.listings.add(new_ino)
            changes.inodes.append(ino)  # the kernel must fetch its new mtime too
        changes.entries.append((ino, name))
        if before is not None:
            changes.inodes.append(before.ino)
        changes.paths.append(f"{label}/{name}")
        if node is not None:
            changes.nodes.add(node)
        elif label == "nodes":
            changes.nodes.add(name)


def _same_dir(new: InodeTree, ref: DirRef) -> int | None:
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
    """The serving InodeTree and how to build the next one; switches happen in the FUSE thread."""

    def __init__(self, tree: InodeTree, rebuild: Callable[[], InodeTree] | None) -> None:
        self.tree = tree
        self.rebuild = rebuild
        self.number = 1
        self.loaded_at = time.time()
        self.last: ReloadReport | None = None
        self.reloads = 0
        self.failed_reloads = 0
        # A few generations back, for inodes that are gone but still open: like a file
        # deleted while open, they keep their attributes until closed.
        self.retired: deque[InodeTree] = deque(maxlen=3)
        self._lock = threading.Lock()  # one build at a time
        # The last few generations and their configurations (rollback; history.py).
        self.history = History()
        self.history.add(Record(1, self.loaded_at, "mount", None, Configuration.of(tree.view),
                                1))

    def build_next(self, configuration: Configuration | None = None
                   ) -> tuple[InodeTree | None, Invalidations | None, ReloadReport]:
        """Build and diff the next generation (in a worker thread); switch nothing. From
        `configuration` (a kept one: rollback, pinned) or else read from disk."""
        started = time.monotonic()
        with self._lock:
            if self.rebuild is None and configuration is None:
                return None, None, self._report(started, error="this mount cannot reload")
            try:
                new = configuration.build() if configuration is not None else self.rebuild()
                new.listing_dates = self.tree.listing_dates.carried()  # diffed with them
                new.prescan()  # the whole site as it is now: one consistent reading
                changes = diff_trees(self.tree, new)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old generation
                return None, None, self._report(started, error=describe_failure(exc))
            report = self._report(started)
            report.generation = self.number + 1
            report.digest = configuration_digest(new.view)
            _count(report, changes)
            return new, changes, report

    def build_plan(self) -> tuple[InodeTree, InodeTree]:
        """The serving generation and the one `onesuite reload` would build now, without
        diffing for the kernel or switching (`onesuite plan`; a worker thread)."""
        serving = self.tree
        with self._lock:
            if self.rebuild is None:
                raise ConfigError("this mount cannot reload, so there is nothing to plan")
            new = self.rebuild()
            new.prescan()
        return serving, new

    def digest_serving(self) -> None:
        """Compute the serving generation's configuration digest if not yet (a thread)."""
        record = self.history.current()
        if record is not None and record.digest is None and record.generation == self.number:
            record.digest = configuration_digest(self.tree.view)

    def catch_up(self, new: InodeTree, changes: Invalidations, report: ReloadReport) -> bool:
        """catch_up_diff against the serving generation (worker thread, or the FUSE thread
        right before the switch); False, with the error in `report`, if it failed."""
        try:
            catch_up_diff(self.tree, new, changes)
        except Exception as exc:  # noqa: BLE001
            report.error = describe_failure(exc)
            report.generation = self.number  # the one that keeps serving
            return False
        _count(report, changes)
        return True

    def caught_up(self, changes: Invalidations) -> bool:
        """Whether the serving generation merged nothing since `changes` was last completed
        (cheap: call it in the FUSE thread right before the switch)."""
        return self.tree.merge_marks() == changes.marks

    def _report(self, started: float, error: str | None = None) -> ReloadReport:
        return ReloadReport(self.number, time.time(), time.monotonic() - started, error)

    def switch(self, new: InodeTree, report: ReloadReport,
               changes: Invalidations | None = None) -> None:
        """Serve `new` from now on (call in the FUSE thread: no handler runs meanwhile)."""
        now = time.time_ns()
        for ino in sorted(changes.listings if changes else ()):
            try:
                new.listing_dates.mark(new.attr(ino), now)
            except TreeError:
                continue  # gone meanwhile: its parent's listing says so
        if len(self.retired) == self.retired.maxlen:
            oldest = self.retired.pop()
            try:
                oldest.view.store.close()
            except OSError as exc:  # its cached directory fds: nothing to serve depends on it
                log.warning("closing generation files failed: %s", exc)
        self.retired.appendleft(self.tree)
        self.tree = new
        self.number = report.generation
        self.loaded_at = report.loaded_at
        self.history.add(Record(report.generation, report.loaded_at, report.trigger,
                                report.digest, Configuration.of(new.view),
                                report.based_on or report.generation,
                                len(report.nodes_affected), len(report.paths_changed)))

    def completed(self, report: ReloadReport) -> None:
        """The switch is done and the kernel told what changed: `onesuite reload` (which
        waits for this count to move) may return, and a stat after it sees the new answer."""
        self.last = report
        self.reloads += 1

    def retired_attr(self, ino: int) -> Attr | None:
        """The attributes an earlier generation gave `ino`, if one knew it."""
        tree = self.retired_knowing(ino)
        return None if tree is None else tree.attr(ino)

    def retired_knowing(self, ino: int) -> InodeTree | None:
        """The newest earlier generation that issued `ino` (and still answers it)."""
        for tree in list(self.retired):
            try:
                tree.attr(ino)
            except TreeError:
                continue
            return tree
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
            "fingerprint": self.tree.view.fingerprint,  # equal on servers serving the same
            "layers_elsewhere": self.tree.site.layers_elsewhere(),  # allowed, by real path
            "broken_nodes": self.tree.site.broken_report(),  # not served, with why
            "loaded_at": self.loaded_at,
            "reloads": self.reloads,
            "failed_reloads": self.failed_reloads,
            "last_reload": None if last is None else {
                "generation": last.generation, "at": last.loaded_at,
                "seconds": round(last.seconds, 3), "error": last.error,
                "nodes_affected": last.nodes_affected, "paths_changed": last.paths_changed,
                "invalidated_entries": last.invalidated_entries,
                "invalidated_inodes": last.invalidated_inodes, "trigger": last.trigger,
            },
            **self.history.status(),
        }
