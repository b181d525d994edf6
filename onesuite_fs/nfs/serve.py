"""``onesuite serve``: mount, export, run nfs-ganesha, and stop in the one safe order.

Start: FUSE mount -> ganesha config -> ganesha in the foreground -> ready. Stop
(SIGINT/SIGTERM, or either child dying): ganesha first (it holds files open on the mount, so
unmounting first would fail as busy, and a lazy unmount would leave the old daemon serving
it) -> unmount -> wait for the FUSE daemon.

When a child dies unexpectedly, serve stops the other and exits 1: NFS clients see errors
(never another file's data) until serve is started again, and then continue with the handles
they hold: a handle names the export, the inode number and the generation, never the
mount's device number (exports.py), so it is the same after a restart and on every other
server serving the same store.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ..daemon.inode_tree import InodeTree
from ..daemon.live import LiveOptions
from ..daemon.mount import check_mountpoint, daemon_pid, mount, umount
from ..daemon.process import pid_alive
from ..service.sd_notify import notify
from ..settings import Settings
from .exports import ExportPlan
from .ganesha import Ganesha, GaneshaOptions, NfsServerError
from .health import clear_status, write_status

log = logging.getLogger("onesuite.serve")


@dataclass(frozen=True)
class ServeResult:
    exit_status: int
    reason: str



class _Stop:
    """SIGINT/SIGTERM only set a flag; the main loop does the stopping, in order."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous = {s: signal.signal(s, self._handler)
                         for s in (signal.SIGINT, signal.SIGTERM)}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _mount(tree: InodeTree, mountpoint: Path, settings: Settings, state_dir: Path,
           live: LiveOptions | None) -> dict[str, object]:
    status = mount(tree, mountpoint, foreground=False, cache_timeout=settings.cache_timeout,
                   log_file=state_dir / "onesuite.log", live=live)
    if status != 0:
        raise NfsServerError(f"mounting {mountpoint} failed; see {state_dir / 'onesuite.log'}")
    (state_dir / "st_dev").unlink(missing_ok=True)  # what the device-number pinning kept
    dev = os.stat(mountpoint).st_dev
    return {"st_dev": f"{os.major(dev)}:{os.minor(dev)}"}  # informational: not in handles


class NodeRootPins:
    """An O_PATH descriptor on every exported node root, held while ganesha runs.

    The kernel reconnects a directory file handle to the filesystem root by asking for its
    parents; with each node's root always in the dentry cache, those walks stop there, so
    an NFS server thread never needs anything above a node root, and the mount refuses it
    all (docs/nfs.md, "Isolation")."""

    def __init__(self, plan: ExportPlan) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = len(plan.exports) + 1024
        if soft < wanted:
            limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        self.fds: list[int] = []
        try:
            for export in plan.exports:
                self.fds.append(os.open(export.path, os.O_PATH | os.O_DIRECTORY))
        except OSError as exc:
            self.close()
            raise NfsServerError(f"cannot open the exported root {exc.filename}: "
                                 f"{exc.strerror}") from None

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())


def serve(settings: Settings, tree: InodeTree, plan: ExportPlan, options: GaneshaOptions,
          state_dir: Path, *, json_status: bool = False, live: LiveOptions | None = None) -> int:
    """Serve until SIGINT/SIGTERM (0) or until ganesha or the FUSE daemon dies (1)."""
    mountpoint = plan.mountpoint
    state_dir.mkdir(parents=True, exist_ok=True)
    ganesha = Ganesha(state_dir, options)
    ganesha.check_installed()  # before mounting anything
    check_mountpoint(mountpoint)
    stop = _Stop()
    mounted = False
    pins: NodeRootPins | None = None
    try:
        device = _mount(tree, mountpoint, settings, state_dir, live)
        mounted = True
        fuse_pid = daemon_pid(mountpoint)
        pins = NodeRootPins(plan)
        ganesha.write_config(plan)
        ganesha_pid = ganesha.start()
        status = {"state": "serving", "mountpoint": str(mountpoint), "exports": len(plan.exports),
                  "unexported": [node for node, _ in plan.unexported],
                  "writable": [e.node for e in plan.exports if e.writable],
                  "privileged_ports": plan.privileged_ports,
                  "fuse_pid": fuse_pid, "ganesha_pid": ganesha_pid,
                  "port": options.port, "bind": options.bind, "protocols": options.protocols,
                  "ganesha_log": str(ganesha.log), "config": str(ganesha.conf),
                  "serve_pid": os.getpid(), **device}
        write_status(state_dir, status)  # what `onesuite ha-check` reads
        if json_status:
            print(json.dumps(status), flush=True)
        print(f"onesuite: serving {len(plan.exports)} node roots from {mountpoint} over NFS "
              f"(ganesha pid {ganesha_pid}, port {options.port}, log {ganesha.log}); "
              "SIGINT/SIGTERM stops", file=sys.stderr, flush=True)
        notify("READY=1", f"STATUS=serving {len(plan.exports)} node roots from {mountpoint} "
                          f"over NFS (ganesha pid {ganesha_pid})")
        result = _watch(stop, ganesha, fuse_pid, ganesha.log, state_dir / "onesuite.log")
    finally:
        clear_status(state_dir)
        ganesha.stop()
        if pins is not None:
            pins.close()
        if mounted:
            _unmount(mountpoint)
        stop.restore()
    if result.exit_status:
        print(f"onesuite: error: {result.reason}; stopped (NFS server, then the mount)",
              file=sys.stderr)
    else:
        print(f"onesuite: {result.reason}: stopped the NFS server, then unmounted "
              f"{mountpoint}", file=sys.stderr)
    return result.exit_status


def _watch(stop: _Stop, ganesha: Ganesha, fuse_pid: int | None, ganesha_log: Path,
           fuse_log: Path) -> ServeResult:
    while True:
        if stop.signum is not None:
            return ServeResult(0, f"signal {signal.Signals(stop.signum).name}")
        if not ganesha.alive():
            return ServeResult(1, f"nfs-ganesha exited unexpectedly (see {ganesha_log})")
        if fuse_pid is not None and not pid_alive(fuse_pid):
            return ServeResult(1, f"the FUSE daemon (pid {fuse_pid}) died (see {fuse_log}); "
                                  "start onesuite serve again: clients continue")
        time.sleep(0.2)


def _unmount(mountpoint: Path) -> None:
    """Unmount after ganesha is gone; a dead daemon's mount is detached instead."""
    try:
        umount(mountpoint)
    except Exception as exc:  # the daemon died: `fusermount3 -u` still clears the endpoint
        log.warning("unmount of %s: %s", mountpoint, exc)
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True,
                       check=False)
