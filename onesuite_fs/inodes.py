"""Deterministic inode numbers and generations (design.md "NFS readiness").

An NFS client's file handle is (inode, generation). It must name the same object after the
kernel forgot the inode and after the daemon restarted, and name nothing (ESTALE) rather than
the wrong object when that is impossible. So numbers are derived, never counted:

* ``1`` is the mount root, ``2..4`` the ``nodes/``, ``groups/``, ``images/`` directories;
* a directory of a view: bit 62 set, the view entry's *slot* (21 bits), a 40-bit hash of its
  path. Directories must be per entry (the kernel allows a directory one parent), and the
  slot lets a restarted daemon find the entry straight from the number. Its generation is a
  hash of (entry, path), so a slot or hash collision gives ESTALE, never another directory;
* a view-private non-directory (a oneSIS LINKBACK path, a link into /ram): the same with
  bit 61 set too, so its origin can name the rule that made it;
* any other file of a layer: bit 61 set (bit 62 clear) and a 61-bit mix of the backing
  file's (st_dev, st_ino), so the same backing file has one inode in every view (one copy in
  the page cache for all nodes) and hard links inside an image stay one inode;
* a node's persistent, writable entry: bit 60 set and a mix of the state file's (st_dev,
  st_ino), so it keeps its number across renames.
"""

from __future__ import annotations

import hashlib

ROOT_INO = 1
FIRST_NAMESPACE_INO = 2

DIR_TAG = 1 << 62
PRIVATE_FLAG = 1 << 61  # inside the view-keyed space (bit 62 set)
BACKED_TAG = 1 << 61
STATE_TAG = 1 << 60
SLOT_BITS = 21
PATH_BITS = 40
MAX_SLOTS = 1 << SLOT_BITS
_MASK64 = (1 << 64) - 1


def _hash(*parts: str, bits: int) -> int:
    digest = hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogateescape"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << bits) - 1)


def _mix64(value: int) -> int:
    """splitmix64's finaliser: a fast, well-spread bijection on 64-bit integers."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def is_view_keyed(ino: int) -> bool:
    """A directory or a view-private entry: found by walking the view its slot names."""
    return bool(ino & DIR_TAG)


def is_backed_ino(ino: int) -> bool:
    return not ino & DIR_TAG and bool(ino & BACKED_TAG)


def is_state_ino(ino: int) -> bool:
    return not ino & (DIR_TAG | BACKED_TAG) and bool(ino & STATE_TAG)


def slot_of(ino: int) -> int:
    return (ino >> PATH_BITS) & (MAX_SLOTS - 1)


def dir_ino(slot: int, path: str, probe: int = 0, *, private: bool = False) -> int:
    """The inode of directory `path` ('' = the entry's root) in the entry at `slot`, or of a
    view-private non-directory there."""
    key = (path,) if probe == 0 else (path, str(probe))
    flag = PRIVATE_FLAG if private else 0
    return DIR_TAG | flag | (slot << PATH_BITS) | _hash(*key, bits=PATH_BITS)


def view_generation(entry_key: str, path: str, source: str = "") -> int:
    """Generation of a view-keyed inode: it changes when the same path comes to show another
    object (a LINKBACK choosing another variant), so old NFS handles fail instead."""
    parts = (entry_key, path) if source in ("", path) else (entry_key, path, source)
    return _hash(*parts, bits=31) | 1


def backed_ino(dev: int, ino: int, probe: int = 0) -> int:
    """The inode of a non-directory whose content is the backing file (dev, ino)."""
    mixed = _mix64(_mix64(dev ^ (probe << 32)) ^ ino)
    return BACKED_TAG | (mixed & (BACKED_TAG - 1))


def state_ino(dev: int, ino: int) -> int:
    return STATE_TAG | (_mix64(_mix64(dev) ^ ino) & (STATE_TAG - 1))


def assign_slots(entry_keys: list[str]) -> dict[str, int]:
    """A slot per entry: its hash, probing linearly in sorted order on a clash.

    Adding or removing an entry moves only entries that clash with it (rare with 2M slots);
    a moved entry's old handles then fail with ESTALE through the generation check.
    """
    if len(entry_keys) >= MAX_SLOTS:
        raise ValueError(f"more than {MAX_SLOTS - 1} views")
    taken: dict[int, str] = {}
    slots: dict[str, int] = {}
    for key in sorted(entry_keys):
        slot = _hash(key, bits=SLOT_BITS)
        while slot in taken:
            slot = (slot + 1) % MAX_SLOTS
        taken[slot] = key
        slots[key] = slot
    return slots
