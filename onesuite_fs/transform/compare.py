"""Comparing the same path across many roots: what is equal, and a fingerprint of a whole
entry (a directory's with everything below it) to group roots that show the same thing."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Sequence

from .walk import Item, Root, merged_children


class Comparer:
    """Keys and fingerprints of entries; content hashes are cached per backing inode until
    `release`, so a file many roots share at one path is read once."""

    def __init__(self) -> None:
        self._content: dict[tuple[int, int], bytes] = {}

    def release(self) -> None:
        """Forget the content hashes: the path they were needed for is done."""
        self._content.clear()

    def meta_key(self, root: Root, item: Item) -> tuple[object, ...]:
        """What two entries must share to be the same entry (content aside)."""
        attr = item.attr
        kind = stat.S_IFMT(attr.mode)
        key: tuple[object, ...] = (attr.mode, attr.uid, attr.gid, attr.mtime_ns)
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            key += (attr.rdev,)
        if kind == stat.S_IFLNK:
            return key + (root.readlink(item),)
        if kind == stat.S_IFREG:
            key += (attr.size,)
        return key + (tuple(sorted(root.xattrs(item).items())),)

    def content(self, root: Root, item: Item) -> bytes:
        digest = self._content.get(item.link_key)
        if digest is None:
            digest = self._content[item.link_key] = root.digest(item)
        return digest

    def same_files(self, roots: list[Root], items: list[Item]) -> bool:
        """Non-directories that show the same thing in every root."""
        first = self.meta_key(roots[0], items[0])
        if any(self.meta_key(r, i) != first for r, i in zip(roots[1:], items[1:], strict=True)):
            return False
        if not items[0].is_reg or len({i.link_key for i in items}) == 1:
            return True
        return len({self.content(r, i) for r, i in zip(roots, items, strict=True)}) == 1

    def fingerprints(self, roots: Sequence[Root], items: dict[int, Item]) -> dict[int, bytes]:
        """Per root (`items`: root index -> its entry at one path), a hash of the entry and,
        for a directory, of everything below it: equal exactly when two roots show the same
        thing there. The roots are read in lockstep, so a file several roots share is read
        once while its path is current, and nothing is kept after."""
        shas = {n: hashlib.sha256(repr(self.meta_key(roots[n], item)).encode())
                for n, item in items.items()}
        for n, item in items.items():
            if item.is_reg:
                shas[n].update(self.content(roots[n], item))
        directories = {n: item for n, item in items.items() if item.is_dir}
        if directories:
            for name, present in merged_children(roots, directories):
                label = name.encode("utf-8", "surrogateescape") + b"\0"
                for n, digest in self.fingerprints(roots, present).items():
                    shas[n].update(label)
                    shas[n].update(digest)
                self.release()  # what was shared there was read by every root already
        return {n: sha.digest() for n, sha in shas.items()}
