"""The first name (or archive inode) of each hard-linked file a writer has stored, so that
its other names become links.

A root's hard links can be a large share of it (the copies of a oneSIS image's whole-directory
variants share their files, and every copy is in every node's root), so the table must not
live in memory: the newest entries are buffered in a dict, the rest go to a private SQLite
file next to the output whose page cache is bounded. The file is unlinked as soon as it is
open, so nothing is left behind however the run ends; a run whose roots have few links
(the usual SystemImager site) never creates it.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import struct
import tempfile
from pathlib import Path
from types import TracebackType

Key = tuple[int, int]
Value = bytes | int

_MASK = (1 << 64) - 1
_PAGE_CACHE_KIB = 2048  # SQLite's default; stated so the bound does not depend on a build


def _packed(key: Key) -> bytes:
    # (st_dev, st_ino) are unsigned 64-bit (dev is -1 for synthetic entries): SQLite's
    # integers are signed, a fixed-width blob holds any of them.
    return struct.pack("<QQ", key[0] & _MASK, key[1] & _MASK)


class LinkTable:
    """A map from a backing file (`Item.link_key`) to what its first name was stored as: a
    path (bytes) or a number. Each key is set once (a writer sets it after `get` found
    nothing). Memory: at most `BUFFER` entries (about a megabyte) plus SQLite's page
    cache, whatever the number of links."""

    BUFFER = 8192

    def __init__(self, spill_dir: Path | None = None) -> None:
        self._spill_dir = spill_dir  # same file system as the output: not a tmpfs in RAM
        self._buffer: dict[Key, Value] = {}
        self._db: sqlite3.Connection | None = None
        self._spilled = 0

    def __len__(self) -> int:
        return len(self._buffer) + self._spilled

    def get(self, key: Key) -> Value | None:
        found = self._buffer.get(key)
        if found is not None or self._db is None:
            return found
        row = self._db.execute("SELECT value FROM first WHERE key = ?",
                               (_packed(key),)).fetchone()
        return None if row is None else row[0]

    def __setitem__(self, key: Key, value: Value) -> None:
        self._buffer[key] = value
        if len(self._buffer) >= self.BUFFER:
            self._spill()

    def _spill(self) -> None:
        try:
            db = self._db or self._open()
            db.execute("BEGIN")
            db.executemany("INSERT INTO first (key, value) VALUES (?, ?)",
                           ((_packed(k), v) for k, v in self._buffer.items()))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            # An OSError like any other write of the run: a full disk is reported as such
            # (output.atomic_output) and the partial output removed.
            full = getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL"
            raise OSError(errno.ENOSPC if full else errno.EIO,
                          f"the hard-link table beside the output: {exc}") from exc
        self._spilled += len(self._buffer)
        self._buffer.clear()

    def _open(self) -> sqlite3.Connection:
        fd, name = tempfile.mkstemp(prefix=".onesuite-links.", suffix=".sqlite",
                                    dir=self._spill_dir)
        os.close(fd)
        try:
            db = sqlite3.connect(name, isolation_level=None)
            # One connection, no journal, no fsync: the table is scratch, lost with the run.
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.execute(f"PRAGMA cache_size = -{_PAGE_CACHE_KIB}")
            db.execute("CREATE TABLE first (key BLOB PRIMARY KEY, value) WITHOUT ROWID")
        finally:
            # Open and locked: SQLite keeps its descriptor, nothing else reaches the name.
            os.unlink(name)
        self._db = db
        return db

    def close(self) -> None:
        self._buffer.clear()
        if self._db is not None:
            self._db.close()
            self._db = None
        self._spilled = 0

    def __enter__(self) -> LinkTable:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
