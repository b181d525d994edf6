"""NFS through onesuite-fs against ganesha over the same root materialized on disk, for each NFS
version and ganesha attribute expiration (Attr_Expiration_Time): a full listing (nfs-ls -R)
on a fresh server with caches dropped, the same again at once, again once the attributes
have expired, and the boot set read (PyPI libnfs), caches dropped. For onesuite-fs every
phase also counts the FUSE requests the kernel sent, by opcode (fuse_trace.py).

Both servers get the same expiration, so each ratio is what the FUSE layer costs at that
setting; each run measures both, so every ratio is against an anchor of the same moment.

  python -m bench.nfs_attrs --runs 3 --versions 3,4 --expirations 0,2,10 > out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from nfstools import _PRIVATE_RUN, Netns, Serve  # noqa: I001  (tests/ is on sys.path via common)

from onesuite_fs.nfs.exports import DEFAULT_ATTR_EXPIRATION, Export, ExportPlan
from onesuite_fs.nfs.ganesha import GaneshaOptions

from . import fuse_trace
from .common import Config, Recorder, boot_set, drop_caches, materialize, wait_gone, workdir
from .nfs import ADDRESS, CLIENT, HOST, NODES, ganesha_running

FAMILY = "nfs_attrs"
PHASES = ("listing 1st", "listing 2nd", "listing expired", "boot set")


def _private(ns: Netns, v3: bool, command: list[str]) -> list[str]:
    """NFSv3 needs rpcbind: a private /run with its own, as the tests do (nfstools)."""
    if not v3:
        return [*ns.prefix, *command]
    return [*ns.prefix, "unshare", "-m", "--propagation", "private", "sh", "-c", _PRIVATE_RUN,
            "private-run", *command]


@contextlib.contextmanager
def ganesha_over(ns: Netns, root: Path, state: Path, version: str,
                 expiration: int) -> Iterator[None]:
    """ganesha exporting a plain directory as /nodes/HOST, with onesuite's own settings."""
    plan = ExportPlan(root.parent, (Export(HOST, ADDRESS, "bench", root, f"/nodes/{HOST}",
                                           1, ""),), ())
    protocols = "3,4" if version == "3" else "4"
    options = GaneshaOptions(protocols=protocols, attr_expiration=expiration)
    env = {**os.environ, "ONESUITE_TEST_STATE": str(state),
           "ONESUITE_TEST_RPCBIND": "1" if version == "3" else "0"}
    try:
        with ganesha_running(plan, options, state,
                             lambda command: _private(ns, version == "3", command), env):
            yield
    finally:
        rpcbind = state / "rpcbind.pid"
        if rpcbind.exists():
            pid = int(rpcbind.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            wait_gone(pid, 10)


@contextlib.contextmanager
def onesuite_serve(ns: Netns, prefix: Path, work: Path, version: str,
                   expiration: int) -> Iterator[Path]:
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    v3 = version == "3"
    server = Serve(ns, prefix, mnt, work / "serve-state", "--protocols",
                   "3,4" if v3 else "4", "--attr-expiration", str(expiration),
                   private_run=v3, rpcbind=v3)
    try:
        server.start()
        yield server.view()
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
        else:
            server.cleanup()


def one_server(ns: Netns, url: str, list_file: Path, expiration: int,
               counter: fuse_trace.FuseRequests | None) -> dict[str, dict[str, object]]:
    """Every phase on a fresh server: seconds, and FUSE requests when `counter` is given."""
    out: dict[str, dict[str, object]] = {}

    def phase(name: str, call) -> None:  # type: ignore[no-untyped-def]
        counts: Counter[str] = Counter()
        with counter.phase(counts) if counter else contextlib.nullcontext(counts):
            began = time.perf_counter()
            seconds = call()
            seconds = time.perf_counter() - began if seconds is None else seconds
        out[name] = {"seconds": seconds, "fuse": dict(counts)}

    def listing() -> None:
        ns.run("nfs-ls", "-R", url, timeout=600, check=True)

    def boot() -> float:
        done = ns.run(sys.executable, CLIENT, url, list_file, timeout=600, check=True)
        result = json.loads(done.stdout)
        if result["errors"]:
            raise RuntimeError(f"boot set: {result['errors']} errors: {done.stderr[-2000:]}")
        return float(result["seconds"])

    drop_caches()
    phase("listing 1st", listing)
    phase("listing 2nd", listing)
    if expiration > 0:
        time.sleep(expiration + 1.5)  # ganesha's cached attributes have all expired
        phase("listing expired", listing)
    drop_caches()
    phase("boot set", boot)
    return out


def measure(prefix: Path, spec, work: Path, versions: list[str], expirations: list[int],  # type: ignore[no-untyped-def]
            runs: int, say) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    rows: list[dict[str, object]] = []
    local = work / "local" / HOST
    say(f"{FAMILY}: materializing {HOST} with rsync")
    materialize(spec, HOST, local)
    list_file = work / "bootset.txt"
    list_file.write_text("\n".join(boot_set(local)) + "\n")
    ns = Netns("bench")
    try:
        ns.local_source(ADDRESS)
        for number in range(runs):
            for version in versions:
                url = f"nfs://{ADDRESS}/nodes/{HOST}?version={version}"
                for expiration in expirations:
                    say(f"{FAMILY}: run {number + 1}/{runs}, NFSv{version}, "
                        f"Attr_Expiration_Time {expiration}")
                    with ganesha_over(ns, local, work / "g-state", version, expiration):
                        plain = one_server(ns, url, list_file, expiration, None)
                    with onesuite_serve(ns, prefix, work, version, expiration) as view, \
                            fuse_trace.FuseRequests(view) as counter:
                        ours = one_server(ns, url, list_file, expiration, counter)
                    for phase in ours:
                        rows.append({"run": number, "version": version,
                                     "expiration": expiration, "phase": phase,
                                     "materialized": plain[phase]["seconds"],
                                     "onesuite": ours[phase]["seconds"],
                                     "fuse": ours[phase]["fuse"],
                                     "load": os.getloadavg()[0]})
    finally:
        ns.delete()
    return rows


def table(rows: list[dict[str, object]]) -> str:
    """Markdown: per version, expiration and phase, medians over runs."""
    groups: dict[tuple[str, int, str], list[dict[str, object]]] = {}
    for row in rows:
        key = (str(row["version"]), int(row["expiration"]), str(row["phase"]))  # type: ignore[call-overload]
        groups.setdefault(key, []).append(row)
    lines = ["| NFS | expiry s | phase | onesuite s | materialized s | ratio | FUSE requests | "
             "of which OPEN+RELEASE, OPENDIR+RELEASEDIR | GETATTR | LOOKUP | READDIRPLUS | READ |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (version, expiration, phase), group in sorted(
            groups.items(), key=lambda kv: (kv[0][0], kv[0][1], PHASES.index(kv[0][2]))):
        ratio = statistics.median(float(r["onesuite"]) / float(r["materialized"])  # type: ignore[arg-type]
                                  for r in group)
        fuse = [Counter(r["fuse"]) for r in group]  # type: ignore[arg-type]

        def med(*ops: str, fuse: list[Counter[str]] = fuse) -> int:
            return int(statistics.median(sum(c[o] for o in ops) for c in fuse))

        total = int(statistics.median(sum(c.values()) - c["lost"] for c in fuse))
        lines.append(
            f"| v{version} | {expiration} | {phase} | "
            f"{statistics.median(float(r['onesuite']) for r in group):.3f} | "  # type: ignore[arg-type]
            f"{statistics.median(float(r['materialized']) for r in group):.3f} | "  # type: ignore[arg-type]
            f"{ratio:.2f}x | {total:,} | "
            f"{med('OPEN', 'RELEASE'):,}, {med('OPENDIR', 'RELEASEDIR'):,} | "
            f"{med('GETATTR'):,} | {med('LOOKUP'):,} | {med('READDIRPLUS'):,} | "
            f"{med('READ'):,} |")
    return "\n".join(lines)


def run(config: Config, rec: Recorder) -> None:
    prefix, spec = config.site(NODES)
    with workdir("nfs") as work:
        rows = measure(prefix, spec, work, ["3", "4"], [0, DEFAULT_ATTR_EXPIRATION],
                       config.runs, rec.say)
    for row in rows:
        case = f"v{row['version']} expiry {row['expiration']} {row['phase']}"
        for server in ("onesuite", "materialized"):
            rec.add(FAMILY, f"{server} {case}", "seconds", float(row[server]),  # type: ignore[arg-type]
                    int(row["run"]))  # type: ignore[call-overload]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--versions", default="3,4")
    parser.add_argument("--expirations", default="0,2,10")
    parser.add_argument("--image", default="debootstrap", choices=("debootstrap", "synthetic"))
    args = parser.parse_args()
    why = fuse_trace.available()
    if why:
        print(f"nfs_attrs: cannot count FUSE requests: {why}", file=sys.stderr)
        return 1
    config = Config(quick=False, runs=args.runs, image=args.image, scale_nodes=(),
                    copy_nodes=(), storm_walkers=0, walk_nodes_for_rss=0, families=(FAMILY,))
    prefix, spec = config.site(NODES)
    with workdir("nfs") as work:
        rows = measure(prefix, spec, work, args.versions.split(","),
                       [int(x) for x in args.expirations.split(",")], args.runs,
                       lambda text: print(text, file=sys.stderr, flush=True))
    json.dump(rows, sys.stdout)
    print()
    print(table(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
