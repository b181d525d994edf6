"""Read-only access to layer directories (an image or an override tree) on the server.

Every access walks from the layer's root one component at a time with ``O_NOFOLLOW``, so a
symlink inside an image or override (absolute, ``..`` or swapped in behind our back) is never
followed on the server: it is data, returned to the client as a link. Scans are cached per
(layer, directory) and shared by every view that contains the layer.

The layer root itself is opened by the real path checked at load (sources/layer_roots.py),
never through a symlink: a root, or a directory above it, swapped for a symlink after the load
makes the request fail (EIO, logged), it is not followed (open_layer_root, openat2.py).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from . import openat2, whiteouts
from .bounded import BoundedCache, entries_of
from .model import WrittenFile

log = logging.getLogger("onesuite.layers")
DIR_FD_CACHE = 256
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


_SHARED: dict[int, int] = {}
_SHARED_LIMIT = 4096  # distinct modes, owners and devices: a site has far fewer


def _shared(value: int) -> int:
    """One int object per value (small ints are shared by Python already)."""
    found = _SHARED.get(value)
    if found is None:
        if len(_SHARED) >= _SHARED_LIMIT:
            _SHARED.clear()
        found = _SHARED[value] = value
    return found


class Meta(NamedTuple):
    """The lstat fields a view needs, compact and immutable."""

    mode: int
    ino: int
    dev: int
    nlink: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    rdev: int
    blocks: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> Meta:
        # Every listed entry keeps one Meta, so the int objects are shared where values
        # repeat (device, mode, owner: few values; equal times): 230-265 bytes, not 330.
        mtime = st.st_mtime_ns
        atime = mtime if st.st_atime_ns == mtime else st.st_atime_ns
        ctime = mtime if st.st_ctime_ns == mtime else st.st_ctime_ns
        return cls(
            _shared(st.st_mode), st.st_ino, _shared(st.st_dev), st.st_nlink,
            _shared(st.st_uid), _shared(st.st_gid), st.st_size, atime, mtime, ctime,
            _shared(st.st_rdev), st.st_blocks,
        )

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass(frozen=True)
class Generated:
    """What makes a generated layer (core/generated.py): files an install writes itself, as
    a shell redirect does, onto the tree `base` left (the image pass). No directory on disk:
    its directories are base's, a file exists only where base has its directory and no
    other non-regular entry, with base's file's mode and owner if it has one (a redirect
    keeps them), else 0644 root (the installer's umask 022)."""

    base: Layer
    files: tuple[WrittenFile, ...]

    def file(self, relpath: str) -> WrittenFile | None:
        return next((f for f in self.files if f.path == relpath), None)


@dataclass(frozen=True)
class Layer:
    """One tree laid into a node's root: the image or an override (or a generated one)."""

    kind: str  # "image" or "override"
    name: str
    path: Path  # as configured
    # The real path checked at load (sources/layer_roots.py): what is opened, and verified
    # on every open. None: a site built in memory from a command's argument (transforms),
    # opened by `path` as given.
    real: Path | None = None
    allowed_by: Path | None = None  # the allow_layers_outside entry when elsewhere
    # Non-directories whose names end so are not part of the tree (a Warewulf overlay's
    # .ww templates: their rendered output is another layer).
    hidden_suffix: str = ""
    # The image as autoinstall's image pass copies it into a node's root: without what
    # `rsync --exclude=lost+found/ --exclude=/proc/*` leaves out (IMAGE_PASS_EXCLUDES).
    # The same directory, scanned once: its listings are the unfiltered layer's, filtered.
    image_pass: bool = False
    # A layer of files an install writes itself (kind "generated"): computed, not scanned.
    generated: Generated | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


def image_pass_excluded(relpath: str, listing: dict[str, Meta]) -> set[str]:
    """The names of a directory's listing that the image pass does not copy: every directory
    named lost+found (`--exclude=lost+found/`: at any depth, directories only) and everything
    in the image's /proc (`--exclude=/proc/*`, anchored at the image root; /proc itself is
    copied). SystemImager 4.3, etc/autoinstallscript.template line 292."""
    if relpath == "proc":
        return set(listing)
    found = listing.get("lost+found")
    return {"lost+found"} if found is not None and found.is_dir else set()


def split_relpath(relpath: str) -> list[str]:
    """'' is the layer root; 'etc/ssh' is two components. Refuses anything that could escape."""
    if not relpath:
        return []
    parts = relpath.split("/")
    for part in parts:
        if part in ("", ".", "..") or "\0" in part:
            raise ValueError(f"unsafe relative path {relpath!r}")
    return parts


class LayerStore:
    """All layers known to a site, each with a cache of its scanned directories.

    Layers are numbered; views refer to them by number so that cache keys stay small.
    A scan result is published with one dict assignment, so scans may run in worker
    threads while the FUSE loop reads published results. With `cache_limit` (one-pass
    readers), only that many entries of recent scans are kept.
    """

    def __init__(self, cache_limit: int | None = None, *, read_whiteouts: bool = False) -> None:
        self.layers: list[Layer] = []
        # --whiteouts: each override's list (whiteouts.py), read when the layer is added, so
        # a bad list refuses the view (file:line) before anything is merged.
        self.read_whiteouts = read_whiteouts
        self.whiteouts = whiteouts.Catalog()
        self._ids: dict[Layer, int] = {}
        self._listings: dict[tuple[int, str], dict[str, Meta] | None] | BoundedCache = (
            {} if cache_limit is None else BoundedCache(entries_of, cache_limit))
        self._root_metas: dict[int, Meta] = {}
        self._lock = threading.Lock()
        # An O_PATH fd per (layer, directory) recently opened from: an open is then one
        # openat instead of a walk from the layer root (an NFS listing opens every file).
        self._dir_fds: OrderedDict[tuple[int, str], int] = OrderedDict()
        # Generated layers: their directories merge without giving metadata (resolve.py).
        self.generated_ids: set[int] = set()

    def add(self, layer: Layer) -> int:
        with self._lock:
            found = self._ids.get(layer)
            if found is not None:
                return found
            found = self._whiteouts_of(layer)
            self.layers.append(layer)
            self._ids[layer] = len(self.layers) - 1
            if found is not None:
                self.whiteouts.set(len(self.layers) - 1, found)
            if layer.generated is not None:
                self.generated_ids.add(len(self.layers) - 1)
            return len(self.layers) - 1

    def _whiteouts_of(self, layer: Layer) -> whiteouts.Whiteouts | None:
        if not self.read_whiteouts or layer.kind not in whiteouts.LAYER_KINDS:
            return None
        return whiteouts.read(layer.path, layer.kind)

    def metadata_layer(self, contribution: tuple[tuple[int, ...], ...]) -> int:
        """The layer a merged root takes its metadata from: the first of the last stage,
        passing over generated stages (a file written into a directory leaves its mode and
        owner as they were)."""
        for stage in reversed(contribution):
            if stage[0] not in self.generated_ids:
                return stage[0]
        return contribution[-1][0]

    def layer(self, layer_id: int) -> Layer:
        return self.layers[layer_id]

    def open_dir(self, layer_id: int, relpath: str) -> AbstractContextManager[int]:
        """A directory fd for relpath inside the layer, reached without following links."""
        return open_in_layer(self.layers[layer_id], relpath)

    def cached_listing(self, layer_id: int, relpath: str) -> dict[str, Meta] | None | bool:
        """The cached scan, or False when the directory has not been scanned yet."""
        return self._listings.get((layer_id, relpath), False)

    def listing(self, layer_id: int, relpath: str) -> dict[str, Meta] | None:
        """name -> Meta of the directory relpath in the layer; None if it is not a directory."""
        key = (layer_id, relpath)
        found = self._listings.get(key, False)
        if found is not False:
            return found
        layer = self.layers[layer_id]
        if layer.image_pass:  # the plain image's scan, filtered (shared when nothing is)
            result = self.listing(self.add(replace(layer, image_pass=False)), relpath)
            excluded = image_pass_excluded(relpath, result) if result else set()
            if excluded:
                assert result is not None
                result = {n: m for n, m in result.items() if n not in excluded}
        else:
            result = self._scan(layer_id, relpath)
        self._listings[key] = result
        return result

    def _scan(self, layer_id: int, relpath: str) -> dict[str, Meta] | None:
        generated = self.layers[layer_id].generated
        if generated is not None:
            return self._generated_listing(generated, relpath)
        try:
            with self.open_dir(layer_id, relpath) as fd:
                found = scan_dir(fd)
            hidden = self.layers[layer_id].hidden_suffix
            if hidden:
                found = {name: meta for name, meta in found.items()
                         if meta.is_dir or not name.endswith(hidden)}
            return found
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            # ELOOP: a symlink where a directory was expected; never follow it.
            if exc.errno == errno.ELOOP:
                return None
            raise

    def prescan(self, layer_id: int) -> int:
        """Read (and cache) every directory of the layer now; returns how many entries.

        A generation that has read everything answers from what it read, never from a
        directory changed on disk after it was built (live.py)."""
        entries = 0
        pending = [""]
        while pending:
            directory = pending.pop()
            listing = self.listing(layer_id, directory) or {}
            entries += len(listing)
            pending.extend(f"{directory}/{name}" if directory else name
                           for name, meta in listing.items() if meta.is_dir)
        return entries

    def _generated_listing(self, generated: Generated, relpath: str) -> dict[str, Meta] | None:
        """A generated layer's directory: base's metadata for its directories, the written
        files where a redirect on base's tree would write them."""
        base = self.add(generated.base)
        base_dir = self.listing(base, relpath)
        if base_dir is None:
            return None
        found: dict[str, Meta] = {}
        prefix = f"{relpath}/" if relpath else ""
        for written in generated.files:
            if not written.path.startswith(prefix) or self.written_meta(generated,
                                                                         written) is None:
                continue
            name, _, below = written.path[len(prefix):].partition("/")
            found[name] = base_dir[name] if below else self.written_meta(generated, written)
        return found

    def written_meta(self, generated: Generated, written: WrittenFile) -> Meta | None:
        """The written file's metadata, None when the redirect would write nothing there
        (a directory on the way missing: the install stops; a symlink, a directory or
        a special file at the path: not modelled, docs/semantics.md)."""
        base = self.add(generated.base)
        parent, _, name = written.path.rpartition("/")
        where = ""
        for part in parent.split("/") if parent else []:
            found = (self.listing(base, where) or {}).get(part)
            if found is None or not found.is_dir:
                return None
            where = f"{where}/{part}" if where else part
        old = (self.listing(base, parent) or {}).get(name)
        if old is not None and not stat.S_ISREG(old.mode):
            return None
        mode, uid, gid = (old.mode, old.uid, old.gid) if old else (stat.S_IFREG | 0o644, 0, 0)
        size, t = len(written.content), written.mtime_ns
        # (st_dev 0, a number of its own): what readers tell files apart by (hard links,
        # digests already computed), one per written path and content.
        ino = int.from_bytes(hashlib.blake2b(
            b"%s\0%s\0%s" % (generated.base.label.encode("utf-8", "surrogateescape"),
                              written.path.encode("utf-8", "surrogateescape"),
                              written.content), digest_size=7).digest(), "big")
        return Meta(mode, ino, 0, 1, uid, gid, size, t, t, t, 0, (size + 511) // 512)

    def root_meta(self, layer_id: int) -> Meta:
        found = self._root_metas.get(layer_id)
        if found is None:
            found = self._root_metas[layer_id] = self.lstat(layer_id, "")
        return found

    def walk(self, layer_id: int) -> Iterator[tuple[str, Meta]]:
        """Every entry of the layer (not the root), depth first, without caching scans."""
        pending = [""]
        while pending:
            directory = pending.pop()
            for name, meta in sorted((self._scan(layer_id, directory) or {}).items()):
                path = f"{directory}/{name}" if directory else name
                yield path, meta
                if meta.is_dir:
                    pending.append(path)

    def lstat(self, layer_id: int, relpath: str) -> Meta:
        parent, _, name = relpath.rpartition("/")
        generated = self.layers[layer_id].generated
        if generated is not None:
            if not name:
                return self.root_meta(self.add(generated.base))
            found = (self.listing(layer_id, parent) or {}).get(name)
            if found is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), relpath)
            return found
        if not name:
            with self.open_dir(layer_id, "") as fd:
                return Meta.from_stat(os.fstat(fd))
        with self.open_dir(layer_id, parent) as fd:
            return Meta.from_stat(os.stat(name, dir_fd=fd, follow_symlinks=False))

    def open_file(self, layer_id: int, relpath: str) -> int:
        """An O_RDONLY fd of a regular file in the layer (never through a symlink); for a
        generated layer, a sealed memfd with the written bytes."""
        parent, _, name = relpath.rpartition("/")
        generated = self.layers[layer_id].generated
        if generated is not None:
            written = generated.file(relpath)
            if written is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), relpath)
            return _sealed_memfd(name, written.content)
        key = (layer_id, parent)
        # Under the lock: an fd evicted and closed meanwhile could be reused by another
        # open, and openat would then look the name up somewhere else.
        with self._lock:
            dir_fd = self._dir_fds.get(key)
            if dir_fd is None:
                with self.open_dir(layer_id, parent) as opened:
                    dir_fd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                                     dir_fd=opened)
                self._dir_fds[key] = dir_fd
                if len(self._dir_fds) > DIR_FD_CACHE:
                    os.close(self._dir_fds.popitem(last=False)[1])
            else:
                self._dir_fds.move_to_end(key)
            return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)

    def close(self) -> None:
        """Release the cached directory fds (a retired generation's store)."""
        with self._lock:
            while self._dir_fds:
                os.close(self._dir_fds.popitem()[1])

    def readlink(self, layer_id: int, relpath: str) -> bytes:
        parent, _, name = relpath.rpartition("/")
        if self.layers[layer_id].generated is not None:
            raise OSError(errno.EINVAL, "a generated layer has no symlinks")
        with self.open_dir(layer_id, parent) as fd:
            return os.readlink(os.fsencode(name), dir_fd=fd)

    def xattrs(self, layer_id: int, relpath: str) -> dict[str, bytes]:
        """All extended attributes of the entry itself (not of a symlink's target)."""
        parent, _, name = relpath.rpartition("/")
        if self.layers[layer_id].generated is not None:
            return {}  # a shell redirect writes none
        with self.open_dir(layer_id, parent) as fd:
            return entry_xattrs(fd, name)


def _sealed_memfd(name: str, content: bytes) -> int:
    """A read-only view of `content`: an anonymous file no write can change (sealed)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                    | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


class LayerMoved(OSError):
    """A layer root is no longer the directory checked at load (a symlink now, or moved):
    the request fails (EIO) rather than follow it anywhere."""


def open_layer_root(layer: Layer) -> int:
    """A directory fd of the layer's root. The last component is opened with O_NOFOLLOW and
    the fd's real path (/proc/self/fd) must be the one checked at load, so a root or a
    directory above it swapped for a symlink after the load is refused, never followed."""
    expected = layer.real
    if expected is None:  # a site built in memory (a command's argument): as given
        return os.open(layer.path, _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        fd = os.open(expected, _DIR_FLAGS)
    except OSError as exc:
        # With O_DIRECTORY, a symlink is ENOTDIR (O_DIRECTORY is checked first), else ELOOP.
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise  # ENOENT: the layer is gone, as if empty
        raise _moved(layer, "is a symlink or no directory now") from None
    try:
        where = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        os.close(fd)
        raise
    if where != str(expected):
        os.close(fd)
        raise _moved(layer, f"resolves to {where} now")
    return fd


def _moved(layer: Layer, what: str) -> LayerMoved:
    message = (f"{layer.label}: its root {layer.real or layer.path} {what}, not the directory "
               "checked at load; not followed")
    log.error("%s", message)
    return LayerMoved(errno.EIO, message)


def _walk(fd: int, relpath: str) -> int:
    """Down relpath from the directory fd (consumed), every component with O_NOFOLLOW."""
    try:
        for part in split_relpath(relpath):
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def open_in_layer(layer: Layer, relpath: str) -> Iterator[int]:
    """A directory fd for relpath in the layer, reached without following any link: one
    openat2 from the root's real path where the kernel has it, else open_layer_root and a
    walk of O_NOFOLLOW opens."""
    fd = _open_at_once(layer, relpath)
    if fd is None:
        fd = _walk(open_layer_root(layer), relpath)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_at_once(layer: Layer, relpath: str) -> int | None:
    """relpath's fd by one openat2 with RESOLVE_NO_SYMLINKS (4x faster than the walk, and
    the kernel checks the root and every directory above it atomically); None when openat2
    is unusable or failed for a reason the walk must tell apart (a symlink inside the layer
    is data, a symlinked root is an error)."""
    if layer.real is None or not openat2.available():
        return None
    path = "/".join([str(layer.real), *split_relpath(relpath)])
    try:
        return openat2.open_no_symlinks(path, _DIR_FLAGS)
    except FileNotFoundError:
        raise
    except OSError:
        return None


@contextmanager
def open_beneath(root: Path, relpath: str) -> Iterator[int]:
    """A directory fd for relpath under root, every component opened with O_NOFOLLOW (root
    itself is onesuite's own directory, e.g. a node's state root, and may be a symlink)."""
    fd = _walk(os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW), relpath)
    try:
        yield fd
    finally:
        os.close(fd)


def scan_dir(dir_fd: int) -> dict[str, Meta]:
    """name -> lstat of every entry of an open directory (entries removed meanwhile skipped)."""
    entries: dict[str, Meta] = {}
    with os.scandir(dir_fd) as it:
        for entry in it:
            try:
                entries[entry.name] = Meta.from_stat(entry.stat(follow_symlinks=False))
            except FileNotFoundError:
                continue
    return entries


def entry_xattrs(dir_fd: int, name: str) -> dict[str, bytes]:
    """All extended attributes of `name` in dir_fd itself (not of a symlink's target); of the
    directory when name is ''."""
    # /proc/self/fd/N/name: the directory is the verified fd; only `name` is looked up, and
    # follow_symlinks=False keeps a final symlink from being followed. For the directory
    # itself, the fd's magic link must be followed.
    path = f"/proc/self/fd/{dir_fd}/{name}" if name else f"/proc/self/fd/{dir_fd}"
    follow = not name
    try:
        names = os.listxattr(path, follow_symlinks=follow)
        return {n: os.getxattr(path, n, follow_symlinks=follow) for n in names}
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.ENODATA):
            return {}
        raise
