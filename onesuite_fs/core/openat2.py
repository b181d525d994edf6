"""openat2(2) with RESOLVE_NO_SYMLINKS, through ctypes (Python 3.11 has no os.openat2).

One syscall opens a directory by its absolute real path and fails with ELOOP if any
component, the layer root or a directory above it included, is a symlink: the kernel checks
the whole path atomically, which a check before or after an open cannot. Linux 5.6+; where the
kernel (RHEL 8's 4.18) or a seccomp filter refuses it, `available()` turns false and callers
use their portable path (layers.open_layer_root).
"""

from __future__ import annotations

import ctypes
import errno
import os

SYS_OPENAT2 = 437  # the same number on every architecture (added after the unification)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
_AT_FDCWD = -100


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_usable = True


def available() -> bool:
    return _usable


def open_no_symlinks(path: str, flags: int) -> int:
    """An fd for the absolute `path`, no symlink followed anywhere on it (ELOOP if one is);
    raises OSError(ENOSYS) once the syscall proved unusable."""
    global _usable
    if not _usable:
        raise OSError(errno.ENOSYS, "openat2 unavailable")
    how = _OpenHow(flags, 0, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(SYS_OPENAT2, _AT_FDCWD, os.fsencode(path), ctypes.byref(how),
                       ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EPERM):  # old kernel, or a seccomp filter
            _usable = False
        raise OSError(err, os.strerror(err), path)
    return fd
