"""name_to_handle_at / open_by_handle_at through ctypes: what an NFS server (nfs-ganesha's
FSAL_VFS, the kernel's nfsd) does with our files. Opening a handle whose inode the kernel has
evicted makes the kernel send LOOKUP(ino, ".") to the filesystem."""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
MAX_HANDLE_SZ = 128


class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ)]


def name_to_handle(path: str | os.PathLike[str]) -> FileHandle:
    handle = FileHandle()
    handle.handle_bytes = MAX_HANDLE_SZ
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(_AT_FDCWD, os.fsencode(path), ctypes.byref(handle),
                               ctypes.byref(mount_id), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return handle


def open_by_handle(mount_fd: int, handle: FileHandle, flags: int = os.O_RDONLY) -> int:
    fd = _libc.open_by_handle_at(mount_fd, ctypes.byref(handle), flags)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
