"""Where log records go: journald, a log file logrotate may rotate, or a terminal.

Under journald ($JOURNAL_STREAM names our stderr) each line carries its syslog priority as a
"<N>" prefix and no timestamp of its own: the journal adds both. A log file is written through
WatchedFileHandler, which reopens the file when logrotate has moved it away, so no signal is
needed (SIGHUP already means "reload").
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

TIMESTAMPED = "%(asctime)s %(name)s %(levelname)s %(message)s"

# syslog(3) priorities journald reads from a "<N>" line prefix (sd-daemon(3)).
_PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
               logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """"<priority>name: message": journald stores the priority and adds the time."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITIES.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return f"<{priority}>{super().format(record)}"


def stderr_is_journal() -> bool:
    """True when stderr is the stream journald gave this service ($JOURNAL_STREAM is
    "device:inode" of it; a child whose stderr was redirected no longer matches)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def configure(verbose: bool, log_file: Path | None = None) -> None:
    """Send every record to `log_file`, else to stderr (journal format under journald)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handler: logging.Handler
    if log_file is not None:
        handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter(TIMESTAMPED))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter() if stderr_is_journal()
                             else logging.Formatter(TIMESTAMPED))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def to_file(log_file: Path | None) -> None:
    """A daemon leaving its terminal: records go to `log_file` (kept at the same level), or
    stay on stderr when that is the journal."""
    if log_file is None:
        return
    configure(logging.getLogger().level <= logging.DEBUG, log_file)
