"""A raw NFSv4.0 client: what an attacker on a node uses to send file handles of its own
making (RFC 7530 COMPOUND over ONC RPC, AUTH_SYS). No state is set up: READ uses the
anonymous stateid, which RFC 7530 section 9.1.4.3 allows.

Run in a client namespace: ``python rawnfs.py SERVER JSON-REQUEST`` prints a JSON answer, so
tests drive it through `Netns.run` (the network is the namespace's, the files the test's).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from dataclasses import dataclass, field

NFS_PROGRAM, NFS_V4, COMPOUND = 100003, 4, 1
OP_GETATTR, OP_GETFH, OP_LOOKUP, OP_PUTFH, OP_PUTROOTFH, OP_READ, OP_READDIR = (
    9, 10, 15, 22, 24, 25, 26)
NFS4_OK = 0
STATUS_NAMES = {0: "OK", 1: "PERM", 2: "NOENT", 5: "IO", 13: "ACCESS", 20: "NOTDIR",
                21: "ISDIR", 30: "ROFS", 70: "STALE", 10001: "BADHANDLE", 10008: "DELAY",
                10020: "NOFILEHANDLE", 10021: "MINOR_VERS_MISMATCH", 10022: "SERVERFAULT",
                10041: "WRONGSEC", 10044: "BADXDR"}


class Packer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u32(self, value: int) -> None:
        self.parts.append(struct.pack(">I", value))

    def u64(self, value: int) -> None:
        self.parts.append(struct.pack(">Q", value))

    def opaque(self, data: bytes) -> None:
        self.u32(len(data))
        self.parts.append(data + b"\0" * (-len(data) % 4))

    def fixed(self, data: bytes) -> None:
        self.parts.append(data + b"\0" * (-len(data) % 4))

    def bytes(self) -> bytes:
        return b"".join(self.parts)


@dataclass
class Unpacker:
    data: bytes
    at: int = 0

    def u32(self) -> int:
        (value,) = struct.unpack_from(">I", self.data, self.at)
        self.at += 4
        return value

    def u64(self) -> int:
        (value,) = struct.unpack_from(">Q", self.data, self.at)
        self.at += 8
        return value

    def fixed(self, size: int) -> bytes:
        value = self.data[self.at:self.at + size]
        self.at += size + (-size % 4)
        return value

    def opaque(self) -> bytes:
        return self.fixed(self.u32())

    def bitmap(self) -> list[int]:
        return [self.u32() for _ in range(self.u32())]


@dataclass
class Result:
    status: str  # of the whole COMPOUND: the first failing operation's, or OK
    failed_op: int | None = None
    handles: list[bytes] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    data: bytes = b""


class Client:
    def __init__(self, server: str, *, port: int = 2049, privileged: bool = True,
                 uid: int = 0, gid: int = 0, timeout: float = 20.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if privileged:  # what the kernel client does: a reserved port, so root sent it
            for source_port in range(1023, 600, -1):
                try:
                    self.sock.bind(("", source_port))
                    break
                except OSError:
                    continue
        self.sock.connect((server, port))
        self.uid, self.gid, self.xid = uid, gid, 0x4F53_0000

    def close(self) -> None:
        self.sock.close()

    def _call(self, body: bytes) -> Unpacker:
        self.xid += 1
        call = Packer()
        for value in (self.xid, 0, 2, NFS_PROGRAM, NFS_V4, COMPOUND):
            call.u32(value)
        cred = Packer()  # AUTH_SYS: stamp, machine name, uid, gid, no other groups
        cred.u32(0)
        cred.opaque(b"attacker")
        cred.u32(self.uid)
        cred.u32(self.gid)
        cred.u32(0)
        call.u32(1)
        call.opaque(cred.bytes())
        call.u32(0)  # verifier: AUTH_NONE
        call.opaque(b"")
        message = call.bytes() + body
        self.sock.sendall(struct.pack(">I", 0x8000_0000 | len(message)) + message)
        reply = b""
        last = False
        while not last:
            (mark,) = struct.unpack(">I", self._recv(4))
            last = bool(mark & 0x8000_0000)
            reply += self._recv(mark & 0x7FFF_FFFF)
        answer = Unpacker(reply)
        xid, message_type, reply_state = answer.u32(), answer.u32(), answer.u32()
        assert xid == self.xid and message_type == 1, "not our reply"
        if reply_state != 0:
            raise PermissionError(f"RPC denied (reject status {answer.u32()})")
        answer.u32()  # verifier flavour
        answer.opaque()
        accept_state = answer.u32()
        if accept_state != 0:
            raise PermissionError(f"RPC not accepted (accept status {accept_state})")
        return answer

    def _recv(self, size: int) -> bytes:
        chunks = b""
        while len(chunks) < size:
            chunk = self.sock.recv(size - len(chunks))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            chunks += chunk
        return chunks

    def compound(self, ops: list[tuple]) -> Result:
        """Run `ops` (("putrootfh",), ("putfh", bytes), ("lookup", name), ("getfh",),
        ("readdir",), ("read", offset, count), ("getattr",)) as one COMPOUND."""
        body = Packer()
        body.opaque(b"")  # tag
        body.u32(0)  # minor version 0
        body.u32(len(ops))
        for op in ops:
            kind = op[0]
            if kind == "putrootfh":
                body.u32(OP_PUTROOTFH)
            elif kind == "putfh":
                body.u32(OP_PUTFH)
                body.opaque(op[1])
            elif kind == "lookup":
                body.u32(OP_LOOKUP)
                body.opaque(op[1].encode())
            elif kind == "getfh":
                body.u32(OP_GETFH)
            elif kind == "getattr":
                body.u32(OP_GETATTR)
                body.u32(1)
                body.u32(1 << 1)  # FATTR4_TYPE
            elif kind == "readdir":
                body.u32(OP_READDIR)
                body.u64(0)
                body.fixed(b"\0" * 8)
                body.u32(8192)
                body.u32(32768)
                body.u32(0)  # no attributes, names only
            elif kind == "read":
                body.u32(OP_READ)
                body.u32(0)  # the anonymous stateid
                body.fixed(b"\0" * 12)
                body.u64(op[1])
                body.u32(op[2])
            else:
                raise ValueError(kind)
        answer = self._call(body.bytes())
        overall = answer.u32()
        answer.opaque()  # tag
        result = Result(STATUS_NAMES.get(overall, str(overall)))
        for _ in range(answer.u32()):
            op, status = answer.u32(), answer.u32()
            if status != NFS4_OK:
                result.failed_op = op
                break
            if op == OP_GETFH:
                result.handles.append(answer.opaque())
            elif op == OP_READ:
                answer.u32()  # eof
                result.data += answer.opaque()
            elif op == OP_READDIR:
                answer.fixed(8)
                while answer.u32():
                    answer.u64()
                    result.names.append(answer.opaque().decode(errors="replace"))
                    answer.bitmap()
                    answer.opaque()
                answer.u32()  # eof
            elif op == OP_GETATTR:
                answer.bitmap()
                answer.opaque()
        return result


def main() -> int:
    """argv: SERVER REQUEST-JSON: {"ops": [[kind, args...]], "privileged": bool}. bytes
    arguments travel as hex strings; prints {"status", "failed_op", "handles", "names",
    "data"} or {"error": ...} when the RPC itself is refused."""
    server, request = sys.argv[1], json.loads(sys.argv[2])
    ops = [tuple(bytes.fromhex(a) if kind == "putfh" and i == 1 else a
                 for i, a in enumerate([kind, *args])) for kind, *args in request["ops"]]
    try:
        client = Client(server, privileged=request.get("privileged", True),
                        port=request.get("port", 2049))
        try:
            result = client.compound(ops)
        finally:
            client.close()
    except (PermissionError, ConnectionError, OSError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 0
    print(json.dumps({"status": result.status, "failed_op": result.failed_op,
                      "handles": [h.hex() for h in result.handles], "names": result.names,
                      "data": result.data.decode(errors="replace")}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
