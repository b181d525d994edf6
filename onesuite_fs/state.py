"""Node-private, writable, persistent paths (oneSIS RAM*/LINK* under the ``persistent``
policy), kept on the server in ``STATE_DIR/nodes/<host>/<path>``.

Writes go straight to real files there, so everything a write call returned for is in the
server's page cache: a crash (even kill -9) of the daemon loses nothing. New paths are made
under a temporary name and renamed into place, so a crash in the middle never leaves a
half-copied entry. Every access walks from the node's state root with ``O_NOFOLLOW``: a
symlink a node wrote is data, never followed on the server.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from .layers import Meta, entry_xattrs, open_beneath, scan_dir, split_relpath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TMP_NAME = ".onesuite-tmp"


class NodeState:
    """One node's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def open_dir(self, relpath: str) -> AbstractContextManager[int]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return open_beneath(self.root, relpath)

    @contextmanager
    def parent(self, relpath: str) -> Iterator[tuple[int, str]]:
        parent, _, name = relpath.rpartition("/")
        with self.open_dir(parent) as fd:
            yield fd, name

    def lstat(self, relpath: str) -> Meta | None:
        if not self.root.is_dir():
            return None  # nothing made for this node yet (and looking makes nothing)
        try:
            with self.parent(relpath) as (fd, name):
                return Meta.from_stat(os.stat(name, dir_fd=fd, follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise

    def listing(self, relpath: str) -> dict[str, Meta]:
        with self.open_dir(relpath) as fd:
            entries = scan_dir(fd)
        entries.pop(TMP_NAME, None)  # the staging area is not the node's
        return entries

    def open(self, relpath: str, flags: int, mode: int = 0o600) -> int:
        with self.parent(relpath) as (fd, name):
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)

    def readlink(self, relpath: str) -> bytes:
        with self.parent(relpath) as (fd, name):
            return os.readlink(os.fsencode(name), dir_fd=fd)

    def mkdir(self, relpath: str, mode: int) -> None:
        with self.parent(relpath) as (fd, name):
            os.mkdir(name, mode, dir_fd=fd)

    def symlink(self, relpath: str, target: bytes) -> None:
        with self.parent(relpath) as (fd, name):
            os.symlink(target, os.fsencode(name), dir_fd=fd)

    def mknod(self, relpath: str, mode: int, rdev: int) -> None:
        with self.parent(relpath) as (fd, name):
            os.mknod(name, mode, rdev, dir_fd=fd)

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
            if size is not None:
                file_fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    os.ftruncate(file_fd, size)
                finally:
                    os.close(file_fd)
            if uid is not None or gid is not None:
                os.chown(name, -1 if uid is None else uid, -1 if gid is None else gid,
                         dir_fd=fd, follow_symlinks=False)
            if mode is not None:
                is_link = stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
                if not is_link:  # Linux has no lchmod; a symlink's mode means nothing
                    os.chmod(name, stat.S_IMODE(mode), dir_fd=fd)
            if times_ns is not None:
                os.utime(name, ns=times_ns, dir_fd=fd, follow_symlinks=False)

    def xattrs(self, relpath: str) -> dict[str, bytes]:
        with self.parent(relpath) as (fd, name):
            return entry_xattrs(fd, name)

    # ----- creating a path the first time a node uses it ---------------------------------
    def staging(self) -> Path:
        """A fresh directory on the same filesystem to build an entry in before renaming it
        into place (a leftover from a crash is removed by `clean_staging`)."""
        tmp = self.root / TMP_NAME / uuid.uuid4().hex
        tmp.mkdir(parents=True, mode=0o700)
        return tmp

    def publish(self, built: Path, relpath: str) -> bool:
        """Move a staged entry to relpath atomically; False if it exists already (another
        request made it first: keep theirs)."""
        _fsync_tree(built)
        try:
            with self.parent(relpath) as (fd, name):
                try:
                    os.stat(name, dir_fd=fd, follow_symlinks=False)
                    return False
                except FileNotFoundError:
                    os.rename(built, name, dst_dir_fd=fd)
                    os.fsync(fd)
                    return True
        finally:
            shutil.rmtree(built.parent, ignore_errors=True)

    def make_parents(self, relpath: str) -> None:
        """Plain directories up to relpath's parent, inside the state root."""
        parts = split_relpath(relpath)[:-1]
        with self.open_dir("") as fd:
            current = os.dup(fd)
        try:
            for part in parts:
                try:
                    os.mkdir(part, 0o755, dir_fd=current)
                except FileExistsError:
                    pass
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=current)
                os.close(current)
                current = next_fd
        finally:
            os.close(current)

    def clean_staging(self) -> None:
        shutil.rmtree(self.root / TMP_NAME, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
