"""A throwaway systemd system in a container (systemd-nspawn), for tests of units.

The container's root is a directory made per test: the host's /usr read-only (programs,
systemd itself), a copy of the host's /etc with every unit's enablement removed (so nothing
but what a test starts runs: no NFS server or database of the host's configuration), empty
/var, and its own network namespace with only loopback. /sbin is a directory of its own
(links into /usr/sbin) so a test can install into it. Whatever a test mounts inside lives in
the container's mount namespace and goes away with it.

The host needs no systemd: nspawn runs with --register=no --keep-unit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


def nspawn_available() -> bool:
    return shutil.which("systemd-nspawn") is not None and Path("/usr/lib/systemd/systemd").exists()


class Container:
    def __init__(self, workdir: Path, *, read_only: tuple[Path, ...] = (),
                 read_write: tuple[Path, ...] = ()) -> None:
        self.workdir = workdir
        self.root = workdir / "root"
        self.console = workdir / "console.log"
        self.read_only, self.read_write = read_only, read_write
        self.process: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None  # the container's PID 1, as the host numbers it

    def _make_root(self) -> None:
        root = self.root
        for name in ("usr", "etc", "var", "tmp", "run", "proc", "sys", "dev", "root", "srv",
                     "mnt", "opt", "sbin"):
            (root / name).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        for name, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            (root / name).symlink_to(target)
        for entry in os.listdir("/usr/sbin"):
            (root / "sbin" / entry).symlink_to(f"/usr/sbin/{entry}")
        subprocess.run(["cp", "-a", "/etc/.", str(root / "etc")], check=True)
        etc = root / "etc"
        # nspawn checks for os-release before /usr is there: a copy, not the usual link.
        (etc / "os-release").unlink(missing_ok=True)
        shutil.copy("/usr/lib/os-release", etc / "os-release")
        (root / "usr/lib").mkdir(parents=True, exist_ok=True)
        shutil.copy("/usr/lib/os-release", root / "usr/lib/os-release")
        (etc / "machine-id").write_text("")
        (etc / "fstab").write_text("# the container's own fstab\n")
        for wants in (etc / "systemd/system").glob("*.wants"):
            shutil.rmtree(wants)
        for target in ("default.target",):
            (etc / "systemd/system" / target).unlink(missing_ok=True)

    def boot(self, timeout: float = 120.0) -> None:
        self._make_root()
        command = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet",
                   "--private-network", "-D", str(self.root), "--bind-ro=/usr",
                   "--bind=/dev/fuse",
                   *(f"--bind-ro={p}" for p in self.read_only),
                   *(f"--bind={p}" for p in self.read_write),
                   "-b", "systemd.unit=multi-user.target"]
        with open(self.console, "wb") as console:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=console,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while self.leader is None:
            self.leader = self._find_leader()
            if self.process.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited: {self.console.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError("the container's systemd did not start")
            time.sleep(0.1)
        while True:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the container did not finish booting ({state})")
            time.sleep(0.3)

    def _find_leader(self) -> int | None:
        assert self.process is not None
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children"
                            ).read_text().split()
        except FileNotFoundError:
            return None
        for child in children:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return int(child)
            except FileNotFoundError:
                continue
        return None

    def run(self, *command: str, check: bool = True, timeout: float = 120.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (its namespaces and root directory)."""
        assert self.leader is not None
        done = subprocess.run(["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p",
                               "-r", "-w", "--", *command], capture_output=True, text=True,
                              timeout=timeout, check=False, input=input,
                              env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
                                   "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "TERM": "dumb"})
        if check and done.returncode != 0:
            raise AssertionError(f"in the container, {' '.join(command)} failed "
                                 f"({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def stop(self) -> None:
        """Power the container off; kill it (by its PID 1) if it does not go."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nspawn: an orderly poweroff
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                if self.leader is not None:
                    try:
                        os.kill(self.leader, signal.SIGKILL)  # ends its PID namespace
                    except ProcessLookupError:
                        pass
                self.process.kill()
                self.process.wait(30)
        self.process = None
