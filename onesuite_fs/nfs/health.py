"""``onesuite ha-check``: does this server serve its exports? keepalived's health check.

Healthy means all of: the ``onesuite serve`` that wrote ``serving.json`` in the NFS state
directory still runs, its ganesha and FUSE daemon are alive, the mount answers (a stat of
its ``nodes/`` directory, read through the FUSE daemon's own mount namespace, so the check
works from any), and ganesha answers an NFS NULL call on its port. Each step is bounded in
time: a hung mount or server is unhealthy, not a hung check.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..daemon.process import pid_alive

STATUS_FILE = "serving.json"
NFS_PROGRAM = 100003
TIMEOUT = 2.0


@dataclass(frozen=True)
class Health:
    healthy: bool
    reason: str
    server: dict[str, object]


def write_status(state_dir: Path, status: dict[str, object]) -> None:
    """What serve runs, for the check (replaced whole, so a reader never sees half)."""
    temporary = state_dir / f".{STATUS_FILE}.tmp"
    temporary.write_text(json.dumps(status) + "\n")
    temporary.replace(state_dir / STATUS_FILE)


def clear_status(state_dir: Path) -> None:
    (state_dir / STATUS_FILE).unlink(missing_ok=True)


def nfs_null(address: str, port: int, version: int, timeout: float = TIMEOUT) -> bool:
    """An NFS NULL call over TCP (RFC 5531 record marking, AUTH_NONE): True if answered
    with an accepted reply."""
    xid = int.from_bytes(os.urandom(4), "big")
    call = struct.pack(">IIIIIIIIII", xid, 0, 2, NFS_PROGRAM, version, 0, 0, 0, 0, 0)
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">I", 0x80000000 | len(call)) + call)
            reply = b""
            while len(reply) < 4 + 24:
                chunk = sock.recv(64)
                if not chunk:
                    return False
                reply += chunk
    except OSError:
        return False
    got_xid, kind, reply_stat = struct.unpack_from(">III", reply, 4)
    # accepted reply: verifier (flavor, length 0), then accept_stat SUCCESS (0)
    accept_stat = struct.unpack_from(">I", reply, 4 + 20)[0]
    return got_xid == xid and kind == 1 and reply_stat == 0 and accept_stat == 0


def _mount_answers(fuse_pid: int, mountpoint: str, timeout: float = TIMEOUT) -> bool:
    """stat(2) of the mount's nodes/ in a child, so a hung FUSE daemon cannot hang us."""
    target = f"/proc/{fuse_pid}/root{mountpoint}/nodes"
    try:
        done = subprocess.run([sys.executable, "-c", "import os, sys; os.stat(sys.argv[1])",
                               target], capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def check(state_dir: Path, address: str | None = None) -> Health:
    try:
        server = json.loads((state_dir / STATUS_FILE).read_text())
    except FileNotFoundError:
        return Health(False, f"no onesuite serve runs with state directory {state_dir}", {})
    except (OSError, ValueError) as exc:
        return Health(False, f"{state_dir / STATUS_FILE}: unreadable ({exc})", {})
    if not isinstance(server, dict):
        return Health(False, f"{state_dir / STATUS_FILE}: not a status object", {})
    for key in ("serve_pid", "ganesha_pid", "fuse_pid"):
        pid = server.get(key)
        if not isinstance(pid, int) or pid <= 0 or not pid_alive(pid):
            return Health(False, f"{key.partition('_')[0]} (pid {pid}) is not running",
                          server)
    mountpoint = server.get("mountpoint")
    if not isinstance(mountpoint, str) or not mountpoint.startswith("/") \
            or not _mount_answers(int(server["fuse_pid"]), mountpoint):
        return Health(False, f"the mount {mountpoint} does not answer", server)
    port = server.get("port")
    host = address or server.get("bind") or "127.0.0.1"
    version = 4 if "4" in str(server.get("protocols", "4")).split(",") else 3
    if not isinstance(port, int) or not isinstance(host, str) \
            or not nfs_null(host, port, version):
        return Health(False, f"ganesha does not answer NFS on {host} port {port}", server)
    return Health(True, f"serving {server.get('exports')} exports from {mountpoint}", server)
