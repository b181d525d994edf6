"""systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram to the
AF_UNIX socket named by $NOTIFY_SOCKET.

The variable is taken out of the environment when the program starts (`take_socket`), as
sd_notify's unset_environment does: no child (the FUSE daemon of `serve`, nfs-ganesha) may
report readiness in the service's name.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("onesuite.service")

_socket_path: str | None = None


def take_socket() -> None:
    """Remember $NOTIFY_SOCKET and remove it from the environment (call once, at start)."""
    global _socket_path
    value = os.environ.pop("NOTIFY_SOCKET", None)
    if value and (value.startswith("/") or value.startswith("@")) and "\0" not in value:
        _socket_path = value


def under_systemd() -> bool:
    """True when a service manager waits for our readiness."""
    return _socket_path is not None


def notify(*assignments: str) -> bool:
    """Send "READY=1", "STATUS=...", ...; False (and nothing sent) outside a notify service.
    A failure to send is logged, never raised: readiness reporting never ends the daemon."""
    if _socket_path is None:
        return False
    message = "\n".join(a.replace("\n", " ") for a in assignments).encode()
    # "@name" is an abstract socket: a leading NUL byte instead of the "@".
    address = "\0" + _socket_path[1:] if _socket_path.startswith("@") else _socket_path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        log.warning("could not notify the service manager (%s): %s", _socket_path, exc)
        return False
    return True
