"""Is a process still running? The one check every stop-by-PID here relies on."""

from __future__ import annotations

from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; an exited process that init has not reaped yet (state Z, as
    daemons re-parented to PID 1 are here for a moment) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")
