"""Several NFS servers and a client on one Ethernet segment, for failover tests: a bridge in
a namespace of its own (the switch) and a cable from every member to it. Floating addresses
and VRRP need one segment; the point-to-point cables of nfstools.veth give none."""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

from nfstools import Netns

_counter = itertools.count()
LAN_PREFIX = 24


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
