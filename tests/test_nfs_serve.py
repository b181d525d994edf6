"""`onesuite serve` end to end: real FUSE mount, real nfs-ganesha, libnfs clients, network
namespaces. Every server runs inside a namespace the test made (see nfstools)."""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import needs_root_fuse
from nfstools import (
    Netns,
    Serve,
    drop_caches,
    namespaces,
    nfs_ls,
    require,
    require_libnfs,
    serving,
    veth,
    walk,
)

pytestmark = [needs_root_fuse(), pytest.mark.mount, pytest.mark.nfs]
HOLD = Path(__file__).resolve().parent / "nfs_hold.py"


@pytest.fixture(autouse=True)
def nfs_tools():
    require("ganesha.nfsd", "nfs-ls", "nsenter", "unshare", "ip", "fusermount3")
    require_libnfs()


def configure(tmp_path: Path, addresses: dict[str, str]) -> Path:
    config = tmp_path / "onesuite.toml"
    config.write_text("[nfs.addresses]\n" + "".join(f'{n} = "{a}"\n'
                                                    for n, a in addresses.items()))
    return config


def test_loopback_v4_every_root_equals_its_mounted_view(example_site, tmp_path):
    hosts = ["login01", "login02"] + [f"node{i:03d}" for i in range(1, 9)]
    addresses = {host: f"127.0.1.{i}" for i, host in enumerate(hosts, 1)}
    config = configure(tmp_path, addresses)
    with namespaces("lo") as (ns,):
        for address in addresses.values():
            ns.local_source(address)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        with serving(ns, example_site, mnt, tmp_path / "state", "--config", str(config),
                     "--protocols", "4") as server:
            assert server.status["exports"] == 10
            for attempt in ("warm", "after drop_caches"):
                for host, address in addresses.items():
                    url = f"nfs://{address}/nodes/{host}?version=4"
                    assert walk(ns, url) == walk(None, mnt / "nodes" / host), (host, attempt)
                drop_caches()  # the FUSE inodes go: ganesha's handles now need LOOKUP(ino, ".")
            # Per-client rules hold over loopback too: node001's address sees only its root.
            refused = nfs_ls(ns, "nfs://127.0.1.3/nodes/login01?version=4")
            assert refused.returncode != 0 and "NOENT" in refused.stderr + refused.stdout
            assert nfs_ls(ns, "nfs://127.0.1.3/groups/Compute?version=4").returncode != 0
        assert server.proc is not None and server.proc.returncode == 0, server.stderr()
        assert "stopped the NFS server, then unmounted" in server.stderr()
    assert not os.path.ismount(mnt)


def two_node_network(srv: Netns, a: Netns, b: Netns) -> dict[str, str]:
    veth(srv, "10.251.1.1", a, "10.251.1.2")
    veth(srv, "10.251.2.1", b, "10.251.2.2")
    return {"node001": "10.251.1.2", "node002": "10.251.2.2"}


@pytest.mark.parametrize("version", ["3", "4"])
def test_isolation_each_node_reads_only_its_own_root(example_site, tmp_path, version):
    query = "?version=4" if version == "4" else ""  # v3 finds MOUNT and NFS via rpcbind
    with namespaces("srv", "a", "b") as (srv, a, b):
        config = configure(tmp_path, two_node_network(srv, a, b))
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        with serving(srv, example_site, mnt, tmp_path / "state", "--config", str(config),
                     "--protocols", "3,4", private_run=True, rpcbind=True) as server:
            view = server.view()
            for ns, own, other, server_addr in ((a, "node001", "node002", "10.251.1.1"),
                                                 (b, "node002", "node001", "10.251.2.1")):
                url = f"nfs://{server_addr}/nodes/{own}{query}"
                assert walk(ns, url) == walk(None, view / "nodes" / own)
                denied = nfs_ls(ns, f"nfs://{server_addr}/nodes/{other}{query}")
                assert denied.returncode != 0, denied.stdout
                # Nothing but the node's root is exported: no groups/, images/, other roots.
                assert nfs_ls(ns, f"nfs://{server_addr}/groups/Compute{query}").returncode != 0
                assert nfs_ls(ns, f"nfs://{server_addr}/images/rocky9{query}").returncode != 0
            # The other node's root is refused over the other cable too (source address).
            assert nfs_ls(a, f"nfs://10.251.2.1/nodes/node002{query}").returncode != 0


class Holder:
    """nfs_hold.py in a client namespace: one NFS handle, read on demand."""

    def __init__(self, ns: Netns, url: str, path: str, size: int,
                 chunk: int | None = None) -> None:
        self.proc = subprocess.Popen([*ns.prefix, sys.executable, str(HOLD), url, path,
                                      str(size), *([str(chunk)] if chunk else [])],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        assert self.next(60) == "OPEN"

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("EOF")

    def next(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the NFS client did not answer") from None

    def read(self, timeout: float = 120) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write("read\n")
        self.proc.stdin.flush()
        return self.next(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def take_device_number(tmp_path: Path, wanted: str) -> list[Path]:
    """Small tmpfs mounts until one holds device number `wanted` ("0:53"), which the kernel
    gives out lowest-free; the caller unmounts them."""
    takers: list[Path] = []
    for index in range(256):
        taker = tmp_path / f"taker{index}"
        taker.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "onesuite-test-taker",
                               str(taker)], check=False)
        if done.returncode != 0:
            break
        takers.append(taker)
        dev = os.stat(taker).st_dev
        if f"{os.major(dev)}:{os.minor(dev)}" == wanted:
            return takers
    for taker in takers:
        subprocess.run(["umount", str(taker)], check=False)
    raise AssertionError(f"no tmpfs mount got device {wanted}")


def test_handles_survive_restart_and_fuse_daemon_crash(example_site, tmp_path):
    big = os.urandom(3 << 20)
    override = example_site / "var/lib/systemimager/overrides/node001/var"
    override.mkdir(parents=True, exist_ok=True)
    (override / "big.bin").write_bytes(big)
    want = f"MD5 {hashlib.md5(big).hexdigest()} {len(big)}"
    with namespaces("srv", "a", "b") as (srv, a, b):
        config = configure(tmp_path, two_node_network(srv, a, b))
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        server = Serve(srv, example_site, mnt, tmp_path / "state", "--config", str(config),
                       "--protocols", "3,4", private_run=True, rpcbind=True)
        holder = None
        try:
            first = server.start()
            holder = Holder(a, "nfs://10.251.1.1/nodes/node001", "/var/big.bin", len(big))
            assert holder.read() == want
            # 1. A clean restart: SIGTERM, start again; the held handle still reads, also
            # when another mount took the device number the FUSE mount had (handles hold
            # no device number: docs/nfs.md).
            assert server.stop() == 0, server.stderr()
            takers = take_device_number(tmp_path, str(first["st_dev"]))
            try:
                second = server.start()
            finally:
                for taker in takers:
                    subprocess.run(["umount", str(taker)], check=False)
            assert second["st_dev"] != first["st_dev"]
            drop_caches()
            assert holder.read() == want

            # 2. The FUSE daemon is killed under load: errors or the right bytes, never other
            # bytes; serve stops ganesha and exits 1; after a new start reads continue.
            results: list[str] = []
            stop = threading.Event()

            def load() -> None:
                while not stop.is_set():
                    results.append(holder.read(timeout=300))

            reader = threading.Thread(target=load)
            reader.start()
            while len(results) < 3:
                threading.Event().wait(0.05)
            os.kill(int(second["fuse_pid"]), signal.SIGKILL)
            assert server.wait(timeout=120) == 1
            assert "FUSE daemon" in server.stderr() and "died" in server.stderr()
            server.cleanup()
            server.start()
            count = len(results)
            while len(results) < count + 3:
                threading.Event().wait(0.05)
            stop.set()
            reader.join(timeout=300)
            wrong = [r for r in results if r != want and not r.startswith("ERR")]
            assert not wrong, wrong
            assert results[-1] == want
        finally:
            if holder is not None:
                holder.close()
            if server.proc is not None and server.proc.poll() is None:
                server.stop()
            else:
                server.cleanup()


def test_ganesha_missing_or_failing_is_reported_with_its_log(example_site, tmp_path):
    config = configure(tmp_path, {"node001": "10.251.1.2"})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with namespaces("err") as (ns,):
        missing = Serve(ns, example_site, mnt, tmp_path / "s1", "--config", str(config),
                        "--protocols", "4", "--ganesha", "/nonexistent/ganesha.nfsd")
        with pytest.raises(AssertionError, match="nfs-ganesha is not installed"):
            missing.start()
        assert missing.wait() == 1 and not os.path.ismount(mnt)
        missing.cleanup()
        # An address this namespace does not have: ganesha cannot bind and exits.
        failing = Serve(ns, example_site, mnt, tmp_path / "s2", "--config", str(config),
                        "--protocols", "4", "--bind", "10.251.9.9")
        with pytest.raises(AssertionError) as err:
            failing.start()
        assert failing.wait() == 1
        failing.cleanup()
        text = str(err.value)
        assert "nfs-ganesha exited" in text and str(tmp_path / "s2/ganesha.log") in text
        assert not os.path.ismount(mnt)  # the mount it made was taken down again
        # NFSv3 without rpcbind: said before anything is mounted.
        no_rpcbind = Serve(ns, example_site, mnt, tmp_path / "s3", "--config", str(config),
                           "--protocols", "3,4", private_run=True, rpcbind=False)
        with pytest.raises(AssertionError, match="NFSv3 needs rpcbind"):
            no_rpcbind.start()
        assert no_rpcbind.wait() == 1
        no_rpcbind.cleanup()
