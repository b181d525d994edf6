"""Boot storm over NFS: K clients (bench/nfs3_replay.py, one process each), every one from
its own node's address and a privileged port to that node's own export, as diskless nodes
would, all starting at once and replaying a real boot: the NFSv3 calls a systemd boot of the
debootstrap image made (bench/data/boot-trace.json, recorded by bench/boot_record.py:
GETATTR, LOOKUP, ACCESS, READLINK, READ, READDIRPLUS, ... in the boot's order). Against the
same clients on ganesha over K roots materialized on disk (what an admin runs today) and
ganesha over K read-only kernel overlayfs mounts of the same layers. Reports aggregate files/s
and MB/s, per-client p50/p99 time to finish, the servers' CPU seconds and errors (a reply
whose status differs from the recorded boot's is one).

  python -m bench.nfs_storm --clients 8,32,128 --runs 3 > out.json

Every server is ganesha with onesuite's own settings (NFSv3, rpcbind and ganesha in a private
/run of the namespace). Materialized roots: one rsync'd copy of the image, hard-linked into
each node's root (`cp -al`), then the node's override passes with rsync as SystemImager runs
them (files replaced by rename, so they stop sharing): each node has its own tree, the disk and
page cache of one image, as onesuite and overlayfs have.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import oracle  # noqa: I001  (tests/ is on sys.path via bench)
from nfstools import _PRIVATE_RUN, Netns, Serve, wait_gone
from scalesite import ScaleParams, address, cached_site, hosts

from onesuite_fs.nfs.exports import Export, ExportPlan
from onesuite_fs.nfs.ganesha import GaneshaOptions

from .common import ORDER, drop_caches, node_layers, workdir
from .nfs import ganesha_running

REPLAY = Path(__file__).resolve().parent / "nfs3_replay.py"
TRACE = Path(__file__).resolve().parent / "data" / "boot-trace.json"
SERVERS = ("onesuite", "materialized", "overlayfs")
CLIENT_TIMEOUT = 300.0  # seconds for all clients of one storm


def node_address(node: str) -> str:
    """The address scalesite gives the node (its index in the site's host list)."""
    return address(int(node.removeprefix("node")) - 1)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system seconds of `pids` and every process below them (a daemon's workers)."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)  # ppid
    total, todo, seen = 0.0, list(pids), set()
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += (int(stats[pid][11]) + int(stats[pid][12])) / tick  # utime, stime
        todo += children.get(pid, [])
    return total


@contextlib.contextmanager
def private_run(ns: Netns, state: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    """(command prefix, environment) that start a program in `ns` with a private /run holding
    its own rpcbind (NFSv3 registers there); that rpcbind is stopped by its PID afterwards."""
    state.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ONESUITE_TEST_STATE": str(state), "ONESUITE_TEST_RPCBIND": "1"}
    try:
        yield [*ns.prefix, "unshare", "-m", "--propagation", "private", "sh", "-c",
               _PRIVATE_RUN, "private-run"], env
    finally:
        pidfile = state / "rpcbind.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not wait_gone(pid, 10):
                os.kill(pid, signal.SIGKILL)
            pidfile.unlink()


def device_fsids(config: str) -> str:
    """ganesha's own fsid choice instead of onesuite's `fsid_type = Major64`. onesuite keeps
    only the device's major in its handles, because one FUSE file system holds every root and
    its minor changes between runs (onesuite_fs/nfs/exports.py); K overlayfs mounts are K file
    systems with f_fsid 0 and anonymous devices 0:N, so with Major64 all of them (and every
    other anonymous-device file system) share fsid 0 in the handle, ganesha opens a handle on
    the wrong one and the first LOOKUP answers NOENT."""
    return config.replace(" fsid_type = Major64;", "")


@contextlib.contextmanager
def ganesha_over(ns: Netns, roots: dict[str, Path], state: Path,
                 edit: Callable[[str], str] = lambda text: text) -> Iterator[list[int]]:
    """ganesha (NFSv3) exporting each node's directory to that node's address only."""
    exports = tuple(Export(host, node_address(host), "bench", root,
                           f"/nodes/{host}", index + 1, "")
                    for index, (host, root) in enumerate(sorted(roots.items())))
    with private_run(ns, state) as (prefix, env), ganesha_running(
            ExportPlan(state, exports, ()), GaneshaOptions(protocols="3"), state,
            lambda command: [*prefix, *command], env, edit) as pid:
        yield [pid]


@contextlib.contextmanager
def onesuite_serve(ns: Netns, prefix: Path, work: Path,
                   workers: int | None = None) -> Iterator[list[int]]:
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    extra = ["--workers", str(workers)] if workers else []
    server = Serve(ns, prefix, mnt, work / "serve-state", "--protocols", "3", "--no-watch",
                   *extra, private_run=True, rpcbind=True)
    try:
        status = server.start()
        pids = [int(status["ganesha_pid"]), int(status["fuse_pid"])]  # type: ignore[call-overload]
        pids += [int(p) for p in status.get("worker_pids", [])]  # type: ignore[attr-defined]
        yield pids
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
        else:
            server.cleanup()


def storm(ns: Netns, nodes: list[str], pids: list[int], trace: Path) -> dict[str, object]:
    """Every node's client at once; per-client results, wall time and server CPU."""
    drop_caches()
    cpu = _cpu_seconds(pids)
    clients_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    procs = [subprocess.Popen(
        [*ns.prefix, sys.executable, str(REPLAY), node_address(node), f"/nodes/{node}",
         str(trace), "--source", node_address(node)],
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
            failures.append("; ".join(result["differences"]))
        results.append(result)
    wall = time.perf_counter() - began
    server_cpu = _cpu_seconds(pids) - cpu
    clients_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # every client waited for
    client_cpu = (clients_after.ru_utime + clients_after.ru_stime
                  - clients_before.ru_utime - clients_before.ru_stime)
    files = sum(int(r["files"]) for r in results)
    total = sum(int(r["bytes"]) for r in results)
    seconds = sorted(float(r["seconds"]) for r in results)
    return {
        "clients": len(nodes), "wall": wall, "files": files, "calls": sum(
            int(r["calls"]) for r in results),
        # a client that could not even start counts as one error
        "errors": sum(int(r["errors"]) for r in results) + len(procs) - len(results),
        "files_per_s": files / wall, "bytes": total, "mb_per_s": total / wall / 1e6,
        "p50": statistics.median(seconds) if seconds else None,
        "p99": seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))] if seconds else None,
        "server_cpu": server_cpu, "client_cpu": client_cpu,
        "failures": failures[:3],
    }


def materialize_all(spec, nodes: list[str], work: Path,  # type: ignore[no-untyped-def]
                    say) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """Each node's root (see the module's doc): one image copy, hard-linked, then overrides."""
    base = work / "local-image"
    if not base.exists():
        base.mkdir(parents=True)
        oracle._rsync([*oracle.IMAGE_RSYNC, f"{node_layers(spec, nodes[0])[0]}/", f"{base}/"])
    roots: dict[str, Path] = {}
    for node in nodes:
        root = roots[node] = work / "local" / node
        if root.exists():
            continue
        say(f"nfs_storm: materializing {node}")
        root.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(base), str(root)], check=True)
        for name in oracle.override_sequence(spec, node, ORDER):
            layer = spec.prefix / oracle.OVERRIDES_DIR / str(name)
            if layer.is_dir():
                oracle._rsync([*oracle.OVERRIDE_RSYNC, f"{layer}/", f"{root}/"])
    return roots


@contextlib.contextmanager
def exportable_overlay(layers: list[Path], base: Path) -> Iterator[Path]:
    """A kernel overlayfs of `layers` that ganesha can serve: mounted read-only over an empty
    upper directory, with nfs_export=on, index=on and redirect_dir=nofollow. Each is needed
    here (kernel 6.18, found while the storm's clients hung or failed): without nfs_export
    there are no file handles; without redirect_dir=nofollow the kernel turns nfs_export off
    again (dmesg only); and a lower-only overlay decodes every handle but its root's (ESTALE
    from open_by_handle_at, so ganesha's first LOOKUP fails), which an upper layer fixes. The
    mount is read-only: nothing is ever copied up."""
    mountpoint, upper, scratch = base / "root", base / "upper", base / "work"
    for directory in (mountpoint, upper, scratch):
        directory.mkdir(parents=True, exist_ok=True)
    lower = ":".join(str(p) for p in reversed(layers))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"ro,lowerdir={lower},upperdir={upper},workdir={scratch},index=on,"
                    "nfs_export=on,redirect_dir=nofollow", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def measure(image: str, clients: list[int], runs: int, servers: list[str], say,  # type: ignore[no-untyped-def]
            trace: Path = TRACE, workers: list[int] | None = None) -> list[dict[str, object]]:
    """Rows of every (run, K, server); with `workers`, onesuite is also measured with each
    `--workers N` at the largest K of `clients` below 64 (the daemon's reader processes)."""
    most = max(clients)
    prefix, spec = cached_site(ScaleParams(max(most, 10), image=image))
    nodes = hosts(max(most, 10))[:most]
    rows: list[dict[str, object]] = []
    with workdir("nfs-storm") as work:
        ns = Netns("storm")
        try:
            for node in nodes:
                ns.local_source(node_address(node))
            roots = materialize_all(spec, nodes, work, say)
            plan: list[tuple[int, str, int | None]] = [
                (k, server, None) for k in clients for server in servers]
            k_workers = max([k for k in clients if k < 64] or [min(clients)])
            plan += [(k_workers, "onesuite", n) for n in workers or []]
            for number in range(runs):
                for k, server, n in plan:
                    label = f"{server} --workers {n}" if n else server
                    say(f"nfs_storm: run {number + 1}/{runs}, K={k}, {label}")
                    try:
                        row = run_one(server, ns, prefix, spec, work, nodes[:k], roots, trace,
                                      n)
                    except (OSError, RuntimeError, AssertionError,
                            subprocess.SubprocessError) as exc:  # a server that fails to serve
                        row = {"clients": k, "errors": k, "failures": [repr(exc)[-2000:]]}
                    rows.append({"run": number, "server": label, **row,
                                 "load": os.getloadavg()[0]})
                    say(f"nfs_storm:   {row.get('files_per_s', 0):.0f} files/s, "
                        f"{row.get('errors')} errors, p99 {row.get('p99')}")
        finally:
            ns.delete()
    return rows


def run_one(server: str, ns: Netns, prefix: Path, spec, work: Path,  # type: ignore[no-untyped-def]
            nodes: list[str], roots: dict[str, Path], trace: Path,
            workers: int | None = None) -> dict[str, object]:
    if server == "onesuite":
        with onesuite_serve(ns, prefix, work, workers) as pids:
            return storm(ns, nodes, pids, trace)
    if server == "materialized":
        with ganesha_over(ns, {n: roots[n] for n in nodes}, work / "g-state") as pids:
            return storm(ns, nodes, pids, trace)
    with contextlib.ExitStack() as stack:
        mounted = {}
        for node in nodes:
            mounted[node] = stack.enter_context(exportable_overlay(
                node_layers(spec, node), work / "ovl" / node))
        with ganesha_over(ns, mounted, work / "o-state", device_fsids) as pids:
            return storm(ns, nodes, pids, trace)


FAMILY = "nfs_storm"
METRICS = (("files_per_s", "files_per_s"), ("mb_per_s", "MB_per_s"), ("p50", "p50_s"),
           ("p99", "p99_s"), ("server_cpu", "server_cpu_s"), ("client_cpu", "client_cpu_s"),
           ("errors", "errors"),
           ("wall", "wall_s"), ("load", "load_1min"))


def run(config, rec) -> None:  # type: ignore[no-untyped-def]
    """The bench/run.py family: every K of config.storm_clients, the three servers, and
    onesuite with each of config.storm_workers when the daemon takes --workers."""
    workers = list(config.storm_workers) if serve_takes_workers() else []
    if config.storm_workers and not workers:
        rec.say("nfs_storm: onesuite serve has no --workers yet: not measured")
    rows = measure("systemd", list(config.storm_clients), config.runs, list(SERVERS), rec.say,
                   workers=workers)
    for row in rows:
        for key, metric in METRICS:
            if row.get(key) is not None:
                rec.add(FAMILY, f"{row['server']} K={row['clients']}", metric,
                        float(row[key]), int(row["run"]))  # type: ignore[arg-type]
        for failure in row.get("failures") or []:  # type: ignore[attr-defined]
            rec.say(f"nfs_storm: {row['server']} K={row['clients']}: {failure[:300]}")


def serve_takes_workers() -> bool:
    done = subprocess.run([sys.executable, "-m", "onesuite_fs.cli", "serve", "--help"],
                          capture_output=True, text=True, check=False)
    return "--workers" in done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="4", help="K values, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--image", default="systemd", choices=("systemd", "synthetic"),
                        help="the site's golden image: the one the trace was recorded on "
                             "(default), or synthetic (a smoke test: most calls then differ)")
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--workers", default="",
                        help="also measure onesuite serve --workers N for each N given "
                             "(comma-separated), at the largest K below 64")
    args = parser.parse_args()
    servers = args.servers.split(",")
    unknown = set(servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers {', '.join(sorted(unknown))}")
    rows = measure(args.image, [int(k) for k in args.clients.split(",")], args.runs, servers,
                   lambda text: print(text, file=sys.stderr, flush=True), args.trace,
                   [int(n) for n in args.workers.split(",") if n])
    json.dump(rows, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
