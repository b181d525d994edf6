"""When a service is ready: the mount answers requests (not merely exists)."""

from __future__ import annotations

import os
from pathlib import Path

from .sd_notify import notify, under_systemd


def report_mount_ready(mountpoint: Path) -> None:
    """READY=1 once the daemon answers at `mountpoint`. Runs in a worker thread while the
    FUSE loop serves: statfs is never answered from the kernel's caches, and listing nodes/
    is a real request to our handlers."""
    if not under_systemd():
        return
    os.statvfs(mountpoint)
    nodes = len(os.listdir(mountpoint / "nodes"))
    notify("READY=1", f"STATUS=serving {nodes} node roots at {mountpoint}")
