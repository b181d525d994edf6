#!/usr/bin/env python3
"""Walk a tree, locally or through NFS (PyPI libnfs), and print one JSON object describing it.

usage: nfs_walk.py nfs://HOST/nodes/node001?version=4     (run with nsenter --net for a netns)
       nfs_walk.py /mnt/nodes/node001

{path: [st_mode, uid, gid, size, rdev, mtime, md5 of a regular file's bytes or null]}; both
forms give the same keys and values for the same tree, so a test compares the two outputs.
The NFS walk uses only libnfs, never the kernel (the host has no NFS client).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys

Entry = list[object]


def walk_local(root: str) -> dict[str, Entry]:
    found: dict[str, Entry] = {}

    def visit(rel: str) -> None:
        full = os.path.join(root, rel.lstrip("/"))
        st = os.lstat(full)
        digest = None
        if stat.S_ISREG(st.st_mode):
            with open(full, "rb") as f:
                digest = hashlib.md5(f.read()).hexdigest()
        found[rel] = [st.st_mode, st.st_uid, st.st_gid,
                      st.st_size, st.st_rdev, int(st.st_mtime), digest]
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(full)):
                visit(f"{rel.rstrip('/')}/{name}")

    visit("/")
    return found


NFS_READ = 256 << 10  # what the kernel client's rsize would be; see read_all


def read_all(fh: object) -> bytes:
    """A whole file in reads of at most 256 KiB. PyPI libnfs sends one READ for whatever
    size it is asked, and a read above the server's maximum (ganesha: 1 MiB) comes back short
    and leaves the connection out of step: every later call fails with EIO (the "31 of 400
    boot-set files" of bench/notes.md)."""
    chunks = []
    while True:
        chunk = fh.read(NFS_READ)  # type: ignore[attr-defined]
        chunks.append(bytes(chunk))
        if len(chunk) < NFS_READ:
            return b"".join(chunks)


def walk_nfs(url: str) -> dict[str, Entry]:
    import libnfs

    nfs = libnfs.NFS(url)
    found: dict[str, Entry] = {}

    def visit(rel: str) -> None:
        st = nfs.lstat(rel)
        digest = None
        if stat.S_ISREG(st["mode"]):
            fh = nfs.open(rel, "rb")  # binary: the default is text mode
            digest = hashlib.md5(read_all(fh)).hexdigest()
            fh.close()
        found[rel] = [st["mode"], st["uid"], st["gid"], st["size"], st["rdev"],
                      st["mtime"]["sec"], digest]
        if stat.S_ISDIR(st["mode"]):
            for name in sorted(nfs.listdir(rel)):
                if name not in (".", ".."):
                    visit(f"{rel.rstrip('/')}/{name}")

    visit("/")
    return found


def main() -> int:
    target = sys.argv[1]
    tree = walk_nfs(target) if target.startswith("nfs://") else walk_local(target)
    json.dump(tree, sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
