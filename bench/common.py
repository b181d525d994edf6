"""What every benchmark family shares: samples, timing, caches, mounts (onesuite through its
real CLI, kernel overlayfs), materialized roots, and cleanup by PID even on failure."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
import oracle  # noqa: E402
from nfstools import wait_gone  # noqa: E402, F401  (by PID; a zombie counts as gone)
from scalesite import (  # noqa: E402, F401
    BIG_FILE,
    ScaleParams,
    cached_site,
    host_override_nodes,
    hosts,
)
from sitegen import SiteSpec  # noqa: E402, F401  (re-exported for the families)

T = TypeVar("T")
ONESUITE = [sys.executable, "-m", "onesuite_fs.cli"]
# The onesuite_fs to measure: this checkout, or a patched copy (prototypes of core changes);
# `-m` runs from this directory, so its onesuite_fs comes first on sys.path.
CORE = Path(os.environ.get("ONESUITE_BENCH_CORE", REPO))
ORDER = "autoinstall"  # SystemImager 4.3's default; the overlay stack follows the same order
WORK = Path(os.environ.get("ONESUITE_BENCH_WORK", "/var/tmp/onesuite-bench/work"))


@dataclass
class Sample:
    """One measured value of one run: a CSV row."""

    family: str
    case: str  # e.g. "onesuite cold", "local warm", "N=1000"
    metric: str  # e.g. "seconds", "rss_mib", "ops_per_s"
    value: float
    run: int
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class Config:
    """How big and how often: --quick shrinks every family, --runs sets repetitions."""

    quick: bool
    runs: int
    image: str  # debootstrap or synthetic
    scale_nodes: tuple[int, ...]
    copy_nodes: tuple[int, ...]
    storm_walkers: int
    walk_nodes_for_rss: int
    families: tuple[str, ...]
    storm_clients: tuple[int, ...] = (8, 32, 128)  # K of the NFS boot storm
    storm_workers: tuple[int, ...] = (1, 2)  # onesuite serve --workers N, where it exists

    def params(self, nodes: int) -> ScaleParams:
        return ScaleParams(nodes, image=self.image)

    def site(self, nodes: int) -> tuple[Path, SiteSpec]:
        return cached_site(self.params(nodes))


class Recorder:
    """Collects samples and says what it is doing (on stderr: stdout keeps the result)."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def add(self, family: str, case: str, metric: str, value: float, run: int,
            **extra: object) -> None:
        self.samples.append(Sample(family, case, metric, value, run, dict(extra)))

    @staticmethod
    def say(text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)


def summary(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(call: Callable[[], object]) -> float:
    return measure(call)[0]


def measure(call: Callable[[], T]) -> tuple[float, T]:
    """(wall seconds, result) of one call."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def run_shell(command: str) -> str:
    return subprocess.run(["sh", "-c", command], check=True, capture_output=True,
                          text=True).stdout


def find_stat(root: Path) -> int:
    """find + stat of every entry (platform.md §9): the number of entries seen."""
    return int(run_shell(f"find '{root}' -printf '%i %s %m\\n' | wc -l").strip())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# --------------------------------------------------------------------------------------------
# onesuite-fs through the real CLI


class OnesuiteMount:
    """`onesuite mount --root PREFIX MNT` on enter (its wall time in `start_seconds`),
    `onesuite umount MNT` on exit; a daemon that does not go is killed by its PID."""

    def __init__(self, prefix: Path, mountpoint: Path) -> None:
        self.prefix, self.mountpoint = prefix, mountpoint
        self.pid: int | None = None
        self.start_seconds = 0.0

    def __enter__(self) -> OnesuiteMount:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        done = subprocess.run([*ONESUITE, "mount", "--root", str(self.prefix),
                               str(self.mountpoint)], capture_output=True, text=True,
                              check=False, cwd=CORE)
        self.start_seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"onesuite mount failed: {done.stderr}")
        self.pid = int(os.getxattr(self.mountpoint, "user.onesuite.pid"))
        self.settle()
        return self

    def settle(self, timeout: float = 300.0) -> None:
        """Wait until the daemon has read every layer directory (its start-up prescan, in a
        background thread): what follows measures the steady state, not the prescan."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = json.loads(os.getxattr(self.mountpoint, "user.onesuite.status"))
            if status.get("prescanned", True):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the daemon did not finish its prescan in {timeout:.0f} s")

    def stats(self) -> dict[str, int]:
        """The daemon's request counters (lookup, getattr, read, ...)."""
        return json.loads(os.getxattr(self.mountpoint, "user.onesuite.stats"))

    def rss_mib(self) -> float:
        assert self.pid is not None
        return rss_mib(self.pid)

    def __exit__(self, *exc: object) -> None:
        done = subprocess.run([*ONESUITE, "umount", str(self.mountpoint)],
                              capture_output=True, text=True, check=False, cwd=CORE)
        if done.returncode != 0:
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True,
                           check=False)
        if self.pid is not None and not wait_gone(self.pid, 10):
            os.kill(self.pid, signal.SIGKILL)
            wait_gone(self.pid, 10)


# --------------------------------------------------------------------------------------------
# The alternatives: kernel overlayfs per node, and roots copied the SystemImager way


def node_layers(spec: SiteSpec, host: str) -> list[Path]:
    """The node's layers lowest first, as SystemImager lays them (the rsync oracle's order);
    missing override directories are skipped, as SystemImager does."""
    image = oracle.image_dir(spec, oracle.node_image(spec, host))
    names = oracle.override_sequence(spec, host, ORDER)
    overrides = [spec.override_dir(str(n)) for n in names]
    return [image, *dict.fromkeys(p for p in overrides if p.is_dir())]


@contextlib.contextmanager
def overlay(layers: list[Path], mountpoint: Path, options: str = "") -> Iterator[Path]:
    """A read-only overlayfs of `layers` (lowest first). Read-only needs two lowerdirs;
    a node with only its image gets an empty second one. `options`: more mount options
    (",nfs_export=on" for an NFS server: without it overlayfs gives no file handles)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    empty = Path(tempfile.mkdtemp(prefix="ovl-empty-", dir=WORK))
    lower = [str(p) for p in reversed(layers)] + ([str(empty)] if len(layers) < 2 else [])
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={':'.join(lower)}{options}", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        shutil.rmtree(empty, ignore_errors=True)


def materialize(spec: SiteSpec, host: str, dest: Path) -> None:
    """The node's root as SystemImager builds it: rsync the image, then each override."""
    oracle.build_root_with_rsync(spec, host, ORDER, dest)


def disk_kib(path: Path) -> int:
    return int(run_shell(f"du -sk '{path}'").split()[0])


@contextlib.contextmanager
def workdir(name: str) -> Iterator[Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=WORK))
    try:
        yield path
    finally:
        for mnt in sorted(_mounts_under(path), reverse=True):  # anything a failure left
            subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
        shutil.rmtree(path, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]


def boot_set(root: Path, limit: int = 400) -> list[str]:
    """What a node reads while booting: /etc, /usr/lib/systemd and shared libraries; regular
    files only (relative paths), found in the image itself."""
    found: list[str] = []
    for top, pattern in (("etc", "*"), ("usr/lib/systemd", "*"),
                         ("usr/lib/x86_64-linux-gnu", "*.so*")):
        base = root / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob(pattern)):
            if path.is_file() and not path.is_symlink():
                found.append(str(path.relative_to(root)))
    return found[:limit]


def machine() -> dict[str, str]:
    """Cores, CPU model, RAM, kernel, and the disk the benchmarks' trees live on."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "unknown")
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    WORK.mkdir(parents=True, exist_ok=True)
    source, fstype = run_shell(f"df --output=source,fstype '{WORK}' | tail -1").split()
    device = Path(source).name
    rotational = Path(f"/sys/block/{device}/queue/rotational")
    disk = f"{source} ({fstype}, " + (
        ("rotational" if rotational.read_text().strip() == "1" else "non-rotational")
        if rotational.exists() else "unknown medium") + ")"
    try:
        model = Path(f"/sys/block/{device}/device/model").read_text().strip()
    except OSError:
        model = "virtio" if device.startswith("vd") else ""
    return {"cores": str(os.cpu_count()), "cpu": cpu, "ram": f"{mem_kib / 1024**2:.1f} GiB",
            "kernel": os.uname().release, "disk": f"{disk} {model}".strip(),
            "python": sys.version.split()[0]}
