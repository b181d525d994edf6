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
* any other file of a layer: bit 61 set (bit 62 clear) and a 61-bit hash of the layer's
  name, the file's path in it and what tells this file from the next one made at that path:
  what rsync's quick check compares (mtime to the nanosecond, size) and the file type. So the
  same file has one inode in every view (one copy in the page cache for all nodes) and on
  every server holding a copy of the store (a shared file system, or rsync'd copies), and a
  file replaced at its path gets a new number (a process holding the old one keeps reading
  it; an old handle is stale after a restart, never the new file). Never the backing
  (st_dev, st_ino), the birth time or the ctime: every copy has its own. Hard links in an
  image are one inode per path;
* a node's persistent, writable entry: bit 60 set and a hash of the node and the entry's
  id, a random value kept with the entry in the store (an extended attribute), so it keeps
  its number across renames and on every server that mounts the store. Where the store
  keeps no id (a symlink: user.* attributes are refused there), the node and its path.

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
        # A key of its own for fingerprints of what is served (core/fingerprint.py).
        self.fingerprint_key = hashlib.blake2b(bytes(key[:64]), digest_size=32,
                                               person=b"fingerprint-key").digest()

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

    def backed_ino(self, layer: str, path: str, identity: bytes, probe: int = 0) -> int:
        """The inode of a layer's non-directory: the layer's name (``image:NAME``,
        ``override:NAME``), its path there and `layer_file_identity`; never where the copy
        lives on this server."""
        message = self._text(layer, path, str(probe)) + b"\0" + identity
        return BACKED_TAG | self._hash("file", message, 61)

    def state_ino(self, node: str, identity: bytes) -> int:
        """The inode of a node's persistent entry: the node and the entry's id (or path)."""
        return STATE_TAG | self._hash("state", node.encode("utf-8", "surrogateescape")
                                      + b"\0" + identity, 60)

    def file_generation(self, ino: int, identity: bytes = b"") -> int:
        """Generation of a layer or state file: its number and what makes it this file
        rather than the next one at that path (a layer file's mtime, size and type; a state
        entry's id), so another file at the same path (and number) does not answer an old
        handle."""
        message = b"%d" % ino if not identity else b"%d\0%s" % (ino, identity)
        return self._hash("file-gen", message, 31) | 1

    @staticmethod
    def layer_file_identity(mtime_ns: int, size: int, mode: int) -> bytes:
        """What tells one layer file at a path from the next: what rsync -a keeps and its
        quick check compares (mtime to the nanosecond, size), and the file type. Not ctime
        or the birth time: every copy of a store has its own."""
        return b"%d\0%d\0%o" % (mtime_ns, size, mode & 0o170000)

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
