"""Transform: `onesuite export` (tar, cpio, squashfs) of one node's root, `onesuite convert
to-onesis` of a whole site and `convert to-systemimager` of that oneSIS image back, for roots
of growing size: wall time and the command's maximum RSS (getrusage of the child). The
streaming claim is that memory does not grow with the root: the RSS at the largest root is
compared with the smallest.

Sites: tools/scalesite.py with a synthetic image of E entries (distro-shaped: 78% files,
12% directories, 10% symlinks, minbase file sizes, at most 4,096 entries per directory), 4
nodes in 2 groups, one host override.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from .common import (
    CORE,
    ONESUITE,
    Config,
    Recorder,
    ScaleParams,
    cached_site,
    host_override_nodes,
    hosts,
    workdir,
)

FAMILY = "transform"
EXPORT_FORMATS = ("tar", "cpio", "squashfs")


def entries_for(config: Config) -> tuple[int, ...]:
    return (5_000, 50_000) if config.quick else (5_000, 50_000, 200_000)


# A directory of the synthetic image holds at most this many entries. The streaming claim is
# about the root's size; a reader holds the listing of each directory on its current path,
# so directories that grew with the image (9,189 entries at 200,000 without a limit) would
# measure the largest directory instead (docs/transform.md).
MAX_DIR_ENTRIES = 4096


def params_for(entries: int) -> ScaleParams:
    return ScaleParams(4, groups=2, host_share=0.25, density=8, image="synthetic",
                       synthetic_entries=entries, big_file_mib=1,
                       max_dir_entries=MAX_DIR_ENTRIES)


POLL_SECONDS = 0.02


def high_water_mib(pid: int) -> float | None:
    """The process's own peak RSS so far (VmHWM), None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None  # a zombie has no memory left to report


def run_measured(argv: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one command, which must succeed.

    The peak is the command's own VmHWM, read until it exits: getrusage's ru_maxrss would
    also count its children (mksquashfs) and, through vfork, the benchmark's own pages at
    the time of the exec."""
    os.sync()  # the previous run's output is not written back during this one
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=CORE, stdout=subprocess.DEVNULL, stderr=stderr)
        peak = 0.0
        while proc.poll() is None:
            seen = high_water_mib(proc.pid)
            if seen is not None:
                peak = max(peak, seen)
            time.sleep(POLL_SECONDS)
        elapsed = time.perf_counter() - start
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {errors[-2000:]}")
    return elapsed, peak


def inspect_commands(prefix: os.PathLike[str], params: ScaleParams
                     ) -> list[tuple[str, list[str]]]:
    """preview of a whole root (--json and the terminal table) and diff of two roots: they
    read the View by path like export, so their memory must not grow with the root either.
    diff compares a node with a host override against one without (the overrides differ)."""
    with_host, plain = host_override_nodes(params)[0], hosts(params.nodes)[-1]
    root = ["--root", str(prefix)]
    return [("preview --json", ["preview", *root, with_host, "/", "--json"]),
            ("preview", ["preview", *root, with_host, "/"]),
            ("diff --json", ["diff", *root, f"node:{with_host}", f"node:{plain}", "--json"])]


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
                for label, argv in inspect_commands(prefix, params):
                    rec.say(f"transform: {case} {label} run {number + 1}/{config.runs}")
                    # diff's exit status 1 says the roots differ
                    seconds, rss = run_measured([*ONESUITE, *argv], ok=(0, 1))
                    rec.add(FAMILY, f"{label} {case}", "seconds", seconds, number)
                    rec.add(FAMILY, f"{label} {case}", "max_rss_mib", rss, number)
                rec.say(f"transform: {case} to-onesis run {number + 1}/{config.runs}")
                out = work / "onesis"
                seconds, rss = run_measured([
                    *ONESUITE, "convert", "to-onesis", "--root", str(prefix), "--image",
                    "bench", "--no-progress", str(out)])
                rec.add(FAMILY, f"to-onesis {case}", "seconds", seconds, number, nodes=4)
                rec.add(FAMILY, f"to-onesis {case}", "max_rss_mib", rss, number, nodes=4)
                rec.say(f"transform: {case} to-systemimager run {number + 1}/{config.runs}")
                nodes_file = work / "nodes"
                nodes_file.write_text("\n".join(hosts(params.nodes)) + "\n")
                back = work / "si"
                seconds, rss = run_measured([
                    *ONESUITE, "convert", "to-systemimager", str(out), "--nodes",
                    str(nodes_file), "--no-progress", str(back)])
                shutil.rmtree(out)
                shutil.rmtree(back)
                rec.add(FAMILY, f"to-systemimager {case}", "seconds", seconds, number, nodes=4)
                rec.add(FAMILY, f"to-systemimager {case}", "max_rss_mib", rss, number,
                        nodes=4)
