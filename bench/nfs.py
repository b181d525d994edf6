"""Through NFS: a full recursive listing (nfs-ls -R, first on a fresh server with caches
dropped, then again) and the boot set read (PyPI libnfs), through nfs-ganesha (NFSv4) serving
onesuite-fs (`onesuite serve`, the real CLI) against ganesha serving the same root
materialized on local disk. Server and client share a network namespace created here; the
client's connections come from the node's own address, so the per-node export rules apply.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from nfstools import Netns, Serve  # noqa: I001  (tests/ is on sys.path via common)

from onesuite_fs.nfs.exports import Export, ExportPlan
from onesuite_fs.nfs.ganesha import READY_LINE, GaneshaOptions, render_config

from .common import (
    Config,
    Recorder,
    boot_set,
    drop_caches,
    materialize,
    measure,
    timed,
    wait_gone,
    workdir,
)

FAMILY = "nfs"
NODES = 10
HOST, ADDRESS = "node00002", "10.77.0.2"  # scalesite.address(1)
CLIENT = Path(__file__).resolve().parent / "nfs_client.py"


@contextlib.contextmanager
def ganesha_running(plan: ExportPlan, options: GaneshaOptions, state: Path,
                    wrap: Callable[[list[str]], list[str]],
                    env: dict[str, str] | None = None,
                    edit: Callable[[str], str] = lambda text: text) -> Iterator[int]:
    """ganesha serving `plan` with onesuite's own settings (`edit` may change them), started
    through `wrap` (the namespace, a private /run), ready when its log says so; stopped by its
    PID. Yields it."""
    state.mkdir(parents=True, exist_ok=True)
    conf, log, pidfile = state / "ganesha.conf", state / "ganesha.log", state / "ganesha.pid"
    conf.write_text(edit(render_config(plan, options, state / "recovery")))
    (state / "recovery").mkdir(exist_ok=True)
    log.unlink(missing_ok=True)
    command = ["ganesha.nfsd", "-F", "-f", str(conf), "-L", str(log), "-p", str(pidfile),
               "-N", "NIV_EVENT"]
    proc = subprocess.Popen(wrap(command), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and READY_LINE in log.read_text(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ganesha did not start; see {log}")
            time.sleep(0.05)
        yield proc.pid
    finally:
        if proc.poll() is None:  # through unshare and sh exec: this is ganesha's PID
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not wait_gone(proc.pid, 5):
            os.kill(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def ganesha_over(ns: Netns, root: Path, state: Path) -> Iterator[None]:
    """ganesha exporting a plain directory as /nodes/HOST, with onesuite's own settings."""
    plan = ExportPlan(root.parent, (Export(HOST, ADDRESS, "bench", root, f"/nodes/{HOST}",
                                           1, ""),), ())
    with ganesha_running(plan, GaneshaOptions(protocols="4"), state,
                         lambda command: [*ns.prefix, *command]):
        yield


@contextlib.contextmanager
def onesuite_serve(ns: Netns, prefix: Path, work: Path) -> Iterator[None]:
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    server = Serve(ns, prefix, mnt, work / "serve-state", "--protocols", "4")
    try:
        server.start()
        yield
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
        else:
            server.cleanup()


def listing(ns: Netns, url: str) -> int:
    done = ns.run("nfs-ls", "-R", url, timeout=600, check=True)
    return len(done.stdout.splitlines())


def read_boot_set(ns: Netns, url: str, list_file: Path) -> dict[str, float]:
    done = ns.run(sys.executable, CLIENT, url, list_file, timeout=600, check=True)
    return json.loads(done.stdout)


def run(config: Config, rec: Recorder) -> None:
    prefix, spec = config.site(NODES)
    url = f"nfs://{ADDRESS}/nodes/{HOST}?version=4"
    with workdir("nfs") as work:
        local = work / "local" / HOST
        rec.say(f"nfs: materializing {HOST} with rsync")
        materialize(spec, HOST, local)
        list_file = work / "bootset.txt"
        list_file.write_text("\n".join(boot_set(local)) + "\n")
        ns = Netns("bench")
        try:
            ns.local_source(ADDRESS)
            for number in range(config.runs):
                rec.say(f"nfs: run {number + 1}/{config.runs}")
                servers = {"materialized": lambda: ganesha_over(ns, local, work / "g-state"),
                           "onesuite": lambda: onesuite_serve(ns, prefix, work)}
                for case, server in servers.items():
                    with server():
                        drop_caches()
                        first, entries = measure(lambda: listing(ns, url))
                        second = timed(lambda: listing(ns, url))
                        drop_caches()
                        boot = read_boot_set(ns, url, list_file)
                    rec.add(FAMILY, f"{case} listing 1st", "seconds", first, number,
                            entries=entries)
                    rec.add(FAMILY, f"{case} listing 2nd", "seconds", second, number)
                    rec.add(FAMILY, f"{case} boot set", "seconds", boot["seconds"], number,
                            bytes=boot["bytes"])
                    rec.add(FAMILY, f"{case} boot set", "errors", boot["errors"], number)
        finally:
            ns.delete()


