"""The mount's tree: the core's View addressed by inode number, with the writable store.

The View (core/view.py) says what every root shows, by path and without side effects. This
adds what only a serving daemon needs: the fixed directories (the mount root, ``nodes/``,
``groups/``, ``images/``); the inode table (every entry looked up is registered so its number
can be answered later, and numbers an earlier daemon issued are found again by `recover` and
`adopt`); and the node's persistent, writable paths, made the first time they are used
(persistent_paths.py) and written through (state.py). Methods that may touch the disk for a
directory not seen yet are announced by ``dir_ready`` so the adapter can run ``prepare`` in a
worker thread.
"""

from __future__ import annotations

import array
import bisect
import errno
import os
import stat
import threading
from collections.abc import Callable
from typing import TypeVar

from ..core import inodes
from ..core.entry import NAMESPACES, Entry
from ..core.onesis_view import Writable
from ..core.provenance import Provenance
from ..core.state import NodeAttrs, NodeState
from ..core.view import (
    RAM_MOUNT_POINT,
    SYNTHETIC_LAYER,
    Attr,
    DirRef,
    FileRef,
    PrivateRef,
    Ref,
    StateRef,
    TreeError,
    View,
    child_path,
)
from .listing_dates import ListingDates
from .persistent_paths import make_persistent_path

R = TypeVar("R")
# What mknod may make in a persistent path (none of them is a special file on the server).
MKNOD_TYPES = (stat.S_IFREG, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)
# The kernel serves user.* extended attributes only on regular files and directories, so the
# origin is also under trusted.* (root only), which the kernel allows on every file type.
ORIGIN_XATTRS = ("user.onesuite.origin", "trusted.onesuite.origin")
# The mount root and the namespace directories are numbered 1 to here (excluded).
_FIRST_VIEW_INO = inodes.FIRST_NAMESPACE_INO + len(NAMESPACES)
assert inodes.ROOT_INO == inodes.FIRST_NAMESPACE_INO - 1


class InodeTree:
    """One generation of the mount: a View, its inode table and its writable store."""

    def __init__(self, view: View, *, create_state: bool = False) -> None:
        self.view = view
        # Only a serving mount makes a node's persistent paths; an inspection never writes.
        self.create_state = create_state
        self._dirs: dict[int, DirRef] = {}
        self._dir_inos: dict[tuple[str, str], int] = {}  # (entry key, path) -> _dirs' key
        self._file_inos: dict[tuple[str, str, bytes], int] = {}  # (label, path, identity) -> ino
        self._files: dict[int, FileRef] = {}
        self._private: dict[int, PrivateRef] = {}
        self._state: dict[int, StateRef] = {}
        self._synthetic_dirs: set[int] = set()
        # Persistent paths of a listed directory not made yet, by (entry key, directory
        # path): making one may copy a whole tree, so `prepare` does it in a worker thread.
        self._unmade: dict[tuple[str, str], set[str]] = {}
        # Why `prepare` could not make one (a full disk): that path's requests get the error
        # (the rest of its directory still answers); the next request tries again.
        self._make_errors: dict[tuple[str, str, str], OSError] = {}
        self._backing_index: dict[int, FileRef] | None = None
        # Views `recover` walked to the end: their view-keyed numbers, sorted (a forged
        # number costs one walk per view, and 8 bytes per directory, not a registered view).
        self._view_numbers: dict[str, array.array[int]] = {}
        # Nodes whose persistent paths `recover` has walked (everything there registered).
        self._walked: set[str] = set()
        self._lock = threading.Lock()
        # Directories a reload changed the listing of report a later mtime (listing_dates.py).
        self.listing_dates = ListingDates()

    # What the rest of the daemon reads of the view it serves.
    @property
    def site(self):  # type: ignore[no-untyped-def]
        return self.view.site

    @property
    def entries(self) -> dict[str, dict[str, Entry]]:
        return self.view.entries

    @property
    def numbering(self) -> inodes.Numbering:
        return self.view.numbering

    @property
    def prescanned(self) -> bool:
        return self.view.prescanned

    def prescan(self) -> int:
        return self.view.prescan()

    def writable_nodes(self) -> set[str]:
        return self.view.writable_nodes()

    def statfs(self) -> os.statvfs_result:
        return self.view.statfs()

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
        known = self._dir_inos.get((ref.entry.key, ref.path))
        if known is not None and self._dirs[known].entry is ref.entry:
            return known  # what _register finds, without hashing the path again
        ino = self._register(
            self._dirs,
            lambda probe: self.numbering.dir_ino(ref.entry.slot, ref.path, probe),
            lambda known: known.entry is ref.entry and known.path == ref.path, ref)
        if ref.layer == SYNTHETIC_LAYER:
            self._synthetic_dirs.add(ino)
        self._dir_inos[(ref.entry.key, ref.path)] = ino
        return ino

    def _file_ref(self, ref: FileRef) -> int:
        label = self.view.store.layer(ref.layer).label
        identity = self.view.ref_identity(ref)
        # By the layer's label, not its id: the image's node-root form (image-pass
        # excludes applied) is another layer id over the same files.
        key = (label, ref.path, identity)
        known = self._file_inos.get(key)
        if known is not None:
            return known  # what _register finds, without hashing again
        labels = self.view.store.layer
        ino = self._file_inos[key] = self._register(
            self._files,
            lambda probe: self.numbering.backed_ino(label, ref.path, identity, probe),
            lambda known: (labels(known.layer).label, known.path,
                           self.view.ref_identity(known)) == key, ref)
        return ino

    def _private_ref(self, ref: PrivateRef) -> int:
        ino = self._register(
            self._private,
            lambda probe: self.numbering.dir_ino(ref.entry.slot, ref.path, probe, private=True),
            lambda known: known.entry is ref.entry and known.path == ref.path, ref)
        self._private[ino] = ref  # the rule may have chosen another variant since
        return ino

    def _registered_attr(self, ref: Ref) -> Attr:
        """Give `ref` its inode number (so the number can be answered later) and its
        attributes."""
        if isinstance(ref, StateRef):
            attr = self.view.state_attr(ref)
            self._state[attr.ino] = ref  # renames move it: the newest name is the one that is
            return attr
        if isinstance(ref, DirRef):
            return self.listing_dates.applied(self.view.attr_of(ref, self._dir_ref(ref)))
        if isinstance(ref, FileRef):
            return self.view.attr_of(ref, self._file_ref(ref))
        return self.view.attr_of(ref, self._private_ref(ref))

    def _registered(self, ino: int) -> Ref | None:
        return (self._dirs.get(ino) or self._files.get(ino) or self._private.get(ino)
                or self._state.get(ino))

    def _namespace_ino(self, namespace: str) -> int:
        return inodes.FIRST_NAMESPACE_INO + NAMESPACES.index(namespace)

    def _namespace_of(self, ino: int) -> str | None:
        index = ino - inodes.FIRST_NAMESPACE_INO
        return NAMESPACES[index] if 0 <= index < len(NAMESPACES) else None

    def _is_fixed_dir(self, ino: int) -> bool:
        return 0 < ino < _FIRST_VIEW_INO  # the root or a namespace

    def serves_a_node(self, ino: int) -> bool:
        """Whether `ino` may be inside a node's root: not the mount root, a namespace
        directory, or anything of a group's or an image's view (what an NFS server thread
        may touch, docs/nfs.md). Layer files are shared by views and keyed, so they count."""
        if 0 < ino < _FIRST_VIEW_INO:  # the mount root and the namespaces (inlined: hot)
            return False
        if inodes.is_view_keyed(ino):
            entry = self.view.slots.get(inodes.slot_of(ino))
            return entry is not None and entry.namespace == "nodes"
        return True

    def is_namespace(self, ino: int) -> bool:
        """nodes/, groups/ or images/: their entries are the views' roots."""
        return self._namespace_of(ino) is not None

    def entry_root_ino(self, entry: Entry) -> int:
        return self._dir_ref(self.view.root_ref(entry))

    # ----- attributes -----------------------------------------------------------------
    def attr(self, ino: int) -> Attr:
        if self._is_fixed_dir(ino) or ino in self._synthetic_dirs:
            return self.listing_dates.applied(self.view.fixed_attr(ino))
        ref = self._registered(ino)
        if ref is None:
            raise TreeError(errno.ESTALE)
        if isinstance(ref, StateRef):
            return self.view.state_attr(ref)
        attr = self.view.attr_of(ref, ino)
        return self.listing_dates.applied(attr) if isinstance(ref, DirRef) else attr

    # ----- persistent, writable paths ---------------------------------------------------
    def _item_ref(self, directory: DirRef, item: object) -> Ref | None:
        """What an item shows here: the View's answer, except that a serving mount makes a
        persistent path the first time it is used."""
        if isinstance(item, Writable) and self.create_state:
            return self._made_writable_ref(directory, item)
        return self.view.item_ref(directory, item)  # type: ignore[arg-type]

    def _made_writable_ref(self, directory: DirRef, item: Writable) -> StateRef:
        entry = directory.entry
        path = child_path(directory.path, item.name)
        state = self.view.node_state(entry)
        if state.lstat(path) is None:
            failed = self._make_errors.pop((entry.key, directory.path, item.name), None)
            if failed is not None:
                raise OSError(failed.errno, failed.strerror, path)
            make_persistent_path(self.view, entry, state, path, item)
        key = (entry.key, directory.path)
        unmade = self._unmade.get(key)
        if unmade is not None:
            unmade.discard(item.name)
            if not unmade:
                self._unmade.pop(key, None)
        return self.view.writable_ref(directory, item)

    def _dir_items(self, ref: DirRef) -> dict[str, object]:
        first = self.create_state and not self.view.has_items(ref)
        items = self.view.dir_items(ref)
        # Only a listing the node's rules patched (kept by the view from then on) can hold
        # writable items: a plain merged listing is never scanned (it was, at every lookup
        # of a serving mount: O(directory size) per request).
        if first and self.view.has_items(ref):
            writable = {n for n, item in items.items() if isinstance(item, Writable)}
            if writable:
                self._unmade[(ref.entry.key, ref.path)] = writable  # until each is made
        return items  # type: ignore[return-value]

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
                and self.view.resolver.cached_dir(ref.source, ref.contribution) is not None]

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
        if self.view.resolver.cached_dir(ref.source, ref.contribution) is None:
            return False
        if ref.entry.installed is not None and not self.view.has_items(ref):
            return False  # updateclient's excluded paths: the installed root is read
        onesis = self.view.node_onesis(ref.entry)
        return (onesis is None or not onesis.touches(ref.path)
                or (self.view.has_items(ref) and not self._unmade.get((ref.entry.key,
                                                                        ref.path))))

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
                    self._made_writable_ref(ref, item)
                except OSError as exc:  # logged by make_persistent_path
                    self._make_errors[failed] = exc

    def lookup(self, parent: int, name: str) -> Attr:
        if name == ".":
            return self.attr(parent)
        if name == "..":
            return self.attr(self.parent_of(parent))
        if parent == inodes.ROOT_INO:
            if name in NAMESPACES:
                return self.view.fixed_attr(self._namespace_ino(name))
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
        found = None if item is None else self._item_ref(ref, item)
        if found is None:
            raise TreeError(errno.ENOENT)
        return self._registered_attr(found)

    def _dir(self, ino: int) -> DirRef:
        ref = self._dirs.get(ino)
        if ref is None:
            known = ino in self._files or ino in self._private or ino in self._state
            raise TreeError(errno.ENOTDIR if known else errno.ESTALE)
        return ref

    def _state_child_attr(self, parent: StateRef, name: str) -> Attr:
        child = self.view.state_child(parent, name)
        if child is None:
            raise TreeError(errno.ENOENT)
        return self._registered_attr(child)

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
            return self._registered_attr(state._replace(path=parent_path)).ino
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
        onesis = self.view.node_onesis(ref.entry)
        return onesis is None or onesis.policy != "persistent" or not onesis.touches(ref.path)

    def listdir(self, ino: int) -> list[tuple[str, Attr]]:
        if ino == inodes.ROOT_INO:
            return [(ns, self.attr(self._namespace_ino(ns))) for ns in NAMESPACES]
        namespace = self._namespace_of(ino)
        if namespace is not None:
            return [(name, self.attr(self.entry_root_ino(entry)))
                    for name, entry in sorted(self.entries[namespace].items())]
        if ino in self._synthetic_dirs:
            return []
        state = self._state.get(ino)
        if state is not None:
            return [(name, self._state_child_attr(state, name))
                    for name in self.view.state_names(state)]
        ref = self._dir(ino)
        items = self._dir_items(ref)
        refs = ((name, self._item_ref(ref, items[name])) for name in sorted(items))
        return [(name, self._registered_attr(child)) for name, child in refs if child is not None]

    # ----- files ----------------------------------------------------------------------
    def _non_dir(self, ino: int) -> Ref:
        """The registered entry `ino` names, refused for a directory of a view."""
        ref = self._files.get(ino) or self._private.get(ino) or self._state.get(ino)
        if ref is None:
            is_dir = ino in self._dirs or self._is_fixed_dir(ino)
            raise TreeError(errno.EISDIR if is_dir else errno.ESTALE)
        return ref

    def readlink(self, ino: int) -> bytes:
        return self.view.readlink_ref(self._non_dir(ino))

    def open(self, ino: int, flags: int = os.O_RDONLY) -> int:
        """An fd on the backing regular file: read-only, except for persistent paths."""
        return self.view.open_ref(self._non_dir(ino), flags)

    # ----- writes: only inside a node's persistent paths ----------------------------------
    def _child_state(self, parent: int, name: str) -> tuple[NodeState, StateRef]:
        state = self._state.get(parent)
        if state is None:
            raise TreeError(errno.EROFS)
        child = state._replace(path=child_path(state.path, name))
        return self.view.node_state(state.entry), child

    def create(self, parent: int, name: str, mode: int, flags: int, uid: int,
               gid: int) -> tuple[int, Attr]:
        node_state, child = self._child_state(parent, name)
        fd = node_state.create(child.path, flags,
                               NodeAttrs(stat.S_IFREG | stat.S_IMODE(mode), uid, gid))
        return fd, self._registered_attr(child)

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
        return self._registered_attr(child)

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
        self.view.node_state(state.entry).set_attrs(state.path, **changes)  # type: ignore[arg-type]
        return self._registered_attr(state)

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
        return self.view.provenance_of(ref)

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
            return f"{self.view.store.layer(ref.layer).label} /{ref.path}"
        return f"inode {ino}"

    def where(self, ino: int) -> tuple[str | None, str, bool]:
        """For counting a refused write (write_attempts.py): the node whose root `ino` is
        in (None outside every node's root), its path there ('' for the root), and whether
        it is a layer file, one inode for every view showing it (so no node is known from
        the number). Never raises."""
        if self._is_fixed_dir(ino):
            return None, self.path_of(ino), False
        ref = self._registered(ino)
        if isinstance(ref, FileRef):
            return None, ref.path, True
        if isinstance(ref, DirRef | PrivateRef | StateRef):
            node = ref.entry.name if ref.entry.namespace == "nodes" else None
            return node, ref.path, False
        return None, f"inode {ino}", False

    def node_of_dir(self, ino: int) -> str | None:
        """The node whose root directory `ino` (a view-keyed number) is in; cheap."""
        if not inodes.is_view_keyed(ino):
            return None
        entry = self.view.slots.get(inodes.slot_of(ino))
        return entry.name if entry is not None and entry.namespace == "nodes" else None

    def xattrs(self, ino: int) -> dict[str, bytes]:
        values: dict[str, bytes] = {}
        if not self._is_fixed_dir(ino):
            ref = self._registered(ino)
            if ref is None:
                raise TreeError(errno.ESTALE)
            values = self.view.own_xattrs(ref)
        origin = self.origin(ino).encode("utf-8", "surrogateescape")
        values.update(dict.fromkeys(ORIGIN_XATTRS, origin))
        return values

    # ----- inode numbers issued by an earlier daemon ------------------------------------
    def recover(self, ino: int) -> bool:
        """Find an inode number this process never issued (the kernel or an NFS server still
        holds it from a previous daemon). Walks one view, or indexes the layers; slow, so
        adapters call it in a worker thread. True if found."""
        if any(ino in table for table in (self._dirs, self._files, self._private, self._state)):
            return True
        if inodes.is_view_keyed(ino):
            entry = self.view.slots.get(inodes.slot_of(ino))
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
        pending = [self.view.root_node(entry)]
        while pending:
            node = pending.pop()
            if node.attr.ino == wanted:
                self._registered_attr(node.ref)
                return True
            if inodes.is_view_keyed(node.attr.ino):
                numbers.append(node.attr.ino)
            if node.is_dir:
                pending.extend(self.view.children(node))
        self._view_numbers[entry.key] = array.array("Q", sorted(numbers))
        return False

    def _recover_state(self, entry: Entry, wanted: int) -> bool:
        """Look for a persistent entry of this node: only in the directories on the way to
        its writable paths and below them (a forged number must not walk every root)."""
        key = f"state:{entry.key}"
        if key in self._walked:
            return wanted in self._state
        rules = self.view.node_onesis(entry)
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

    def adopt(self, old: InodeTree, ino: int) -> bool:
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

    def _adopt_file(self, old: InodeTree, ref: FileRef, ino: int) -> bool:
        """A layer file `old` knew: the same file (same mtime, size and type: the same
        number) at the same path of the same layer here (any view may show it, as for a
        number an earlier daemon issued)."""
        layer = old.view.store.layer(ref.layer)
        store = self.view.store
        layer_id = next((i for i, known in enumerate(store.layers) if known == layer), None)
        if layer_id is None:
            return False
        parent, _, name = ref.path.rpartition("/")
        meta = (store.listing(layer_id, parent) or {}).get(name)
        if meta is None:
            return False
        return self._file_ref(FileRef(layer_id, ref.path, meta)) == ino

    def merge_marks(self) -> tuple[int, int]:
        """Changes whenever a directory of a view comes into use (registered, or merged):
        `dirs_in_use` can only have grown when this changed (both counts only grow)."""
        return len(self._dirs), self.view.resolver.merged_count()

    def _recover_file(self, ino: int) -> bool:
        with self._lock:
            if self._backing_index is None:
                index: dict[int, FileRef] = {}
                store = self.view.store
                for layer_id in range(len(store.layers)):
                    for path, meta in store.walk(layer_id):
                        if not meta.is_dir:
                            ref = FileRef(layer_id, path, meta)
                            index.setdefault(self.view.number(ref), ref)
                self._backing_index = index
        ref = self._backing_index.get(ino)
        if ref is None:
            return False
        self._files.setdefault(ino, ref)
        return True
