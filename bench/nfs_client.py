#!/usr/bin/env python3
"""Read every file of a list through NFS with PyPI libnfs (run inside the client's network
namespace): prints {"seconds", "bytes", "errors"} as JSON. The mount is outside the timing.

usage: nfs_client.py nfs://ADDR/nodes/HOST?version=4 LISTFILE
"""

from __future__ import annotations

import json
import sys
import time

# PyPI libnfs sends one READ for whatever size it is asked; above the server's maximum
# (ganesha: 1 MiB) the answer comes back short and the connection is left out of step, so
# every later call fails with EIO: the "31 of 400 boot-set files" bench/notes.md recorded
# against both servers were the files read after the first one larger than 1 MiB.
READ_SIZE = 256 << 10


def main() -> int:
    import libnfs

    url, list_file = sys.argv[1], sys.argv[2]
    with open(list_file) as f:
        paths = f.read().split("\n")
    nfs = libnfs.NFS(url)  # outside the timing, like a mount
    total = errors = 0
    elapsed = 0.0
    for rel in filter(None, paths):
        start = time.perf_counter()
        try:
            fh = nfs.open("/" + rel, "rb")  # binary: libnfs defaults to text mode
            while True:  # reads of at most 256 KiB, as a kernel client's rsize (see below)
                got = len(fh.read(READ_SIZE))
                total += got
                if got < READ_SIZE:
                    break
            fh.close()
        except Exception as exc:  # libnfs raises plain ValueError/IOError variants
            errors += 1
            print(f"nfs_client: /{rel}: {exc}", file=sys.stderr)
        elapsed += time.perf_counter() - start
    json.dump({"seconds": elapsed, "bytes": total, "errors": errors},
              sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
