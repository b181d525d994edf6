"""The modification time a directory reports once a reload changed its listing.

A merged directory reports the attributes of one layer's directory, so a name added to or
removed from another layer (or a cluster.xml change that restacks a node) changes its
listing but not its mtime. An NFS server that caches listings keys their validity on the
directory's mtime: nfs-ganesha drops a directory's cached entries when a refresh of its
attributes shows another mtime (mdcache_refresh_attrs, FSAL_MDCACHE/mdcache_handle.c of
ganesha 4.3), and never otherwise for FSAL_VFS, which has no upcalls. So every directory
whose names appeared, vanished or now name another object gets a date at least the switch's
time, later than anything it reported before, kept by every later generation.
"""

from __future__ import annotations

from ..core.view import Attr


class ListingDates:
    """Directory inode -> the least mtime and ctime (ns) it reports from now on."""

    def __init__(self, dates: dict[int, int] | None = None) -> None:
        self._dates: dict[int, int] = dict(dates or {})

    def carried(self) -> ListingDates:
        """The same dates, for the next generation (it diffs with them, then adds its own)."""
        return ListingDates(self._dates)

    def applied(self, attr: Attr) -> Attr:
        if not self._dates:  # no reload changed a listing yet: the common case
            return attr
        date = self._dates.get(attr.ino)
        if date is None or (attr.mtime_ns >= date and attr.ctime_ns >= date):
            return attr
        return attr._replace(mtime_ns=max(attr.mtime_ns, date),
                             ctime_ns=max(attr.ctime_ns, date))

    def mark(self, reported: Attr, now_ns: int) -> None:
        """`reported.ino`'s listing changed: date it after anything it reported."""
        self._dates[reported.ino] = max(now_ns, reported.mtime_ns + 1, reported.ctime_ns + 1)

    def __len__(self) -> int:
        return len(self._dates)
