"""The mount's whole tree, independent of FUSE: ``nodes/``, ``groups/``, ``images/`` and each
entry's merged root, addressed by deterministic inode numbers.

This is what the FUSE adapter translates and what the CLI reads; both see the same answers.
Every method is synchronous; the ones that may touch the disk (building a directory that is
not cached yet) are announced by ``dir_ready`` so an adapter can run them in a worker thread.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

from . import inodes
from .layers import LayerStore, Meta
from .model import Site
from .resolve import Child, Contribution, MergedDir, Resolver
from .stack import Stages, group_stages, image_stages, node_stages

NAMESPACES = ("nodes", "groups", "images")
# The kernel serves user.* extended attributes only on regular files and directories, so the
# origin is also under trusted.* (root only), which the kernel allows on every file type.
ORIGIN_XATTRS = ("user.onesuite.origin", "trusted.onesuite.origin")


class TreeError(Exception):
    """An errno-carrying failure the adapters turn into their own error."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or os.strerror(code))
        self.errno = code


class Attr(NamedTuple):
    ino: int
    generation: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True)
class Entry:
    """One directory under nodes/, groups/ or images/: a view's root."""

    namespace: str
    name: str
    stages: Stages  # for display and provenance
    contribution: Contribution  # the present layers by stage, as layer ids
    slot: int

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class DirRef(NamedTuple):
    entry: Entry
    path: str
    contribution: Contribution
    layer: int  # metadata winner
    meta: Meta


class FileRef(NamedTuple):
    layer: int
    path: str
    meta: Meta


def stage_ids(store: LayerStore, stages: Stages) -> Contribution:
    ids = (tuple(store.add(e.layer) for e in stage if e.present) for stage in stages)
    return tuple(stage for stage in ids if stage)


class Tree:
    def __init__(self, site: Site, order: str) -> None:
        self.site = site
        self.order = order
        self.store = LayerStore()
        self.resolver = Resolver(self.store)
        self.started_ns = time.time_ns()
        self.entries: dict[str, dict[str, Entry]] = {ns: {} for ns in NAMESPACES}
        self._dirs: dict[int, DirRef] = {}
        self._files: dict[int, FileRef] = {}
        self._backing_index: dict[int, FileRef] | None = None
        self._lock = threading.Lock()
        self._build_entries()

    # ----- construction -------------------------------------------------------------
    def _build_entries(self) -> None:
        site = self.site
        wanted: list[tuple[str, str, Stages]] = []
        wanted += [("nodes", host, node_stages(site, host, self.order)) for host in site.nodes]
        wanted += [("groups", g.name, group_stages(site, g, self.order))
                   for g in site.cluster.groups]
        wanted += [("images", name, image_stages(site, name)) for name in site.images]
        slots = inodes.assign_slots([f"{ns}/{name}" for ns, name, _ in wanted])
        for namespace, name, stages in wanted:
            contribution = stage_ids(self.store, stages)
            if not contribution:
                continue  # a group with no image and no override directory: nothing to show
            self.entries[namespace][name] = Entry(namespace, name, stages, contribution,
                                                  slots[f"{namespace}/{name}"])
        self._slots = {e.slot: e for ns in self.entries.values() for e in ns.values()}

    # ----- inode numbers --------------------------------------------------------------
    def _dir_ref(self, entry: Entry, path: str, contribution: Contribution, layer: int,
                 meta: Meta) -> int:
        probe = 0
        while True:
            ino = inodes.dir_ino(entry.slot, path, probe)
            known = self._dirs.get(ino)
            if known is None:
                self._dirs[ino] = DirRef(entry, path, contribution, layer, meta)
                return ino
            if known.entry is entry and known.path == path:
                return ino
            probe += 1  # a 40-bit hash clash inside one entry; see inodes.py

    def _file_ref(self, layer: int, path: str, meta: Meta) -> int:
        probe = 0
        while True:
            ino = inodes.backed_ino(meta.dev, meta.ino, probe)
            known = self._files.get(ino)
            if known is None:
                self._files[ino] = FileRef(layer, path, meta)
                return ino
            if known.meta.dev == meta.dev and known.meta.ino == meta.ino:
                return ino
            probe += 1

    def _namespace_ino(self, namespace: str) -> int:
        return inodes.FIRST_NAMESPACE_INO + NAMESPACES.index(namespace)

    def entry_root_ino(self, entry: Entry) -> int:
        top = entry.contribution[-1][0]
        return self._dir_ref(entry, "", entry.contribution, top, self.store.root_meta(top))

    # ----- attributes -----------------------------------------------------------------
    def _synthetic_dir_attr(self, ino: int) -> Attr:
        t = self.started_ns
        return Attr(ino, 1, stat.S_IFDIR | 0o755, 2, 0, 0, 0, 0, 0, t, t, t)

    @staticmethod
    def _attr_from(ino: int, generation: int, meta: Meta, *, is_dir: bool) -> Attr:
        # Directories report one link, as btrfs does: a merged directory's subdirectory
        # count would need its listing, and tools treat 1 as "unknown".
        return Attr(ino, generation, meta.mode, 1 if is_dir else meta.nlink, meta.uid, meta.gid,
                    meta.rdev, meta.size, meta.blocks, meta.atime_ns, meta.mtime_ns,
                    meta.ctime_ns)

    def attr(self, ino: int) -> Attr:
        if ino == inodes.ROOT_INO or self._namespace_of(ino) is not None:
            return self._synthetic_dir_attr(ino)
        ref = self._dirs.get(ino)
        if ref is not None:
            return self._attr_from(ino, inodes.dir_generation(ref.entry.key, ref.path),
                                   ref.meta, is_dir=True)
        file_ref = self._files.get(ino)
        if file_ref is not None:
            return self._attr_from(ino, 1, file_ref.meta, is_dir=False)
        raise TreeError(errno.ESTALE)

    def _namespace_of(self, ino: int) -> str | None:
        index = ino - inodes.FIRST_NAMESPACE_INO
        return NAMESPACES[index] if 0 <= index < len(NAMESPACES) else None

    def _child_attr(self, directory: DirRef, mdir: MergedDir, child: Child) -> Attr:
        if child.contribution is not None:
            path = mdir.child_path(child.name)
            ino = self._dir_ref(directory.entry, path, child.contribution, child.layer,
                                child.meta)
            return self._attr_from(ino, inodes.dir_generation(directory.entry.key, path),
                                   child.meta, is_dir=True)
        ino = self._file_ref(child.layer, mdir.child_path(child.name), child.meta)
        return self._attr_from(ino, 1, child.meta, is_dir=False)

    # ----- directories ----------------------------------------------------------------
    def dir_ready(self, ino: int) -> bool:
        """True when listing or looking up in `ino` needs no disk access."""
        ref = self._dirs.get(ino)
        return ref is None or self.resolver.cached_dir(ref.path, ref.contribution) is not None

    def merged(self, ino: int) -> tuple[DirRef, MergedDir]:
        ref = self._dirs.get(ino)
        if ref is None:
            raise TreeError(errno.ENOTDIR if ino in self._files else errno.ESTALE)
        return ref, self.resolver.merged_dir(ref.path, ref.contribution, ref.layer, ref.meta)

    def lookup(self, parent: int, name: str) -> Attr:
        if name == ".":
            return self.attr(parent)
        if name == "..":
            return self.attr(self.parent_of(parent))
        if parent == inodes.ROOT_INO:
            if name in NAMESPACES:
                return self._synthetic_dir_attr(self._namespace_ino(name))
            raise TreeError(errno.ENOENT)
        namespace = self._namespace_of(parent)
        if namespace is not None:
            entry = self.entries[namespace].get(name)
            if entry is None:
                raise TreeError(errno.ENOENT)
            return self.attr(self.entry_root_ino(entry))
        ref, mdir = self.merged(parent)
        child = mdir.children.get(name)
        if child is None:
            raise TreeError(errno.ENOENT)
        return self._child_attr(ref, mdir, child)

    def parent_of(self, ino: int) -> int:
        """The parent directory of a directory inode (for LOOKUP(ino, ".."))."""
        if ino == inodes.ROOT_INO or self._namespace_of(ino) is not None:
            return inodes.ROOT_INO
        ref = self._dirs.get(ino)
        if ref is None:
            raise TreeError(errno.ENOTDIR if ino in self._files else errno.ESTALE)
        if not ref.path:
            return self._namespace_ino(ref.entry.namespace)
        parent_path = ref.path.rpartition("/")[0]
        mdir = self._dir_at(ref.entry, parent_path)
        return self._dir_ref(ref.entry, parent_path, mdir.contribution, mdir.layer, mdir.meta)

    def _dir_at(self, entry: Entry, path: str) -> MergedDir:
        """Walk from the entry's root to directory `path` (it must be one)."""
        root_ref = self._dirs[self.entry_root_ino(entry)]
        mdir = self.resolver.merged_dir("", root_ref.contribution, root_ref.layer,
                                        root_ref.meta)
        for part in path.split("/") if path else []:
            child = mdir.children.get(part)
            if child is None or child.contribution is None:
                raise TreeError(errno.ESTALE)
            mdir = self.resolver.dir_of(mdir, child)
        return mdir

    def listdir(self, ino: int) -> list[tuple[str, Attr]]:
        if ino == inodes.ROOT_INO:
            return [(ns, self._synthetic_dir_attr(self._namespace_ino(ns))) for ns in NAMESPACES]
        namespace = self._namespace_of(ino)
        if namespace is not None:
            return [(name, self.attr(self.entry_root_ino(entry)))
                    for name, entry in sorted(self.entries[namespace].items())]
        ref, mdir = self.merged(ino)
        return [(name, self._child_attr(ref, mdir, mdir.children[name])) for name in mdir.names]

    # ----- files ----------------------------------------------------------------------
    def _file(self, ino: int) -> FileRef:
        ref = self._files.get(ino)
        if ref is None:
            is_dir = (ino in self._dirs or ino == inodes.ROOT_INO
                      or self._namespace_of(ino) is not None)
            raise TreeError(errno.EISDIR if is_dir else errno.ESTALE)
        return ref

    def readlink(self, ino: int) -> bytes:
        ref = self._file(ino)
        if not stat.S_ISLNK(ref.meta.mode):
            raise TreeError(errno.EINVAL)
        return self.store.readlink(ref.layer, ref.path)

    def open(self, ino: int) -> int:
        """A read-only fd on the backing regular file."""
        ref = self._file(ino)
        if not stat.S_ISREG(ref.meta.mode):
            raise TreeError(errno.EACCES)
        return self.store.open_file(ref.layer, ref.path)

    # ----- provenance and extended attributes -------------------------------------------
    def origin(self, ino: int) -> str:
        """Which layer (and path in it) this entry's content and metadata come from."""
        if ino == inodes.ROOT_INO or self._namespace_of(ino) is not None:
            return "onesuite:namespace"
        ref = self._dirs.get(ino)
        layer, path = (ref.layer, ref.path) if ref is not None else self._file(ino)[:2]
        return f"{self.store.layer(layer).label} /{path}"

    def xattrs(self, ino: int) -> dict[str, bytes]:
        if ino == inodes.ROOT_INO or self._namespace_of(ino) is not None:
            values: dict[str, bytes] = {}
        else:
            ref = self._dirs.get(ino)
            layer, path = (ref.layer, ref.path) if ref is not None else self._file(ino)[:2]
            values = self.store.xattrs(layer, path)
        origin = self.origin(ino).encode("utf-8", "surrogateescape")
        values.update(dict.fromkeys(ORIGIN_XATTRS, origin))
        return values

    # ----- inode numbers issued by an earlier daemon ------------------------------------
    def recover(self, ino: int) -> bool:
        """Find an inode number this process never issued (the kernel or an NFS server still
        holds it from a previous daemon). Walks one view, or indexes the layers; slow, so
        adapters call it in a worker thread. True if found."""
        if ino in self._dirs or ino in self._files:
            return True
        if inodes.is_dir_ino(ino):
            entry = self._slots.get(inodes.slot_of(ino))
            return entry is not None and self._recover_dir(entry, ino)
        if inodes.is_backed_ino(ino):
            return self._recover_file(ino)
        return False

    def _recover_dir(self, entry: Entry, ino: int) -> bool:
        root_ino = self.entry_root_ino(entry)
        if root_ino == ino:
            return True
        _, root = self.merged(root_ino)
        for parent, child in self.resolver.walk(root):
            if child.contribution is not None:
                path = parent.child_path(child.name)
                if inodes.dir_ino(entry.slot, path) == ino:
                    self._dir_ref(entry, path, child.contribution, child.layer, child.meta)
                    return ino in self._dirs
        return False

    def _recover_file(self, ino: int) -> bool:
        with self._lock:
            if self._backing_index is None:
                index: dict[int, FileRef] = {}
                for layer_id in range(len(self.store.layers)):
                    for path, meta in self.store.walk(layer_id):
                        if not meta.is_dir:
                            index.setdefault(inodes.backed_ino(meta.dev, meta.ino),
                                             FileRef(layer_id, path, meta))
                self._backing_index = index
        ref = self._backing_index.get(ino)
        if ref is None:
            return False
        self._files.setdefault(ino, ref)
        return True

    def statfs(self) -> os.statvfs_result:
        first = next(iter(self.site.images.values()), None)
        return os.statvfs(first.path if first else self.site.layout.root)
