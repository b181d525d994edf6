"""What the daemon decides for each request, apart from any FUSE binding.

The pyfuse3 adapter (fuse_ops.py) only translates: kernel types in, `Attr` and errno out. The
decisions live here, with the state they need injected: which generation answers (a reload
switches between two requests), the work a request needs done in a worker thread first (a
directory not merged yet, a number issued by an earlier generation or daemon), a file changed
on disk since it was read (reload, then open again), which requests of an NFS server's threads
are refused, and the counters `onesuite status` shows.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from ..core import inodes
from ..core.view import Attr, ChangedOnDisk, TreeError
from .history import EXPLICIT
from .inode_tree import InodeTree
from .live import Generations, Invalidations, ReloadReport
from .requesters import NfsServerThreads
from .write_attempts import LookupHints, WriteAttempts

T = TypeVar("T")
log = logging.getLogger("onesuite.fuse")

FIND_ATTEMPTS = 3  # a number not found, looked for again if a reload switched meanwhile
CATCH_UP_ROUNDS = 3  # in worker threads; what is merged during the last is diffed inline
REFUSALS_LOGGED = 100  # then one line per thousand: a forging client must not fill the disk


class RequestError(Exception):
    """A request answered with an errno (the adapter replies with it)."""

    def __init__(self, code: int) -> None:
        super().__init__(os.strerror(code))
        self.errno = code


class Requests:
    """The serving generation and every decision a request needs; async (trio), one thread."""

    def __init__(self, generations: Generations,
                 nfs_threads: NfsServerThreads | None = None,
                 invalidate: Callable[[Invalidations], Awaitable[None]] | None = None,
                 cache_timeout: float = 0.0) -> None:
        self.generations = generations
        self.nfs_threads = nfs_threads or NfsServerThreads()
        # How the kernel forgets what a reload changed (the adapter's); none in tests that
        # run without a kernel.
        self.invalidate = invalidate
        self.cache_timeout = cache_timeout
        self.stats: Counter[str] = Counter()
        # Writes refused with EROFS, per node and path (`onesuite status --writes`).
        self.writes = WriteAttempts()
        self.write_hints = LookupHints()
        self._reloading = trio.Lock()
        # Called after each switch (the adapter drops replies it encoded for the old one).
        self.on_switch: Callable[[], None] = lambda: None

    @property
    def tree(self) -> InodeTree:
        """The generation being served; a reload replaces it between two requests."""
        return self.generations.tree

    # ----- live updates -----------------------------------------------------------------
    @property
    def reloading(self) -> bool:
        """Whether a reload or rollback is running now."""
        return self._reloading.locked()

    async def reload(self, trigger: str = EXPLICIT) -> ReloadReport:
        """Build the next generation in a thread, switch, then invalidate what changed.
        Never raises (SIGHUP, the watcher and open() call it): whatever fails is reported
        and the generation being served keeps serving. `trigger` says who asked
        (history.py): after a rollback only an explicit reload reads the configuration
        from disk again, the others build from the pinned one."""
        return await self._switch(trigger)

    async def rollback(self) -> ReloadReport:
        """Switch to a new generation built from the previous generation's configuration
        (history.py); an error in the report when none is kept. Never raises."""
        return await self._switch("rollback")

    async def _switch(self, trigger: str) -> ReloadReport:
        async with self._reloading:  # one at a time: each diff is against what is served
            history = self.generations.history
            if trigger == "rollback":
                target = history.rollback_target()
                if target is None:
                    current = history.current()
                    return ReloadReport(self.generations.number, time.time(), 0.0, (
                        "no earlier generation is kept to roll back to (generation "
                        f"{self.generations.number} serves the configuration of generation "
                        f"{current.based_on if current else self.generations.number}; the "
                        f"last {history.records.maxlen} are kept)"), trigger=trigger)
                configuration, based_on = target.configuration, target.based_on
            else:
                configuration, based_on = history.configuration_for(trigger)
            new, changes, report = await trio.to_thread.run_sync(self.generations.build_next,
                                                                 configuration)
            report.trigger, report.based_on = trigger, based_on
            if new is None or changes is None:
                self.generations.failed(report)
                return report
            # Directories the old generation merged while the new one was being diffed:
            # diff them too, so the new generation knows every number the kernel holds and
            # invalidates what changed in them. The last check and the switch are one step.
            for _round in range(CATCH_UP_ROUNDS):
                if self.generations.caught_up(changes):
                    break
                if not await trio.to_thread.run_sync(self.generations.catch_up, new, changes,
                                                     report):
                    self.generations.failed(report)
                    return report
            else:
                if not self.generations.catch_up(new, changes, report):  # a few: inline
                    self.generations.failed(report)
                    return report
            self.generations.switch(new, report, changes)
            if trigger == "rollback":
                history.pin(target)
            elif trigger == EXPLICIT:
                history.pinned = None
            self.on_switch()
            if self.invalidate is not None:
                try:
                    await self.invalidate(changes)
                except Exception:  # noqa: BLE001 - the switch is done; caches expire anyway
                    log.exception("invalidating the kernel's caches after reload to "
                                  "generation %d failed; they expire after %s s",
                                  report.generation, self.cache_timeout)
                    self.stats["invalidate_failures"] += 1
            self.generations.completed(report)
        self.stats["invalidated_entries"] += report.invalidated_entries
        self.stats["invalidated_inodes"] += report.invalidated_inodes
        return report

    # ----- isolation -----------------------------------------------------------------
    def refuse_nfs_outside_nodes(self, requester: int | None, *inodes: int) -> None:
        """EACCES for an NFS server's client thread (`requester`: the request's thread id)
        asking about anything above or beside the node roots (docs/nfs.md, "Isolation");
        everyone else is answered as usual."""
        serves_a_node = self.tree.serves_a_node
        for ino in inodes:  # a loop, not all(genexpr): this runs for every request
            if not serves_a_node(ino):
                break
        else:
            return
        if requester is None or not self.nfs_threads.serves_clients(requester):
            return
        self.stats["refused_nfs"] += 1
        count = self.stats["refused_nfs"]
        if count <= REFUSALS_LOGGED or count % 1000 == 0:
            log.warning("refused an NFS server thread (tid %d) inode(s) %s outside the node "
                        "roots: a forged or foreign file handle (%d refused so far)",
                        requester, ", ".join(hex(i) for i in inodes), count)
        raise RequestError(errno.EACCES)

    def count_lookup(self, parent: int, name: str) -> None:
        self.stats["lookup"] += 1
        if name in (".", ".."):  # the kernel decoding an NFS handle (export support)
            self.stats["lookup_dot" if name == "." else "lookup_dotdot"] += 1
        elif self.tree.is_namespace(parent):
            self.stats["lookup_view_root"] += 1  # never cached: once per path walk

    # ----- running a tree call --------------------------------------------------------
    async def run(self, ino: int, call: Callable[[], T]) -> T:
        """Run an InodeTree call about `ino`: its disk work in a thread first, a number this
        generation never issued found first; errors become RequestError."""
        try:
            if not self.tree.dir_ready(ino):
                await trio.to_thread.run_sync(self.tree.prepare, ino)
            for attempt in range(FIND_ATTEMPTS):
                try:
                    return call()
                except TreeError as exc:
                    if exc.errno != errno.ESTALE or attempt == FIND_ATTEMPTS - 1:
                        raise
                    generation = self.generations.number
                    if not await self._find(ino):
                        if self.generations.number != generation:
                            continue  # a reload switched meanwhile: ask the new one
                        self.stats["stale"] += 1
                        raise
                    if not self.tree.dir_ready(ino):
                        await trio.to_thread.run_sync(self.tree.prepare, ino)
            raise AssertionError("unreachable")
        except TreeError as exc:
            raise RequestError(exc.errno) from None
        except OSError as exc:
            self.stats["errors"] += 1
            raise RequestError(exc.errno or errno.EIO) from None

    async def _find(self, ino: int) -> bool:
        """Make the serving generation answer a number it never issued. Issued by an earlier
        generation of this daemon: adopt it if the same path shows the same object (a walk
        of that one path; the number may be gone for good, e.g. a replaced file). Issued by
        an earlier daemon: the recovery walk."""
        retired = self.generations.retired_knowing(ino)
        if retired is not None:
            self.stats["adopt"] += 1
            return await trio.to_thread.run_sync(self.tree.adopt, retired, ino)
        self.stats["recover"] += 1
        return await trio.to_thread.run_sync(self.tree.recover, ino)

    # ----- the requests that decide more than one tree call ------------------------------
    async def lookup(self, parent: int, name: str, requester: int | None) -> Attr | None:
        """The entry `name` of `parent`; None when there is none (a negative entry)."""
        self.count_lookup(parent, name)
        self.refuse_nfs_outside_nodes(requester, parent)
        try:
            attr = await self.run(parent, lambda: self.tree.lookup(parent, name))
        except RequestError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        self.refuse_nfs_outside_nodes(requester, attr.ino)  # ".." of a node's root
        if inodes.is_backed_ino(attr.ino):  # a layer file: remember which node asked
            node = self.tree.node_of_dir(parent)
            if node is not None:
                self.write_hints.looked_up(attr.ino, node)
        return attr

    def refused_write(self, operation: str, ino: int, name: str | None = None) -> None:
        """Count a write answered EROFS: `operation` on `ino`, or on its entry `name`."""
        node, path, shared = self.tree.where(ino)
        if shared:
            node = self.write_hints.node_of(ino)
        if name is not None:
            path = f"{path}/{name}" if path else name
        self.writes.record(node, path, operation, time.time())

    async def attr(self, ino: int, requester: int | None) -> Attr:
        self.stats["getattr"] += 1
        self.refuse_nfs_outside_nodes(requester, ino)
        try:
            return await self.run(ino, lambda: self.tree.attr(ino))
        except RequestError as exc:
            # Gone in this generation but maybe still open (its content stays readable).
            retired = self.generations.retired_attr(ino) if exc.errno == errno.ESTALE else None
            if retired is None:
                raise
            return retired

    async def open(self, ino: int, flags: int, requester: int | None) -> int:
        """An fd on the file `ino` shows, from a generation that has read it as it is."""
        self.stats["open"] += 1
        self.refuse_nfs_outside_nodes(requester, ino)
        try:
            return self.tree.open(ino, flags)
        except ChangedOnDisk:
            # Changed since this generation read it: switch to a generation that has read it
            # (after this, a replaced file's old inode is stale and the kernel looks the path
            # up again), rather than serve new bytes under old attributes.
            self.stats["reload_on_open"] += 1
            await self.reload("open")
        except (TreeError, OSError):
            pass  # not known inline (recovery, a worker thread): `run` finds out
        return await self.run(ino, lambda: self.tree.open(ino, flags))

    def describe_inode(self, ino: int) -> str:
        return self.tree.describe(ino)

    def status(self) -> dict[str, object]:
        """What `onesuite status` shows of the daemon: generations and counters."""
        return {**self.generations.status(), "counters": dict(self.stats)}
