"""The pyfuse3 adapter: translates kernel requests into InodeTree calls, and nothing else.

One trio thread runs every handler, so a handler never blocks on the disk when it can avoid
it: directories not yet merged are built, unknown inode numbers recovered and large reads done
in worker threads (trio.to_thread); everything cached answers inline.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import pyfuse3
import trio

from ..core.view import Attr, ChangedOnDisk, TreeError
from .fuse_guard import HandlerFailures, guard_handlers
from .inode_tree import InodeTree
from .live import Generations, Invalidations, ReloadReport
from .requesters import NfsServerThreads

T = TypeVar("T")
log = logging.getLogger("onesuite.fuse")

FIND_ATTEMPTS = 3  # a number not found, looked for again if a reload switched meanwhile
CATCH_UP_ROUNDS = 3  # in worker threads; what is merged during the last is diffed inline
LISTING_CACHE_DIRS = 8192  # encoded listings kept (oldest dropped first)
PID_XATTR = b"user.onesuite.pid"
STATS_XATTR = b"user.onesuite.stats"
STATUS_XATTR = b"user.onesuite.status"
REFUSALS_LOGGED = 100  # then one line per thousand: a forging client must not fill the disk

log = logging.getLogger("onesuite.fuse")


def _read_cached(fd: int, size: int, offset: int) -> bytes:
    """pread that raises BlockingIOError instead of waiting for the disk (or returns what
    the page cache has, when that is everything up to the end of the file)."""
    buffer = bytearray(size)
    try:
        done = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a backing fs without NOWAIT
            raise BlockingIOError from None
        raise
    if done < size and os.fstat(fd).st_size > offset + done:
        raise BlockingIOError  # part of it is not in the page cache
    return bytes(memoryview(buffer)[:done])


READ_AHEAD = 4 << 20  # after a read that had to wait, ask the kernel for this much more


def _read_ahead(fd: int, size: int, offset: int) -> bytes:
    """A read that waits for the disk (in a worker thread), and readahead of what follows,
    so a sequential reader's next requests find the page cache full and stay inline."""
    os.posix_fadvise(fd, offset + size, READ_AHEAD, os.POSIX_FADV_WILLNEED)
    return os.pread(fd, size, offset)


def _erofs() -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(errno.EROFS)


@guard_handlers  # any exception a handler raises answers EIO (fuse_guard.py)
class OnesuiteOperations(pyfuse3.Operations):
    supports_dot_lookup = True  # NFS export: LOOKUP(ino, ".") and ("..") after eviction

    def __init__(self, tree: InodeTree, cache_timeout: float,
                 generations: Generations | None = None,
                 nfs_threads: NfsServerThreads | None = None) -> None:
        super().__init__()
        self.generations = generations or Generations(tree, None)
        self.cache_timeout = cache_timeout
        self.nfs_threads = nfs_threads or NfsServerThreads()
        self._reloading = trio.Lock()
        self.stats: Counter[str] = Counter()
        self._listings: dict[int, list[tuple[bytes, pyfuse3.EntryAttributes]]] = {}
        self._encoded: dict[int, list[tuple[bytes, pyfuse3.EntryAttributes]]] = {}
        self._next_dir_handle = 1
        self.failures = HandlerFailures()

    @property
    def tree(self) -> InodeTree:
        """The generation being served; a reload replaces it between two requests."""
        return self.generations.tree

    # ----- live updates -----------------------------------------------------------------
    async def reload(self) -> ReloadReport:
        """Build the next generation in a thread, switch, then invalidate what changed.
        Never raises (SIGHUP, the watcher and open() call it): whatever fails is reported
        and the generation being served keeps serving."""
        async with self._reloading:  # one at a time: each diff is against what is served
            new, changes, report = await trio.to_thread.run_sync(self.generations.build_next)
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
            self.generations.switch(new, report)
            self._encoded.clear()  # listings of the old generation
            try:
                await self._invalidate(changes)
            except Exception:  # noqa: BLE001 - the switch is done; caches expire by themselves
                log.exception("invalidating the kernel's caches after reload to generation %d "
                              "failed; they expire after %s s", report.generation,
                              self.cache_timeout)
                self.stats["invalidate_failures"] += 1
        self.stats["invalidated_entries"] += report.invalidated_entries
        self.stats["invalidated_inodes"] += report.invalidated_inodes
        return report

    async def _invalidate(self, changes: Invalidations) -> None:
        for parent, name in changes.entries:
            # The async variant: the blocking one can deadlock against a pending request.
            pyfuse3.invalidate_entry_async(parent, os.fsencode(name), ignore_enoent=True)
        for ino in sorted(set(changes.inodes)):
            try:
                await trio.to_thread.run_sync(pyfuse3.invalidate_inode, ino, False)
            except OSError:
                pass  # the kernel does not hold this inode: nothing to drop

    # ----- isolation -----------------------------------------------------------------
    def _refuse_nfs_outside_nodes(self, ctx: Any, *inodes: int) -> None:
        """EACCES for an NFS server's client thread asking about anything above or beside
        the node roots (docs/nfs.md, "Isolation"); everyone else is answered as usual."""
        if all(self.tree.serves_a_node(ino) for ino in inodes):
            return
        if ctx is None or not self.nfs_threads.serves_clients(ctx.pid):
            return
        self.stats["refused_nfs"] += 1
        count = self.stats["refused_nfs"]
        if count <= REFUSALS_LOGGED or count % 1000 == 0:
            log.warning("refused an NFS server thread (tid %d) inode(s) %s outside the node "
                        "roots: a forged or foreign file handle (%d refused so far)",
                        ctx.pid, ", ".join(hex(i) for i in inodes), count)
        raise pyfuse3.FUSEError(errno.EACCES)

    def _entry_in(self, parent: int, attr: Attr) -> pyfuse3.EntryAttributes:
        """An entry of directory `parent`. Entries of nodes/, groups/ and images/ (the views'
        roots) are never cached by the kernel: every path through one is looked up here, so
        a walk from the mount root by an NFS server thread is refused (no dcache bypass)."""
        entry = self._entry(attr)
        if self.tree.is_namespace(parent):
            entry.entry_timeout = 0
        return entry

    def _count_lookup(self, parent: int, name: bytes) -> None:
        self.stats["lookup"] += 1
        if name in (b".", b".."):  # the kernel decoding an NFS handle (export support)
            self.stats["lookup_dot" if name == b"." else "lookup_dotdot"] += 1
        elif self.tree.is_namespace(parent):
            self.stats["lookup_view_root"] += 1  # never cached: once per path walk

    # ----- what fuse_guard needs ------------------------------------------------------------
    def describe_inode(self, ino: int) -> str:
        return self.tree.describe(ino)

    def handler_failed(self, operation: str, about: str, exc: BaseException) -> None:
        self.stats["handler_errors"] += 1
        self.failures.record(operation, about, exc)

    # ----- plumbing -------------------------------------------------------------------
    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = attr.ino
        entry.generation = attr.generation
        entry.st_mode = attr.mode
        entry.st_nlink = attr.nlink
        entry.st_uid = attr.uid
        entry.st_gid = attr.gid
        entry.st_rdev = attr.rdev
        entry.st_size = attr.size
        entry.st_blocks = attr.blocks
        entry.st_blksize = 4096
        entry.st_atime_ns = attr.atime_ns
        entry.st_mtime_ns = attr.mtime_ns
        entry.st_ctime_ns = attr.ctime_ns
        entry.entry_timeout = self.cache_timeout
        entry.attr_timeout = self.cache_timeout
        return entry

    async def _run(self, ino: int, call: Callable[[], T]) -> T:
        """Run an InodeTree call; build what it needs in a thread first; map errors to errno."""
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
            raise pyfuse3.FUSEError(exc.errno) from None
        except OSError as exc:
            self.stats["errors"] += 1
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

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

    # ----- lookups and attributes -------------------------------------------------------
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        self._count_lookup(parent_inode, name)
        self._refuse_nfs_outside_nodes(ctx, parent_inode)
        try:
            attr = await self._run(parent_inode,
                                   lambda: self.tree.lookup(parent_inode, os.fsdecode(name)))
            self._refuse_nfs_outside_nodes(ctx, attr.ino)  # ".." of a node's root
        except pyfuse3.FUSEError as exc:
            if exc.errno != errno.ENOENT:
                raise
            # A negative entry the kernel may cache: the tree only changes on a reload.
            negative = pyfuse3.EntryAttributes()
            negative.st_ino = 0
            negative.entry_timeout = self.cache_timeout
            return negative
        if name == b"..":
            return self._entry(attr)
        return self._entry_in(parent_inode, attr)

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        self.stats["getattr"] += 1
        self._refuse_nfs_outside_nodes(ctx, inode)
        try:
            return self._entry(await self._run(inode, lambda: self.tree.attr(inode)))
        except pyfuse3.FUSEError as exc:
            # Gone in this generation but maybe still open (its content stays readable).
            retired = self.generations.retired_attr(inode) if exc.errno == errno.ESTALE else None
            if retired is None:
                raise
            return self._entry(retired)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        # Mappings are derived from the numbers and never dropped: the kernel may ask
        # LOOKUP(ino, ".") for a forgotten inode when an NFS handle comes back.
        self.stats["forget"] += len(inode_list)

    async def readlink(self, inode: int, ctx: Any) -> bytes:
        self._refuse_nfs_outside_nodes(ctx, inode)
        return await self._run(inode, lambda: self.tree.readlink(inode))

    # ----- directories --------------------------------------------------------------------
    async def opendir(self, inode: int, ctx: Any) -> int:
        self.stats["opendir"] += 1
        self._refuse_nfs_outside_nodes(ctx, inode)
        listing = self._encoded.get(inode)
        if listing is None:
            raw = await self._run(inode, lambda: self.tree.listdir(inode))
            listing = [(os.fsencode(name), self._entry_in(inode, attr)) for name, attr in raw]
            # The kernel never caches a FUSE listing, so every ls/find/NFS READDIR comes
            # here: keep the encoded reply of listings only a reload can change.
            if self.tree.listing_is_stable(inode):
                if len(self._encoded) >= LISTING_CACHE_DIRS:
                    del self._encoded[next(iter(self._encoded))]  # the oldest
                self._encoded[inode] = listing
        handle = self._next_dir_handle
        self._next_dir_handle += 1
        self._listings[handle] = listing
        return handle

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        listing = self._listings[fh]
        for index in range(start_id, len(listing)):
            name, entry = listing[index]
            if not pyfuse3.readdir_reply(token, name, entry, index + 1):
                break

    async def releasedir(self, fh: int) -> None:
        self._listings.pop(fh, None)

    # ----- files --------------------------------------------------------------------------
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        self.stats["open"] += 1
        self._refuse_nfs_outside_nodes(ctx, inode)
        try:
            fd = self.tree.open(inode, flags)
        except ChangedOnDisk:
            # Changed since this generation read it: switch to a generation that has read it
            # (after this, a replaced file's old inode is stale and the kernel looks the path
            # up again), rather than serve new bytes under old attributes.
            self.stats["reload_on_open"] += 1
            await self.reload()
            fd = await self._run(inode, lambda: self.tree.open(inode, flags))
        except (TreeError, OSError):
            fd = await self._run(inode, lambda: self.tree.open(inode, flags))
        # keep_cache: layer data only changes on a reload, which invalidates explicitly;
        # writable (persistent) files change only through this mount.
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        self.stats["read"] += 1
        try:
            # Served inline from the page cache when it holds the data (RWF_NOWAIT never
            # blocks); only a read that must wait for the disk goes to a worker thread, so
            # a cold disk never stalls other nodes' requests.
            try:
                return _read_cached(fh, size, off)
            except BlockingIOError:
                self.stats["read_from_disk"] += 1
                return await trio.to_thread.run_sync(_read_ahead, fh, size, off)
        except OSError as exc:
            self.stats["errors"] += 1
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    async def release(self, fh: int) -> None:
        os.close(fh)

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        source = self.tree.statfs()
        data = pyfuse3.StatvfsData()
        for field in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                      "f_ffree", "f_favail", "f_namemax"):
            setattr(data, field, getattr(source, field))
        return data

    # ----- extended attributes --------------------------------------------------------------
    def _daemon_xattrs(self, inode: int) -> dict[bytes, bytes]:
        if inode != pyfuse3.ROOT_INODE:
            return {}
        status = {**self.generations.status(), "counters": dict(self.stats),
                  "handler_errors": self.failures.status()}
        return {PID_XATTR: str(os.getpid()).encode(),
                STATS_XATTR: json.dumps(dict(self.stats), sort_keys=True).encode(),
                STATUS_XATTR: json.dumps(status, sort_keys=True).encode()}

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        self._refuse_nfs_outside_nodes(ctx, inode)
        daemon = self._daemon_xattrs(inode)
        if name in daemon:
            return daemon[name]
        values = await self._run(inode, lambda: self.tree.xattrs(inode))
        value = values.get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        self._refuse_nfs_outside_nodes(ctx, inode)
        values = await self._run(inode, lambda: self.tree.xattrs(inode))
        return [*self._daemon_xattrs(inode), *(os.fsencode(n) for n in values)]

    # ----- writes: EROFS, except inside a node's persistent paths -------------------------
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self.stats["write"] += 1
        try:
            return os.pwrite(fh, buf, off)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fd, attr = await self._run(parent_inode, lambda: self.tree.create(
            parent_inode, os.fsdecode(name), mode, flags, ctx.uid, ctx.gid))
        return pyfuse3.FileInfo(fh=fd), self._entry(attr)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        return self._entry(await self._run(parent_inode, lambda: self.tree.make(
            parent_inode, os.fsdecode(name), "dir", mode, ctx.uid, ctx.gid)))

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        return self._entry(await self._run(parent_inode, lambda: self.tree.make(
            parent_inode, os.fsdecode(name), "symlink", 0o777, ctx.uid, ctx.gid, target)))

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        return self._entry(await self._run(parent_inode, lambda: self.tree.make(
            parent_inode, os.fsdecode(name), "node", mode, ctx.uid, ctx.gid, rdev=rdev)))

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self._run(parent_inode, lambda: self.tree.remove(
            parent_inode, os.fsdecode(name), is_dir=False))

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self._run(parent_inode, lambda: self.tree.remove(
            parent_inode, os.fsdecode(name), is_dir=True))

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)  # no RENAME_EXCHANGE / NOREPLACE
        await self._run(parent_inode_old, lambda: self.tree.rename(
            parent_inode_old, os.fsdecode(name_old), parent_inode_new,
            os.fsdecode(name_new)))

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        changes: dict[str, Any] = {}
        if fields.update_size:
            changes["size"] = attr.st_size
        if fields.update_mode:
            changes["mode"] = attr.st_mode
        if fields.update_uid:
            changes["uid"] = attr.st_uid
        if fields.update_gid:
            changes["gid"] = attr.st_gid
        if fields.update_atime or fields.update_mtime:
            current = await self._run(inode, lambda: self.tree.attr(inode))
            changes["times_ns"] = (
                attr.st_atime_ns if fields.update_atime else current.atime_ns,
                attr.st_mtime_ns if fields.update_mtime else current.mtime_ns)
        return self._entry(await self._run(inode, lambda: self.tree.set_attrs(inode,
                                                                              **changes)))

    async def fsync(self, fh: int, datasync: bool) -> None:
        await trio.to_thread.run_sync(os.fdatasync if datasync else os.fsync, fh)

    async def link(self, *_args: Any) -> pyfuse3.EntryAttributes:
        raise _erofs()  # hard links would tie a node's state to another path

    async def setxattr(self, *_args: Any) -> None:
        raise _erofs()

    async def removexattr(self, *_args: Any) -> None:
        raise _erofs()
