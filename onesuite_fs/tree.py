"""The mount's whole tree, independent of FUSE: ``nodes/``, ``groups/``, ``images/`` and each
entry's root, addressed by deterministic inode numbers.

A node's root is its merged layers (resolve.py) with its oneSIS rules laid over them
(onesis_view.py); under the ``persistent`` policy some paths are node-private and writable
(state.py). This is what the FUSE adapter translates and what the CLI reads, so both see the
same answers. Every method is synchronous; those that may touch the disk for a directory not
seen yet are announced by ``dir_ready`` so an adapter can run ``prepare`` in a worker thread.

Two ways in: by inode number (the mount, NFS handles: every entry looked up is registered so
its number can be answered later), and by path from a view's root (``root_node``,
``children``: one-pass readers such as export and convert, which register nothing and, with
``bounded_caches``, keep only recent listings, so their memory does not grow with the root).
Both answer from the same resolution code.
"""

from __future__ import annotations

import array
import bisect
import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

from . import inodes
from .birth import birth
from .bounded import DEFAULT_ENTRY_LIMIT, BoundedCache, entries_of
from .layers import LayerStore, Meta
from .model import Site
from .onesis_config import OnesisSource
from .onesis_view import (
    Item,
    Linked,
    NodeOnesis,
    Synthetic,
    Writable,
    chained_link_text,
    synthetic_mode,
)
from .pending_state import pending_copy_ref, pending_provenance, pending_ref
from .provenance import Kind, Provenance
from .resolve import Child, Contribution, MergedDir, Resolver
from .sources.onesis import RamPath
from .stack import Stages, group_stages, image_stages, node_stages
from .state import NodeAttrs, NodeState
from .updateclient import Installed, installed_view, keep_excluded

R = TypeVar("R")
NAMESPACES = ("nodes", "groups", "images")
# The kernel serves user.* extended attributes only on regular files and directories, so the
# origin is also under trusted.* (root only), which the kernel allows on every file type.
# What mknod may make in a persistent path (none of them is a special file on the server).
MKNOD_TYPES = (stat.S_IFREG, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)
ORIGIN_XATTRS = ("user.onesuite.origin", "trusted.onesuite.origin")


class TreeError(Exception):
    """An errno-carrying failure the adapters turn into their own error."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or os.strerror(code))
        self.errno = code


class ChangedOnDisk(TreeError):
    """The backing file is no longer what this generation read: a reload is due."""

    def __init__(self) -> None:
        super().__init__(errno.ESTALE, "the backing file changed since it was read")


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
    # --override-order updateclient: the installed (autoinstall) stack and the exclusions
    # whose paths keep its entries (updateclient.py).
    installed: Installed | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def host(self) -> str | None:
        return self.name if self.namespace == "nodes" else None


class DirRef(NamedTuple):
    """A directory of a view: its view path, and where its merged content comes from."""

    entry: Entry
    path: str  # in the view
    source: str  # the merged directory's path in the layers (differs under a LINKBACK)
    contribution: Contribution
    layer: int  # metadata winner
    meta: Meta
    linkback: Linked | None = None  # the LINKBACK that shows this variant here, for provenance
    # A persistent directory not made yet, as the mount would make it (a tree that makes no
    # state: preview, explain): the rule that makes it. Its children are the copies -d makes.
    pending: RamPath | None = None
    # Under a LINKBACK'd directory: that directory's view path (symlinks inside it that climb
    # out of it resolve from the variant's place: onesis_view.chained_link_text).
    link_root: str | None = None


class FileRef(NamedTuple):
    """A layer's non-directory, the same in every view that shows it."""

    layer: int
    path: str
    meta: Meta


class PrivateRef(NamedTuple):
    """A view-private non-directory or synthetic entry: a LINKBACK path, a /ram link."""

    entry: Entry
    path: str
    meta: Meta
    layer: int | None  # backing layer of a LINKBACK'd file; None for synthetic entries
    source: str  # backing path, or the symlink text of a synthetic link
    provenance: Provenance


class StateRef(NamedTuple):
    """A node's persistent, writable entry (``persistent`` policy)."""

    entry: Entry
    path: str  # view path = path inside the node's state directory
    writable_root: str  # the view path the RAM*/LINK* rule made writable
    rule: RamPath  # that rule, for provenance


# The `layer` of a DirRef no layer has: /ram, an unused persistent directory (always empty).
SYNTHETIC_LAYER = -1
# What such a directory's origin says (for an unused persistent directory too, as before).
RAM_MOUNT_POINT = Provenance.synthetic("mount point of the /ram tmpfs", None, is_dir=True)
Ref = DirRef | FileRef | PrivateRef | StateRef


class Node(NamedTuple):
    """An entry of a view reached by path from the view's root, with what it shows: what a
    one-pass reader holds instead of an inode number (nothing is registered for it)."""

    name: str
    attr: Attr
    ref: Ref

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.attr.mode)


_PROCESS_NUMBERING: list[inodes.Numbering] = []


def _process_numbering() -> inodes.Numbering:
    """One ephemeral key per process: trees built in one process (a test's two daemons, a
    one-pass reader beside an inspection) agree on numbers without a key file."""
    if not _PROCESS_NUMBERING:
        _PROCESS_NUMBERING.append(inodes.Numbering.ephemeral())
    return _PROCESS_NUMBERING[0]


def _child_path(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return time.time_ns()


def stage_ids(store: LayerStore, stages: Stages) -> Contribution:
    ids = (tuple(store.add(e.layer) for e in stage if e.present) for stage in stages)
    return tuple(stage for stage in ids if stage)


class Tree:
    def __init__(self, site: Site, order: str, onesis: OnesisSource | None = None,
                 state_dir: Path | None = None, *, create_state: bool = False,
                 bounded_caches: bool = False,
                 numbering: inodes.Numbering | None = None, fidelity: str = "intent") -> None:
        self.site = site
        # "intent": an override's file shows its own bytes (what the admin meant);
        # "install": what a 4.3 install leaves, rsync's quick check and no xattrs included
        # (docs/semantics.md, "What an install really holds").
        self.fidelity = fidelity
        # Keyed numbers (NFS handles are capabilities); a serving tree is given the site's
        # key, anything else numbers with a key of its own process.
        self.numbering = numbering or _process_numbering()
        self.order = order
        # A serving tree keeps everything it read (a generation is a snapshot); a one-pass
        # reader keeps only recent listings (docs/architecture.md, "One-pass readers").
        limit = DEFAULT_ENTRY_LIMIT if bounded_caches else None
        self.store = LayerStore(limit)
        # Only autoinstall's passes are rsync -av without -I (pushoverrides' autoinstall
        # passes are too, but its push re-copies with -I: not modelled, semantics.md).
        self.resolver = Resolver(self.store, limit, quick_check=order == "autoinstall",
                                 install=fidelity == "install")
        self.onesis = onesis
        self.state_dir = state_dir
        # Only a serving mount makes a node's persistent paths; an inspection never writes.
        self.create_state = create_state
        # Times of the entries no layer has (namespaces, /ram, links into it): the topology's
        # mtime, so they only change when the topology does (a reload compares attributes).
        self.stable_ns = _mtime_ns(Path(site.cluster.source))
        self.entries: dict[str, dict[str, Entry]] = {ns: {} for ns in NAMESPACES}
        self._dirs: dict[int, DirRef] = {}
        self._files: dict[int, FileRef] = {}
        self._private: dict[int, PrivateRef] = {}
        self._state: dict[int, StateRef] = {}
        self._synthetic_dirs: set[int] = set()
        self._items: dict[tuple[str, str], dict[str, Item]] | BoundedCache = (
            {} if limit is None else BoundedCache(entries_of, limit))
        self._node_onesis: dict[str, NodeOnesis | None] = {}
        # Persistent paths of a listed directory not made yet, by (entry key, directory
        # path): making one may copy a whole tree, so `prepare` does it in a worker thread.
        self._unmade: dict[tuple[str, str], set[str]] = {}
        # Why `prepare` could not make one (a full disk): that path's requests get the error
        # (the rest of its directory still answers); the next request tries again.
        self._make_errors: dict[tuple[str, str, str], OSError] = {}
        # The listings `children` is reading (the directories on a walk's current path),
        # found by `child` even when the bounded caches have dropped them: a lookup next to
        # an entry must not read the directory again. (entry key, path) -> (readers, items)
        self._reading: dict[tuple[str, str], tuple[int, dict[str, Item]]] = {}
        self._backing_index: dict[int, FileRef] | None = None
        # Views `recover` walked to the end: their view-keyed numbers, sorted (a forged
        # number costs one walk per view, and 8 bytes per directory, not a registered view).
        self._view_numbers: dict[str, array.array[int]] = {}
        # Nodes whose persistent paths `recover` has walked (everything there registered).
        self._walked: set[str] = set()
        self._births: dict[tuple[int, int], bytes] = {}  # (dev, ino) -> birth time
        self.prescanned = False  # every layer directory read (a complete snapshot)
        # --override-order updateclient: views whose installed root has no exclude list
        # (si_updateclient stops there), shown as installed.
        self.not_updated: list[str] = []
        self._lock = threading.Lock()
        self._build_entries()
        if onesis is not None:
            onesis.load(self)  # parse every distinct sysimage.conf now: errors stop the start

    # ----- construction -------------------------------------------------------------
    def _build_entries(self) -> None:
        site = self.site
        memo: dict[object, object] = {}
        wanted: list[tuple[str, str, Stages]] = []
        wanted += [("nodes", host, node_stages(site, host, self.order, memo))
                   for host in site.nodes]
        wanted += [("groups", g.name, group_stages(site, g, self.order, memo))
                   for g in site.cluster.groups]
        wanted += [("images", name, image_stages(site, name)) for name in site.images]
        slots = self.numbering.assign_slots([f"{ns}/{name}" for ns, name, _ in wanted])
        contributions: dict[object, Contribution] = {}

        def ids_of(stages: Stages) -> Contribution:
            found = contributions.get(id(stages))
            if found is None:  # equal stacks are one object (memo): compute once
                found = contributions[id(stages)] = stage_ids(self.store, stages)
            return found

        groups = {g.name: g for g in site.cluster.groups}
        exclude_lists: dict[object, Installed | None] = {}
        for namespace, name, stages in wanted:
            contribution = ids_of(stages)
            installed = None
            if self.order == "updateclient" and namespace != "images":
                below = (node_stages(site, name, "autoinstall", memo) if namespace == "nodes"
                         else group_stages(site, groups[name], "autoinstall", memo))
                if id(below) not in exclude_lists:
                    exclude_lists[id(below)] = installed_view(self, below, ids_of(below))
                installed = exclude_lists[id(below)]
                if installed is None and ids_of(below):  # si_updateclient stops: as installed
                    self.not_updated.append(f"{namespace}/{name}")
                    stages, contribution = below, ids_of(below)
            if not contribution:
                continue  # a group with no image and no override directory: nothing to show
            self.entries[namespace][name] = Entry(namespace, name, stages, contribution,
                                                  slots[f"{namespace}/{name}"], installed)
        self._slots = {e.slot: e for ns in self.entries.values() for e in ns.values()}

    def prescan(self) -> int:
        """Read every layer directory of the site now (see LayerStore.prescan)."""
        entries = sum(self.store.prescan(layer_id) for layer_id in range(len(self.store.layers)))
        self.prescanned = True
        return entries

    def node_onesis(self, entry: Entry) -> NodeOnesis | None:
        """The node's oneSIS rules, compiled on first use (groups and images have none)."""
        if entry.host is None or self.onesis is None:
            return None
        if entry.key not in self._node_onesis:
            self._node_onesis[entry.key] = self.onesis.for_node(self, entry)
        return self._node_onesis[entry.key]

    def writable_nodes(self) -> set[str]:
        """The nodes with persistent, writable paths in their roots (exported read-write)."""
        return {host for host, entry in self.entries["nodes"].items()
                if (rules := self.node_onesis(entry)) is not None and rules.has_writable_paths}

    def merged_lookup(self, entry: Entry, path: str) -> tuple[str, Child] | None:
        """(parent path, entry) at an absolute path of the entry's merged layers, no rules."""
        relative = path.strip("/")
        if not relative:
            return None
        found = self.resolver.resolve_path(entry.contribution, relative)
        return None if found is None else (relative.rpartition("/")[0], found)

    # ----- inode numbers --------------------------------------------------------------
    def _register(self, table: dict[int, R], ino_of: Callable[[int], int],
                  key_matches: Callable[[R], bool], ref: R) -> int:
        probe = 0
        while True:
            ino = ino_of(probe)
            known = table.get(ino)
            if known is None:
                table[ino] = ref
                return ino
            if key_matches(known):
                return ino
            probe += 1  # a hash clash; the generation keeps old handles from crossing over

    def _dir_ref(self, ref: DirRef) -> int:
        return self._register(
            self._dirs,
            lambda probe: self.numbering.dir_ino(ref.entry.slot, ref.path, probe),
            lambda known: known.entry is ref.entry and known.path == ref.path, ref)

    def _file_ref(self, ref: FileRef) -> int:
        return self._register(
            self._files,
            lambda probe: self.numbering.backed_ino(ref.meta.dev, ref.meta.ino, probe),
            lambda known: (known.meta.dev, known.meta.ino) == (ref.meta.dev, ref.meta.ino),
            ref)

    def _private_ref(self, ref: PrivateRef) -> int:
        ino = self._register(
            self._private,
            lambda probe: self.numbering.dir_ino(ref.entry.slot, ref.path, probe, private=True),
            lambda known: known.entry is ref.entry and known.path == ref.path, ref)
        self._private[ino] = ref  # the rule may have chosen another variant since
        return ino

    def _state_ref(self, ref: StateRef, meta: Meta) -> int:
        ino = self.numbering.state_ino(meta.dev, meta.ino)
        self._state[ino] = ref  # renames move it: the newest name is the one that exists
        return ino

    def _namespace_ino(self, namespace: str) -> int:
        return inodes.FIRST_NAMESPACE_INO + NAMESPACES.index(namespace)

    def _namespace_of(self, ino: int) -> str | None:
        index = ino - inodes.FIRST_NAMESPACE_INO
        return NAMESPACES[index] if 0 <= index < len(NAMESPACES) else None

    def _is_fixed_dir(self, ino: int) -> bool:
        return ino == inodes.ROOT_INO or self._namespace_of(ino) is not None

    def serves_a_node(self, ino: int) -> bool:
        """Whether `ino` may be inside a node's root: not the mount root, a namespace
        directory, or anything of a group's or an image's view (what an NFS server thread
        may touch, docs/nfs.md). Layer files are shared by views and keyed, so they count."""
        if self._is_fixed_dir(ino):
            return False
        if inodes.is_view_keyed(ino):
            entry = self._slots.get(inodes.slot_of(ino))
            return entry is not None and entry.namespace == "nodes"
        return True

    def is_namespace(self, ino: int) -> bool:
        """nodes/, groups/ or images/: their entries are the views' roots."""
        return self._namespace_of(ino) is not None

    def entry_root_ino(self, entry: Entry) -> int:
        top = entry.contribution[-1][0]
        return self._dir_ref(DirRef(entry, "", "", entry.contribution, top,
                                    self.store.root_meta(top)))

    # ----- attributes -----------------------------------------------------------------
    def _fixed_attr(self, ino: int, mode: int = stat.S_IFDIR | 0o755) -> Attr:
        t = self.stable_ns
        return Attr(ino, 1, mode, 2, 0, 0, 0, 0, 0, t, t, t)

    @staticmethod
    def _attr_from(ino: int, generation: int, meta: Meta, *, is_dir: bool) -> Attr:
        # Directories report one link, as btrfs does: a merged directory's subdirectory
        # count would need its listing, and tools treat 1 as "unknown".
        return Attr(ino, generation, meta.mode, 1 if is_dir else meta.nlink, meta.uid, meta.gid,
                    meta.rdev, meta.size, meta.blocks, meta.atime_ns, meta.mtime_ns,
                    meta.ctime_ns)

    def attr(self, ino: int) -> Attr:
        if self._is_fixed_dir(ino) or ino in self._synthetic_dirs:
            return self._fixed_attr(ino)
        ref = self._registered(ino)
        if ref is None:
            raise TreeError(errno.ESTALE)
        return self._attr_of(ref, ino)

    def _registered(self, ino: int) -> Ref | None:
        return (self._dirs.get(ino) or self._files.get(ino) or self._private.get(ino)
                or self._state.get(ino))

    def _attr_of(self, ref: Ref, ino: int) -> Attr:
        """The attributes of what `ref` shows, under inode number `ino`."""
        if isinstance(ref, DirRef):
            if ref.layer == SYNTHETIC_LAYER:
                return self._fixed_attr(ino)
            return self._attr_from(ino, self._generation(ref), ref.meta, is_dir=True)
        if isinstance(ref, FileRef):
            return self._attr_from(ino, self.numbering.file_generation(ino, self._birth(ref)),
                                   ref.meta, is_dir=False)
        if isinstance(ref, PrivateRef):
            return self._attr_from(ino, self._generation(ref), ref.meta, is_dir=False)
        return self._state_attr(ref)[1]

    def _birth(self, ref: FileRef) -> bytes:
        """The backing file's birth time, once per file and generation: the file system
        reuses a removed file's inode number (so its number here), and without this a
        client's handle of a removed image file opened the next file made on it (another
        node's host key)."""
        if not self.create_state:
            return b""  # not a serving tree: its numbers are never handles (one-pass readers)
        key = (ref.meta.dev, ref.meta.ino)
        found = self._births.get(key)
        if found is None:
            parent, _, name = ref.path.rpartition("/")
            try:
                with self.store.open_dir(ref.layer, parent) as fd:
                    found = birth(fd, name, ref.meta.ino)
            except OSError:
                return b""  # gone or moved: the open finds out and answers for it
            self._births[key] = found
        return found

    def _generation(self, ref: DirRef | PrivateRef) -> int:
        return self.numbering.view_generation(ref.entry.key, ref.path, ref.source)

    def _state_meta(self, ref: StateRef) -> Meta:
        meta = self._node_state(ref.entry).lstat(ref.path)
        if meta is None:
            raise TreeError(errno.ESTALE)
        return meta

    def _state_attr(self, ref: StateRef) -> tuple[int, Attr]:
        found = self._node_state(ref.entry).identity(ref.path)
        if found is None:
            raise TreeError(errno.ESTALE)
        meta, entry_id = found
        ino = self._state_ref(ref, meta)
        # The entry's id in the generation: the store's file system gives a removed entry's
        # inode number to the next one made, whichever node makes it.
        return ino, self._attr_from(ino, self.numbering.file_generation(ino, entry_id), meta,
                                    is_dir=False)._replace(nlink=meta.nlink)

    def _registered_attr(self, ref: Ref) -> Attr:
        """Give `ref` its inode number (so the number can be answered later) and its
        attributes: the way in for the mount."""
        if isinstance(ref, DirRef):
            ino = self._dir_ref(ref)
            if ref.layer == SYNTHETIC_LAYER:
                self._synthetic_dirs.add(ino)
            return self._attr_of(ref, ino)
        if isinstance(ref, FileRef):
            return self._attr_of(ref, self._file_ref(ref))
        if isinstance(ref, PrivateRef):
            return self._attr_of(ref, self._private_ref(ref))
        return self._state_attr(ref)[1]

    def _unregistered_attr(self, ref: Ref) -> Attr:
        """The attributes of `ref` without registering it: the way in for one-pass readers.
        The number is the one the mount would issue (unless two hashes clash there)."""
        if isinstance(ref, DirRef):
            return self._attr_of(ref, self.numbering.dir_ino(ref.entry.slot, ref.path))
        if isinstance(ref, FileRef):
            return self._attr_of(ref, self.numbering.backed_ino(ref.meta.dev, ref.meta.ino))
        if isinstance(ref, PrivateRef):
            return self._attr_of(ref, self.numbering.dir_ino(ref.entry.slot, ref.path,
                                                             private=True))
        meta = self._state_meta(ref)
        ino = self.numbering.state_ino(meta.dev, meta.ino)
        return self._attr_from(ino, 1, meta, is_dir=False)._replace(nlink=meta.nlink)

    def _item_attr(self, directory: DirRef, item: Item) -> Attr:
        ref = self._item_ref(directory, item)
        if ref is None:
            raise TreeError(errno.ENOENT)
        return self._registered_attr(ref)

    def _item_ref(self, directory: DirRef, item: Item) -> Ref | None:
        """What one item of a directory shows."""
        entry, path = directory.entry, _child_path(directory.path, item.name)
        if directory.pending is not None and isinstance(item, Child):
            return pending_copy_ref(self, directory, path, item)
        if isinstance(item, Child):
            source = _child_path(directory.source, item.name)
            if item.contribution is not None:
                return DirRef(entry, path, source, item.contribution, item.layer, item.meta,
                              link_root=directory.link_root)
            if self.resolver.install and self._kept_by_install(directory, item.name):
                # Another layer's bytes under this entry's mode and owner: not the layer
                # file's inode (its attributes differ), a number of this view's own.
                return PrivateRef(entry, path, item.meta, item.layer, source, Provenance.of_layer(
                    self.store.layer(item.layer).label, source, is_dir=False))
            if directory.link_root is not None and stat.S_ISLNK(item.meta.mode):
                depth = directory.path.count("/") - directory.link_root.count("/")
                chained = self._chained_link(entry, path, item.layer, source, item.meta,
                                             directory.path, directory.source, depth, None)
                if chained is not None:
                    return chained
            return FileRef(item.layer, source, item.meta)
        if isinstance(item, Linked):
            variant, source = item.variant, _child_path(item.variant_parent, item.variant.name)
            if variant.contribution is not None:
                return DirRef(entry, path, source, variant.contribution, variant.layer,
                              variant.meta, item, link_root=path)
            provenance = Provenance.of_layer(self.store.layer(variant.layer).label, source,
                                             is_dir=False, rule=item.rule, reason=item.reason)
            if stat.S_ISLNK(variant.meta.mode):
                chained = self._chained_link(entry, path, variant.layer, source, variant.meta,
                                             directory.path, item.variant_parent, None,
                                             provenance)
                if chained is not None:
                    return chained
            return PrivateRef(entry, path, variant.meta, variant.layer, source, provenance)
        if isinstance(item, Synthetic):
            return self._synthetic_ref(entry, path, item)
        return self._writable_ref(directory, path, item)

    def _kept_by_install(self, directory: DirRef, name: str) -> tuple[int, int] | None:
        """(layer whose bytes an install keeps, layer whose entry came last) for a file of
        `directory` that rsync's quick check would not copy (resolve.py); else None."""
        if directory.pending is not None or directory.layer < 0:
            return None
        kept = self._merged(directory).kept
        return None if kept is None else kept.get(name)

    def install_keeps(self, parent: int, name: str) -> tuple[str, str] | None:
        """For the entry `name` of the directory `parent` (an inode of this tree): the labels
        of (the layer whose bytes an install keeps, the layer whose entry came last) when a
        4.3 install would not copy the file (same size and mtime: rsync's quick check)."""
        ref = self._dirs.get(parent)
        if ref is None or not isinstance(self._dir_items(ref).get(name), Child):
            return None
        found = self._kept_by_install(ref, name)
        if found is None:
            return None
        return self.store.layer(found[0]).label, self.store.layer(found[1]).label

    def _chained_link(self, entry: Entry, path: str, layer: int, source: str, meta: Meta,
                      link_dir: str, layer_dir: str, depth: int | None,
                      provenance: Provenance | None) -> PrivateRef | None:
        """A symlink reached through a LINKBACK, with the text that resolves where oneSIS's
        link chain resolves it; None when the layer's text already does."""
        text = self.store.readlink(layer, source)
        chained = chained_link_text(text, link_dir, layer_dir, depth)
        if chained == text:
            return None
        if provenance is None:
            provenance = Provenance.of_layer(self.store.layer(layer).label, source,
                                             is_dir=False)
        return PrivateRef(entry, path, meta._replace(size=len(chained)), None,
                          chained.decode("utf-8", "surrogateescape"), provenance)

    def _synthetic_ref(self, entry: Entry, path: str, item: Synthetic) -> DirRef | PrivateRef:
        provenance = Provenance.synthetic(item.reason, item.rule, is_dir=False)
        target = item.target or ""
        t = self.stable_ns
        meta = Meta(synthetic_mode(item), 0, 0, 1, 0, 0, len(target.encode()), t, t, t, 0, 0)
        if item.target is None:
            return DirRef(entry, path, path, (), SYNTHETIC_LAYER, meta)
        return PrivateRef(entry, path, meta, None, target, provenance)

    # ----- persistent, writable paths ---------------------------------------------------
    def _node_state(self, entry: Entry) -> NodeState:
        if self.state_dir is None:
            raise TreeError(errno.EROFS, "no state directory configured")
        return NodeState(self.state_dir / "nodes" / entry.name)

    def _writable_ref(self, directory: DirRef, path: str, item: Writable) -> Ref | None:
        state = self._node_state(directory.entry)
        if state.lstat(path) is None and not self.create_state:
            return self._unmade_writable_ref(directory, path, item)
        if state.lstat(path) is None:
            failed = self._make_errors.pop((directory.entry.key, directory.path, item.name),
                                           None)
            if failed is not None:
                raise OSError(failed.errno, failed.strerror, path)
            assert self.onesis is not None
            self.onesis.create_writable(self, directory.entry, state, path, item)
        key = (directory.entry.key, directory.path)
        unmade = self._unmade.get(key)
        if unmade is not None:
            unmade.discard(item.name)
            if not unmade:
                self._unmade.pop(key, None)
        return StateRef(directory.entry, path, path, item.rule)

    def _unmade_writable_ref(self, directory: DirRef, path: str, item: Writable) -> Ref:
        """A persistent path no one has used yet, seen without making it (preview): what the
        mount would make of it, as the mount would show it (pending_state.py)."""
        assert self.onesis is not None
        return pending_ref(self, self.onesis, directory, path, item)

    # ----- directories ----------------------------------------------------------------
    def fixed_dirs(self) -> list[int]:
        return [inodes.ROOT_INO, *(self._namespace_ino(ns) for ns in NAMESPACES)]

    def path_of(self, ino: int) -> str:
        """A fixed directory's path in the mount ('' for the root)."""
        return self._namespace_of(ino) or ""

    def dirs_in_use(self) -> list[tuple[int, DirRef]]:
        """The directories of views whose merged listing exists: what clients have seen."""
        return [(ino, ref) for ino, ref in list(self._dirs.items())
                if ino not in self._synthetic_dirs
                and self.resolver.cached_dir(ref.source, ref.contribution) is not None]

    def is_dir(self, ino: int) -> bool:
        if ino in self._dirs or self._is_fixed_dir(ino) or ino in self._synthetic_dirs:
            return True
        state = self._state.get(ino)
        return state is not None and stat.S_ISDIR(self.attr(ino).mode)

    def dir_ready(self, ino: int) -> bool:
        """True when listing or looking up in `ino` needs no disk access."""
        ref = self._dirs.get(ino)
        if ref is None or ino in self._synthetic_dirs:
            return True
        if self.resolver.cached_dir(ref.source, ref.contribution) is None:
            return False
        onesis = self.node_onesis(ref.entry)
        key = (ref.entry.key, ref.path)
        return (onesis is None or not onesis.touches(ref.path)
                or (key in self._items and not self._unmade.get(key)))

    def prepare(self, ino: int) -> None:
        """Do the disk work `dir_ready` announced (call it in a worker thread)."""
        ref = self._dirs.get(ino)
        if ref is not None and ino not in self._synthetic_dirs:
            items = self._dir_items(ref)
            for name in list(self._unmade.get((ref.entry.key, ref.path), ())):
                item = items.get(name)
                if not isinstance(item, Writable):
                    continue
                failed = (ref.entry.key, ref.path, name)
                self._make_errors.pop(failed, None)
                try:
                    self._writable_ref(ref, _child_path(ref.path, name), item)
                except OSError as exc:  # logged by create_writable
                    self._make_errors[failed] = exc

    def _merged(self, ref: DirRef) -> MergedDir:
        return self.resolver.merged_dir(ref.source, ref.contribution, ref.layer, ref.meta)

    def _dir_items(self, ref: DirRef) -> dict[str, Item]:
        mdir = self._merged(ref)
        onesis = self.node_onesis(ref.entry)
        patches = onesis is not None and ref.pending is None and onesis.touches(ref.path)
        installed = ref.entry.installed
        if not patches and installed is None:
            return mdir.children  # type: ignore[return-value]
        key = (ref.entry.key, ref.path)
        items = self._items.get(key)
        if items is None:
            children: dict[str, Child] = mdir.children
            if installed is not None and ref.pending is None and ref.layer >= 0:
                children = keep_excluded(self, installed, ref.source, children)
            if not patches:
                self._items[key] = children  # type: ignore[assignment]
                return children  # type: ignore[return-value]
            assert onesis is not None
            items = onesis.patch(ref.path, children, ref.source,
                                 lambda target: self.merged_lookup(ref.entry, target))
            if self.create_state:
                writable = {n for n, item in items.items() if isinstance(item, Writable)}
                if writable:
                    self._unmade[key] = writable  # until each is known to exist
            self._items[key] = items
        return items

    def lookup(self, parent: int, name: str) -> Attr:
        if name == ".":
            return self.attr(parent)
        if name == "..":
            return self.attr(self.parent_of(parent))
        if parent == inodes.ROOT_INO:
            if name in NAMESPACES:
                return self._fixed_attr(self._namespace_ino(name))
            raise TreeError(errno.ENOENT)
        namespace = self._namespace_of(parent)
        if namespace is not None:
            entry = self.entries[namespace].get(name)
            if entry is None:
                raise TreeError(errno.ENOENT)
            return self.attr(self.entry_root_ino(entry))
        state = self._state.get(parent)
        if state is not None:
            return self._state_child_attr(state, name)
        if parent in self._synthetic_dirs:
            raise TreeError(errno.ENOENT)
        ref = self._dir(parent)
        item = self._dir_items(ref).get(name)
        if item is None:
            raise TreeError(errno.ENOENT)
        return self._item_attr(ref, item)

    def _dir(self, ino: int) -> DirRef:
        ref = self._dirs.get(ino)
        if ref is None:
            known = ino in self._files or ino in self._private or ino in self._state
            raise TreeError(errno.ENOTDIR if known else errno.ESTALE)
        return ref

    def _state_child_attr(self, parent: StateRef, name: str) -> Attr:
        ref = parent._replace(path=_child_path(parent.path, name))
        if self._node_state(parent.entry).lstat(ref.path) is None:
            raise TreeError(errno.ENOENT)
        return self._state_attr(ref)[1]

    def parent_of(self, ino: int) -> int:
        """The parent directory of a directory inode (for LOOKUP(ino, ".."))."""
        if self._is_fixed_dir(ino):
            return inodes.ROOT_INO
        state = self._state.get(ino)
        ref = self._dirs.get(ino)
        entry, path = (state.entry, state.path) if state else (ref.entry, ref.path) if ref \
            else (None, "")
        if entry is None:
            raise TreeError(errno.ENOTDIR if ino in self._files else errno.ESTALE)
        if not path:
            return self._namespace_ino(entry.namespace)
        parent_path = path.rpartition("/")[0]
        if state is not None and path != state.writable_root:
            return self._state_attr(state._replace(path=parent_path))[0]
        return self._dir_at(entry, parent_path)

    def _dir_at(self, entry: Entry, path: str) -> int:
        """The inode of directory `path` of the entry's view, walking from its root."""
        ino = self.entry_root_ino(entry)
        for part in path.split("/") if path else []:
            ino = self.lookup(ino, part).ino
        if ino not in self._dirs and ino not in self._state:
            raise TreeError(errno.ESTALE)
        return ino

    def listing_is_stable(self, ino: int) -> bool:
        """Whether only a reload can change this directory's listing (no persistent,
        writable path in it or below it in the listing's attributes)."""
        if self._is_fixed_dir(ino):
            return True
        ref = self._dirs.get(ino)
        if ref is None or ino in self._synthetic_dirs:
            return False
        onesis = self.node_onesis(ref.entry)
        return onesis is None or onesis.policy != "persistent" or not onesis.touches(ref.path)

    def listdir(self, ino: int) -> list[tuple[str, Attr]]:
        if ino == inodes.ROOT_INO:
            return [(ns, self._fixed_attr(self._namespace_ino(ns))) for ns in NAMESPACES]
        namespace = self._namespace_of(ino)
        if namespace is not None:
            return [(name, self.attr(self.entry_root_ino(entry)))
                    for name, entry in sorted(self.entries[namespace].items())]
        if ino in self._synthetic_dirs:
            return []
        state = self._state.get(ino)
        if state is not None:
            names = sorted(self._node_state(state.entry).listing(state.path))
            return [(name, self._state_child_attr(state, name)) for name in names]
        ref = self._dir(ino)
        items = self._dir_items(ref)
        refs = ((name, self._item_ref(ref, items[name])) for name in sorted(items))
        return [(name, self._registered_attr(child)) for name, child in refs if child is not None]

    # ----- by path, for one-pass readers ------------------------------------------------
    def root_node(self, entry: Entry) -> Node:
        """A view's root directory, to walk with `children` (nothing is registered)."""
        top = entry.contribution[-1][0]
        ref = DirRef(entry, "", "", entry.contribution, top, self.store.root_meta(top))
        return Node("", self._unregistered_attr(ref), ref)

    def children(self, node: Node) -> Iterator[Node]:
        """A directory's entries in name order, made one at a time (a huge directory is not
        held twice); empty for a non-directory."""
        ref = node.ref
        if isinstance(ref, StateRef):
            if not node.is_dir:
                return
            for name in sorted(self._node_state(ref.entry).listing(ref.path)):
                child = ref._replace(path=_child_path(ref.path, name))
                yield Node(name, self._unregistered_attr(child), child)
            return
        if not isinstance(ref, DirRef) or ref.layer == SYNTHETIC_LAYER:
            return
        key = (ref.entry.key, ref.path)
        readers, items = self._reading.get(key) or (0, self._dir_items(ref))
        self._reading[key] = (readers + 1, items)
        try:
            for name in sorted(items):
                found = self._item_ref(ref, items[name])
                if found is not None:
                    yield Node(name, self._unregistered_attr(found), found)
        finally:
            readers = self._reading[key][0] - 1
            if readers:
                self._reading[key] = (readers, items)
            else:
                del self._reading[key]

    def child(self, node: Node, name: str) -> Node | None:
        """One entry of a directory by name (None if it has none)."""
        ref = node.ref
        if isinstance(ref, StateRef):
            child = ref._replace(path=_child_path(ref.path, name))
            if not node.is_dir or self._node_state(ref.entry).lstat(child.path) is None:
                return None
            return Node(name, self._unregistered_attr(child), child)
        if not isinstance(ref, DirRef) or ref.layer == SYNTHETIC_LAYER:
            return None
        reading = self._reading.get((ref.entry.key, ref.path))
        item = (reading[1] if reading else self._dir_items(ref)).get(name)
        found = None if item is None else self._item_ref(ref, item)
        return None if found is None else Node(name, self._unregistered_attr(found), found)

    def open_node(self, node: Node) -> int:
        """A read-only fd on a regular file found by path (the caller closes it)."""
        return self._open_ref(node.ref, os.O_RDONLY)

    def readlink_node(self, node: Node) -> bytes:
        return self._readlink_ref(node.ref)

    def node_xattrs(self, node: Node) -> dict[str, bytes]:
        """The entry's own extended attributes (without the Tree's provenance)."""
        return self._own_xattrs(node.ref)

    # ----- files ----------------------------------------------------------------------
    def _non_dir(self, ino: int) -> Ref:
        """The registered entry `ino` names, refused for a directory of a view."""
        ref = self._files.get(ino) or self._private.get(ino) or self._state.get(ino)
        if ref is None:
            is_dir = ino in self._dirs or self._is_fixed_dir(ino)
            raise TreeError(errno.EISDIR if is_dir else errno.ESTALE)
        return ref

    @staticmethod
    def _backing(ref: Ref) -> FileRef | None:
        """The layer file a non-directory shows; None for a synthetic link."""
        if isinstance(ref, DirRef):
            raise TreeError(errno.EISDIR)
        if isinstance(ref, PrivateRef):
            return None if ref.layer is None else FileRef(ref.layer, ref.source, ref.meta)
        assert isinstance(ref, FileRef)
        return ref

    def readlink(self, ino: int) -> bytes:
        return self._readlink_ref(self._non_dir(ino))

    def _readlink_ref(self, ref: Ref) -> bytes:
        if isinstance(ref, StateRef):
            return self._node_state(ref.entry).readlink(ref.path)
        backing = self._backing(ref)
        if backing is None:
            assert isinstance(ref, PrivateRef)
            return ref.source.encode("utf-8", "surrogateescape")
        if not stat.S_ISLNK(backing.meta.mode):
            raise TreeError(errno.EINVAL)
        return self.store.readlink(backing.layer, backing.path)

    def open(self, ino: int, flags: int = os.O_RDONLY) -> int:
        """An fd on the backing regular file: read-only, except for persistent paths."""
        return self._open_ref(self._non_dir(ino), flags)

    def _open_ref(self, ref: Ref, flags: int) -> int:
        if isinstance(ref, StateRef):
            return self._node_state(ref.entry).open(ref.path, flags)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise TreeError(errno.EROFS)
        backing = self._backing(ref)
        if backing is None and stat.S_ISREG(ref.meta.mode):  # type: ignore[union-attr]
            return os.open(os.devnull, os.O_RDONLY)  # a persistent file not made: empty
        if backing is None or not stat.S_ISREG(backing.meta.mode):
            raise TreeError(errno.EACCES)
        fd = self.store.open_file(backing.layer, backing.path)
        # Serve only the file this generation read: a file replaced or rewritten since would
        # be new bytes under old attributes (a torn read). The adapter reloads and retries.
        meta = backing.meta
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (
                meta.dev, meta.ino, meta.size, meta.mtime_ns):
            os.close(fd)
            raise ChangedOnDisk()
        return fd

    # ----- writes: only inside a node's persistent paths ----------------------------------
    def _state_parent(self, parent: int) -> StateRef:
        state = self._state.get(parent)
        if state is None:
            raise TreeError(errno.EROFS)
        return state

    def _child_state(self, parent: int, name: str) -> tuple[NodeState, StateRef]:
        state = self._state_parent(parent)
        child = state._replace(path=_child_path(state.path, name))
        return self._node_state(state.entry), child

    def create(self, parent: int, name: str, mode: int, flags: int, uid: int,
               gid: int) -> tuple[int, Attr]:
        node_state, child = self._child_state(parent, name)
        fd = node_state.create(child.path, flags,
                               NodeAttrs(stat.S_IFREG | stat.S_IMODE(mode), uid, gid))
        return fd, self._state_attr(child)[1]

    def make(self, parent: int, name: str, kind: str, mode: int, uid: int, gid: int,
             target: bytes = b"", rdev: int = 0) -> Attr:
        """mkdir, symlink or mknod inside a persistent path. Mode (setuid bits included),
        owner and device number are kept as the entry's node attributes (state.py)."""
        node_state, child = self._child_state(parent, name)
        if kind == "dir":
            node_state.mkdir(child.path, NodeAttrs(stat.S_IFDIR | stat.S_IMODE(mode), uid, gid))
        elif kind == "symlink":
            node_state.symlink(child.path, target, NodeAttrs(stat.S_IFLNK | 0o777, uid, gid))
        else:
            file_type = stat.S_IFMT(mode) or stat.S_IFREG
            if file_type not in MKNOD_TYPES:
                raise TreeError(errno.EINVAL)
            special = file_type in (stat.S_IFCHR, stat.S_IFBLK)
            node_state.mknod(child.path, NodeAttrs(file_type | stat.S_IMODE(mode), uid, gid,
                                                   rdev if special else 0))
        return self._state_attr(child)[1]

    def remove(self, parent: int, name: str, *, is_dir: bool) -> None:
        node_state, child = self._child_state(parent, name)
        (node_state.rmdir if is_dir else node_state.unlink)(child.path)

    def rename(self, parent: int, name: str, new_parent: int, new_name: str) -> None:
        node_state, old = self._child_state(parent, name)
        _, new = self._child_state(new_parent, new_name)
        if old.entry is not new.entry:
            raise TreeError(errno.EXDEV)
        node_state.rename(old.path, new.path)
        # The kernel keeps the moved inodes: point them (and a directory's descendants) at
        # their new paths.
        prefix = old.path + "/"
        for ino, ref in list(self._state.items()):
            if ref.entry is old.entry and (ref.path == old.path or ref.path.startswith(prefix)):
                moved = new.path + ref.path[len(old.path):]
                self._state[ino] = ref._replace(path=moved, writable_root=new.writable_root,
                                                rule=new.rule)

    def set_attrs(self, ino: int, **changes: int | tuple[int, int] | None) -> Attr:
        state = self._state.get(ino)
        if state is None:
            raise TreeError(errno.EROFS)
        self._node_state(state.entry).set_attrs(state.path, **changes)  # type: ignore[arg-type]
        return self._state_attr(state)[1]

    # ----- provenance and extended attributes -------------------------------------------
    def provenance(self, ino: int) -> Provenance:
        """Which layer (and path in it) this entry's content and metadata come from, and for
        a oneSIS path which rule put it there."""
        if self._is_fixed_dir(ino):
            return Provenance.namespace()
        if ino in self._synthetic_dirs:
            return RAM_MOUNT_POINT
        ref = self._registered(ino)
        if ref is None:
            raise TreeError(errno.ESTALE)
        return self._provenance_of(ref)

    def node_provenance(self, node: Node) -> Provenance:
        """The provenance of an entry found by path (the same value the mount's is)."""
        return self._provenance_of(node.ref)

    def _provenance_of(self, ref: Ref) -> Provenance:
        if isinstance(ref, PrivateRef):
            return ref.provenance
        if isinstance(ref, StateRef):
            rule = ref.rule
            return Provenance.persistent(ref.entry.name, ref.path, rule.kind, rule.pattern,
                                         f"{rule.file}:{rule.line}")
        if isinstance(ref, DirRef):
            if ref.pending is not None:
                return pending_provenance(ref.entry, ref.path, ref.pending, is_dir=True)
            if ref.layer == SYNTHETIC_LAYER:
                return RAM_MOUNT_POINT
            linkback = ref.linkback
            return Provenance.of_layer(self.store.layer(ref.layer).label, ref.source,
                                       is_dir=True,
                                       rule=linkback.rule if linkback else None,
                                       reason=linkback.reason if linkback else None)
        return Provenance.of_layer(self.store.layer(ref.layer).label, ref.path, is_dir=False,
                                   hard_links=ref.meta.nlink)

    def origin(self, ino: int) -> str:
        """The ``user.onesuite.origin`` text of an entry."""
        return self.provenance(ino).xattr_text()

    def describe(self, ino: int) -> str:
        """A registered inode's path in the mount (a layer file: its layer and path), for
        logs; never raises."""
        if self._is_fixed_dir(ino):
            return "/" + self.path_of(ino)
        ref = self._registered(ino)
        if isinstance(ref, DirRef | PrivateRef | StateRef):
            return f"/{ref.entry.key}/{ref.path}".rstrip("/")
        if isinstance(ref, FileRef):
            return f"{self.store.layer(ref.layer).label} /{ref.path}"
        return f"inode {ino}"

    def xattrs(self, ino: int) -> dict[str, bytes]:
        values: dict[str, bytes] = {}
        if not self._is_fixed_dir(ino):
            ref = self._registered(ino)
            if ref is None:
                raise TreeError(errno.ESTALE)
            values = self._own_xattrs(ref)
        origin = self.origin(ino).encode("utf-8", "surrogateescape")
        values.update(dict.fromkeys(ORIGIN_XATTRS, origin))
        return values

    def _own_xattrs(self, ref: Ref) -> dict[str, bytes]:
        if isinstance(ref, StateRef):
            return self._node_state(ref.entry).xattrs(ref.path)
        if self.fidelity == "install":
            return {}  # SystemImager 4.3's rsync passes have no -X: no xattr is installed
        if isinstance(ref, DirRef):
            if ref.layer == SYNTHETIC_LAYER or ref.pending is not None:
                return {}  # a persistent path is made without the layer's xattrs
            return self.store.xattrs(ref.layer, ref.source)
        if isinstance(ref, PrivateRef) and ref.provenance.kind is Kind.PERSISTENT:
            return {}
        backing = self._backing(ref)
        return {} if backing is None else self.store.xattrs(backing.layer, backing.path)

    # ----- inode numbers issued by an earlier daemon ------------------------------------
    def recover(self, ino: int) -> bool:
        """Find an inode number this process never issued (the kernel or an NFS server still
        holds it from a previous daemon). Walks one view, or indexes the layers; slow, so
        adapters call it in a worker thread. True if found."""
        if any(ino in table for table in (self._dirs, self._files, self._private, self._state)):
            return True
        if inodes.is_view_keyed(ino):
            entry = self._slots.get(inodes.slot_of(ino))
            return entry is not None and self._recover_in_view(entry, ino)
        if inodes.is_state_ino(ino):
            return any(self._recover_state(e, ino) for e in self.entries["nodes"].values())
        if inodes.is_backed_ino(ino):
            return self._recover_file(ino)
        return False

    def _recover_in_view(self, entry: Entry, wanted: int) -> bool:
        """Walk the entry's view by path (rules included; nothing registered on the way)
        until `wanted`, and register only that entry (its parents come by `..` as the kernel
        asks). A walk that misses keeps the view's view-keyed numbers, 8 bytes each, sorted:
        a made-up number is then refused without walking again, and memory does not grow by
        a registered view per forged handle."""
        known = self._view_numbers.get(entry.key)
        if known is not None:
            at = bisect.bisect_left(known, wanted)
            if at == len(known) or known[at] != wanted:
                return False
        numbers = array.array("Q")
        pending = [self.root_node(entry)]
        while pending:
            node = pending.pop()
            if node.attr.ino == wanted:
                self._registered_attr(node.ref)
                return True
            if inodes.is_view_keyed(node.attr.ino):
                numbers.append(node.attr.ino)
            if node.is_dir:
                pending.extend(self.children(node))
        self._view_numbers[entry.key] = array.array("Q", sorted(numbers))
        return False

    def _recover_state(self, entry: Entry, wanted: int) -> bool:
        """Look for a persistent entry of this node: only in the directories on the way to
        its writable paths and below them (a forged number must not walk every root)."""
        key = f"state:{entry.key}"
        if key in self._walked:
            return wanted in self._state
        rules = self.node_onesis(entry)
        pending = [(self.entry_root_ino(entry), "")] if rules and rules.has_writable_paths \
            else []
        while pending:
            ino, path = pending.pop()
            for name, attr in self.listdir(ino):
                if attr.ino == wanted:
                    return True
                child = f"{path}/{name}" if path else name
                if stat.S_ISDIR(attr.mode) and rules is not None \
                        and rules.may_reach_writable(child):
                    pending.append((attr.ino, child))
        self._walked.add(key)
        return False

    def adopt(self, old: Tree, ino: int) -> bool:
        """Register a number the earlier generation `old` issued, if the same path still
        shows the same object here (same number, same generation): one path walk, not a
        recovery walk, so a number gone since (a replaced file) costs no more than that.
        Call it in a worker thread. True if this generation now answers `ino`."""
        ref = old._registered(ino)
        try:
            if isinstance(ref, FileRef):
                return self._adopt_file(old, ref, ino)
            if ref is None:
                return False
            entry = self.entries[ref.entry.namespace].get(ref.entry.name)
            if entry is None:
                return False
            attr = self.attr(self.entry_root_ino(entry))
            for part in ref.path.split("/") if ref.path else []:
                attr = self.lookup(attr.ino, part)
            return attr.ino == ino and attr.generation == old.attr(ino).generation
        except TreeError:
            return False

    def _adopt_file(self, old: Tree, ref: FileRef, ino: int) -> bool:
        """A layer file `old` knew: the same backing file at the same path of the same layer
        here (any view may show it, as for a number an earlier daemon issued)."""
        layer = old.store.layer(ref.layer)
        layer_id = next((i for i, known in enumerate(self.store.layers) if known == layer),
                        None)
        if layer_id is None:
            return False
        parent, _, name = ref.path.rpartition("/")
        meta = (self.store.listing(layer_id, parent) or {}).get(name)
        if meta is None or (meta.dev, meta.ino) != (ref.meta.dev, ref.meta.ino):
            return False
        return self._file_ref(FileRef(layer_id, ref.path, meta)) == ino

    def merge_marks(self) -> tuple[int, int]:
        """Changes whenever a directory of a view comes into use (registered, or merged):
        `dirs_in_use` can only have grown when this changed (both counts only grow)."""
        return len(self._dirs), self.resolver.merged_count()

    def _recover_file(self, ino: int) -> bool:
        with self._lock:
            if self._backing_index is None:
                index: dict[int, FileRef] = {}
                for layer_id in range(len(self.store.layers)):
                    for path, meta in self.store.walk(layer_id):
                        if not meta.is_dir:
                            index.setdefault(self.numbering.backed_ino(meta.dev, meta.ino),
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
