#!/usr/bin/env python3
"""Hold one NFS file handle (PyPI libnfs) and read through it on demand, as a diskless client
holds its handles across server restarts.

usage: nfs_hold.py URL PATH SIZE     e.g. nfs://10.251.1.1/nodes/node001 /etc/motd 65536
Opens PATH once, then for every line "read" on stdin reads SIZE bytes at offset 0 through the
SAME handle (nfs_pread, no new LOOKUP) and prints "MD5 <hex> <bytes>" or "ERR <rc> <text>";
"quit" ends. libnfs reconnects by itself, so a read issued while the server is down returns
once a server answers again.
"""

from __future__ import annotations

import hashlib
import sys

import libnfs
from libnfs import nfs_get_error, nfs_pread


def main() -> int:
    url, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    nfs = libnfs.NFS(url)
    fh = nfs.open(path, "rb")
    print("OPEN", flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        buf = bytearray(size)
        got = nfs_pread(nfs._nfs, fh._nfsfh, 0, size, buf)
        if got < 0:
            print("ERR", got, nfs_get_error(nfs._nfs), flush=True)
        else:
            print("MD5", hashlib.md5(buf[:got]).hexdigest(), got, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
