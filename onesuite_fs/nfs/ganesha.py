"""nfs-ganesha as a child process: its configuration, start in the foreground, stop by PID.

ganesha runs in the foreground (``-F``) with its own pid file and log in the state directory:
there is no init system to lean on, and a server we started must be the one we stop.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..daemon.process import pid_alive
from .exports import DEFAULT_ATTR_EXPIRATION, ExportPlan, render_ganesha_exports

READY_LINE = "NFS SERVER INITIALIZED"
RPCBIND_SOCKET = Path("/run/rpcbind.sock")
# Lines ganesha logs at CRIT/MAJ on a healthy start here (no D-Bus, no Kerberos, no RADOS,
# v4-only without rpcbind); they are not the reason for a failure.
_HARMLESS = ("dbus", "gssd_refresh_krb5", "RADOS", "Cannot register NFS V4",
             "Cannot register NFS V3", "krb5")


class NfsServerError(Exception):
    """The NFS server is missing, cannot start, or died; the message names its log."""


@dataclass(frozen=True)
class GaneshaOptions:
    bind: str | None = None  # None: every address of the network namespace
    port: int = 2049
    mount_port: int = 20048
    protocols: str = "3,4"
    binary: str = "ganesha.nfsd"
    attr_expiration: int = DEFAULT_ATTR_EXPIRATION  # seconds (exports.py)


def render_config(plan: ExportPlan, options: GaneshaOptions, recovery_dir: Path) -> str:
    proto = ", ".join(options.protocols.split(","))
    bind = (f"    Bind_addr = {options.bind};\n" if options.bind
            else "    # no Bind_addr: every address of this network namespace\n")
    return (
        "# Written by onesuite serve; regenerated at every start.\n"
        "NFS_CORE_PARAM {\n"
        f"{bind}"
        f"    Protocols = {proto};\n"
        f"    NFS_Port = {options.port};\n"
        f"    MNT_Port = {options.mount_port};\n"
        "    Enable_NLM = false;     # read-only roots need no locks (and no rpc.statd)\n"
        "    Enable_RQUOTA = false;\n"
        "    Enable_UDP = false;\n"
        "    mount_path_pseudo = true;  # NFSv3 clients mount /nodes/<host> like v4 ones\n"
        "}\n"
        "NFSV4 {\n"
        "    Graceless = true;       # read-only, no locks: nothing to reclaim after a restart\n"
        "    RecoveryBackend = fs;\n"
        f'    RecoveryRoot = "{recovery_dir}";\n'
        "    Allow_Numeric_Owners = true;\n"
        "    Only_Numeric_Owners = true;  # a root is served as numeric ids, no idmapd\n"
        "}\n"
        "NFS_KRB5 { Active_krb5 = false; }\n"
        "MDCACHE { Entries_HWMark = 100000; }\n"
        "LOG { Default_Log_Level = EVENT; }\n"
        + render_ganesha_exports(plan, options.protocols, options.attr_expiration)
    )



class Ganesha:
    """One ganesha.nfsd, with its files in `state_dir`."""

    def __init__(self, state_dir: Path, options: GaneshaOptions) -> None:
        self.state_dir = state_dir
        self.options = options
        self.conf = state_dir / "ganesha.conf"
        self.log = state_dir / "ganesha.log"
        self.pidfile = state_dir / "ganesha.pid"
        self.recovery = state_dir / "recovery"
        self.proc: subprocess.Popen[bytes] | None = None

    def check_installed(self) -> str:
        found = shutil.which(self.options.binary)
        if found is None:
            raise NfsServerError(
                f"nfs-ganesha is not installed ({self.options.binary} not found in PATH)\n"
                "  hint: apt-get install nfs-ganesha nfs-ganesha-vfs")
        if "3" in self.options.protocols.split(",") and not RPCBIND_SOCKET.exists():
            raise NfsServerError(
                f"NFSv3 needs rpcbind, and it is not running ({RPCBIND_SOCKET} is missing)\n"
                "  hint: start rpcbind (rpcbind -f), or serve NFSv4 only with --protocols 4")
        return found

    def write_config(self, plan: ExportPlan) -> None:
        self.recovery.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(render_config(plan, self.options, self.recovery))

    def start(self, timeout: float = 60.0) -> int:
        """Start in the foreground; return its PID once it serves, or raise naming the log."""
        binary = self.check_installed()
        if self.log.exists():  # keep the previous run's log for post-mortems
            self.log.replace(self.log.with_name("ganesha.log.1"))
        out = open(self.state_dir / "ganesha.out", "wb")  # noqa: SIM115 (lives with the child)
        # A session of its own: a Ctrl-C at the terminal must not reach ganesha before serve
        # has decided the order (NFS server first, then the mount).
        self.proc = subprocess.Popen(
            [binary, "-F", "-f", str(self.conf), "-L", str(self.log), "-p", str(self.pidfile),
             "-N", "NIV_EVENT"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NfsServerError(f"nfs-ganesha exited with status {self.proc.returncode} "
                                     f"during start-up; see {self.log}{self._reason()}")
            if self.log.exists() and READY_LINE in self.log.read_text(errors="replace"):
                return self.proc.pid
            time.sleep(0.05)
        self.stop()
        raise NfsServerError(f"nfs-ganesha did not become ready in {timeout:.0f} s; "
                             f"see {self.log}{self._reason()}")

    def _reason(self) -> str:
        """The FATAL/CRIT/MAJ lines that explain a failed start, quoted from the log."""
        texts = []
        for path in (self.log, self.state_dir / "ganesha.out"):
            try:
                texts += path.read_text(errors="replace").splitlines()
            except FileNotFoundError:
                pass
        bad = [line.strip() for line in texts
               if any(level in line for level in (":FATAL", ":CRIT", ":MAJ"))
               and not any(h in line for h in _HARMLESS)]
        return "".join(f"\n  {line}" for line in bad[-5:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, wait for the exit (it releases its files on the mount), SIGKILL if stuck."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        # ganesha removes its pid file on a clean exit; not after SIGKILL.
        try:
            pid = int(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return
        if not pid_alive(pid):
            self.pidfile.unlink(missing_ok=True)
        else:  # pragma: no cover - a stale pid file naming someone else's ganesha
            os.write(2, f"onesuite: warning: {self.pidfile} names live PID {pid}\n".encode())
