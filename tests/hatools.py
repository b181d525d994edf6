"""Several NFS servers and a client on one Ethernet segment, for failover tests: a bridge in
a namespace of its own (the switch) and a cable from every member to it. Floating addresses
and VRRP need one segment; the point-to-point cables of nfstools.veth give none."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from conftest import run_onesuite
from nfstools import REPO, Netns, Serve, namespaces

_counter = itertools.count()
LAN_PREFIX = 24
SERVERS = {"a": "10.252.0.1", "b": "10.252.0.2"}
FLOATING = "10.252.0.100"


class Lan:
    """The switch: `plug` cables a namespace to it, `unplug` pulls the cable (link down)."""

    def __init__(self, switch: Netns) -> None:
        self.switch = switch
        switch.ip("link", "add", "br0", "type", "bridge")
        switch.ip("link", "set", "br0", "up")
        self.ports: dict[str, tuple[str, str]] = {}  # namespace name -> (switch end, own end)

    def plug(self, member: Netns, address: str) -> str:
        """A cable from `member` (interface eth0 there, with `address`) to the switch."""
        port = f"p{os.getpid() % 10000}x{next(_counter)}"
        peer = f"q{os.getpid() % 10000}x{next(_counter)}"
        subprocess.run(["ip", "link", "add", port, "type", "veth", "peer", "name", peer],
                       check=True)
        subprocess.run(["ip", "link", "set", port, "netns", self.switch.name], check=True)
        subprocess.run(["ip", "link", "set", peer, "netns", member.name], check=True)
        self.switch.ip("link", "set", port, "master", "br0")
        self.switch.ip("link", "set", port, "up")
        member.ip("link", "set", peer, "name", "eth0")
        member.ip("addr", "add", f"{address}/{LAN_PREFIX}", "dev", "eth0")
        member.ip("link", "set", "eth0", "up")
        self.ports[member.name] = (port, "eth0")
        return "eth0"

    def unplug(self, member: Netns) -> None:
        """The member's link goes down at the switch: its addresses stop answering."""
        self.switch.ip("link", "set", self.ports[member.name][0], "down")

    def replug(self, member: Netns) -> None:
        self.switch.ip("link", "set", self.ports[member.name][0], "up")


def rsync_copy(source: Path, target: Path) -> Path:
    """A server's own copy of a site, as an admin makes one (rsync -a: times kept to the
    nanosecond, new inodes, new birth times)."""
    subprocess.run(["rsync", "-aH", "--delete", f"{source}/", f"{target}/"], check=True)
    return target


class Keepalived:
    """keepalived (VRRP only, in the foreground) in a server's network namespace, with the
    configuration `onesuite keepalived` wrote; stopped by its PID."""

    def __init__(self, ns: Netns, config: Path, work: Path) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.log = work / "keepalived.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [*ns.prefix, "keepalived", "--dont-fork", "--log-console", "--no-syslog",
                 "--vrrp", "--log-detail", "-f", str(config), "-p", str(work / "k.pid"),
                 "-r", str(work / "vrrp.pid"), "-c", str(work / "checkers.pid")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # The VRRP child, should it outlive its parent.
        pid_file = self.work / "vrrp.pid"
        if pid_file.exists():
            try:
                pid = int(pid_file.read_text())
                os.kill(pid, 9)
            except (ValueError, ProcessLookupError):
                pass


def holds(ns: Netns, address: str) -> bool:
    """Whether `address` is on one of the namespace's interfaces now."""
    done = ns.run("ip", "-o", "addr", "show", timeout=10)
    return f" {address}/" in done.stdout


def network_state(members: dict[str, Netns]) -> str:
    """What each namespace's kernel holds now (addresses, neighbours, TCP connections with
    their timers), for a failure message: a hung read is explained by these."""
    out = []
    for name, ns in members.items():
        for cmd in (("ip", "-br", "addr"), ("ip", "neigh"), ("ss", "-tnio")):
            done = ns.run(*cmd, timeout=10)
            out.append(f"--- {name}: {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    return "\n".join(out)


@contextmanager
def ha_pair(tmp_path: Path, site: Path, node: str, node_address: str, *,
            client: bool = True) -> Iterator[tuple[dict[str, dict], Netns | None, Lan]]:
    """Servers a and b on one segment, each `onesuite serve` (NFSv3 and v4, rpcbind) over its
    own rsync'd copy of `site` with one handle key, and keepalived with the configuration
    `onesuite keepalived` wrote, floating FLOATING for `node` (home: a). With `client`, a
    namespace at `node_address` on the segment; without, the caller plugs its own client
    (a QEMU guest on a tap of the switch). Yields once a holds the address."""
    work = Path(f"/tmp/onesuite-ha-{os.getpid()}")  # keepalived's script line: no odd chars
    work.mkdir(mode=0o755)
    config = work / "onesuite.toml"
    config.write_text(f'[nfs.addresses]\n{node} = "{node_address}"\n'
                      '[ha]\ninterface = "eth0"\nservers = ["a", "b"]\nrouter_id = 71\n'
                      f'[[ha.floating]]\naddress = "{FLOATING}/24"\nnodes = "{node}"\n')
    wrapper = work / "onesuite"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m onesuite_fs.cli "
                       '"$@"\n')
    wrapper.chmod(0o755)
    (work / "key").write_text(os.urandom(32).hex() + "\n")
    (work / "key").chmod(0o600)
    tags = ("lan", "a", "b", "c") if client else ("lan", "a", "b")
    with namespaces(*tags) as made, ExitStack() as stack:
        switch, ns_a, ns_b = made[:3]
        stack.callback(subprocess.run, ["rm", "-rf", str(work)], check=False)
        lan = Lan(switch)
        node_ns = made[3] if client else None
        if node_ns is not None:
            lan.plug(node_ns, node_address)
        servers: dict[str, dict] = {}
        for name, ns in (("a", ns_a), ("b", ns_b)):
            lan.plug(ns, SERVERS[name])
            copy = rsync_copy(site, tmp_path / f"site-{name}")
            mnt = tmp_path / f"mnt-{name}"
            mnt.mkdir()
            state = work / f"state-{name}"
            serve = Serve(ns, copy, mnt, state, "--config", str(config), "--protocols", "3,4",
                          "--handle-key", str(work / "key"), private_run=True, rpcbind=True)
            stack.callback(stop_serve, serve)
            serve.start()
            conf = work / f"keepalived-{name}.conf"
            done = run_onesuite("keepalived", "--root", copy, "--config", config, "--server",
                                name, "--nfs-state-dir", state, "--check-program", wrapper)
            conf.write_text(done.stdout)
            keepalived = Keepalived(ns, conf, work / f"k-{name}")
            stack.callback(keepalived.stop)
            servers[name] = {"ns": ns, "serve": serve, "keepalived": keepalived}
        wait_for(lambda: holds(ns_a, FLOATING), 60, "server a never took the address",
                 servers)
        yield servers, node_ns, lan


def stop_serve(serve: Serve) -> None:
    if serve.proc is not None and serve.proc.poll() is None:
        serve.stop()
    else:
        serve.cleanup()


def restart(serve: Serve) -> None:
    serve.cleanup()
    serve.start()


def wait_for(condition: Callable[[], bool], timeout: float, message: str,
             servers: dict[str, dict]) -> float:
    """Poll `condition` every 0.2 s; the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = {n: s["keepalived"].log.read_text()[-3000:] for n, s in servers.items()}
            raise AssertionError(f"{message}\n{logs}")
        time.sleep(0.2)
    return time.monotonic() - started
