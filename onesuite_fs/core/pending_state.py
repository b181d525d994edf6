"""A persistent path not made yet, shown as the mount would make it (``persistent`` policy).

A serving mount makes a node's RAMDIR/RAMFILE/LINKDIR/LINKFILE path the first time it is
listed (daemon/persistent_paths.py). A tree that never writes (preview,
explain, diff, export) shows the same entry before it exists: the type, mode and owner the
mount gives it (`OnesisSource.writable_attrs`, the one place that decides them), its
content (empty, or the tree's entry copied with -d, every copied entry with its own mode,
owner and times, a device as an empty stand-in with its numbers) and its origin
``state:HOST /path (persistent: KIND PATTERN file:line)``. Only what the store's file system
decides is unknown before the entry is made: a directory's size (shown as 0), and the
times of the entry the rule makes (the tree's entry's, or the topology's).
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

from .layers import Meta
from .onesis_rules import RamPath
from .provenance import Provenance
from .refs import DirRef, PrivateRef
from .resolve import Child

if TYPE_CHECKING:
    from .entry import Entry
    from .onesis_config import MergedRoots, OnesisSource
    from .onesis_view import Writable

# The layer of a pending directory that starts empty (no layer has its content).
EMPTY_LAYER = -2
_SPECIAL = (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)


def pending_provenance(entry: Entry, path: str, rule: RamPath, *, is_dir: bool) -> Provenance:
    """The provenance the mount gives the made entry (View.provenance_of a StateRef)."""
    found = Provenance.persistent(entry.name, path, rule.kind, rule.pattern,
                                  f"{rule.file}:{rule.line}")
    return found if not is_dir else Provenance(found.kind, found.layer, found.source,
                                               found.rule, found.reason, True)


def pending_ref(tree: MergedRoots, onesis: OnesisSource, directory: DirRef, path: str,
                item: Writable) -> DirRef | PrivateRef:
    """The entry `item`'s rule would make at `path` of `directory`."""

    entry, rule, base = directory.entry, item.rule, item.base
    attrs = onesis.writable_attrs(tree, entry, item)
    copies = onesis.copies_base(item)
    times = base.meta if base is not None else None
    t = tree.stable_ns
    mtime = times.mtime_ns if times is not None else t
    if stat.S_ISDIR(attrs.mode):
        meta = Meta(attrs.mode, 0, 0, 1, attrs.uid, attrs.gid, 0, mtime, mtime, mtime, 0, 0)
        if copies:
            assert base is not None and base.contribution is not None
            source = f"{item.base_parent}/{base.name}" if item.base_parent else base.name
            return DirRef(entry, path, source, base.contribution, base.layer, meta,
                          pending=rule)
        return DirRef(entry, path, path, (), EMPTY_LAYER, meta, pending=rule)
    provenance = pending_provenance(entry, path, rule, is_dir=False)
    if copies:
        assert base is not None
        source = f"{item.base_parent}/{base.name}" if item.base_parent else base.name
        meta = base.meta._replace(mode=attrs.mode, uid=attrs.uid, gid=attrs.gid, nlink=1)
        return PrivateRef(entry, path, meta, base.layer, source, provenance)
    meta = Meta(attrs.mode, 0, 0, 1, attrs.uid, attrs.gid, 0, mtime, mtime, mtime, 0, 0)
    return PrivateRef(entry, path, meta, None, "", provenance)


def pending_copy_ref(tree: MergedRoots, directory: DirRef, path: str,
                     child: Child) -> DirRef | PrivateRef:
    """An entry inside a pending -d directory: the copy the mount would make of `child`
    (OnesisSource._copy_dir): its mode, owner, device number and times kept."""

    assert directory.pending is not None
    entry, rule = directory.entry, directory.pending
    source = f"{directory.source}/{child.name}" if directory.source else child.name
    meta = child.meta._replace(nlink=1)
    if child.contribution is not None:
        return DirRef(entry, path, source, child.contribution, child.layer,
                      meta._replace(size=0), pending=rule)
    if stat.S_IFMT(meta.mode) in _SPECIAL:
        meta = meta._replace(size=0)  # stored as an empty stand-in (state.py)
    return PrivateRef(entry, path, meta, child.layer, source,
                      pending_provenance(entry, path, rule, is_dir=False))
