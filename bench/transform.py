"""Transform: `onesuite export` (tar, cpio, squashfs) of one node's root and `onesuite convert
to-onesis` of a whole site, for roots of growing size: wall time and the command's maximum
RSS (getrusage of the child). The streaming claim is that memory does not grow with the root:
the RSS at the largest root is compared with the smallest.

Sites: tools/scalesite.py with a synthetic image of E entries (distro-shaped: 78% files,
12% directories, 10% symlinks, minbase file sizes), 4 nodes in 2 groups, one host override.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from .common import (
    CORE,
    ONESUITE,
    Config,
    Recorder,
    ScaleParams,
    cached_site,
    host_override_nodes,
    workdir,
)

FAMILY = "transform"
EXPORT_FORMATS = ("tar", "cpio", "squashfs")


def entries_for(config: Config) -> tuple[int, ...]:
    return (5_000, 50_000) if config.quick else (5_000, 50_000, 200_000)


def params_for(entries: int) -> ScaleParams:
    return ScaleParams(4, groups=2, host_share=0.25, density=8, image="synthetic",
                       synthetic_entries=entries, big_file_mib=1)


def run_measured(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, maximum RSS in MiB) of one command, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=CORE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    errors = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {errors[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024  # kilobytes on Linux


def run(config: Config, rec: Recorder) -> None:
    for entries in entries_for(config):
        params = params_for(entries)
        prefix = cached_site(params)[0]
        node = host_override_nodes(params)[0]  # image, global, group and host layers
        case = f"E={entries}"
        with workdir("transform") as work:
            for number in range(config.runs):
                rec.say(f"transform: {case} nodes run {number + 1}/{config.runs}")
                # The floor: the interpreter, the site and its Tree, nothing walked.
                _, rss = run_measured([*ONESUITE, "nodes", "--root", str(prefix)])
                rec.add(FAMILY, f"nodes {case}", "max_rss_mib", rss, number)
                for fmt in EXPORT_FORMATS:
                    rec.say(f"transform: {case} export {fmt} run {number + 1}/{config.runs}")
                    out = work / f"out.{fmt}"
                    seconds, rss = run_measured([
                        *ONESUITE, "export", "--root", str(prefix), node, "--format", fmt,
                        "--no-progress", "--force", str(out)])
                    size = out.stat().st_size
                    out.unlink()
                    rec.add(FAMILY, f"export {fmt} {case}", "seconds", seconds, number,
                            bytes=size)
                    rec.add(FAMILY, f"export {fmt} {case}", "max_rss_mib", rss, number)
                rec.say(f"transform: {case} to-onesis run {number + 1}/{config.runs}")
                out = work / "onesis"
                seconds, rss = run_measured([
                    *ONESUITE, "convert", "to-onesis", "--root", str(prefix), "--image",
                    "bench", "--no-progress", str(out)])
                shutil.rmtree(out)
                rec.add(FAMILY, f"to-onesis {case}", "seconds", seconds, number, nodes=4)
                rec.add(FAMILY, f"to-onesis {case}", "max_rss_mib", rss, number, nodes=4)
