#!/usr/bin/env python3
"""Replay a recorded boot (bench/data/boot-trace.json, bench/boot_record.py) through NFSv3 as
one node: MOUNT the node's export (outside the timing, like the initramfs's mount), then send
every recorded call in the boot's order, one at a time, from the node's own address and a
privileged port: GETATTR, LOOKUP, ACCESS, READLINK, READ, READDIRPLUS, FSINFO, FSSTAT,
PATHCONF. Objects are named by path in the trace; their handles come from this server's own
LOOKUP and READDIRPLUS replies, as the recorded boot got them. Prints JSON: seconds, calls,
files (read), bytes, errors (transport failures, calls on objects never found, and replies
whose status differs from the recorded boot's), the first few differences.

usage: nfs3_replay.py SERVER /nodes/HOST TRACE [--source ADDRESS] [--port 2049]
       [--mount-port 20048]
"""

from __future__ import annotations

import argparse
import errno
import json
import random
import socket
import struct
import sys
import time

if __package__ in (None, ""):  # run as a script in the client's namespace
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from bench import nfs3  # noqa: E402


class Connection:
    """One TCP connection from a privileged port of `source`, one call at a time."""

    def __init__(self, server: str, port: int, source: str | None) -> None:
        self.sock = self._connect(server, port, source)
        self.xid = random.randrange(1 << 31)

    @staticmethod
    def _connect(server: str, port: int, source: str | None) -> socket.socket:
        ports = list(range(600, 1024))
        random.shuffle(ports)
        last: OSError | None = None
        for local in ports[:60]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((source or "", local))
                sock.connect((server, port))
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    last = exc
                    continue
                raise
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise OSError(f"no privileged port free: {last}")

    def call(self, program: int, version: int, procedure: int, args: bytes) -> nfs3.Unpacker:
        self.xid = (self.xid + 1) & 0x7FFFFFFF
        body = nfs3.call_header(self.xid, program, version, procedure) + args
        self.sock.sendall(struct.pack(">I", 0x80000000 | len(body)) + body)
        parts = []
        while True:
            (mark,) = struct.unpack(">I", self._recv(4))
            parts.append(self._recv(mark & 0x7FFFFFFF))
            if mark & 0x80000000:
                break
        message = b"".join(parts)
        if struct.unpack_from(">I", message, 0)[0] != self.xid:
            raise OSError("reply to another call")
        results = nfs3.reply_body(message)
        if results is None:
            raise OSError("RPC call rejected")
        return results

    def _recv(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = self.sock.recv(min(left, 1 << 20))
            if not chunk:
                raise OSError("connection closed by the server")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()


def mount(server: str, port: int, source: str | None, export: str) -> bytes:
    conn = Connection(server, port, source)
    try:
        reply = nfs3.decode_reply("MNT", conn.call(nfs3.MOUNT_PROGRAM, nfs3.MOUNT_V3,
                                                    nfs3.MOUNTPROC_MNT,
                                                    nfs3.Packer().opaque(export.encode())
                                                    .bytes()))
    finally:
        conn.close()
    if reply.status != 0:
        raise OSError(f"MOUNT {export}: status {reply.status}")
    return reply.fh


def replay(conn: Connection, root: bytes, ops: list[list[object]]) -> dict[str, object]:
    handles: dict[str, bytes] = {"": root}
    listing: dict[str, tuple[int, bytes]] = {}  # directory -> (last cookie, verifier)
    errors, total, files = 0, 0, set()
    differences: list[str] = []
    for op in ops:
        name, path, expected = str(op[0]), str(op[1]), op[-1]
        fh = handles.get(path)
        if fh is None:
            errors += 1
            if len(differences) < 5:
                differences.append(f"{name} {path}: never found")
            continue
        args = nfs3.Packer().opaque(fh)
        if name == "LOOKUP":
            args.opaque(str(op[2]).encode(errors="surrogateescape"))
        elif name == "ACCESS":
            args.u32(int(op[2]))  # type: ignore[call-overload]
        elif name == "READ":
            args.u64(int(op[2])).u32(int(op[3]))  # type: ignore[call-overload]
        elif name == "READDIRPLUS":
            cookie, verifier = (0, b"\0" * 8) if not op[2] else listing.get(path, (0, b"\0" * 8))
            args.u64(cookie)
            args.parts.append(verifier)
            args.u32(int(op[3])).u32(int(op[4]))  # type: ignore[call-overload]
        results = conn.call(nfs3.NFS_PROGRAM, nfs3.NFS_V3, nfs3.NUMBERS[name], args.bytes())
        if name == "READDIRPLUS":
            start = results.at
            reply = nfs3.decode_reply(name, results)
            if reply.status == 0:
                again = nfs3.Unpacker(results.data, start)
                again.u32()
                again.post_op_attr()
                cookie, verifier, _ = nfs3.last_cookie(again)
                listing[path] = (cookie, verifier)
                for entry, handle in reply.entries or []:
                    if handle:
                        handles.setdefault(nfs3.join(path, entry), handle)
        else:
            reply = nfs3.decode_reply(name, results)
        status = nfs3.STATUS.get(reply.status, str(reply.status))
        if name == "LOOKUP" and reply.status == 0:
            handles.setdefault(nfs3.join(path, str(op[2])), reply.fh)
        elif name == "READ" and reply.status == 0:
            total += reply.data
            files.add(path)
        if status != expected:
            errors += 1
            if len(differences) < 5:
                differences.append(f"{name} {path} {op[2:-1]}: {status}, the boot had "
                                   f"{expected}")
    return {"bytes": total, "files": len(files), "errors": errors, "differences": differences}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server")
    parser.add_argument("export")
    parser.add_argument("trace")
    parser.add_argument("--source", help="connect from this address (the node's own)")
    parser.add_argument("--port", type=int, default=2049)
    parser.add_argument("--mount-port", type=int, default=20048)
    args = parser.parse_args()
    with open(args.trace) as f:
        ops = json.load(f)["ops"]
    root = mount(args.server, args.mount_port, args.source, args.export)  # outside the timing
    conn = Connection(args.server, args.port, args.source)
    start = time.perf_counter()
    try:
        result = replay(conn, root, ops)
    except (OSError, nfs3.XdrError) as exc:
        result = {"bytes": 0, "files": 0, "errors": 1, "differences": [f"transport: {exc}"]}
    seconds = time.perf_counter() - start
    conn.close()
    json.dump({"seconds": seconds, "calls": len(ops), **result}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
