"""Commands to a running mount and their answers, through extended attributes of its root.

`onesuite status` reads ``user.onesuite.status``; commands whose answer may be large or slow
(`status --writes`, `plan`, `rollback`) go through a request and a paged reply:

- the client sets ``user.onesuite.request`` on the mount root to ``{"id": ID, "command":
  NAME}`` (ID: 32 random hex digits). Setting it needs write permission on the mount root
  (root only: the kernel checks, `default_permissions`), and NFS server threads are
  refused anything above the node roots. The daemon starts the command in the background
  and answers at once: EINVAL for a malformed request, EBUSY when MAX_RUNNING commands run;
- the client reads ``user.onesuite.reply.ID``: ``{"state": "running"}`` until the command
  is done, then ``{"state": "done", "pages": N, "size": BYTES}``; the answer (JSON) is
  ``user.onesuite.reply.ID.0`` ... ``.N-1``, PAGE bytes each (an extended attribute holds
  at most 64 KiB). Replies are kept for REPLY_SECONDS and at most KEPT_REPLIES of them.

This module holds the protocol, the daemon's reply store and the client; it imports
neither pyfuse3 nor trio (the CLI uses it). commands.py runs the commands.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ConfigError

REQUEST_XATTR = "user.onesuite.request"
PID_XATTR = "user.onesuite.pid"  # only a onesuite daemon answers it (fuse_ops.py)
REPLY_PREFIX = "user.onesuite.reply."
COMMANDS = ("writes", "plan", "rollback")
MAX_REQUEST = 1024  # bytes of a request
PAGE = 60_000
KEPT_REPLIES = 16
REPLY_SECONDS = 600.0
MAX_REPLY = 32 << 20  # bytes of one answer; a larger one is replaced by an error
MAX_RUNNING = 4
_ID = re.compile(r"[0-9a-f]{32}")


class ControlError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


def parse_request(value: bytes) -> tuple[str, str]:
    """(id, command) of a request; ControlError(EINVAL) for anything else."""
    if len(value) > MAX_REQUEST:
        raise ControlError(errno.EINVAL, "request too long")
    try:
        data = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ControlError(errno.EINVAL, "request is not JSON") from None
    if not isinstance(data, dict) or set(data) != {"id", "command"}:
        raise ControlError(errno.EINVAL, "request must be {id, command}")
    request_id, command = data["id"], data["command"]
    if not isinstance(request_id, str) or not _ID.fullmatch(request_id):
        raise ControlError(errno.EINVAL, "bad request id")
    if command not in COMMANDS:
        raise ControlError(errno.EINVAL, f"unknown command {command!r}")
    return request_id, command


@dataclass
class _Reply:
    started: float
    data: bytes | None = None  # None while running
    # What a running command has done so far (its keys fixed when it starts: a worker
    # thread updates the values while the handler thread reads them).
    progress: dict[str, int] = field(default_factory=dict)


@dataclass
class ReplyStore:
    """The daemon's answers by request id, bounded in number, size and age."""

    replies: dict[str, _Reply] = field(default_factory=dict)

    def running(self) -> int:
        return sum(1 for r in self.replies.values() if r.data is None)

    def start(self, request_id: str, now: float) -> None:
        self._expire(now)
        if request_id in self.replies:
            raise ControlError(errno.EEXIST, "request id already used")
        if self.running() >= MAX_RUNNING:
            raise ControlError(errno.EBUSY, "too many commands running")
        while len(self.replies) >= KEPT_REPLIES:
            oldest = min((k for k, r in self.replies.items() if r.data is not None),
                         key=lambda k: self.replies[k].started, default=None)
            if oldest is None:
                raise ControlError(errno.EBUSY, "too many commands running")
            del self.replies[oldest]
        self.replies[request_id] = _Reply(now)

    def progress(self, request_id: str) -> dict[str, int]:
        """The running command's progress counters, to update in place."""
        reply = self.replies.get(request_id)
        return reply.progress if reply is not None else {}

    def finish(self, request_id: str, answer: dict[str, object]) -> None:
        data = json.dumps(answer, sort_keys=True).encode()
        if len(data) > MAX_REPLY:
            data = json.dumps({"error": f"the answer is {len(data)} bytes, more than "
                                        f"{MAX_REPLY} (a bug: answers are bounded)"}).encode()
        reply = self.replies.get(request_id)
        if reply is not None:
            reply.data = data

    def read(self, name: str, now: float) -> bytes | None:
        """The value of reply attribute `name` (without REPLY_PREFIX); None: no such."""
        self._expire(now)
        request_id, _, page = name.partition(".")
        reply = self.replies.get(request_id)
        if reply is None:
            return None
        if not page:
            if reply.data is None:
                return json.dumps({"state": "running", "progress": dict(reply.progress)}
                                  ).encode()
            pages = max(1, -(-len(reply.data) // PAGE))
            return json.dumps({"state": "done", "pages": pages,
                               "size": len(reply.data)}).encode()
        if reply.data is None or not page.isdigit() or len(page) > 9:
            return None
        start = int(page) * PAGE
        if start >= max(len(reply.data), 1):
            return None
        return reply.data[start:start + PAGE] or b" "

    def _expire(self, now: float) -> None:
        for key in [k for k, r in self.replies.items()
                    if r.data is not None and now - r.started > REPLY_SECONDS]:
            del self.replies[key]


# ----- the client (the CLI) ---------------------------------------------------------------
def ask(mountpoint: Path, command: str, timeout: float = 3600.0,
        progress: Callable[[dict[str, int]], None] | None = None) -> dict[str, object]:
    """Run `command` in the daemon of `mountpoint` and return its answer; `progress` is
    called with what the daemon reports while it runs. ConfigError with what to do when
    the mount or the daemon cannot be asked."""
    request_id = secrets.token_hex(16)
    request = json.dumps({"id": request_id, "command": command}).encode()
    try:  # never set the request on a directory that is not a onesuite mount
        os.getxattr(mountpoint, PID_XATTR)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ConfigError(_refusal(mountpoint, command, exc), hint=_hint(exc)) from None
        raise ConfigError(f"{mountpoint} is not a running onesuite mount ({exc.strerror})",
                          hint="check the mount point, or start it with onesuite mount"
                          ) from None
    try:
        os.setxattr(mountpoint, REQUEST_XATTR, request)
    except OSError as exc:
        raise ConfigError(_refusal(mountpoint, command, exc), hint=_hint(exc)) from None
    name = REPLY_PREFIX + request_id
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            header = json.loads(os.getxattr(mountpoint, name))
        except OSError as exc:
            raise ConfigError(f"the daemon of {mountpoint} lost the answer to {command} "
                              f"({exc.strerror})", hint="run the command again") from None
        if header.get("state") == "done":
            break
        if progress is not None:
            progress(header.get("progress") or {})
        if time.monotonic() > deadline:
            raise ConfigError(f"the daemon of {mountpoint} did not answer {command} within "
                              f"{timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    data = b"".join(os.getxattr(mountpoint, f"{name}.{page}")
                    for page in range(int(header["pages"])))
    return json.loads(data)


def _refusal(mountpoint: Path, command: str, exc: OSError) -> str:
    if exc.errno == errno.EROFS or exc.errno in (errno.ENOTSUP, errno.ENOENT, errno.ENOTDIR):
        return (f"{mountpoint} is not a running onesuite mount that takes commands "
                f"({exc.strerror})")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"not allowed to send {command} to the daemon of {mountpoint}"
    if exc.errno == errno.EBUSY:
        return f"the daemon of {mountpoint} is busy with other commands"
    return f"sending {command} to the daemon of {mountpoint} failed: {exc.strerror}"


def _hint(exc: OSError) -> str | None:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "run it as root (commands need write permission on the mount root)"
    if exc.errno == errno.EBUSY:
        return "wait for them to finish, then run it again"
    if exc.errno == errno.EROFS:
        return "a daemon older than this command does not know it: restart the mount"
    return None
