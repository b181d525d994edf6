"""Reads: sequential read of a 100 MiB file, cold (fresh mount, caches dropped) and warm
(re-read on the same mount), through onesuite-fs and on local disk. A warm re-read must be
served by the kernel page cache: the daemon's read counter says whether it was."""

from __future__ import annotations

from pathlib import Path

from .common import BIG_FILE, Config, OnesuiteMount, Recorder, drop_caches, timed, workdir

FAMILY = "reads"
NODES = 10
HOST = "node00001"  # BIG_FILE lives in its host override
CHUNK = 1 << 20


def read_all(path: Path) -> int:
    total = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            total += len(chunk)
    return total


def run(config: Config, rec: Recorder) -> None:
    prefix, spec = config.site(NODES)
    local = spec.override_dir(HOST) / BIG_FILE
    mib = local.stat().st_size / 2**20
    with workdir("reads") as work:
        for number in range(config.runs):
            rec.say(f"reads: run {number + 1}/{config.runs}")
            drop_caches()
            cold = timed(lambda: read_all(local))
            warm = timed(lambda: read_all(local))
            rec.add(FAMILY, "local cold", "MiB_per_s", mib / cold, number)
            rec.add(FAMILY, "local warm", "MiB_per_s", mib / warm, number)
            with OnesuiteMount(prefix, work / "mnt") as mount:
                path = mount.mountpoint / "nodes" / HOST / BIG_FILE
                drop_caches()
                cold = timed(lambda p=path: read_all(p))
                before = mount.stats().get("read", 0)
                warm = timed(lambda p=path: read_all(p))
                daemon_reads = mount.stats().get("read", 0) - before
            rec.add(FAMILY, "onesuite cold", "MiB_per_s", mib / cold, number)
            rec.add(FAMILY, "onesuite warm", "MiB_per_s", mib / warm, number,
                    daemon_reads=daemon_reads)
            rec.add(FAMILY, "onesuite warm", "daemon_reads", daemon_reads, number)
