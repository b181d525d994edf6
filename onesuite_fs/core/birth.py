"""A file's birth time (statx(2) STATX_BTIME, through ctypes: Python 3.11's os.stat has none).

An inode number is reused once its file is removed; the birth time tells the next file on
that number from the removed one, so a layer file's generation holds it (docs/nfs.md,
"Isolation"). Where the kernel or the file system gives none (ext4 with 128-byte inodes,
old kernels), the answer is b"" and the generation is the number's alone, as before.
"""

from __future__ import annotations

import ctypes
import struct

_AT_SYMLINK_NOFOLLOW = 0x100
_STATX_INO = 0x100
_STATX_BTIME = 0x800
_STATX_SIZE = 256
_INO_AT, _BTIME_AT = 32, 80  # offsets in struct statx

try:
    _statx = ctypes.CDLL(None, use_errno=True).statx
except AttributeError:  # glibc before 2.28
    _statx = None


def birth(dir_fd: int, name: str, ino: int) -> bytes:
    """The birth time of `name` in `dir_fd` (not followed if a symlink) as bytes, if it is
    still inode `ino`; b"" when there is none to be had."""
    if _statx is None:
        return b""
    buffer = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(dir_fd, name.encode("utf-8", "surrogateescape"), _AT_SYMLINK_NOFOLLOW,
              _STATX_INO | _STATX_BTIME, buffer) != 0:
        return b""
    mask = struct.unpack_from("<I", buffer.raw, 0)[0]
    if not mask & _STATX_BTIME or struct.unpack_from("<Q", buffer.raw, _INO_AT)[0] != ino:
        return b""
    seconds, nanoseconds = struct.unpack_from("<qI", buffer.raw, _BTIME_AT)
    return b"%d.%09d" % (seconds, nanoseconds)
