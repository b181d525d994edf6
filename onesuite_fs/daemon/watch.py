"""Noticing changes on the image server: inotify on every directory of the site, with a
periodic fingerprint check as the fallback (inotify off, a watch limit reached, an event
queue overflow). Changes are debounced: a burst of edits (an rsync into an override, an
editor truncating and rewriting cluster.xml) makes one reload once the tree has been quiet.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import struct
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import trio

log = logging.getLogger("onesuite.watch")

_libc = ctypes.CDLL(None, use_errno=True)
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_ISDIR = 0x400, 0x800, 0x4000, 0x40000000
IN_NONBLOCK, IN_CLOEXEC, IN_ONLYDIR, IN_DONT_FOLLOW = 0o4000, 0o2000000, 0x1000000, 0x2000000
_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
         | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)
_EVENT = struct.Struct("iIII")


class Inotify:
    """A recursive, best-effort set of inotify watches over some directory trees."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd = fd
        self.watches: dict[int, Path] = {}
        self.complete = True  # False once a watch could not be added: poll instead

    def add_tree(self, top: Path) -> None:
        for dirpath, dirnames, _files in os.walk(top):
            self._add(Path(dirpath))
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]

    def _add(self, path: Path) -> None:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), _MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err not in (errno.ENOENT, errno.ENOTDIR):
                self.complete = False
                log.warning("cannot watch %s (%s): falling back to periodic checks", path,
                            os.strerror(err))
            return
        self.watches[wd] = path

    def read(self) -> list[tuple[Path | None, int, str]]:
        """Pending events as (directory, mask, name); adds watches for new directories."""
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        events, offset = [], 0
        while offset < len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size:offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            directory = self.watches.get(wd)
            events.append((directory, mask, os.fsdecode(name)))
            if directory is not None and mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                self.add_tree(directory / os.fsdecode(name))
        return events

    def close(self) -> None:
        os.close(self.fd)


def fingerprint(paths: Iterable[Path]) -> str:
    """A cheap summary of the site: every directory's and file's (mtime, size) below `paths`.
    Changes inside files that keep both (rare for an edit) are missed; inotify catches them."""
    digest = hashlib.blake2b(digest_size=16)
    for top in paths:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames) + [""]:
                try:
                    st = os.lstat(os.path.join(dirpath, name) if name else dirpath)
                except OSError:  # gone meanwhile, or unreadable: the reload will say
                    continue
                digest.update(f"{dirpath}/{name}:{st.st_mtime_ns}:{st.st_size}\n".encode(
                    "utf-8", "surrogateescape"))
    return digest.hexdigest()


async def watch_site(paths: list[Path], reload: Callable[[], Awaitable[object]], *,
                     quiet: float = 1.0, longest: float = 10.0, poll_every: float = 60.0,
                     use_inotify: bool = True) -> None:
    """Call `reload` once per burst of changes under `paths`, until cancelled."""
    inotify: Inotify | None = None
    if use_inotify:
        try:
            inotify = Inotify()
            for path in paths:
                await trio.to_thread.run_sync(inotify.add_tree, path)
        except OSError as exc:
            log.warning("inotify unavailable (%s): checking every %.0f s", exc, poll_every)
            inotify = None
    last_print = await trio.to_thread.run_sync(fingerprint, paths)
    try:
        while True:
            changed = False
            if inotify is not None and inotify.complete:
                with trio.move_on_after(poll_every):
                    await trio.lowlevel.wait_readable(inotify.fd)
                    changed = bool(inotify.read())
            else:
                await trio.sleep(poll_every)
            if not changed:
                now = await trio.to_thread.run_sync(fingerprint, paths)
                changed, last_print = now != last_print, now
                if not changed:
                    continue
            await _settle(inotify, quiet, longest)
            last_print = await trio.to_thread.run_sync(fingerprint, paths)
            await reload()
    finally:
        if inotify is not None:
            inotify.close()


RESTART_AFTER = 5.0  # seconds before a failed watch starts again


async def keep_watching(paths: list[Path], reload: Callable[[], Awaitable[object]], *,
                        quiet: float = 1.0, poll_every: float = 60.0,
                        restart_after: float = RESTART_AFTER) -> None:
    """watch_site, started again (after a reload, since changes may have been missed) if
    anything in it fails: a failing watch must not end the daemon, nor stop following."""
    while True:
        try:
            await watch_site(paths, reload, quiet=quiet, poll_every=poll_every)
            return
        except Exception:  # noqa: BLE001
            log.exception("watching the site failed; watching again in %.0f s",
                          restart_after)
        await trio.sleep(restart_after)
        await reload()


async def _settle(inotify: Inotify | None, quiet: float, longest: float) -> None:
    """Wait until nothing changed for `quiet` seconds (at most `longest` in all)."""
    with trio.move_on_after(longest):
        while True:
            if inotify is None:
                await trio.sleep(quiet)
                return
            with trio.move_on_after(quiet) as scope:
                await trio.lowlevel.wait_readable(inotify.fd)
                inotify.read()
            if scope.cancelled_caught:
                return
