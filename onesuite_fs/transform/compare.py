"""Comparing the same path across many roots: what is equal, and a fingerprint of a whole
entry (a directory's with everything below it) to group roots that show the same thing."""

from __future__ import annotations

import hashlib
import stat

from .walk import Item, Root


class Comparer:
    """Keys and fingerprints of entries; content hashes are cached per backing inode, so a
    file many roots share is read once."""

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
            sha = hashlib.sha256()
            for chunk in root.chunks(item):
                sha.update(chunk)
            digest = self._content[item.link_key] = sha.digest()
        return digest

    def same_files(self, roots: list[Root], items: list[Item]) -> bool:
        """Non-directories that show the same thing in every root."""
        first = self.meta_key(roots[0], items[0])
        if any(self.meta_key(r, i) != first for r, i in zip(roots[1:], items[1:], strict=True)):
            return False
        if not items[0].is_reg or len({i.link_key for i in items}) == 1:
            return True
        return len({self.content(r, i) for r, i in zip(roots, items, strict=True)}) == 1

    def fingerprint(self, root: Root, item: Item) -> bytes:
        """A hash of the entry and, for a directory, of everything below it."""
        sha = hashlib.sha256(repr(self.meta_key(root, item)).encode())
        if item.is_reg:
            sha.update(self.content(root, item))
        elif item.is_dir:
            for child in root.children(item):
                sha.update(child.name.encode("utf-8", "surrogateescape") + b"\0")
                sha.update(self.fingerprint(root, child))
        return sha.digest()
