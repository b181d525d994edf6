"""Walk: find + stat of every entry of one node's root, cold (fresh mount, caches dropped) and
warm, through onesuite-fs, on the same root materialized on local disk, and through a kernel
overlayfs stack of the same layers."""

from __future__ import annotations

import contextlib
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
        for number in range(config.runs):
            rec.say(f"walk: run {number + 1}/{config.runs}")
            for case, enter in targets.items():
                with enter() as root:
                    drop_caches()  # after mounting: the mount's own start reads nothing twice
                    cold, seen_cold = measure(lambda r=root: find_stat(r))
                    warm, seen_warm = measure(lambda r=root: find_stat(r))
                rec.add(FAMILY, f"{case} cold", "seconds", cold, number, entries=seen_cold)
                rec.add(FAMILY, f"{case} warm", "seconds", warm, number, entries=seen_warm)
