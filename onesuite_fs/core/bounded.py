"""A cache bounded by the number of directory entries it holds, for one-pass readers.

A serving tree keeps every listing it read (a generation is a snapshot of its layers). A
reader that passes each directory once (export, convert) must not: its memory would grow with
the size of the root. It keeps the most recently used listings up to a total number of
entries, which is enough for several roots walked in lockstep to share them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_MISSING = object()

# Entries (not directories): a few megabytes, more than the largest directory of a distro.
DEFAULT_ENTRY_LIMIT = 16_384


class BoundedCache(Generic[K, V]):
    """The subset of dict a cache needs (get, setdefault, item assignment, in), forgetting
    the least recently used values once their total weight passes `limit`. The value just
    stored always stays, however heavy: a reader holds it anyway."""

    def __init__(self, weigh: Callable[[V], int], limit: int = DEFAULT_ENTRY_LIMIT) -> None:
        self._weigh = weigh
        self._limit = limit
        self._values: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    @property
    def weight(self) -> int:
        return self._weight

    def get(self, key: K, default: object = None) -> V | object:
        with self._lock:
            found = self._values.get(key, _MISSING)
            if found is _MISSING:
                return default
            self._values.move_to_end(key)
            return found[0]  # type: ignore[index]

    def __setitem__(self, key: K, value: V) -> None:
        with self._lock:
            self._store(key, value)

    def setdefault(self, key: K, value: V) -> V:
        """The value already cached under `key`, else `value` (now cached)."""
        with self._lock:
            found = self._values.get(key)
            if found is not None:
                self._values.move_to_end(key)
                return found[0]
            self._store(key, value)
            return value

    def _store(self, key: K, value: V) -> None:
        old = self._values.pop(key, None)
        if old is not None:
            self._weight -= old[1]
        weight = self._weigh(value)
        self._values[key] = (value, weight)
        self._weight += weight
        while self._weight > self._limit and len(self._values) > 1:
            _, (_, dropped) = self._values.popitem(last=False)
            self._weight -= dropped


def entries_of(value: object) -> int:
    """Weight of a cached listing: its entries, plus one for the listing itself."""
    return 1 + (len(value) if value else 0)  # type: ignore[arg-type]
