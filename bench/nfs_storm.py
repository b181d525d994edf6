"""Boot storm over NFS: K userspace NFS clients (PyPI libnfs, one process each), every one from
its own node's address to that node's own export, as diskless nodes would, all starting at
once and reading the node's boot set. Against the same clients on ganesha over K roots
materialized on disk (what an admin runs today) and, where the kernel lets ganesha export it,
ganesha over K read-only kernel overlayfs mounts. Reports aggregate files/s and MB/s,
per-client p50/p99 time to finish, the servers' CPU seconds and errors.

  python -m bench.nfs_storm --clients 4,8 --runs 3 [--image synthetic] > out.json

The boot set is bench.common.boot_set (the files of /etc, /usr/lib/systemd and the shared
libraries) read whole; the metadata traffic of a recorded boot is not replayed yet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from nfstools import Netns, Serve  # noqa: I001  (tests/ is on sys.path via common)
from scalesite import ScaleParams, address, cached_site, hosts

from onesuite_fs.nfs.exports import Export, ExportPlan
from onesuite_fs.nfs.ganesha import GaneshaOptions

from .common import boot_set, drop_caches, materialize, node_layers, overlay, workdir
from .nfs import CLIENT, ganesha_running

SERVERS = ("onesuite", "materialized", "overlayfs")
CLIENT_TIMEOUT = 300.0  # seconds for all clients of one storm


def node_address(node: str) -> str:
    """The address scalesite gives the node (its index in the site's host list)."""
    return address(int(node.removeprefix("node")) - 1)


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


@contextlib.contextmanager
def ganesha_over(ns: Netns, roots: dict[str, Path], state: Path) -> Iterator[list[int]]:
    """ganesha (NFSv4) exporting each node's directory to that node's address only."""
    exports = tuple(Export(host, node_address(host), "bench", root,
                           f"/nodes/{host}", index + 1, "")
                    for index, (host, root) in enumerate(sorted(roots.items())))
    with ganesha_running(ExportPlan(state, exports, ()), GaneshaOptions(protocols="4"), state,
                         lambda command: [*ns.prefix, *command]) as pid:
        yield [pid]


@contextlib.contextmanager
def onesuite_serve(ns: Netns, prefix: Path, work: Path) -> Iterator[list[int]]:
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    server = Serve(ns, prefix, mnt, work / "serve-state", "--protocols", "4", "--no-watch")
    try:
        status = server.start()
        yield [int(status["ganesha_pid"]), int(status["fuse_pid"])]  # type: ignore[call-overload]
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
        else:
            server.cleanup()


def storm(ns: Netns, nodes: list[str], lists: dict[str, Path],
          pids: list[int]) -> dict[str, object]:
    """Every node's client at once; per-client results, wall time and server CPU."""
    drop_caches()
    cpu = _cpu_seconds(pids)
    began = time.perf_counter()
    procs = [subprocess.Popen(
        [*ns.prefix, sys.executable, str(CLIENT),
         f"nfs://{node_address(node)}/nodes/{node}?version=4", str(lists[node])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in nodes]
    results, failures = [], []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, CLIENT_TIMEOUT - (
                time.perf_counter() - began)))
        except subprocess.TimeoutExpired:  # a hung client is a failure, never a hung bench
            proc.kill()
            out, err = proc.communicate()
            err += f"\nnfs_storm: client killed after {CLIENT_TIMEOUT} s"
        finished = time.perf_counter() - began
        if proc.returncode != 0:
            failures.append(err[-2000:])
            continue
        result = json.loads(out)
        result["finished"] = finished  # from the common start, so includes the mount
        if result["errors"]:
            failures.append(err[-2000:])
        results.append(result)
    wall = time.perf_counter() - began
    files = sum(len(lists[node].read_text().split()) for node in nodes)
    seconds = sorted(float(r["seconds"]) for r in results)
    return {
        "clients": len(nodes), "wall": wall, "files": files,
        # a client that could not even start counts as one error
        "errors": sum(int(r["errors"]) for r in results) + len(procs) - len(results),
        "files_per_s": files / wall,
        "bytes": sum(int(r["bytes"]) for r in results),
        "mb_per_s": sum(int(r["bytes"]) for r in results) / wall / 1e6,
        "p50": statistics.median(seconds) if seconds else None,
        "p99": seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))] if seconds else None,
        "server_cpu": _cpu_seconds(pids) - cpu,
        "failures": failures[:3],
    }


def measure(image: str, clients: list[int], runs: int, servers: list[str],
            say) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    most = max(clients)
    prefix, spec = cached_site(ScaleParams(max(most, 10), image=image))
    nodes = hosts(max(most, 10))[:most]
    rows: list[dict[str, object]] = []
    with workdir("nfs-storm") as work:
        ns = Netns("storm")
        try:
            for node in nodes:
                ns.local_source(node_address(node))
            roots: dict[str, Path] = {}
            lists: dict[str, Path] = {}
            for node in nodes:  # each node's own boot set: host overrides differ
                say(f"nfs_storm: materializing {node}")
                roots[node] = work / "local" / node
                materialize(spec, node, roots[node])
                lists[node] = work / f"bootset-{node}.txt"
                lists[node].write_text("\n".join(boot_set(roots[node])) + "\n")
            for number in range(runs):
                for k in clients:
                    for server in servers:
                        say(f"nfs_storm: run {number + 1}/{runs}, K={k}, {server}")
                        row = run_one(server, ns, prefix, spec, work, nodes[:k], roots,
                                      lists)
                        if row is not None:
                            rows.append({"run": number, "server": server, **row,
                                         "load": os.getloadavg()[0]})
        finally:
            ns.delete()
    return rows


def run_one(server: str, ns: Netns, prefix: Path, spec, work: Path,  # type: ignore[no-untyped-def]
            nodes: list[str], roots: dict[str, Path],
            lists: dict[str, Path]) -> dict[str, object] | None:
    if server == "onesuite":
        with onesuite_serve(ns, prefix, work) as pids:
            return storm(ns, nodes, lists, pids)
    if server == "materialized":
        with ganesha_over(ns, {n: roots[n] for n in nodes}, work / "g-state") as pids:
            return storm(ns, nodes, lists, pids)
    with contextlib.ExitStack() as stack:
        mounted = {}
        for node in nodes:
            mounted[node] = stack.enter_context(overlay(
                node_layers(spec, node), work / "ovl" / node, ",nfs_export=on"))
        try:
            with ganesha_over(ns, mounted, work / "o-state") as pids:
                return storm(ns, nodes, lists, pids)
        except RuntimeError as exc:  # ganesha cannot export this overlayfs (no handles)
            return {"clients": len(nodes), "unsupported": str(exc)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="4", help="K values, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--image", default="debootstrap", choices=("debootstrap", "synthetic"))
    args = parser.parse_args()
    servers = args.servers.split(",")
    unknown = set(servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers {', '.join(sorted(unknown))}")
    rows = measure(args.image, [int(k) for k in args.clients.split(",")], args.runs, servers,
                   lambda text: print(text, file=sys.stderr, flush=True))
    json.dump(rows, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
