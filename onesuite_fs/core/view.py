"""Every root of a site, read by path and without side effects: ``nodes/``, ``groups/`` and
``images/`` entries, each its merged layers (resolve.py) with, for a node, its oneSIS rules laid
over them (onesis_view.py) and its persistent, writable paths (state.py) as they are now.

This is the one definition of what a root shows. The daemon numbers its entries and serves
them by inode (daemon/inode_tree.py); preview, explain, diff, export and convert walk it by path
(``root_node``, ``children``, ``child``) and register nothing, and with ``bounded_caches`` only
recent listings are kept, so their memory does not grow with the root. Reading never writes:
a persistent path no one has used yet is shown as what it would start from; making it is the
daemon's job. Every method is synchronous and may read the layers.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from . import inodes
from .bounded import DEFAULT_ENTRY_LIMIT, BoundedCache, entries_of
from .entry import NAMESPACES, Entry, stage_ids
from .fingerprint import fingerprint
from .generated import with_install_writes
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
from .refs import (
    RAM_MOUNT_POINT,
    SYNTHETIC_LAYER,
    Attr,
    DirRef,
    FileRef,
    Node,
    PrivateRef,
    Ref,
    StateRef,
)
from .resolve import Child, MergedDir, Resolver
from .stack import Stages, group_stages, image_stages, node_stages
from .state import NodeState
from .updateclient import Installed, installed_view, keep_excluded

__all__ = ["NAMESPACES", "Attr", "ChangedOnDisk", "DirRef", "Entry", "FileRef", "Node",
           "PrivateRef", "Ref", "StateRef", "TreeError", "View"]


class TreeError(Exception):
    """An errno-carrying failure the adapters turn into their own error."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or os.strerror(code))
        self.errno = code


class ChangedOnDisk(TreeError):
    """The backing file is no longer what this generation read: a reload is due."""

    def __init__(self) -> None:
        super().__init__(errno.ESTALE, "the backing file changed since it was read")


# Keyed-hash generations a serving view keeps (about 300 bytes each); emptied when full.
GENERATION_MEMO = 16384

_PROCESS_NUMBERING: list[inodes.Numbering] = []


def process_numbering() -> inodes.Numbering:
    """One ephemeral key per process: views built in one process (a test's two daemons, a
    one-pass reader beside an inspection) agree on numbers without a key file."""
    if not _PROCESS_NUMBERING:
        _PROCESS_NUMBERING.append(inodes.Numbering.ephemeral())
    return _PROCESS_NUMBERING[0]


def child_path(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return time.time_ns()


class View:
    """The roots of one site at one moment: what the mount serves and the CLI reads."""

    def __init__(self, site: Site, order: str, onesis: OnesisSource | None = None,
                 state_dir: Path | None = None, *, bounded_caches: bool = False,
                 numbering: inodes.Numbering | None = None,
                 serving: bool = False, fidelity: str = "intent",
                 whiteouts: bool = False) -> None:
        self.site = site
        # "intent": an override's file shows its own bytes (what the admin meant);
        # "install": what a 4.3 install leaves, rsync's quick check and no xattrs included
        # (docs/semantics.md, "What an install really holds").
        self.fidelity = fidelity
        # A serving view answers the same entries again and again: it keeps the keyed
        # generations it computed (bounded); a one-pass reader keeps nothing.
        self.serving = serving
        # Keyed numbers (NFS handles are capabilities); a serving view is given the site's
        # key, anything else numbers with a key of its own process.
        self.numbering = numbering or process_numbering()
        self.order = order
        # A serving view keeps everything it read (a generation is a snapshot); a one-pass
        # reader keeps only recent listings (docs/architecture.md, "One-pass readers").
        limit = DEFAULT_ENTRY_LIMIT if bounded_caches else None
        # whiteouts: each override's list beside it hides paths below it (whiteouts.py).
        self.store = LayerStore(limit, read_whiteouts=whiteouts)
        # Only autoinstall's passes are rsync -av without -I (pushoverrides' autoinstall
        # passes are too, but its push re-copies with -I: not modelled, semantics.md).
        self.resolver = Resolver(self.store, limit, quick_check=order == "autoinstall",
                                 install=fidelity == "install")
        self.onesis = onesis
        self.state_dir = state_dir
        # Times of the entries no layer has (namespaces, /ram, links into it): the topology's
        # mtime, so they only change when the topology does (a reload compares attributes).
        self.stable_ns = _mtime_ns(Path(site.cluster.source))
        self.entries: dict[str, dict[str, Entry]] = {ns: {} for ns in NAMESPACES}
        self._items: dict[tuple[str, str], dict[str, Item]] | BoundedCache = (
            {} if limit is None else BoundedCache(entries_of, limit))
        self._node_onesis: dict[str, NodeOnesis | None] = {}
        # The listings `children` is reading (the directories on a walk's current path),
        # found by `child` even when the bounded caches have dropped them: a lookup next to
        # an entry must not read the directory again. (entry key, path) -> (readers, items)
        self._reading: dict[tuple[str, str], tuple[int, dict[str, Item]]] = {}
        self._generations: dict[tuple[str, str, str], int] = {}  # serving views only
        self._file_generations: dict[tuple[int, bytes], int] = {}  # serving views only
        self.prescanned = False  # every layer directory read (a complete snapshot)
        self.fingerprint: str | None = None  # of the complete snapshot, once prescanned
        # --override-order updateclient: views whose installed root has no exclude list
        # (si_updateclient stops there), shown as installed.
        self.not_updated: list[str] = []
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
        contributions: dict[object, tuple[tuple[int, ...], ...]] = {}

        def ids_of(stages: Stages) -> tuple[tuple[int, ...], ...]:
            found = contributions.get(id(stages))
            if found is None:  # equal stacks are one object (memo): compute once
                found = contributions[id(stages)] = stage_ids(self.store, stages)
            return found

        groups = {g.name: g for g in site.cluster.groups}
        exclude_lists: dict[object, Installed | None] = {}
        written: dict[object, Stages] = {}  # keeps what ids_of has seen by id() alive

        def install_writes(stages: Stages, host: str, order: str) -> Stages:
            """With --fidelity install, a node's stack with what its install writes."""
            files = site.install_writes.get(host, ()) if self.fidelity == "install" else ()
            if not files:
                return stages
            key = (id(stages), files, order)
            if key not in written:
                written[key] = with_install_writes(stages, files,
                                                   updateclient=order == "updateclient")
                written[(key, "stages")] = stages
            return written[key]

        for namespace, name, stages in wanted:
            if namespace == "nodes":
                stages = install_writes(stages, name, self.order)
            contribution = ids_of(stages)
            installed = None
            if self.order == "updateclient" and namespace != "images":
                below = (install_writes(node_stages(site, name, "autoinstall", memo), name,
                                        "autoinstall") if namespace == "nodes"
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
        self.slots = {e.slot: e for ns in self.entries.values() for e in ns.values()}

    def prescan(self) -> int:
        """Read every layer directory of the site now (see LayerStore.prescan)."""
        entries = sum(self.store.prescan(layer_id) for layer_id in range(len(self.store.layers)))
        self.fingerprint = fingerprint(self)  # of this snapshot, for `onesuite status`
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

    def statfs(self) -> os.statvfs_result:
        first = next(iter(self.site.images.values()), None)
        return os.statvfs(first.path if first else self.site.layout.root)

    # ----- numbers and attributes -----------------------------------------------------
    def number(self, ref: Ref) -> int:
        """The inode number `ref` has when nothing clashes (the daemon's table probes on a
        clash). A persistent entry's number comes from its entry in the store."""
        if isinstance(ref, DirRef):
            return self.numbering.dir_ino(ref.entry.slot, ref.path)
        if isinstance(ref, FileRef):
            return self.numbering.backed_ino(self.store.layer(ref.layer).label, ref.path,
                                             self.ref_identity(ref))
        if isinstance(ref, PrivateRef):
            return self.numbering.dir_ino(ref.entry.slot, ref.path, private=True)
        return self.state_attr(ref).ino

    def fixed_attr(self, ino: int, mode: int = stat.S_IFDIR | 0o755) -> Attr:
        """A directory no layer has (a namespace, /ram): stable times, root's."""
        t = self.stable_ns
        return Attr(ino, 1, mode, 2, 0, 0, 0, 0, 0, t, t, t)

    @staticmethod
    def attr_from(ino: int, generation: int, meta: Meta, *, is_dir: bool) -> Attr:
        # Directories report one link, as btrfs does: a merged directory's subdirectory
        # count would need its listing, and tools treat 1 as "unknown".
        return Attr(ino, generation, meta.mode, 1 if is_dir else meta.nlink, meta.uid, meta.gid,
                    meta.rdev, meta.size, meta.blocks, meta.atime_ns, meta.mtime_ns,
                    meta.ctime_ns)

    def attr_of(self, ref: Ref, ino: int | None = None) -> Attr:
        """The attributes of what `ref` shows, under inode number `ino` (default: its own)."""
        if isinstance(ref, StateRef):
            return self.state_attr(ref)
        if ino is None:
            ino = self.number(ref)
        if isinstance(ref, DirRef):
            if ref.layer == SYNTHETIC_LAYER:
                return self.fixed_attr(ino)
            return self.attr_from(ino, self._generation(ref), ref.meta, is_dir=True)
        if isinstance(ref, FileRef):
            return self.attr_from(ino, self.file_generation(ino, ref.meta), ref.meta,
                                  is_dir=False)
        return self.attr_from(ino, self._generation(ref), ref.meta, is_dir=False)

    @staticmethod
    def file_identity(meta: Meta) -> bytes:
        return inodes.Numbering.layer_file_identity(meta.mtime_ns, meta.size, meta.mode)

    def ref_identity(self, ref: FileRef) -> bytes:
        """What a layer file's number is made of besides its layer and path. A path some
        whiteout list names is numbered apart: a handle a node kept from before a list hid
        it opens nothing afterwards (whiteouts.Catalog.covers)."""
        identity = self.file_identity(ref.meta)
        if self.store.whiteouts.covers(ref.path):
            identity += b"\0whiteout"
        return identity

    def file_generation(self, ino: int, meta: Meta) -> int:
        """A layer file's generation (its identity is in its number too): a clash of
        numbers answers no other file's handles. Kept in a serving view (every attribute
        reply needs it), bounded."""
        key = (ino, self.file_identity(meta))
        if not self.serving:
            return self.numbering.file_generation(*key)
        found = self._file_generations.get(key)
        if found is None:
            if len(self._file_generations) >= GENERATION_MEMO:
                self._file_generations.clear()  # bounded: a walk must not grow it
            found = self._file_generations[key] = self.numbering.file_generation(*key)
        return found

    def _generation(self, ref: DirRef | PrivateRef) -> int:
        if not self.serving:  # not serving: no request asks twice, keep nothing
            return self.numbering.view_generation(ref.entry.key, ref.path, ref.source)
        key = (ref.entry.key, ref.path, ref.source)
        found = self._generations.get(key)
        if found is None:  # a keyed hash: worth keeping, every attribute reply needs it
            if len(self._generations) >= GENERATION_MEMO:
                self._generations.clear()  # bounded: a recovery walk must not grow it
            found = self._generations[key] = self.numbering.view_generation(*key)
        return found

    def state_attr(self, ref: StateRef) -> Attr:
        """A persistent entry's attributes; its number and generation come from the node and
        the random id the entry was made with (kept with it in the store), so every server
        mounting the store gives the same ones, and a rename keeps them."""
        found = self.node_state(ref.entry).identity(ref.path)
        if found is None:
            raise TreeError(errno.ESTALE)
        meta, entry_id = found
        if entry_id:
            ino = self.numbering.state_ino(ref.entry.name, b"id\0" + entry_id)
            generation = self.numbering.file_generation(ino, entry_id)
        else:  # no id where the store keeps none (a symlink): its path, its mtime and type
            ino = self.numbering.state_ino(ref.entry.name, b"path\0" + ref.path.encode(
                "utf-8", "surrogateescape"))
            generation = self.file_generation(ino, meta)
        return self.attr_from(ino, generation, meta, is_dir=False)._replace(nlink=meta.nlink)

    # ----- what a directory holds ---------------------------------------------------------
    def root_ref(self, entry: Entry) -> DirRef:
        top = self.store.metadata_layer(entry.contribution)
        return DirRef(entry, "", "", entry.contribution, top, self.store.root_meta(top))

    def merged(self, ref: DirRef) -> MergedDir:
        return self.resolver.merged_dir(ref.source, ref.contribution, ref.layer, ref.meta)

    def dir_items(self, ref: DirRef) -> dict[str, Item]:
        """A directory's items: the merged listing, updateclient's excluded paths kept as
        installed, the node's oneSIS rules applied."""
        mdir = self.merged(ref)
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
                self._items[key] = children
                return children  # type: ignore[return-value]
            assert onesis is not None
            items = onesis.patch(ref.path, children, ref.source,
                                 lambda target: self.merged_lookup(ref.entry, target))
            self._items[key] = items
        return items

    def has_items(self, ref: DirRef) -> bool:
        """Whether `dir_items` answers without disk access (its rules applied already)."""
        return (ref.entry.key, ref.path) in self._items

    def item_ref(self, directory: DirRef, item: Item) -> Ref | None:
        """What one item of a directory shows; None for nothing (a persistent path no one
        has used yet and that starts as nothing)."""
        entry, path = directory.entry, child_path(directory.path, item.name)
        if directory.pending is not None and isinstance(item, Child):
            return pending_copy_ref(self, directory, path, item)
        if isinstance(item, Child):
            source = child_path(directory.source, item.name)
            if item.contribution is not None:
                return DirRef(entry, path, source, item.contribution, item.layer, item.meta,
                              link_root=directory.link_root)
            if self.resolver.install and self._kept_by_install(directory, item.name):
                # Another layer's bytes under this entry's mode and owner: not the layer
                # file's inode (its attributes differ), a number of this view's own.
                return PrivateRef(entry, path, item.meta, item.layer, source,
                                  Provenance.of_layer(self.store.layer(item.layer).label,
                                                      source, is_dir=False))
            if directory.link_root is not None and stat.S_ISLNK(item.meta.mode):
                depth = directory.path.count("/") - directory.link_root.count("/")
                chained = self._chained_link(entry, path, item.layer, source, item.meta,
                                             directory.path, directory.source, depth, None)
                if chained is not None:
                    return chained
            return FileRef(item.layer, source, item.meta)
        if isinstance(item, Linked):
            variant, source = item.variant, child_path(item.variant_parent, item.variant.name)
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
        if self.state_dir is not None and self.node_state(entry).lstat(path) is not None:
            return self.writable_ref(directory, item)
        return self._unmade_writable_ref(directory, path, item)

    @staticmethod
    def writable_ref(directory: DirRef, item: Writable) -> StateRef:
        """The persistent entry a Writable item shows once it exists."""
        return StateRef(directory.entry, child_path(directory.path, item.name),
                        child_path(directory.path, item.name), item.rule)

    def _synthetic_ref(self, entry: Entry, path: str, item: Synthetic) -> DirRef | PrivateRef:
        provenance = Provenance.synthetic(item.reason, item.rule, is_dir=False)
        target = item.target or ""
        t = self.stable_ns
        meta = Meta(synthetic_mode(item), 0, 0, 1, 0, 0, len(target.encode()), t, t, t, 0, 0)
        if item.target is None:
            return DirRef(entry, path, path, (), SYNTHETIC_LAYER, meta)
        return PrivateRef(entry, path, meta, None, target, provenance)

    def _unmade_writable_ref(self, directory: DirRef, path: str, item: Writable) -> Ref:
        """A persistent path no one has used yet, seen without making it (preview): what the
        mount would make of it, as the mount would show it (pending_state.py)."""
        assert self.onesis is not None
        return pending_ref(self, self.onesis, directory, path, item)

    def _kept_by_install(self, directory: DirRef, name: str) -> tuple[int, int] | None:
        """(layer whose bytes an install keeps, layer whose entry came last) for a file of
        `directory` that rsync's quick check would not copy (resolve.py); else None."""
        if directory.pending is not None or directory.layer < 0:
            return None
        kept = self.merged(directory).kept
        return None if kept is None else kept.get(name)

    def install_keeps(self, directory: DirRef, name: str) -> tuple[str, str] | None:
        """For the entry `name` of `directory`: the labels of (the layer whose bytes an
        install keeps, the layer whose entry came last) when a 4.3 install would not copy
        the file (same size and mtime: rsync's quick check)."""
        if not isinstance(self.dir_items(directory).get(name), Child):
            return None
        found = self._kept_by_install(directory, name)
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

    def node_state(self, entry: Entry) -> NodeState:
        if self.state_dir is None:
            raise TreeError(errno.EROFS, "no state directory configured")
        return NodeState(self.state_dir / "nodes" / entry.name)

    def state_child(self, parent: StateRef, name: str) -> StateRef | None:
        """An entry of a persistent directory, None if it has none."""
        child = parent._replace(path=child_path(parent.path, name))
        return child if self.node_state(parent.entry).lstat(child.path) is not None else None

    def state_names(self, ref: StateRef) -> list[str]:
        return sorted(self.node_state(ref.entry).listing(ref.path))

    # ----- by path: the one walk ----------------------------------------------------------
    def root_node(self, entry: Entry) -> Node:
        """A view's root directory, to walk with `children`."""
        ref = self.root_ref(entry)
        return Node("", self.attr_of(ref), ref)

    def children(self, node: Node) -> Iterator[Node]:
        """A directory's entries in name order, made one at a time (a huge directory is not
        held twice); empty for a non-directory."""
        ref = node.ref
        if isinstance(ref, StateRef):
            if not node.is_dir:
                return
            for name in self.state_names(ref):
                child = ref._replace(path=child_path(ref.path, name))
                yield Node(name, self.attr_of(child), child)
            return
        if not isinstance(ref, DirRef) or ref.layer == SYNTHETIC_LAYER:
            return
        key = (ref.entry.key, ref.path)
        readers, items = self._reading.get(key) or (0, self.dir_items(ref))
        self._reading[key] = (readers + 1, items)
        try:
            for name in sorted(items):
                found = self.item_ref(ref, items[name])
                if found is not None:
                    yield Node(name, self.attr_of(found), found)
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
            found_state = self.state_child(ref, name) if node.is_dir else None
            return None if found_state is None else Node(name, self.attr_of(found_state),
                                                         found_state)
        if not isinstance(ref, DirRef) or ref.layer == SYNTHETIC_LAYER:
            return None
        reading = self._reading.get((ref.entry.key, ref.path))
        item = (reading[1] if reading else self.dir_items(ref)).get(name)
        found = None if item is None else self.item_ref(ref, item)
        return None if found is None else Node(name, self.attr_of(found), found)

    def node_at(self, entry: Entry, path: str) -> Node | None:
        """The entry at `path` ("etc/fstab", "" for the root) of a view, None if absent or
        below a non-directory."""
        node: Node | None = self.root_node(entry)
        for part in [p for p in path.split("/") if p]:
            if node is None or not node.is_dir:
                return None
            node = self.child(node, part)
        return node

    # ----- content, links, extended attributes, provenance ---------------------------------
    def open_node(self, node: Node) -> int:
        """A read-only fd on a regular file found by path (the caller closes it)."""
        return self.open_ref(node.ref, os.O_RDONLY)

    def readlink_node(self, node: Node) -> bytes:
        return self.readlink_ref(node.ref)

    def node_xattrs(self, node: Node) -> dict[str, bytes]:
        """The entry's own extended attributes (without the provenance)."""
        return self.own_xattrs(node.ref)

    def node_provenance(self, node: Node) -> Provenance:
        """Where an entry comes from (the value the mount's origin attribute renders)."""
        return self.provenance_of(node.ref)

    @staticmethod
    def backing(ref: Ref) -> FileRef | None:
        """The layer file a non-directory shows; None for a synthetic link."""
        if isinstance(ref, DirRef):
            raise TreeError(errno.EISDIR)
        if isinstance(ref, PrivateRef):
            return None if ref.layer is None else FileRef(ref.layer, ref.source, ref.meta)
        assert isinstance(ref, FileRef)
        return ref

    def readlink_ref(self, ref: Ref) -> bytes:
        if isinstance(ref, StateRef):
            return self.node_state(ref.entry).readlink(ref.path)
        backing = self.backing(ref)
        if backing is None:
            assert isinstance(ref, PrivateRef)
            return ref.source.encode("utf-8", "surrogateescape")
        if not stat.S_ISLNK(backing.meta.mode):
            raise TreeError(errno.EINVAL)
        return self.store.readlink(backing.layer, backing.path)

    def open_ref(self, ref: Ref, flags: int) -> int:
        """An fd on the backing regular file: read-only, except for persistent paths."""
        if isinstance(ref, StateRef):
            return self.node_state(ref.entry).open(ref.path, flags)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise TreeError(errno.EROFS)
        backing = self.backing(ref)
        if backing is None and stat.S_ISREG(ref.meta.mode):  # type: ignore[union-attr]
            return os.open(os.devnull, os.O_RDONLY)  # a persistent file not made: empty
        if backing is None or not stat.S_ISREG(backing.meta.mode):
            raise TreeError(errno.EACCES)
        fd = self.store.open_file(backing.layer, backing.path)
        if backing.layer in self.store.generated_ids:
            return fd  # written bytes kept in memory: nothing on disk to change
        # Serve only the file this view read: a file replaced or rewritten since would be new
        # bytes under old attributes (a torn read). The daemon reloads and retries.
        meta = backing.meta
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (
                meta.dev, meta.ino, meta.size, meta.mtime_ns):
            os.close(fd)
            raise ChangedOnDisk()
        return fd

    def own_xattrs(self, ref: Ref) -> dict[str, bytes]:
        if isinstance(ref, StateRef):
            return self.node_state(ref.entry).xattrs(ref.path)
        if self.fidelity == "install":
            return {}  # SystemImager 4.3's rsync passes have no -X: no xattr is installed
        if isinstance(ref, DirRef):
            if ref.layer == SYNTHETIC_LAYER or ref.pending is not None:
                return {}  # a persistent path is made without the layer's xattrs
            return self.store.xattrs(ref.layer, ref.source)
        if isinstance(ref, PrivateRef) and ref.provenance.kind is Kind.PERSISTENT:
            return {}
        backing = self.backing(ref)
        return {} if backing is None else self.store.xattrs(backing.layer, backing.path)

    def provenance_of(self, ref: Ref) -> Provenance:
        """Which layer (and path in it) an entry's content and metadata come from, and for a
        oneSIS path which rule put it there."""
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
        layer = self.store.layer(ref.layer)
        if layer.generated is not None:  # what wrote it, and from where (file:line)
            written = layer.generated.file(ref.path)
            if written is not None:
                return Provenance.of_layer(layer.label, ref.path, is_dir=False,
                                           rule=written.source, reason=written.what)
        return Provenance.of_layer(layer.label, ref.path, is_dir=False,
                                   hard_links=ref.meta.nlink)
