"""The pyfuse3 adapter: kernel requests in, `Requests` decisions (requests.py), replies out.

It only translates: kernel types (`InodeT`, `FileNameT`, `RequestContext`) to the daemon's,
`Attr` to `EntryAttributes`, `RequestError` to `FUSEError`, and it keeps what exists only in
FUSE terms (encoded listings, directory handles, cache timeouts, invalidation calls). One trio
thread runs every handler; reads that would wait for the disk go to a worker thread.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pyfuse3
import trio
from pyfuse3 import (
    EntryAttributes,
    FileHandleT,
    FileInfo,
    FileNameT,
    FlagT,
    FUSEError,
    InodeT,
    ModeT,
    RequestContext,
    SetattrFields,
    XAttrNameT,
)

from ..core.view import Attr
from .commands import Commands
from .control import REPLY_PREFIX, REQUEST_XATTR, ControlError
from .fuse_guard import HandlerFailures, guard_handlers
from .inode_tree import InodeTree
from .live import Generations, Invalidations, ReloadReport
from .requesters import NfsServerThreads
from .requests import RequestError, Requests

T = TypeVar("T")
log = logging.getLogger("onesuite.fuse")

LISTING_CACHE_DIRS = 8192  # encoded listings kept (oldest dropped first)
PID_XATTR = b"user.onesuite.pid"
STATS_XATTR = b"user.onesuite.stats"
STATUS_XATTR = b"user.onesuite.status"


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


def _erofs() -> FUSEError:
    return FUSEError(errno.EROFS)


def _name(name: bytes) -> str:
    return os.fsdecode(name)


def _requester(ctx: RequestContext | None) -> int | None:
    return None if ctx is None else ctx.pid


async def _answer(request: Awaitable[T]) -> T:
    """The daemon's answer, its errno as the kernel's."""
    try:
        return await request
    except RequestError as exc:
        raise FUSEError(exc.errno) from None


async def _invalidate(changes: Invalidations) -> None:
    """Make the kernel forget what a reload changed."""
    for parent, name in changes.entries:
        # The async variant: the blocking one can deadlock against a pending request.
        pyfuse3.invalidate_entry_async(InodeT(parent), FileNameT(os.fsencode(name)),
                                       ignore_enoent=True)
    for ino in sorted(set(changes.inodes)):
        try:
            await trio.to_thread.run_sync(pyfuse3.invalidate_inode, InodeT(ino), False)
        except OSError:
            pass  # the kernel does not hold this inode: nothing to drop


@guard_handlers  # any exception a handler raises answers EIO (fuse_guard.py)
class OnesuiteOperations(pyfuse3.Operations):
    supports_dot_lookup = True  # NFS export: LOOKUP(ino, ".") and ("..") after eviction

    def __init__(self, requests: Requests | InodeTree, cache_timeout: float,
                 generations: Generations | None = None,
                 nfs_threads: NfsServerThreads | None = None) -> None:
        super().__init__()
        if isinstance(requests, InodeTree):  # a tree alone: served as it is, no reloads
            requests = Requests(generations or Generations(requests, None), nfs_threads)
        requests.invalidate = _invalidate
        requests.cache_timeout = cache_timeout
        requests.on_switch = self._forget_listings
        self.requests = requests
        self.cache_timeout = cache_timeout
        self._listings: dict[int, list[tuple[bytes, EntryAttributes]]] = {}
        self._encoded: dict[int, list[tuple[bytes, EntryAttributes]]] = {}
        self._next_dir_handle = 1
        self.failures = HandlerFailures()
        self.commands = Commands(requests)  # plan, rollback, status --writes (control.py)

    @property
    def tree(self) -> InodeTree:
        return self.requests.tree

    @property
    def generations(self) -> Generations:
        return self.requests.generations

    @property
    def stats(self):  # type: ignore[no-untyped-def]
        return self.requests.stats

    async def reload(self, trigger: str = "reload") -> ReloadReport:
        return await self.requests.reload(trigger)

    def _forget_listings(self) -> None:
        self._encoded.clear()  # listings of the old generation

    # ----- what fuse_guard needs ------------------------------------------------------------
    def describe_inode(self, ino: int) -> str:
        return self.requests.describe_inode(ino)

    def handler_failed(self, operation: str, about: str, exc: BaseException) -> None:
        self.stats["handler_errors"] += 1
        self.failures.record(operation, about, exc)

    # ----- translation --------------------------------------------------------------------
    def _entry(self, attr: Attr) -> EntryAttributes:
        entry = EntryAttributes()
        entry.st_ino = InodeT(attr.ino)
        entry.generation = attr.generation
        entry.st_mode = ModeT(attr.mode)
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

    def _entry_in(self, parent: int, attr: Attr) -> EntryAttributes:
        """An entry of directory `parent`. Entries of nodes/, groups/ and images/ (the views'
        roots) are never cached by the kernel: every path through one is looked up here, so
        a walk from the mount root by an NFS server thread is refused (no dcache bypass)."""
        entry = self._entry(attr)
        if self.tree.is_namespace(parent):
            entry.entry_timeout = 0
        return entry

    async def _tree_call(self, ino: int, call: Callable[[], T]) -> T:
        return await _answer(self.requests.run(ino, call))

    async def _write_call(self, operation: str, ino: int, name: bytes | None,
                          call: Callable[[], T]) -> T:
        """A write's tree call; an EROFS answer is counted (`onesuite status --writes`)."""
        try:
            return await self._tree_call(ino, call)
        except FUSEError as exc:
            if exc.errno == errno.EROFS:
                self._refused(operation, ino, name)
            raise

    def _refused(self, operation: str, ino: int, name: bytes | None = None) -> FUSEError:
        self.requests.refused_write(operation, ino, None if name is None else _name(name))
        return _erofs()

    # ----- lookups and attributes -------------------------------------------------------
    async def lookup(self, parent_inode: InodeT, name: FileNameT,
                     ctx: RequestContext | None = None) -> EntryAttributes:
        attr = await _answer(self.requests.lookup(parent_inode, _name(name), _requester(ctx)))
        if attr is None:
            # A negative entry the kernel may cache: the tree only changes on a reload.
            negative = EntryAttributes()
            negative.st_ino = InodeT(0)
            negative.entry_timeout = self.cache_timeout
            return negative
        if name == b"..":
            return self._entry(attr)
        return self._entry_in(parent_inode, attr)

    async def getattr(self, inode: InodeT, ctx: RequestContext | None = None
                      ) -> EntryAttributes:
        return self._entry(await _answer(self.requests.attr(inode, _requester(ctx))))

    async def forget(self, inode_list: list[tuple[InodeT, int]]) -> None:
        # Mappings are derived from the numbers and never dropped: the kernel may ask
        # LOOKUP(ino, ".") for a forgotten inode when an NFS handle comes back.
        self.stats["forget"] += len(inode_list)

    async def readlink(self, inode: InodeT, ctx: RequestContext) -> FileNameT:
        self._refuse(ctx, inode)
        return FileNameT(await self._tree_call(inode, lambda: self.tree.readlink(inode)))

    def _refuse(self, ctx: RequestContext | None, *inodes: int) -> None:
        try:
            self.requests.refuse_nfs_outside_nodes(_requester(ctx), *inodes)
        except RequestError as exc:
            raise FUSEError(exc.errno) from None

    # ----- directories --------------------------------------------------------------------
    async def opendir(self, inode: InodeT, ctx: RequestContext) -> FileHandleT:
        self.stats["opendir"] += 1
        self._refuse(ctx, inode)
        listing = self._encoded.get(inode)
        if listing is None:
            raw = await self._tree_call(inode, lambda: self.tree.listdir(inode))
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
        return FileHandleT(handle)

    async def readdir(self, fh: FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
                      ) -> None:
        listing = self._listings[fh]
        for index in range(start_id, len(listing)):
            name, entry = listing[index]
            if not pyfuse3.readdir_reply(token, FileNameT(name), entry, index + 1):
                break

    async def releasedir(self, fh: FileHandleT) -> None:
        self._listings.pop(fh, None)

    # ----- files --------------------------------------------------------------------------
    async def open(self, inode: InodeT, flags: FlagT, ctx: RequestContext) -> FileInfo:
        try:
            fd = await _answer(self.requests.open(inode, flags, _requester(ctx)))
        except FUSEError as exc:
            if exc.errno == errno.EROFS:
                self._refused("truncate" if flags & os.O_TRUNC else "write", inode)
            raise
        # keep_cache: layer data only changes on a reload, which invalidates explicitly;
        # writable (persistent) files change only through this mount.
        return FileInfo(fh=FileHandleT(fd), keep_cache=True)

    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
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
            raise FUSEError(exc.errno or errno.EIO) from None

    async def release(self, fh: FileHandleT) -> None:
        os.close(fh)

    async def statfs(self, ctx: RequestContext) -> pyfuse3.StatvfsData:
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
        status = {**self.requests.status(), "handler_errors": self.failures.status()}
        return {PID_XATTR: str(os.getpid()).encode(),
                STATS_XATTR: json.dumps(dict(self.stats), sort_keys=True).encode(),
                STATUS_XATTR: json.dumps(status, sort_keys=True).encode()}

    async def getxattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> bytes:
        self._refuse(ctx, inode)
        daemon = self._daemon_xattrs(inode)
        if name in daemon:
            return daemon[name]
        if inode == pyfuse3.ROOT_INODE and name.startswith(REPLY_PREFIX.encode()):
            reply = self.commands.read(name[len(REPLY_PREFIX):].decode("ascii", "replace"))
            if reply is None:
                raise FUSEError(pyfuse3.ENOATTR)
            return reply
        values = await self._tree_call(inode, lambda: self.tree.xattrs(inode))
        value = values.get(os.fsdecode(name))
        if value is None:
            raise FUSEError(pyfuse3.ENOATTR)
        return value

    async def listxattr(self, inode: InodeT, ctx: RequestContext) -> list[XAttrNameT]:
        self._refuse(ctx, inode)
        values = await self._tree_call(inode, lambda: self.tree.xattrs(inode))
        return [XAttrNameT(n) for n in (*self._daemon_xattrs(inode),
                                        *(os.fsencode(n) for n in values))]

    # ----- writes: EROFS, except inside a node's persistent paths -------------------------
    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        self.stats["write"] += 1
        try:
            return os.pwrite(fh, buf, off)
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None

    async def create(self, parent_inode: InodeT, name: FileNameT, mode: ModeT, flags: FlagT,
                     ctx: RequestContext) -> tuple[FileInfo, EntryAttributes]:
        fd, attr = await self._write_call("create", parent_inode, name, lambda: self.tree.create(
            parent_inode, _name(name), mode, flags, ctx.uid, ctx.gid))
        return FileInfo(fh=FileHandleT(fd)), self._entry(attr)

    async def mkdir(self, parent_inode: InodeT, name: FileNameT, mode: ModeT,
                    ctx: RequestContext) -> EntryAttributes:
        return self._entry(await self._write_call("mkdir", parent_inode, name, lambda: (
            self.tree.make(parent_inode, _name(name), "dir", mode, ctx.uid, ctx.gid))))

    async def symlink(self, parent_inode: InodeT, name: FileNameT, target: FileNameT,
                      ctx: RequestContext) -> EntryAttributes:
        return self._entry(await self._write_call("symlink", parent_inode, name, lambda: (
            self.tree.make(parent_inode, _name(name), "symlink", 0o777, ctx.uid, ctx.gid,
                           target))))

    async def mknod(self, parent_inode: InodeT, name: FileNameT, mode: ModeT, rdev: int,
                    ctx: RequestContext) -> EntryAttributes:
        return self._entry(await self._write_call("mknod", parent_inode, name, lambda: (
            self.tree.make(parent_inode, _name(name), "node", mode, ctx.uid, ctx.gid,
                           rdev=rdev))))

    async def unlink(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        await self._write_call("unlink", parent_inode, name, lambda: self.tree.remove(
            parent_inode, _name(name), is_dir=False))

    async def rmdir(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        await self._write_call("rmdir", parent_inode, name, lambda: self.tree.remove(
            parent_inode, _name(name), is_dir=True))

    async def rename(self, parent_inode_old: InodeT, name_old: FileNameT,
                     parent_inode_new: InodeT, name_new: FileNameT, flags: FlagT,
                     ctx: RequestContext) -> None:
        if flags:
            raise FUSEError(errno.EINVAL)  # no RENAME_EXCHANGE / NOREPLACE
        await self._write_call("rename", parent_inode_old, name_old, lambda: self.tree.rename(
            parent_inode_old, _name(name_old), parent_inode_new, _name(name_new)))

    async def setattr(self, inode: InodeT, attr: EntryAttributes, fields: SetattrFields,
                      fh: FileHandleT | None, ctx: RequestContext) -> EntryAttributes:
        changes: dict[str, int | tuple[int, int] | None] = {}
        if fields.update_size:
            changes["size"] = attr.st_size
        if fields.update_mode:
            changes["mode"] = attr.st_mode
        if fields.update_uid:
            changes["uid"] = attr.st_uid
        if fields.update_gid:
            changes["gid"] = attr.st_gid
        if fields.update_atime or fields.update_mtime:
            current = await self._tree_call(inode, lambda: self.tree.attr(inode))
            changes["times_ns"] = (
                attr.st_atime_ns if fields.update_atime else current.atime_ns,
                attr.st_mtime_ns if fields.update_mtime else current.mtime_ns)
        operation = ("truncate" if "size" in changes else "chmod" if "mode" in changes
                     else "chown" if "uid" in changes or "gid" in changes else "utimes")
        return self._entry(await self._write_call(operation, inode, None,
                                                  lambda: self.tree.set_attrs(inode, **changes)))

    async def fsync(self, fh: FileHandleT, datasync: bool) -> None:
        await trio.to_thread.run_sync(os.fdatasync if datasync else os.fsync, fh)

    async def link(self, inode: InodeT, new_parent_inode: InodeT, new_name: FileNameT,
                   ctx: RequestContext) -> EntryAttributes:
        raise self._refused("link", new_parent_inode, new_name)  # would tie a node's state
        # to another path

    async def setxattr(self, inode: InodeT, name: XAttrNameT, value: bytes,
                       ctx: RequestContext) -> None:
        if inode == pyfuse3.ROOT_INODE and name == REQUEST_XATTR.encode():
            self._refuse(ctx, inode)  # never an NFS server's thread
            try:
                await self.commands.request(value)
            except ControlError as exc:
                raise FUSEError(exc.errno) from None
            return
        raise self._refused("setxattr", inode)

    async def removexattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> None:
        raise self._refused("removexattr", inode)
