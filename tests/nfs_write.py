#!/usr/bin/env python3
"""Write through NFS (PyPI libnfs) as a diskless node writes its persistent paths.

usage: nfs_write.py URL JSON-STEPS     steps: [["write", path, text], ["append", path, text],
       ["mkdir", path], ["read", path], ["unlink", path]]; prints one JSON list, per step
       "ok", the text read, or "ERR <message>" (the step failed; the next ones still run).
"""

from __future__ import annotations

import errno
import json
import os
import sys

import libnfs
from libnfs import (
    NFSFileHandle_value,
    new_NFSFileHandle,
    nfs_close,
    nfs_create,
    nfs_get_error,
    nfs_open,
    nfs_write,
)


def open_for_writing(nfs: libnfs.NFS, path: str, append: bool) -> object:
    """Open an existing file without O_CREAT (libnfs's NFSv4 OPEN with O_CREAT is GUARDED:
    EEXIST on an existing file), create it only when it is missing."""
    flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
    handle = new_NFSFileHandle()
    status = nfs_open(nfs._nfs, path, flags, handle)
    if status == -errno.ENOENT:
        status = nfs_create(nfs._nfs, path, flags | os.O_CREAT, 0o644, handle)
    if status != 0:
        raise OSError(f"open: {os.strerror(-status)}: {nfs_get_error(nfs._nfs)}")
    return NFSFileHandle_value(handle)


def main() -> int:
    nfs = libnfs.NFS(sys.argv[1])
    results: list[str] = []
    for kind, path, *rest in json.loads(sys.argv[2]):
        try:
            if kind in ("write", "append"):
                handle = open_for_writing(nfs, path, append=kind == "append")
                data = bytearray(rest[0].encode())
                written = nfs_write(nfs._nfs, handle, len(data), data)
                closed = nfs_close(nfs._nfs, handle)
                if written != len(data) or closed != 0:
                    raise OSError(f"write {written}, close {closed}: "
                                  f"{nfs_get_error(nfs._nfs)}")
                results.append("ok")
            elif kind == "mkdir":
                if nfs.mkdir(path) != 0:
                    raise OSError(nfs_get_error(nfs._nfs))
                results.append("ok")
            elif kind == "unlink":
                if nfs.unlink(path) != 0:
                    raise OSError(nfs_get_error(nfs._nfs))
                results.append("ok")
            elif kind == "read":
                handle = nfs.open(path, "rb")
                results.append(bytes(handle.read()).decode())
                handle.close()
        except Exception as exc:  # the step's failure is the result
            results.append(f"ERR {exc}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
