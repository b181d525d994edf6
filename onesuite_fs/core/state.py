"""Node-private, writable, persistent paths (oneSIS RAM*/LINK* under the ``persistent``
policy), kept on the server in ``STATE_DIR/nodes/<host>/<path>``.

Writes go straight to real files there, so everything a write call returned for is in the
server's page cache: a crash (even kill -9) of the daemon loses nothing. New entries are built
under a temporary name and renamed into place (never over an existing one), so a crash in the
middle never leaves a half-made entry; what a crash leaves in the staging area is removed when
the next mount starts. Every access walks from the node's state root with ``O_NOFOLLOW``: a
symlink a node wrote is data, never followed on the server.

The store is no way in for a local user of the server: every directory is 0700 and every file
0600, owned by the daemon, from the moment it is made. What the node sees as mode (setuid and
setgid bits included), owner, group and device number is metadata: an extended attribute of
the stored entry (`META_XATTR`), written before the entry is renamed into place, so it is as
atomic and as durable as the entry itself. A device node, FIFO or socket is an empty regular
file carrying its type and device number there: no setuid file and no special file is ever
made on the server's filesystem.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import secrets
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import NamedTuple

from .errors import ConfigError
from .layers import Meta, entry_xattrs, open_beneath, scan_dir, split_relpath

log = logging.getLogger("onesuite.state")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TMP_NAME = ".onesuite-tmp"
DIR_MODE = 0o700  # every directory of the store, as made (the umask can only take bits away)
FILE_MODE = 0o600  # every file of the store
# trusted.* is root's alone (a local user can neither read nor forge it); a daemon not run
# as root keeps it in user.* of its own 0700 store.
META_XATTR = "trusted.onesuite.node" if os.geteuid() == 0 else "user.onesuite.node"
# A random id per entry, made the first time the daemon numbers it: the file system reuses
# a removed entry's inode number, and the id tells the new entry from the old one.
ID_XATTR = META_XATTR.rpartition(".")[0] + ".id"
ID_BYTES = 8
STORE_VERSION = "2"  # 2: node attributes as metadata (1 kept them in the real mode bits)
_VERSION_FILE = "store-version"
_SPECIAL = (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)


class NodeAttrs(NamedTuple):
    """What the node sees of an entry, kept as metadata: st_mode (type included), owner,
    group and device number."""

    mode: int
    uid: int
    gid: int
    rdev: int = 0

    def encode(self) -> bytes:
        return b"%o %d %d %d" % (self.mode, self.uid, self.gid, self.rdev)

    @classmethod
    def decode(cls, raw: bytes) -> NodeAttrs | None:
        """None for anything but four numbers in range (a damaged value shows the real,
        harmless attributes rather than failing the entry)."""
        fields = raw.split(b" ")
        if len(fields) != 4 or not all(f.isdigit() for f in fields[1:]):
            return None
        try:
            mode = int(fields[0], 8)
        except ValueError:
            return None
        uid, gid, rdev = (int(f) for f in fields[1:])
        if mode >> 16 or uid >> 32 or gid >> 32 or rdev >> 64:
            return None
        return cls(mode, uid, gid, rdev)

    @classmethod
    def of(cls, meta: Meta) -> NodeAttrs:
        return cls(meta.mode, meta.uid, meta.gid, meta.rdev)


def _entry_path(dir_fd: int, name: str) -> str:
    # The verified directory fd; only `name` is looked up (follow_symlinks=False at the call).
    return f"/proc/self/fd/{dir_fd}/{name}"


def write_node_attrs(target: str | Path | int, attrs: NodeAttrs) -> None:
    """Record what the node sees of `target` (a path not followed if a symlink, or an fd)."""
    if isinstance(target, int):
        os.setxattr(target, META_XATTR, attrs.encode())
        return
    try:
        os.setxattr(target, META_XATTR, attrs.encode(), follow_symlinks=False)
    except PermissionError:
        if not (META_XATTR.startswith("user.") and stat.S_ISLNK(attrs.mode)):
            raise
        # user.* cannot go on a symlink: a daemon not run as root shows its own ownership


def _entry_id(path: str) -> bytes:
    for _attempt in range(2):
        try:
            return os.getxattr(path, ID_XATTR, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                return b""  # ENOTSUP, or user.* on a symlink: numbered as before
        try:
            os.setxattr(path, ID_XATTR, secrets.token_bytes(ID_BYTES), os.XATTR_CREATE,
                        follow_symlinks=False)
        except FileExistsError:
            continue  # another request made it first: read theirs
        except OSError:
            return b""
    return b""


def _read_node_attrs(path: str) -> NodeAttrs | None:
    try:
        return NodeAttrs.decode(os.getxattr(path, META_XATTR, follow_symlinks=False))
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise


def shown_meta(meta: Meta, attrs: NodeAttrs | None) -> Meta:
    """The stored entry's real lstat with the node's attributes laid over it."""
    if attrs is None:
        return meta  # made by store version 1 and not converted yet: its real attributes
    real_type, kind = stat.S_IFMT(meta.mode), stat.S_IFMT(attrs.mode)
    if kind != real_type and not (real_type == stat.S_IFREG and kind in _SPECIAL):
        kind = real_type  # a value that does not fit the entry: only its permissions count
    special = kind in _SPECIAL
    return meta._replace(mode=kind | stat.S_IMODE(attrs.mode), uid=attrs.uid, gid=attrs.gid,
                         rdev=attrs.rdev if special else 0, size=0 if special else meta.size)


def _rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """rename(2) that fails with EEXIST instead of replacing what is there."""
    if _libc.renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst),
                       _RENAME_NOREPLACE) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS):  # a filesystem without RENAME_NOREPLACE
        raise OSError(err, os.strerror(err), dst)
    try:
        os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


def _private_dir(path: Path) -> None:
    """mkdir 0700 (no window with wider permissions); nothing if it exists."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass


class NodeState:
    """One node's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _make_root(self) -> None:
        if not self.root.parent.is_dir():
            make_store(self.root.parent.parent)
        _private_dir(self.root)

    def open_dir(self, relpath: str) -> AbstractContextManager[int]:
        self._make_root()
        return open_beneath(self.root, relpath)

    @contextmanager
    def parent(self, relpath: str) -> Iterator[tuple[int, str]]:
        parent, _, name = relpath.rpartition("/")
        with self.open_dir(parent) as fd:
            yield fd, name

    def lstat(self, relpath: str) -> Meta | None:
        found = self._stat(relpath, with_id=False)
        return None if found is None else found[0]

    def identity(self, relpath: str) -> tuple[Meta, bytes] | None:
        """What `lstat` gives, and the entry's id (b"" where the file system keeps none, such
        as user.* on a symlink): made here the first time, kept for the entry's life."""
        return self._stat(relpath, with_id=True)

    def _stat(self, relpath: str, *, with_id: bool) -> tuple[Meta, bytes] | None:
        if not self.root.is_dir():
            return None  # nothing made for this node yet (and looking makes nothing)
        try:
            with self.parent(relpath) as (fd, name):
                meta = self._shown(fd, name, os.stat(name, dir_fd=fd, follow_symlinks=False))
                return meta, _entry_id(_entry_path(fd, name)) if with_id else b""
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise

    @staticmethod
    def _shown(fd: int, name: str, st: os.stat_result | Meta) -> Meta:
        meta = st if isinstance(st, Meta) else Meta.from_stat(st)
        return shown_meta(meta, _read_node_attrs(_entry_path(fd, name)))

    def listing(self, relpath: str) -> dict[str, Meta]:
        with self.open_dir(relpath) as fd:
            entries = scan_dir(fd)
            if not relpath:
                entries.pop(TMP_NAME, None)  # the staging area is not the node's
            shown: dict[str, Meta] = {}
            for name, meta in entries.items():
                try:
                    shown[name] = self._shown(fd, name, meta)
                except FileNotFoundError:
                    continue  # removed meanwhile
            return shown

    def open(self, relpath: str, flags: int) -> int:
        """An existing regular file (a device node's stand-in never opens)."""
        with self.parent(relpath) as (fd, name):
            meta = self._shown(fd, name, os.stat(name, dir_fd=fd, follow_symlinks=False))
            if stat.S_IFMT(meta.mode) in _SPECIAL:
                raise OSError(errno.ENXIO, os.strerror(errno.ENXIO), relpath)
            return os.open(name, (flags & ~os.O_CREAT) | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=fd)

    def readlink(self, relpath: str) -> bytes:
        with self.parent(relpath) as (fd, name):
            return os.readlink(os.fsencode(name), dir_fd=fd)

    # ----- making entries: staged with their attributes, then renamed into place --------
    def _place(self, relpath: str, build: Callable[[int, str], int | None]) -> int | None:
        """Build an entry in the staging area with `build(dir_fd, name)`, then rename it to
        relpath (EEXIST if something is there). Returns what `build` returned (an fd)."""
        staged = uuid.uuid4().hex
        with self.open_dir("") as root_fd:
            _private_dir_at(root_fd, TMP_NAME)
            tmp_fd = os.open(TMP_NAME, _DIR_FLAGS, dir_fd=root_fd)
        try:
            try:
                result = build(tmp_fd, staged)
            except BaseException:
                _remove_at(tmp_fd, staged)  # a full disk: nothing left behind
                raise
            try:
                with self.parent(relpath) as (fd, name):
                    _rename_noreplace(tmp_fd, staged, fd, name)
            except BaseException:
                if result is not None:
                    os.close(result)
                _remove_at(tmp_fd, staged)
                raise
            return result
        finally:
            os.close(tmp_fd)

    def create(self, relpath: str, flags: int, attrs: NodeAttrs) -> int:
        """A new regular file, open with `flags` (EEXIST if the name is taken)."""
        def build(dir_fd: int, name: str) -> int:
            fd = os.open(name, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         FILE_MODE, dir_fd=dir_fd)
            try:
                write_node_attrs(fd, attrs)
            except BaseException:
                os.close(fd)
                raise
            return fd

        fd = self._place(relpath, build)
        assert fd is not None
        return fd

    def mkdir(self, relpath: str, attrs: NodeAttrs) -> None:
        def build(dir_fd: int, name: str) -> None:
            os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
            write_node_attrs(_entry_path(dir_fd, name), attrs)

        self._place(relpath, build)

    def symlink(self, relpath: str, target: bytes, attrs: NodeAttrs) -> None:
        def build(dir_fd: int, name: str) -> None:
            os.symlink(target, os.fsencode(name), dir_fd=dir_fd)
            write_node_attrs(_entry_path(dir_fd, name), attrs)

        self._place(relpath, build)

    def mknod(self, relpath: str, attrs: NodeAttrs) -> None:
        """A device node, FIFO or socket: an empty 0600 file carrying type and number."""
        def build(dir_fd: int, name: str) -> None:
            _placeholder_at(dir_fd, name, attrs)

        self._place(relpath, build)

    def unlink(self, relpath: str) -> None:
        with self.parent(relpath) as (fd, name):
            os.unlink(name, dir_fd=fd)

    def rmdir(self, relpath: str) -> None:
        with self.parent(relpath) as (fd, name):
            os.rmdir(name, dir_fd=fd)

    def rename(self, old: str, new: str) -> None:
        with self.parent(old) as (old_fd, old_name), self.parent(new) as (new_fd, new_name):
            os.rename(old_name, new_name, src_dir_fd=old_fd, dst_dir_fd=new_fd)

    def set_attrs(self, relpath: str, *, mode: int | None = None, uid: int | None = None,
                  gid: int | None = None, size: int | None = None,
                  times_ns: tuple[int, int] | None = None) -> None:
        with self.parent(relpath) as (fd, name):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            shown = self._shown(fd, name, st)
            if size is not None:
                if not stat.S_ISREG(shown.mode):
                    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), relpath)
                file_fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    os.ftruncate(file_fd, size)
                finally:
                    os.close(file_fd)
            if mode is not None or uid is not None or gid is not None:
                current = NodeAttrs.of(shown)
                # Linux has no lchmod; a symlink's mode means nothing.
                new_mode = current.mode if mode is None or stat.S_ISLNK(shown.mode) else (
                    stat.S_IFMT(current.mode) | stat.S_IMODE(mode))
                write_node_attrs(_entry_path(fd, name), current._replace(
                    mode=new_mode, uid=current.uid if uid is None else uid,
                    gid=current.gid if gid is None else gid))
            if times_ns is not None:
                os.utime(name, ns=times_ns, dir_fd=fd, follow_symlinks=False)

    def xattrs(self, relpath: str) -> dict[str, bytes]:
        with self.parent(relpath) as (fd, name):
            values = entry_xattrs(fd, name)
        values.pop(META_XATTR, None)  # the store's bookkeeping, not the node's
        return values

    # ----- creating a path the first time a node uses it ---------------------------------
    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh 0700 directory on the same filesystem to build an entry in before it is
        published; removed when the block ends, whatever happened (a crash's leftover is
        removed by `clean_staging` when the next mount starts)."""
        with self.open_dir("") as root_fd:
            _private_dir_at(root_fd, TMP_NAME)
        tmp = self.root / TMP_NAME / uuid.uuid4().hex
        os.mkdir(tmp, DIR_MODE)
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def publish(self, built: Path, relpath: str) -> bool:
        """Move a staged entry to relpath atomically; False if it exists already (another
        request made it first: keep theirs)."""
        _fsync_tree(built)
        with self.parent(relpath) as (fd, name):
            try:
                _rename_noreplace(-100, str(built), fd, name)  # -100: AT_FDCWD
            except FileExistsError:
                return False
            os.fsync(fd)
            return True

    def make_parents(self, relpath: str) -> None:
        """Plain directories up to relpath's parent, inside the state root."""
        parts = split_relpath(relpath)[:-1]
        with self.open_dir("") as fd:
            current = os.dup(fd)
        try:
            for part in parts:
                _private_dir_at(current, part)
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=current)
                os.close(current)
                current = next_fd
        finally:
            os.close(current)

    def clean_staging(self) -> int:
        """Remove what a crash left in the staging area; returns the bytes freed."""
        tmp = self.root / TMP_NAME
        if not tmp.is_dir() or tmp.is_symlink():
            return 0
        freed = sum(st.st_blocks * 512 for st in _walk_lstat(tmp))
        for child in tmp.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        return freed


def _private_dir_at(dir_fd: int, name: str) -> None:
    try:
        os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
    except FileExistsError:
        pass


def _placeholder_at(dir_fd: int, name: str, attrs: NodeAttrs) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 FILE_MODE, dir_fd=dir_fd)
    try:
        write_node_attrs(fd, attrs)
    finally:
        os.close(fd)


def _remove_at(dir_fd: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass  # the next mount's clean-up takes it


def _walk_lstat(top: Path) -> Iterator[os.stat_result]:
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            try:
                yield os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue


def _fsync_tree(path: Path) -> None:
    if not path.is_dir() or path.is_symlink():
        if stat.S_ISREG(path.lstat().st_mode):
            _fsync_path(str(path), os.O_RDONLY | os.O_NOFOLLOW)
        return
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                _fsync_path(full, os.O_RDONLY | os.O_NOFOLLOW)
        _fsync_path(dirpath, os.O_RDONLY | os.O_DIRECTORY)


def _fsync_path(path: str, flags: int) -> None:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----- the store as a whole, at mount start ---------------------------------------------
def make_store(state_dir: Path) -> None:
    """The store's own directories, 0700 from the start (the directories above it are the
    administrator's)."""
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    _private_dir(state_dir)
    _private_dir(state_dir / "nodes")


_LOCK_NAME = "lock"
_held_locks: dict[Path, int] = {}  # store -> the fd holding its lock, for this process's life


def lock_store(state_dir: Path) -> None:
    """Hold the store's lock (flock) for as long as this process and the daemon it forks
    live: one serving daemon per store. Without it a second `onesuite serve` or `mount` with
    the same store, even one refused a moment later (the mount point is busy), removed the
    staging areas of copies the serving daemon was making (a copy published after part of it
    was removed is a node's persistent directory with files missing)."""
    key = Path(os.path.realpath(state_dir))
    if key in _held_locks:
        return
    fd = os.open(state_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError("the persistent store is in use by another onesuite daemon "
                          "(a mount or serve of this or another mount point)",
                          file=str(state_dir),
                          hint="one daemon per store: stop the other one first (onesuite "
                               "umount), or give this one its own --persistent-dir") from None
    _held_locks[key] = fd


def prepare_store(state_dir: Path) -> None:
    """Before a mount serves: make the store (or close it to local users: 0700, the daemon's
    own) and lock it, check that its filesystem keeps the node attributes, remove what
    crashed copies left in the staging areas, and convert entries a version-1 store made
    with real setuid bits and device nodes. Raises ConfigError when the store cannot be
    used, or another daemon serves from it."""
    try:
        make_store(state_dir)
        lock_store(state_dir)
        nodes = state_dir / "nodes"
        for directory in (state_dir, nodes):
            _close_to_others(directory)
        _check_xattrs(nodes)
        converted = (state_dir / _VERSION_FILE).is_file() and (
            state_dir / _VERSION_FILE).read_text().strip() == STORE_VERSION
        for host_dir in sorted(nodes.iterdir()):
            if host_dir.is_symlink() or not host_dir.is_dir():
                continue
            _close_to_others(host_dir)
            freed = NodeState(host_dir).clean_staging()
            if freed:
                log.warning("node %s: removed %d bytes an interrupted copy left in %s",
                            host_dir.name, freed, host_dir / TMP_NAME)
            if not converted:
                _convert_v1(host_dir)
        if not converted:
            version = state_dir / f".{_VERSION_FILE}.new"
            fd = os.open(version, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                         FILE_MODE)
            with os.fdopen(fd, "w") as out:
                out.write(STORE_VERSION + "\n")
            version.replace(state_dir / _VERSION_FILE)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise ConfigError(f"cannot prepare the persistent store: {exc.strerror or exc}{where}",
                          file=str(state_dir),
                          hint="--persistent-dir must be a directory root can make and own, "
                               "on a local filesystem") from None


def _close_to_others(directory: Path) -> None:
    st = directory.stat()
    if stat.S_IMODE(st.st_mode) != DIR_MODE or st.st_uid != os.geteuid():
        log.warning("%s was %o, owner %d: made %o, the daemon's own", directory,
                    stat.S_IMODE(st.st_mode), st.st_uid, DIR_MODE)
        os.chown(directory, os.geteuid(), os.getegid())
        os.chmod(directory, DIR_MODE)


def _check_xattrs(directory: Path) -> None:
    probe = META_XATTR + ".probe"
    try:
        os.setxattr(directory, probe, b"1")
        os.removexattr(directory, probe)
    except OSError as exc:
        raise ConfigError(
            f"the persistent directory's filesystem keeps no {probe.split('.')[0]}.* extended "
            f"attributes ({exc.strerror}), where nodes' modes, owners and device numbers live",
            file=str(directory.parent),
            hint="use a local ext4, xfs, btrfs or tmpfs directory for --persistent-dir") from None


def _convert_v1(host_dir: Path) -> None:
    """A version-1 node directory: record every entry's real mode, owner and device number
    as node attributes, then make it 0600/0700 and the daemon's, a special file a stand-in."""
    uid, gid = os.geteuid(), os.getegid()
    for dirpath, dirnames, filenames in os.walk(host_dir):
        if dirpath == str(host_dir) and TMP_NAME in dirnames:
            dirnames.remove(TMP_NAME)
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            attrs = _read_node_attrs(path)
            if attrs is None:
                attrs = NodeAttrs(st.st_mode, st.st_uid, st.st_gid, st.st_rdev)
                write_node_attrs(path, attrs)
            if stat.S_IFMT(st.st_mode) in _SPECIAL:
                dir_fd = os.open(dirpath, _DIR_FLAGS)
                try:
                    staged = f".{uuid.uuid4().hex}"
                    _placeholder_at(dir_fd, staged, attrs)
                    os.utime(staged, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dir_fd)
                    os.rename(staged, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                finally:
                    os.close(dir_fd)
                continue
            os.chown(path, uid, gid, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(path, DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE)
