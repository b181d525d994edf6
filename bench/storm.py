"""Boot storm: W concurrent walkers (32 by default), each reading a boot set (/etc,
/usr/lib/systemd, shared libraries) from a different node, caches dropped and a fresh mount
first: aggregate file reads per second, p50/p99 latency of one read (open, read all, close)
and errors, through onesuite-fs and through one kernel overlayfs per node."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import (
    Config,
    OnesuiteMount,
    Recorder,
    SiteSpec,
    boot_set,
    drop_caches,
    hosts,
    node_layers,
    overlay,
    workdir,
)
from .scale import sampled

FAMILY = "storm"
NODES = 1000


def _walker(root: Path, files: list[str], start: threading.Barrier) -> tuple[list[float], int]:
    latencies, errors = [], 0
    start.wait()
    for rel in files:
        began = time.perf_counter()
        try:
            with open(root / rel, "rb", buffering=0) as f:
                while f.read(1 << 17):
                    pass
        except OSError:
            errors += 1
            continue
        latencies.append(time.perf_counter() - began)
    return latencies, errors


def storm(roots: list[Path], files: list[str]) -> tuple[float, float, float, int]:
    """(reads per second, p50 s, p99 s, errors) of one storm."""
    start = threading.Barrier(len(roots) + 1)
    with ThreadPoolExecutor(len(roots)) as pool:
        futures = [pool.submit(_walker, root, files, start) for root in roots]
        start.wait()
        began = time.perf_counter()
        results = [f.result() for f in futures]
        elapsed = time.perf_counter() - began
    latencies = sorted(x for lat, _ in results for x in lat)
    errors = sum(e for _, e in results)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(latencies) / elapsed, statistics.median(latencies), p99, errors


@contextlib.contextmanager
def overlays(spec: SiteSpec, chosen: list[str], work: Path) -> Iterator[list[Path]]:
    """One read-only overlayfs per node, all unmounted on the way out."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(overlay(node_layers(spec, h), work / f"ovl-{h}"))
               for h in chosen]


@contextlib.contextmanager
def onesuite_roots(prefix: Path, chosen: list[str], work: Path) -> Iterator[list[Path]]:
    with OnesuiteMount(prefix, work / "mnt") as mount:
        yield [mount.mountpoint / "nodes" / h for h in chosen]


def run(config: Config, rec: Recorder) -> None:
    prefix, spec = config.site(NODES)
    chosen = sampled(hosts(NODES), config.storm_walkers)
    files = boot_set(spec.images["bench"])
    with workdir("storm") as work:
        for number in range(config.runs):
            rec.say(f"storm: run {number + 1}/{config.runs} ({len(chosen)} walkers, "
                    f"{len(files)} files each)")
            targets = {"overlayfs": lambda: overlays(spec, chosen, work),
                       "onesuite": lambda: onesuite_roots(prefix, chosen, work)}
            for case, enter in targets.items():
                with enter() as roots:
                    drop_caches()
                    rate, p50, p99, errors = storm(roots, files)
                rec.add(FAMILY, case, "reads_per_s", rate, number, walkers=len(chosen),
                        files=len(files))
                rec.add(FAMILY, case, "p50_ms", p50 * 1000, number)
                rec.add(FAMILY, case, "p99_ms", p99 * 1000, number)
                rec.add(FAMILY, case, "errors", errors, number)
