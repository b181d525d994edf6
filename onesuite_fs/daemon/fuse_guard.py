"""The one boundary between pyfuse3 and the handlers: no exception a handler raises ends the
daemon.

pyfuse3 turns a ``FUSEError`` into an errno; any other exception leaves its request loop and
unmounts every node's root. ``guard_handlers`` wraps every request handler of an
``Operations`` class once, here and nowhere else: an unexpected exception (a bug, a
``ValueError`` from a rule evaluated lazily, a ``MemoryError``, a ``RecursionError``, one
raised in a worker thread the handler awaited) answers that request with EIO, is logged with
the operation and the path (or inode, or handle) it was about, and is counted in the status.
The daemon keeps serving every other request. Cancellation (a ``BaseException``) passes.

Test hook: ``ONESUITE_TEST_FAIL=OPERATION:NAME`` in the daemon's environment (read once, at
import) makes OPERATION raise a RuntimeError in a worker thread whenever the request names
NAME (a lookup's or create's name, or the last component of the inode's path). Only the
tests set it: it reaches the guard the way a bug deep in a handler would, whatever inputs
the parsers refuse by then.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import pyfuse3
import trio

log = logging.getLogger("onesuite.fuse")

C = TypeVar("C", bound=type)

# Handlers whose first argument (after self) is an inode number, a handle, or neither.
_BY_FH = frozenset({"read", "write", "release", "fsync", "flush", "readdir", "releasedir",
                    "fsyncdir"})
_NO_REPLY = frozenset({"forget"})  # the kernel waits for no answer: log, never raise


class Describes(Protocol):
    """What the guard needs from the operations object to say what a request was about."""

    def describe_inode(self, ino: int) -> str: ...

    def handler_failed(self, operation: str, about: str, exc: BaseException) -> None: ...


def _about(ops: Describes, operation: str, args: tuple[Any, ...]) -> str:
    """The path (or inode, or handle) a request named, for the log; never raises."""
    try:
        if not args or operation in ("statfs", "forget"):
            return "-"
        first = args[0]
        if operation in _BY_FH:
            try:  # a file handle is the backing fd: the file it reads is the best name
                return f"fh {first} ({os.readlink(f'/proc/self/fd/{first}')})"
            except OSError:
                return f"fh {first}"
        where = ops.describe_inode(first)
        if operation in ("lookup", "create", "mkdir", "symlink", "mknod", "unlink", "rmdir",
                         "rename") and len(args) > 1 and isinstance(args[1], bytes):
            where = f"{where.rstrip('/')}/{os.fsdecode(args[1])}"
        return where
    except Exception:  # describing must never be the second failure
        return f"inode {args[0] if args else '?'}"


def _injected_failure() -> tuple[str, str] | None:
    spec = os.environ.get("ONESUITE_TEST_FAIL", "")
    operation, _, name = spec.partition(":")
    return (operation, name) if operation and name else None


_INJECTED = _injected_failure()


def _fail_in_thread(operation: str, about: str) -> None:
    raise RuntimeError(f"injected failure (ONESUITE_TEST_FAIL) in {operation} {about}")


def _guard(operation: str, handler: Callable[..., Awaitable[Any]]
           ) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(handler)
    async def guarded(self: Any, *args: Any) -> Any:
        try:
            if _INJECTED is not None and _INJECTED[0] == operation:
                about = _about(self, operation, args)
                if about.rstrip("/").rpartition("/")[2] == _INJECTED[1]:
                    await trio.to_thread.run_sync(_fail_in_thread, operation, about)
            return await handler(self, *args)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:  # noqa: BLE001 - the whole point: nothing ends the loop
            about = _about(self, operation, args)
            try:
                self.handler_failed(operation, about, exc)
            except Exception:  # noqa: BLE001
                log.error("%s %s failed: %r", operation, about, exc)
            if operation in _NO_REPLY:
                return None
            raise pyfuse3.FUSEError(errno.EIO) from None

    return guarded


def guard_handlers(cls: C) -> C:
    """Wrap every request handler `cls` has (its own and pyfuse3's defaults) in the guard."""
    for name, member in inspect.getmembers(pyfuse3.Operations):
        if name.startswith("_") or not inspect.iscoroutinefunction(member):
            continue
        setattr(cls, name, _guard(name, getattr(cls, name)))
    return cls


class HandlerFailures:
    """The failures the guard caught: counted, the last few kept for `onesuite status`, and
    logged: a full traceback the first time per operation and exception type, then one
    line at most every LOG_EVERY seconds per kind (with how many were not logged), so a
    client repeating a failing request cannot flood the log."""

    KEEP = 10
    LOG_EVERY = 10.0

    def __init__(self) -> None:
        self.count = 0
        self.recent: list[dict[str, object]] = []
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}  # -> (when, not logged)

    def record(self, operation: str, about: str, exc: BaseException) -> None:
        self.count += 1
        kind = type(exc).__name__
        message = f"{kind}: {exc}"[:500]
        now = time.time()
        self.recent = [*self.recent[-(self.KEEP - 1):],
                       {"operation": operation, "path": about, "error": message, "at": now}]
        key = (operation, kind)
        last = self._logged.get(key)
        if last is None:
            self._logged[key] = (now, 0)
            log.error("%s %s failed, answered EIO (the daemon goes on): %s", operation,
                      about, message, exc_info=exc)
        elif now - last[0] >= self.LOG_EVERY:
            self._logged[key] = (now, 0)
            more = f" ({last[1]} more since, not logged)" if last[1] else ""
            log.error("%s %s failed, answered EIO: %s%s", operation, about, message, more)
        else:
            self._logged[key] = (last[0], last[1] + 1)

    def status(self) -> dict[str, object]:
        return {"count": self.count, "recent": list(self.recent)}
