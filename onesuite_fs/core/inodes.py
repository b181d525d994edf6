"""Inode numbers and generations: derived, never counted, and keyed with a site secret.

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
* any other file of a layer: bit 61 set (bit 62 clear) and a 61-bit hash of the backing
  file's (st_dev, st_ino), so the same backing file has one inode in every view (one copy in
  the page cache for all nodes) and hard links inside an image stay one inode;
* a node's persistent, writable entry: bit 60 set and a hash of the state file's (st_dev,
  st_ino), so it keeps its number across renames.

Every hash is keyed (BLAKE2b with the site's handle key, docs/nfs.md "Handles are
capabilities"): an NFS handle is a capability, and a node that could compute another node's
numbers from names or from its own numbers could open that node's files with a forged handle.
Directories and view-private entries carry 40 + 21 keyed bits and a keyed 31-bit generation;
layer and state files 61 (resp. 60) keyed bits and a keyed 31-bit generation.
"""

from __future__ import annotations

import hashlib
import secrets

ROOT_INO = 1
FIRST_NAMESPACE_INO = 2

DIR_TAG = 1 << 62
PRIVATE_FLAG = 1 << 61  # inside the view-keyed space (bit 62 set)
BACKED_TAG = 1 << 61
STATE_TAG = 1 << 60
SLOT_BITS = 21
PATH_BITS = 40
MAX_SLOTS = 1 << SLOT_BITS
KEY_BYTES = 32


def is_view_keyed(ino: int) -> bool:
    """A directory or a view-private entry: found by walking the view its slot names."""
    return bool(ino & DIR_TAG)


def is_backed_ino(ino: int) -> bool:
    return not ino & DIR_TAG and bool(ino & BACKED_TAG)


def is_state_ino(ino: int) -> bool:
    return not ino & (DIR_TAG | BACKED_TAG) and bool(ino & STATE_TAG)


def slot_of(ino: int) -> int:
    return (ino >> PATH_BITS) & (MAX_SLOTS - 1)


class Numbering:
    """The numbers of one site: every derivation keyed with its handle key, so the same
    store gives the same numbers on every server that holds the key, and nobody without it
    can compute one."""

    PURPOSES = ("dir", "generation", "file", "state", "file-gen", "slot")

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a handle key has at least 16 bytes")
        # One keyed hasher per purpose (domain separation by BLAKE2b's personalization);
        # copying a prepared one is cheaper than keying a new one for every number.
        self._hashers = {purpose: hashlib.blake2b(digest_size=8, key=bytes(key[:64]),
                                                  person=purpose.encode())
                         for purpose in self.PURPOSES}

    @classmethod
    def ephemeral(cls) -> Numbering:
        """A random key: numbers valid in this process only (inspection, one-pass readers)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    def _hash(self, purpose: str, message: bytes, bits: int) -> int:
        hasher = self._hashers[purpose].copy()
        hasher.update(message)
        return int.from_bytes(hasher.digest(), "big") & ((1 << bits) - 1)

    @staticmethod
    def _text(*parts: str) -> bytes:
        return "\0".join(parts).encode("utf-8", "surrogateescape")

    def dir_ino(self, slot: int, path: str, probe: int = 0, *, private: bool = False) -> int:
        """The inode of directory `path` ('' = the entry's root) in the entry at `slot`, or
        of a view-private non-directory there."""
        message = b"%d\0%s\0%d" % (slot, path.encode("utf-8", "surrogateescape"), probe)
        flag = PRIVATE_FLAG if private else 0
        return DIR_TAG | flag | (slot << PATH_BITS) | self._hash("dir", message, PATH_BITS)

    def view_generation(self, entry_key: str, path: str, source: str = "") -> int:
        """Generation of a view-keyed inode: it changes when the same path comes to show
        another object (a LINKBACK choosing another variant), so old NFS handles fail."""
        parts = (entry_key, path) if source in ("", path) else (entry_key, path, source)
        return self._hash("generation", self._text(*parts), 31) | 1

    def backed_ino(self, dev: int, ino: int, probe: int = 0) -> int:
        """The inode of a non-directory whose content is the backing file (dev, ino)."""
        return BACKED_TAG | self._hash("file", b"%d\0%d\0%d" % (dev, ino, probe), 61)

    def state_ino(self, dev: int, ino: int) -> int:
        return STATE_TAG | self._hash("state", b"%d\0%d" % (dev, ino), 60)

    def file_generation(self, ino: int, entry_id: bytes = b"") -> int:
        """Generation of a layer or state file: from its number (and a state entry's own
        id, kept with it in the store), so a restarted daemon answers LOOKUP(ino, ".") with
        the same one, and a new state entry that reuses a removed one's inode number (and
        so its number here) does not: another node's old handle of it is stale."""
        message = b"%d" % ino if not entry_id else b"%d\0%s" % (ino, entry_id)
        return self._hash("file-gen", message, 31) | 1

    def assign_slots(self, entry_keys: list[str]) -> dict[str, int]:
        """A slot per entry: its keyed hash, probing linearly in sorted order on a clash.

        Adding or removing an entry moves only entries that clash with it (rare with 2M
        slots); a moved entry's old handles then fail with ESTALE through the generation.
        """
        if len(entry_keys) >= MAX_SLOTS:
            raise ValueError(f"more than {MAX_SLOTS - 1} views")
        taken: dict[int, str] = {}
        slots: dict[str, int] = {}
        for key in sorted(entry_keys):
            slot = self._hash("slot", self._text(key), SLOT_BITS)
            while slot in taken:
                slot = (slot + 1) % MAX_SLOTS
            taken[slot] = key
            slots[key] = slot
        return slots
