"""A failover an admin would believe, with the real Linux NFS client (issue 19): a QEMU (TCG)
guest boots with Debian's kernel, hard-mounts its root over NFSv3 from the floating address,
switch_roots into it and reads its whole root in a loop (tests/guest/ha-reader: caches
dropped every pass, every name looked up and every byte read again) while (a) the active
server's FUSE daemon and ganesha are killed with SIGKILL, (b) the active server's link goes
down, (c) both servers are restarted one after the other. Required: no failed read and no
wrong byte in any pass; the longest time between two completed passes (the stall) is printed
for docs/nfs.md.

Network: two servers and a switch (a bridge) in network namespaces (tests/hatools.py); the
guest's virtio-net is a tap device plugged into that bridge, so the guest is a node on the
servers' segment with an address of its own (no slirp NAT: it sends from reserved ports, as
a node does). One boot serves all three cases: each ends with server a serving and holding
the address again, as before it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest
from boottools import tiny_site
from conftest import needs_root_fuse
from hatools import FLOATING, Lan, ha_pair, holds, network_state, restart, wait_for
from nfstools import Netns, require
from test_diskless_boot import build_initramfs, cached

pytestmark = [needs_root_fuse(), pytest.mark.mount, pytest.mark.nfs, pytest.mark.qemu,
              pytest.mark.slow]
GUEST = Path(__file__).resolve().parent / "guest"
NODE, NODE_ADDRESS = "n1", "10.252.0.10"
READER = "/usr/local/sbin/ha-reader"
APPLETS = ("cat", "cut", "find", "md5sum", "sort", "xargs")
# The node's NFS mount options beyond nfsvers=3,nolock,tcp,ro (hard is the default).
# timeo=50: the client's RPC timeout and its TCP keepalive idle time are 5 s instead of 60 s,
# so a client that waits for a reply from a server whose link went down in mid-reply learns
# within 5 s that the address moved (docs/nfs.md, "Several servers").
NFS_OPTIONS = "timeo=50"
BOOT_TIMEOUT = 300  # to the first pass; TCG boots take 30-90 s here


@pytest.fixture(autouse=True)
def tools():
    require("qemu-system-x86_64", "cpio", "ganesha.nfsd", "keepalived", "rpcbind", "nsenter",
            "unshare", "ip", "ss", "rsync", "fusermount3")


def reader_site(root: Path, kit: Path) -> tuple[Path, bytes]:
    """The tiny busybox site with the reader in its image and a 1 MiB file in n1's host
    override (two layers under every pass)."""
    tiny_site(root, kit, kernel=False)
    image = root / "var/lib/systemimager/images/tiny"
    for applet in APPLETS:
        os.symlink("busybox", image / "bin" / applet)
    (image / "usr/local/sbin").mkdir(parents=True)
    shutil.copy2(GUEST / "ha-reader", image / READER.lstrip("/"))
    os.chmod(image / READER.lstrip("/"), 0o755)
    big = os.urandom(1 << 20)
    var = root / f"var/lib/systemimager/overrides/{NODE}/var"
    var.mkdir(parents=True)
    (var / "big.bin").write_bytes(big)
    return root, big


def expected(view: Path, big: bytes) -> tuple[str, str, str]:
    """What a pass must print, from the served view on the server: the big file's md5, the
    md5 of every regular file's bytes in sorted path order, the md5 of the sorted names."""
    names, files = ["/"], []
    for dirpath, dirnames, filenames in os.walk(view):
        rel = "/" + os.path.relpath(dirpath, view).removeprefix(".").lstrip("/")
        for name in dirnames + filenames:
            path = (rel.rstrip("/") + "/" + name)
            names.append(path)
            if name in filenames and not os.path.islink(os.path.join(dirpath, name)):
                files.append(path)
    everything = hashlib.md5()
    for path in sorted(files):
        everything.update((view / path.lstrip("/")).read_bytes())
    listing = "\n".join(sorted(names)) + "\n"
    return (hashlib.md5(big).hexdigest(), everything.hexdigest(),
            hashlib.md5(listing.encode()).hexdigest())


class Guest:
    """QEMU in the switch's namespace on a tap plugged into the bridge; its passes are read
    from the serial console. Killed by PID."""

    def __init__(self, lan: Lan, kit: Path, work: Path) -> None:
        self.switch: Netns = lan.switch
        self.tap = "ha4tap0"
        self.switch.ip("tuntap", "add", "dev", self.tap, "mode", "tap")
        self.switch.ip("link", "set", self.tap, "master", "br0")
        self.switch.ip("link", "set", self.tap, "up")
        initrd = build_initramfs(kit, work)
        kernel = next((kit / "boot").glob("vmlinuz-*"))
        append = (f"console=ttyS0 panic=-1 quiet onesuite.node={NODE} onesuite.nfs=3 "
                  f"onesuite.exec={READER} onesuite.ip={NODE_ADDRESS}/24 "
                  f"onesuite.server={FLOATING} onesuite.nfsopts={NFS_OPTIONS}")
        self.console = work / "console.log"
        self.started = time.monotonic()
        self._passes: list[tuple[int, float, int, str, str, str]] = []
        self._stopped = threading.Event()
        with open(self.console, "wb") as out:
            self.proc = subprocess.Popen(
                [*self.switch.prefix, "qemu-system-x86_64", "-accel", "tcg", "-m", "512",
                 "-nographic", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
                 "-append", append,
                 "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
                 "-device", "virtio-net-pci,netdev=n0"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self._follower = threading.Thread(target=self._follow, daemon=True)
        self._follower.start()

    def lines(self) -> list[str]:
        return self.console.read_bytes().decode(errors="replace").replace("\r", "").splitlines()

    def _follow(self) -> None:
        """Stamps each pass with the host's clock when its line appears (the guest's own
        clock loses time under TCG: it cannot time a stall)."""
        seen = 0
        while not self._stopped.wait(0.1):
            text = self.console.read_bytes().decode(errors="replace").replace("\r", "")
            now = time.monotonic()
            complete = text.split("\n")[:-1]  # the last piece is a line still being written
            for line in complete[seen:]:
                words = line[line.find("HA-READ "):].split() if "HA-READ " in line else []
                if len(words) == 7 and words[1].isdigit():
                    self._passes.append((int(words[1]), now, int(words[3]), *words[4:7]))
            seen = len(complete)

    def passes(self) -> list[tuple[int, float, int, str, str, str]]:
        """(pass, host time it was seen, failed commands, big md5, all md5, names md5)."""
        return list(self._passes)

    def wait_passes(self, count: int, timeout: float, context: dict[str, Netns]) -> None:
        target = len(self.passes()) + count
        deadline = time.monotonic() + timeout
        while len(self.passes()) < target:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(
                    f"the guest completed no {count} passes in {timeout} s "
                    f"(QEMU {self.proc.poll()}):\n" + "\n".join(self.lines()[-30:])
                    + "\n" + network_state(context))
            time.sleep(0.2)

    def stop(self) -> None:
        self._stopped.set()
        self._follower.join(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.switch.run("ip", "link", "del", self.tap, timeout=10)


def test_a_kernel_nfs_root_reads_on_through_kill_link_loss_and_rolling_restart(tmp_path):
    kit = cached("boot_kit.sh")
    site, big = reader_site(tmp_path / "site", kit)
    stalls: dict[str, float] = {}
    with ha_pair(tmp_path, site, NODE, NODE_ADDRESS, client=False) as (servers, _, lan):
        a, b = servers["a"], servers["b"]
        want = expected(a["serve"].view() / "nodes" / NODE, big)
        context = {"switch": lan.switch, "a": a["ns"], "b": b["ns"]}
        guest = Guest(lan, kit, tmp_path)
        try:
            guest.wait_passes(3, BOOT_TIMEOUT, context)
            boot = time.monotonic() - guest.started
            passes = guest.passes()
            assert passes[-1][2:] == (0, *want), (passes[-1], want)
            normal = max(later[1] - earlier[1] for earlier, later in pairwise(passes))

            def window(mark: int) -> float:
                """Every pass after `mark` read everything right; the longest gap."""
                done = guest.passes()
                bad = [p for p in done[mark:] if p[2:] != (0, *want)]
                assert not bad, (bad[:5], want)
                return max(later[1] - earlier[1]
                           for earlier, later in pairwise(done[mark - 1:]))

            # (a) kill -9 of the active server's FUSE daemon and ganesha.
            mark = len(guest.passes())
            os.kill(int(a["serve"].status["ganesha_pid"]), signal.SIGKILL)
            os.kill(int(a["serve"].status["fuse_pid"]), signal.SIGKILL)
            wait_for(lambda: holds(b["ns"], FLOATING), 30, "b never took over", servers)
            guest.wait_passes(3, 150, context)
            stalls["kill -9 of daemon and ganesha"] = window(mark)
            assert a["serve"].wait(timeout=60) == 1
            mark = len(guest.passes())
            restart(a["serve"])
            wait_for(lambda: holds(a["ns"], FLOATING), 60, "a never took back", servers)
            guest.wait_passes(3, 150, context)
            stalls["address back to the restarted server"] = window(mark)

            # (b) the active server's link goes down, then comes back.
            mark = len(guest.passes())
            lan.unplug(a["ns"])
            moved = wait_for(lambda: holds(b["ns"], FLOATING), 30, "b never took over",
                             servers)
            guest.wait_passes(3, 150, context)
            stalls["link loss of the active server"] = window(mark)
            mark = len(guest.passes())
            lan.replug(a["ns"])
            wait_for(lambda: holds(a["ns"], FLOATING) and not holds(b["ns"], FLOATING), 60,
                     "a never took back", servers)
            guest.wait_passes(3, 150, context)
            stalls["link back"] = window(mark)

            # (c) a rolling restart: a, then b, each stopped and started under load.
            mark = len(guest.passes())
            for name in ("a", "b"):
                assert servers[name]["serve"].stop() == 0
                guest.wait_passes(2, 150, context)
                servers[name]["serve"].start()
                wait_for(lambda: holds(a["ns"], FLOATING), 60, "a never took back", servers)
                guest.wait_passes(2, 150, context)
            stalls["rolling restart"] = window(mark)
            passes = guest.passes()
        finally:
            guest.stop()
    print(f"\nKERNEL CLIENT: boot to 3 passes {boot:.0f} s, {len(passes)} passes, "
          f"normal pass <= {normal:.1f} s, address on b {moved:.1f} s after the link went "
          "down; STALLS "
          + ", ".join(f"{k}: {v:.1f} s" for k, v in stalls.items()))
