"""Two views compared entry by entry: what is added, removed or changed (type, mode, owner,
content, link target, device numbers), with the entries themselves so that each side's layer
can be named.

Content is compared cheaply first: two entries backed by the same layer file are equal
without reading either; different sizes differ; only the rest is hashed, each backing file at
most once. Directories' mtimes and extended attributes are not compared.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .walk import Record, RecordSource, walk

FIELDS = ("type", "mode", "owner", "content", "target", "device")


@dataclass(frozen=True)
class Difference:
    path: str
    status: str  # "added" (only in B), "removed" (only in A) or "changed"
    fields: tuple[str, ...]  # for "changed": which of FIELDS differ
    a: Record | None
    b: Record | None
    below: int = 0  # entries under a directory only one side has there, not listed singly


class Comparer:
    """Compares two views, caching content digests by backing identity."""

    def __init__(self, a: RecordSource, b: RecordSource,
                 tick: Callable[[int], None] | None = None) -> None:
        self.a, self.b = a, b
        self._tick = tick
        self._seen = 0
        self._digests: dict[tuple[int, object], bytes] = {}

    def _count(self, n: int = 1) -> None:
        self._seen += n
        if self._tick is not None:
            self._tick(self._seen)

    def _digest(self, view: RecordSource, record: Record) -> bytes:
        key = (id(view), view.identity(record) or record.handle)
        found = self._digests.get(key)
        if found is None:
            found = self._digests[key] = view.digest(record)
        return found

    def same_content(self, x: Record, y: Record) -> bool:
        same_file = self.a.identity(x)
        if same_file is not None and same_file == self.b.identity(y):
            return True
        if x.size != y.size:
            return False
        return self._digest(self.a, x) == self._digest(self.b, y)

    def changed_fields(self, x: Record, y: Record) -> tuple[str, ...]:
        if stat.S_IFMT(x.mode) != stat.S_IFMT(y.mode):
            return ("type",)
        fields = []
        if stat.S_IMODE(x.mode) != stat.S_IMODE(y.mode):
            fields.append("mode")
        if (x.uid, x.gid) != (y.uid, y.gid):
            fields.append("owner")
        kind = x.kind
        if kind == "file" and not self.same_content(x, y):
            fields.append("content")
        elif kind == "symlink" and self.a.target(x) != self.b.target(y):
            fields.append("target")
        elif kind in ("chr", "blk") and x.rdev != y.rdev:
            fields.append("device")
        return tuple(fields)

    def _below(self, view: RecordSource, record: Record) -> int:
        if not record.is_dir:
            return 0
        count = sum(1 for _ in walk(view, record)) - 1
        self._count(count)
        return count

    def compare(self, x: Record | None, y: Record | None) -> list[Difference]:
        """Every difference at and below the pair (one of them may be None), in path order.
        Both sides' children come in name order and are paired as they come: what is held
        is one pair per level, not the listings."""
        found: list[Difference] = []
        levels: list[Iterator[tuple[Record | None, Record | None]]] = [iter([(x, y)])]
        while levels:
            pair = next(levels[-1], None)
            if pair is None:
                levels.pop()
                continue
            x, y = pair
            self._count()
            if x is None:
                assert y is not None
                found.append(Difference(y.path, "added", (), None, y, self._below(self.b, y)))
                continue
            if y is None:
                found.append(Difference(x.path, "removed", (), x, None, self._below(self.a, x)))
                continue
            fields = self.changed_fields(x, y)
            if x.is_dir and y.is_dir:
                if fields:
                    found.append(Difference(x.path, "changed", fields, x, y))
                levels.append(_paired(self.a.children(x), self.b.children(y)))
            elif fields:
                below = self._below(self.a, x) + self._below(self.b, y)
                found.append(Difference(x.path, "changed", fields, x, y, below))
        return found


def _paired(lefts: Iterable[Record], rights: Iterable[Record]
            ) -> Iterator[tuple[Record | None, Record | None]]:
    """Two name-ordered listings as (left, right) pairs by name, None where one lacks it."""
    left, right = iter(lefts), iter(rights)
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a.name < b.name):
            yield a, None
            a = next(left, None)
        elif a is None or b.name < a.name:
            yield None, b
            b = next(right, None)
        else:
            yield a, b
            a, b = next(left, None), next(right, None)


def diff(a: RecordSource, b: RecordSource, path: str,
         tick: Callable[[int], None] | None = None) -> list[Difference] | None:
    """The differences under `path` of both views; None when neither has the path."""
    x, y = a.stat(path), b.stat(path)
    if x is None and y is None:
        return None
    return Comparer(a, b, tick).compare(x, y)
