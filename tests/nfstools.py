"""Real NFS stacks for tests: network namespaces, `onesuite serve` inside them, libnfs clients.

Every server runs in a network namespace the test creates, so nothing listens on the
machine's real interfaces and two tests never compete for a port. NFSv3 needs rpcbind, whose
lock and socket live in /run: such a stack gets a private mount namespace with its own /run
(and its own rpcbind), so it cannot collide with any other rpcbind on the machine.
Everything is torn down by PID and by name, even when the test fails.
"""

from __future__ import annotations

import itertools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from onesuite_fs.daemon.process import pid_alive

REPO = Path(__file__).resolve().parent.parent
WALK = Path(__file__).resolve().parent / "nfs_walk.py"
CI = bool(os.environ.get("CI"))
_counter = itertools.count()


def require(*tools: str) -> None:
    """Skip without the tools on a laptop; under CI=true a missing tool fails the test."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    message = f"needs {', '.join(missing)} (bash tools/setup.sh installs them)"
    if CI:
        pytest.fail(message)
    pytest.skip(message)


def require_libnfs() -> None:
    try:
        import libnfs  # noqa: F401
    except ImportError:
        if CI:
            pytest.fail("needs the PyPI libnfs module (bash tools/setup.sh installs it)")
        pytest.skip("needs the PyPI libnfs module")



def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Netns:
    """A network namespace with lo up; `run` executes in it (network only: the mount table
    stays the caller's, so FUSE mounts stay visible; `ip netns exec` would hide them)."""

    def __init__(self, tag: str) -> None:
        self.name = f"osfs{os.getpid() % 100000}-{next(_counter)}-{tag}"[:15]
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.ip("link", "set", "lo", "up")

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.name}"]

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True)

    def run(self, *cmd: str | os.PathLike[str], timeout: float = 120,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *map(str, cmd)], capture_output=True, text=True,
                              timeout=timeout, check=check)

    def local_source(self, address: str) -> None:
        """Connections to `address` inside this namespace also come *from* it: one loopback
        address per simulated node, so per-client export rules can be tested over lo."""
        self.ip("route", "add", "local", f"{address}/32", "dev", "lo", "src", address,
                "table", "local")

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


def veth(a: Netns, addr_a: str, b: Netns, addr_b: str, prefix: int = 24) -> None:
    """A cable between two namespaces, with an address at each end."""
    end_a, end_b = f"v{next(_counter)}a{os.getpid() % 10000}", f"v{next(_counter)}b"
    subprocess.run(["ip", "link", "add", end_a, "type", "veth", "peer", "name", end_b],
                   check=True)
    subprocess.run(["ip", "link", "set", end_a, "netns", a.name], check=True)
    subprocess.run(["ip", "link", "set", end_b, "netns", b.name], check=True)
    a.ip("addr", "add", f"{addr_a}/{prefix}", "dev", end_a)
    b.ip("addr", "add", f"{addr_b}/{prefix}", "dev", end_b)
    a.ip("link", "set", end_a, "up")
    b.ip("link", "set", end_b, "up")


@contextmanager
def namespaces(*tags: str) -> Iterator[list[Netns]]:
    made: list[Netns] = []
    try:
        for tag in tags:
            made.append(Netns(tag))
        yield made
    finally:
        for ns in reversed(made):
            ns.delete()


# With NFSv3 the stack gets its own /run (tmpfs) and rpcbind, in a private mount namespace.
# The FUSE mount is then made in that namespace too; tests read it via /proc/PID/root.
_PRIVATE_RUN = """
mount -t tmpfs onesuite-test-run /run || exit 97
if [ "$ONESUITE_TEST_RPCBIND" = 1 ]; then
    rpcbind -f & echo $! > "$ONESUITE_TEST_STATE/rpcbind.pid"
    for _ in $(seq 200); do [ -S /run/rpcbind.sock ] && break; sleep 0.05; done
fi
exec "$@"
"""


class Serve:
    """`onesuite serve` in a network namespace; `stop()` is SIGTERM and a wait, `cleanup()`
    removes whatever a failed run left (ganesha by PID, the mount, the FUSE daemon)."""

    def __init__(self, ns: Netns, root: Path, mountpoint: Path, state_dir: Path,
                 *args: str, private_run: bool = False, rpcbind: bool = False) -> None:
        self.ns, self.root, self.mountpoint, self.state_dir = ns, root, mountpoint, state_dir
        self.args, self.private_run, self.rpcbind = args, private_run, rpcbind
        self.proc: subprocess.Popen[str] | None = None
        self.status: dict[str, object] = {}
        self.stderr_path = state_dir.parent / f"{state_dir.name}.serve.err"
        self.known_pids: set[int] = set()

    def command(self) -> list[str]:
        serve = [sys.executable, "-m", "onesuite_fs.cli", "serve", "--root", str(self.root),
                 "--nfs-state-dir", str(self.state_dir), "--json", *self.args, str(self.mountpoint)]
        if not self.private_run:
            return [*self.ns.prefix, *serve]
        return [*self.ns.prefix, "unshare", "-m", "--propagation", "private",
                "sh", "-c", _PRIVATE_RUN, "private-run", *serve]

    def start(self, timeout: float = 90) -> dict[str, object]:
        """Start and wait for the JSON 'serving' line; raise with serve's stderr if it exits."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ONESUITE_TEST_STATE": str(self.state_dir),
               "ONESUITE_TEST_RPCBIND": "1" if self.rpcbind else "0",
               "PYTHONPATH": str(REPO)}
        err = open(self.stderr_path, "w")  # noqa: SIM115 (the child writes it)
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=err,
                                     stdin=subprocess.DEVNULL, text=True, env=env)
        err.close()
        self.known_pids.add(self.proc.pid)
        line = self._read_line(timeout)
        if not line:
            self.proc.wait(timeout=60)
            raise AssertionError(f"onesuite serve exited ({self.proc.returncode}) before "
                                 f"serving:\n{self.stderr()}")
        self.status = json.loads(line)
        for key in ("ganesha_pid", "fuse_pid"):
            if isinstance(self.status.get(key), int):
                self.known_pids.add(self.status[key])  # type: ignore[arg-type]
        return self.status

    def _read_line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise AssertionError(f"onesuite serve not ready in {timeout} s:\n"
                                     f"{self.stderr()}")
        return self.proc.stdout.readline()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text()
        except FileNotFoundError:
            return ""

    def view(self) -> Path:
        """The mounted view, also when it lives in the stack's private mount namespace."""
        if self.private_run:
            return Path(f"/proc/{self.status['fuse_pid']}/root") / str(
                self.mountpoint).lstrip("/")
        return self.mountpoint

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM and wait: serve stops ganesha, unmounts, waits for the daemon."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.cleanup()
        return code

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=30)
            if self.proc.stdout:
                self.proc.stdout.close()
        for pid in sorted(self.known_pids):
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
                if not wait_gone(pid, 15):
                    os.kill(pid, signal.SIGKILL)
        rpcbind = self.state_dir / "rpcbind.pid"
        if rpcbind.exists():
            pid = int(rpcbind.read_text())
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
                wait_gone(pid, 10)
            rpcbind.unlink()
        if not self.private_run and os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True,
                           check=False)


@contextmanager
def serving(*args: object, **kwargs: object) -> Iterator[Serve]:
    server = Serve(*args, **kwargs)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
        else:
            server.cleanup()


def walk(ns: Netns | None, target: str | Path) -> dict[str, list[object]]:
    """nfs_walk.py over NFS (inside `ns`) or over a local path."""
    cmd = [sys.executable, str(WALK), str(target)]
    if ns is None:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    else:
        done = ns.run(*cmd, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"walk of {target} failed ({done.returncode}): "
                             f"{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def nfs_ls(ns: Netns, url: str) -> subprocess.CompletedProcess[str]:
    return ns.run("nfs-ls", url, timeout=60)


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
