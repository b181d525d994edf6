"""Walk: find + stat of every entry of one node's root, cold (fresh mount, caches dropped), warm
(the second walk) and third, through onesuite-fs, on the same root materialized on local disk,
through a kernel overlayfs stack of the same layers, and through the two FUSE peers that stack
the same layers: fuse-overlayfs (C) and mergerfs (C++, first-found: the top layer wins), each
with its default options, read-only, in its own process stopped by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from .common import (
    Config,
    OnesuiteMount,
    Recorder,
    drop_caches,
    find_stat,
    materialize,
    measure,
    node_layers,
    overlay,
    wait_gone,
    workdir,
)

FAMILY = "walk"
NODES = 100  # the site the node comes from
HOST = "node00001"  # it has a host override, so all four layers take part


@contextlib.contextmanager
def onesuite_root(prefix: Path, mountpoint: Path, host: str) -> Iterator[Path]:
    """A fresh onesuite mount; the value is the node's root in it."""
    with OnesuiteMount(prefix, mountpoint) as mount:
        yield mount.mountpoint / "nodes" / host


@contextlib.contextmanager
def fuse_peer(command: list[str], mountpoint: Path) -> Iterator[Path]:
    """A FUSE filesystem run in the foreground (`command` ends with the mountpoint): mounted
    when the kernel says so, unmounted with fusermount3 and its process ended by PID."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                why = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"{command[0]} did not mount: {why}")
            time.sleep(0.02)
        yield mountpoint
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, check=False)
        if proc.poll() is None and not wait_gone(proc.pid, 10):
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def fuse_overlayfs(layers: list[Path], mountpoint: Path) -> contextlib.AbstractContextManager[Path]:
    """fuse-overlayfs with lower layers only (read-only), the top layer first."""
    lower = ":".join(str(p) for p in reversed(layers))
    return fuse_peer(["fuse-overlayfs", "-f", "-o", f"lowerdir={lower}", str(mountpoint)],
                     mountpoint)


def mergerfs(layers: list[Path], mountpoint: Path) -> contextlib.AbstractContextManager[Path]:
    """mergerfs over the layers, read-only branches, the top layer first; search policy ff
    (first found) so the top layer's file wins, as in the node's root."""
    branches = ":".join(f"{p}=RO" for p in reversed(layers))
    return fuse_peer(["mergerfs", "-f", "-o", "ro,category.search=ff,fsname=bench-mergerfs",
                      branches, str(mountpoint)], mountpoint)


PEERS = {"fuse-overlayfs": fuse_overlayfs, "mergerfs": mergerfs}


def run(config: Config, rec: Recorder) -> None:
    prefix, spec = config.site(NODES)
    with workdir("walk") as work:
        local = work / "local"
        rec.say(f"walk: materializing {HOST} with rsync")
        materialize(spec, HOST, local)
        targets: dict[str, Callable[[], AbstractContextManager[Path]]] = {
            "local": lambda: contextlib.nullcontext(local),
            "overlayfs": lambda: overlay(node_layers(spec, HOST), work / "ovl"),
            "onesuite": lambda: onesuite_root(prefix, work / "mnt", HOST),
        }
        for name, peer in PEERS.items():  # each where installed (tools/setup.sh installs both)
            if shutil.which(name):
                targets[name] = lambda peer=peer, name=name: peer(node_layers(spec, HOST),
                                                                   work / name)
            else:
                rec.say(f"walk: {name} is not installed, not measured")
        for number in range(config.runs):
            rec.say(f"walk: run {number + 1}/{config.runs}")
            for case, enter in targets.items():
                with enter() as root:
                    drop_caches()  # after mounting: the mount's own start reads nothing twice
                    cold, seen_cold = measure(lambda r=root: find_stat(r))
                    warm, seen_warm = measure(lambda r=root: find_stat(r))
                    third, seen_third = measure(lambda r=root: find_stat(r))
                rec.add(FAMILY, f"{case} cold", "seconds", cold, number, entries=seen_cold)
                rec.add(FAMILY, f"{case} warm", "seconds", warm, number, entries=seen_warm)
                rec.add(FAMILY, f"{case} third", "seconds", third, number, entries=seen_third)
