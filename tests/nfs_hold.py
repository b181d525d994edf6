#!/usr/bin/env python3
"""Hold one NFS file handle (PyPI libnfs) and read through it on demand, as a diskless client
holds its handles across server restarts.

usage: nfs_hold.py URL PATH SIZE [CHUNK]   e.g. nfs://10.251.1.1/nodes/node001 /etc/motd 65536
Opens PATH once, then for every line "read" on stdin reads SIZE bytes at offset 0 through the
SAME handle (nfs_pread, no new LOOKUP) and prints "MD5 <hex> <bytes>" or "ERR <rc> <text>";
"quit" ends. libnfs reconnects by itself, so a read issued while the server is down returns
once a server answers again. With CHUNK, the SIZE bytes are read CHUNK bytes at a time, one
request after the other.

For a server that vanishes without a word (its link down: the failover tests), two things
libnfs 4.0 (Debian 12) lacks are made up for here:
- It sets no TCP keepalive and never retransmits a request (both came in libnfs 6.0.0,
  upstream commit b9171e6). A client waiting for a reply sends nothing, so when the address
  moved to another server in the middle of a reply, nothing reaches the new holder to be
  answered with a reset, and the read waits forever. TCP keepalive (idle 2 s, then every
  second) is turned on for libnfs's socket, as the Linux client does (its idle time is the
  mount's timeo): a probe reaches the new holder, is reset, libnfs reconnects and resends.
- It does not forget a reply it was receiving when it reconnects (fixed in 5.0.3, a38a321):
  the new connection's bytes are taken for the rest of the old reply, and the client
  reconnects in a loop. A CHUNK of 1024 keeps every reply in one TCP segment (whole or not
  at all), so a reconnect never falls in the middle of one.
"""

from __future__ import annotations

import ctypes
import hashlib
import socket
import sys

import libnfs
from libnfs import nfs_get_error, nfs_pread

KEEPALIVE = ((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
             (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2),
             (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1),
             # Unanswered probes (the address not moved yet) must not end the connection:
             # the probe that reaches the new holder does.
             (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 120))


class KeepAlive:
    """Sets KEEPALIVE on the socket of a libnfs context (nfs_get_fd: not in the SWIG
    binding), again whenever libnfs has reconnected on a new one."""

    def __init__(self, context: object) -> None:
        self.lib = ctypes.CDLL("libnfs.so.13")
        self.lib.nfs_get_fd.argtypes = [ctypes.c_void_p]
        self.context = int(context)  # type: ignore[call-overload]  # the SWIG pointer

    def apply(self) -> None:
        fd = self.lib.nfs_get_fd(self.context)
        if fd < 0:
            return
        sock = socket.socket(fileno=fd)
        try:
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE):
                for level, option, value in KEEPALIVE:
                    sock.setsockopt(level, option, value)
        finally:
            sock.detach()  # libnfs's descriptor: not ours to close


def main() -> int:
    url, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    chunk = int(sys.argv[4]) if len(sys.argv) > 4 else size
    nfs = libnfs.NFS(url)
    fh = nfs.open(path, "rb")
    keepalive = KeepAlive(nfs._nfs)
    print("OPEN", flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        keepalive.apply()
        digest, total, failed = hashlib.md5(), 0, None
        while total < size:
            want = min(chunk, size - total)
            buf = bytearray(want)
            got = nfs_pread(nfs._nfs, fh._nfsfh, total, want, buf)
            if got < 0:
                failed = f"ERR {got} {nfs_get_error(nfs._nfs)}"
                break
            if got == 0:
                break
            digest.update(buf[:got])
            total += got
        print(failed or f"MD5 {digest.hexdigest()} {total}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
