"""Mounting and unmounting: pyfuse3 session, trio loop, daemon start-up and clean stop.

``mount`` returns only when the kernel mount exists (or fails with the reason): in daemon mode
the child reports success or failure through a pipe before the parent exits.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pyfuse3
import trio

from ..core.errors import ConfigError
from ..service import logs
from .fuse_ops import PID_XATTR, STATUS_XATTR, OnesuiteOperations
from .inode_tree import InodeTree
from .live import Generations, LiveOptions
from .process import pid_alive
from .requests import Requests
from .watch import keep_watching

log = logging.getLogger("onesuite.mount")

FSTYPE = "fuse.onesuite"  # what /proc/mounts says of our mounts (subtype below)
MOUNT_OPTIONS = {
    "fsname=onesuite",
    "subtype=onesuite",
    "allow_other",  # nfs-ganesha and other users must reach the views
    "default_permissions",  # the kernel enforces each entry's mode and owner
    "nosuid",  # setuid files in an image grant nothing on the server
    "nodev",  # device nodes in an image never open the server's devices
}


def check_mountpoint(mountpoint: Path) -> None:
    """Refuse early, with a reason, instead of leaving a half-started daemon. A onesuite
    mount whose daemon died (kill -9, OOM: the kernel answers ENOTCONN) is unmounted here,
    so a service manager can restart in place; a live mount is refused."""
    for _attempt in range(DEAD_MOUNTS_CLEARED):
        try:
            os.stat(mountpoint)
            # stat may be answered from the kernel's attribute cache; statfs never is.
            if os.path.ismount(mountpoint):
                os.statvfs(mountpoint)
            break
        except FileNotFoundError:
            raise ConfigError(f"mount point {mountpoint} does not exist",
                              hint="create the directory first") from None
        except OSError as exc:
            if exc.errno not in DEAD_MOUNT_ERRORS:
                raise
            _clear_dead_mount(mountpoint)
    else:
        raise ConfigError(f"{mountpoint} is still a dead mount after unmounting "
                          f"{DEAD_MOUNTS_CLEARED} of them", hint=f"umount -l {mountpoint}")
    if not os.path.isdir(mountpoint):
        raise ConfigError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        pid = daemon_pid(mountpoint)
        serving = f" (onesuite daemon {pid} serves it)" if pid is not None else ""
        raise ConfigError(f"{mountpoint} is already a mount point{serving}",
                          hint=f"unmount it first (onesuite umount {mountpoint})")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise ConfigError("/dev/fuse is not accessible", hint="mount as root")


DEAD_MOUNTS_CLEARED = 4  # mounts stacked on one mount point that are dead, at most
# What the kernel answers on a FUSE mount whose daemon is gone (ECONNABORTED: a request
# that was pending while the connection went down).
DEAD_MOUNT_ERRORS = (errno.ENOTCONN, errno.ECONNABORTED)


def mount_fstype(mountpoint: Path) -> str | None:
    """The type of the topmost mount at `mountpoint` (/proc/self/mountinfo), or None."""
    found = None
    target = os.path.realpath(mountpoint)  # a dead mount's own lstat fails: kept as given
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split(" ")
            # mount point: field 5, octal-escaped; the type follows the " - " separator
            where = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if where == target and "-" in fields:
                found = fields[fields.index("-") + 1]
    return found


def _clear_dead_mount(mountpoint: Path) -> None:
    """Detach the dead mount at `mountpoint`, if it is a onesuite mount."""
    fstype = mount_fstype(mountpoint)
    if fstype != FSTYPE:
        raise ConfigError(f"{mountpoint} is a dead {fstype or 'unknown'} mount, not onesuite's",
                          hint=f"unmount it yourself (fusermount3 -u -z {mountpoint})")
    log.warning("%s is a mount whose daemon died: unmounting it", mountpoint)
    for command in (["fusermount3", "-u", "-z", str(mountpoint)],
                    ["umount", "-l", str(mountpoint)]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False,
                                  timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("%s failed: %s", command[0], exc)
            continue
        if done.returncode == 0:
            return
        log.warning("%s failed: %s", " ".join(command), done.stderr.strip())
    raise ConfigError(f"{mountpoint} is a mount whose daemon died, and unmounting it failed",
                      hint=f"run: umount -l {mountpoint}")


async def _logged(task: Callable[[], Awaitable[object]], what: str) -> None:
    """Run a background task of the daemon; a failure is logged, never the daemon's end
    (an exception in a nursery task would cancel pyfuse3.main and unmount every root)."""
    try:
        await task()
    except Exception:  # noqa: BLE001
        log.exception("%s failed; the mount goes on serving", what)


async def _serve(ops: OnesuiteOperations, live: LiveOptions | None,
                 on_ready: Callable[[], None] | None = None) -> None:
    async with trio.open_nursery() as nursery:

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM,
                                           signal.SIGHUP) as signals:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("SIGHUP: reloading")
                        nursery.start_soon(_logged, ops.reload, "reload on SIGHUP")
                        continue
                    log.info("signal %d: unmounting", signum)
                    pyfuse3.terminate()
                    return

        nursery.start_soon(on_signals)
        ops.commands.spawn = nursery.start_soon  # plan, rollback, status --writes

        def prescan_and_digest() -> None:
            ops.tree.prescan()
            ops.generations.digest_serving()  # the history's configuration digest

        nursery.start_soon(_logged, partial(trio.to_thread.run_sync, prescan_and_digest,
                                            abandon_on_cancel=True),
                           "reading the whole site in the background (generation 1 reads "
                           "directories when first used instead)")
        if on_ready is not None:  # in a thread: it waits for the loop below to answer
            nursery.start_soon(_logged, partial(trio.to_thread.run_sync, on_ready,
                                                abandon_on_cancel=True), "reporting readiness")
        if live is not None and live.watch_paths:
            nursery.start_soon(partial(keep_watching, list(live.watch_paths),
                                       partial(ops.reload, "watch"),
                                       quiet=live.quiet, poll_every=live.poll_every))
        await pyfuse3.main(min_tasks=4, max_tasks=64)
        nursery.cancel_scope.cancel()


def _run_session(tree: InodeTree, mountpoint: Path, cache_timeout: float, debug: bool,
                 live: LiveOptions | None) -> OnesuiteOperations:
    options = set(MOUNT_OPTIONS)
    if debug:
        options.add("debug")
    generations = Generations(tree, live.rebuild if live else None)
    ops = OnesuiteOperations(Requests(generations), cache_timeout)
    pyfuse3.init(ops, str(mountpoint), options)
    # Everything built so far lives as long as the mount: keep the cyclic collector from
    # scanning it again and again (with 10,000 nodes a full collection is felt in lookups).
    gc.collect()
    gc.freeze()
    return ops


def _loop(ops: OnesuiteOperations, live: LiveOptions | None,
          on_ready: Callable[[], None] | None = None) -> None:
    try:
        trio.run(_serve, ops, live, on_ready)
    except BaseException:
        pyfuse3.close(unmount=True)
        raise
    pyfuse3.close(unmount=True)


def mount(tree: InodeTree, mountpoint: Path, *, foreground: bool, cache_timeout: float,
          log_file: Path | None, debug: bool = False, live: LiveOptions | None = None,
          on_ready: Callable[[], None] | None = None) -> int:
    """Mount and serve; in daemon mode return 0 once the mount is ready. In the foreground,
    `on_ready` runs in a thread once the loop serves (a service's readiness report)."""
    if foreground:
        ops = _run_session(tree, mountpoint, cache_timeout, debug, live)
        log.info("mounted %s", mountpoint)
        _log_broken(tree)
        _loop(ops, live, on_ready)
        return 0
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end) as status:
            message = status.read()
        if message.startswith("ready"):
            return 0
        os.waitpid(pid, 0)
        print(f"onesuite: error: {message.strip() or 'the daemon exited during start-up'}",
              file=sys.stderr)
        return 1
    # The daemon: its own session, stdio away from the caller's terminal.
    os.close(read_end)
    os.setsid()
    try:
        ops = _run_session(tree, mountpoint, cache_timeout, debug, live)
    except Exception as exc:  # report any start-up failure to the waiting parent
        os.write(write_end, f"mounting {mountpoint} failed: {exc}".encode())
        os._exit(1)
    _detach_stdio(log_file)
    _log_broken(tree)
    os.write(write_end, b"ready")
    os.close(write_end)
    try:
        _loop(ops, live)
    except BaseException:
        log.exception("daemon failed")
        os._exit(1)
    os._exit(0)


def _log_broken(tree: InodeTree) -> None:
    for name, error in sorted(tree.site.broken.items()):
        log.error("node %s not served: %s", name, str(error).replace("\n", " "))


def _detach_stdio(log_file: Path | None) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    target = (os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
              if log_file else devnull)
    os.dup2(target, 1)
    os.dup2(target, 2)
    logs.to_file(log_file)  # records through a handler that follows logrotate


def daemon_pid(mountpoint: Path) -> int | None:
    try:
        return int(os.getxattr(mountpoint, PID_XATTR.decode()))
    except (OSError, ValueError):
        return None


def umount(mountpoint: Path, timeout: float = 30.0) -> None:
    """Unmount and wait for the daemon to exit; ConfigError says why it could not."""
    pid = daemon_pid(mountpoint)
    done = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        detail = done.stderr.strip()
        hint = ("something still uses it (an NFS server exporting it, a shell inside it); "
                "stop that first" if "busy" in detail else None)
        raise ConfigError(f"could not unmount {mountpoint}: {detail}", hint=hint)
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise ConfigError(f"daemon {pid} of {mountpoint} did not exit within "
                              f"{timeout:.0f} s after the unmount")
        time.sleep(0.05)


def daemon_status(mountpoint: Path) -> dict[str, object]:
    """The running daemon's generation, last reload and counters."""
    try:
        return json.loads(os.getxattr(mountpoint, STATUS_XATTR.decode()))
    except OSError as exc:
        raise ConfigError(f"{mountpoint} is not a running onesuite mount ({exc.strerror})",
                          hint="check the mount point, or start it with onesuite mount"
                          ) from None


def reload(mountpoint: Path, timeout: float = 120.0) -> dict[str, object]:
    """Ask the daemon to reload (SIGHUP) and wait for the outcome; its last_reload report."""
    before = daemon_status(mountpoint)
    pid = daemon_pid(mountpoint)
    assert pid is not None
    seen = (before["reloads"], before["failed_reloads"])
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = daemon_status(mountpoint)
        if (status["reloads"], status["failed_reloads"]) != seen:
            return status
        time.sleep(0.05)
    raise ConfigError(f"the daemon of {mountpoint} did not finish reloading within "
                      f"{timeout:.0f} s")
