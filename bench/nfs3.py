"""NFSv3 and MOUNT v3 on the wire (RFC 1813, ONC RPC RFC 5531): what the boot recorder decodes
from a capture and the replay client sends. Only the procedures a booting node uses."""

from __future__ import annotations

import posixpath
import struct
from dataclasses import dataclass

NFS_PROGRAM, NFS_V3 = 100003, 3
MOUNT_PROGRAM, MOUNT_V3, MOUNTPROC_MNT = 100005, 3, 1
CALL, REPLY = 0, 1
AUTH_NONE, AUTH_SYS = 0, 1

PROCEDURES = {0: "NULL", 1: "GETATTR", 2: "SETATTR", 3: "LOOKUP", 4: "ACCESS", 5: "READLINK",
              6: "READ", 7: "WRITE", 8: "CREATE", 16: "READDIR", 17: "READDIRPLUS",
              18: "FSSTAT", 19: "FSINFO", 20: "PATHCONF", 21: "COMMIT"}
NUMBERS = {name: number for number, name in PROCEDURES.items()}
STATUS = {0: "OK", 1: "PERM", 2: "NOENT", 5: "IO", 13: "ACCES", 20: "NOTDIR", 21: "ISDIR",
          22: "INVAL", 30: "ROFS", 63: "NAMETOOLONG", 70: "STALE", 10001: "BADHANDLE",
          10008: "JUKEBOX"}
FATTR3_SIZE = 84  # type mode nlink uid gid (5 x 4), size used (2 x 8), rdev (2 x 4),
#                   fsid fileid (2 x 8), atime mtime ctime (3 x 8)


def join(directory: str, name: str) -> str:
    """The path of `name` in `directory` ("" is the node's root), "." and ".." resolved."""
    if name in ("", "."):
        return directory
    if name == "..":
        return posixpath.dirname(directory)
    return f"{directory}/{name}" if directory else name


class XdrError(ValueError):
    """A message that does not decode (truncated, or not what its header said)."""


class Packer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u32(self, value: int) -> Packer:
        self.parts.append(struct.pack(">I", value))
        return self

    def u64(self, value: int) -> Packer:
        self.parts.append(struct.pack(">Q", value))
        return self

    def opaque(self, data: bytes) -> Packer:
        self.u32(len(data))
        self.parts.append(data + b"\0" * (-len(data) % 4))
        return self

    def bytes(self) -> bytes:
        return b"".join(self.parts)


class Unpacker:
    def __init__(self, data: bytes, at: int = 0) -> None:
        self.data, self.at = data, at

    def u32(self) -> int:
        if self.at + 4 > len(self.data):
            raise XdrError("truncated")
        (value,) = struct.unpack_from(">I", self.data, self.at)
        self.at += 4
        return value

    def u64(self) -> int:
        return (self.u32() << 32) | self.u32()

    def skip(self, size: int) -> None:
        if self.at + size > len(self.data):
            raise XdrError("truncated")
        self.at += size

    def opaque(self, limit: int = 1 << 20) -> bytes:
        size = self.u32()
        if size > limit:
            raise XdrError(f"opaque of {size} bytes")
        end = self.at + size
        if end > len(self.data):
            raise XdrError("truncated")
        value = self.data[self.at:end]
        self.at = end + (-size % 4)
        return value

    def post_op_attr(self) -> bytes | None:
        """The fattr3 bytes, or None when absent."""
        if not self.u32():
            return None
        start = self.at
        self.skip(FATTR3_SIZE)
        return self.data[start:self.at]

    def wcc_attr_skip(self) -> None:  # pre_op_attr: bool + size, mtime, ctime
        if self.u32():
            self.skip(24)


def fattr_type_size(fattr: bytes) -> tuple[int, int]:
    """(ftype3, size) of a fattr3: 1 regular, 2 directory, 5 symlink."""
    ftype = struct.unpack_from(">I", fattr, 0)[0]
    size = struct.unpack_from(">Q", fattr, 20)[0]
    return ftype, size


def auth_sys(stamp: int = 0, machine: bytes = b"node", uid: int = 0, gid: int = 0) -> bytes:
    body = Packer().u32(stamp).opaque(machine).u32(uid).u32(gid).u32(0).bytes()
    return Packer().u32(AUTH_SYS).opaque(body).bytes()


def call_header(xid: int, program: int, version: int, procedure: int) -> bytes:
    return (Packer().u32(xid).u32(CALL).u32(2).u32(program).u32(version).u32(procedure)
            .bytes() + auth_sys() + Packer().u32(AUTH_NONE).u32(0).bytes())


@dataclass
class Call:
    """A decoded call: its procedure and the arguments a replay needs."""

    xid: int
    program: int
    procedure: int
    fh: bytes = b""
    name: str = ""  # LOOKUP
    offset: int = 0  # READ offset, READDIRPLUS cookie
    count: int = 0  # READ count, READDIRPLUS maxcount
    dircount: int = 0  # READDIRPLUS
    access: int = 0  # ACCESS mask
    path: str = ""  # MNT


def decode_call(body: bytes) -> Call | None:
    """An RPC call of NFSv3 or MOUNT v3, or None for anything else."""
    u = Unpacker(body)
    xid, kind = u.u32(), u.u32()
    if kind != CALL:
        return None
    u.u32()  # rpcvers
    program, version, procedure = u.u32(), u.u32(), u.u32()
    for _ in range(2):  # credential, verifier
        u.u32()
        u.opaque()
    call = Call(xid, program, procedure)
    if program == MOUNT_PROGRAM and version == MOUNT_V3:
        if procedure == MOUNTPROC_MNT:
            call.path = u.opaque(1024).decode(errors="replace")
        return call
    if program != NFS_PROGRAM or version != NFS_V3 or procedure == 0:
        return None
    call.fh = u.opaque(64)
    name = PROCEDURES.get(procedure, "")
    if name == "LOOKUP":
        call.name = u.opaque(255).decode(errors="surrogateescape")
    elif name == "ACCESS":
        call.access = u.u32()
    elif name == "READ":
        call.offset, call.count = u.u64(), u.u32()
    elif name == "READDIRPLUS":
        call.offset = u.u64()
        u.skip(8)  # cookieverf
        call.dircount, call.count = u.u32(), u.u32()
    return call


@dataclass
class Reply:
    """A decoded reply: its status and what a path table needs (new handles)."""

    status: int
    fh: bytes = b""  # LOOKUP's object, MNT's root
    entries: list[tuple[str, bytes]] | None = None  # READDIRPLUS: (name, handle) pairs
    eof: bool = False
    data: int = 0  # READ: bytes returned; READLINK: target length
    fattr: bytes | None = None


def reply_body(body: bytes) -> Unpacker | None:
    """The results of an accepted, successful RPC reply (after the header), or None."""
    u = Unpacker(body)
    u.u32()  # xid
    if u.u32() != REPLY or u.u32() != 0:  # MSG_ACCEPTED
        return None
    u.u32()
    u.opaque()  # verifier
    if u.u32() != 0:  # SUCCESS
        return None
    return u


def decode_reply(procedure: str, u: Unpacker, *, entries: bool = True) -> Reply:
    """The NFSv3 (or MNT) results of `procedure` from `u` (see reply_body)."""
    status = u.u32()
    reply = Reply(status)
    if procedure == "MNT":
        if status == 0:
            reply.fh = u.opaque(64)
        return reply
    if procedure == "LOOKUP":
        if status == 0:
            reply.fh = u.opaque(64)
            reply.fattr = u.post_op_attr()
        return reply
    if procedure == "GETATTR":
        if status == 0:
            u.skip(FATTR3_SIZE)
        return reply
    if procedure in ("ACCESS", "READLINK", "READ", "READDIRPLUS"):
        reply.fattr = u.post_op_attr()
    if status != 0:
        return reply
    if procedure == "READLINK":
        reply.data = len(u.opaque(4096))
    elif procedure == "READ":
        u.u32()  # count
        reply.eof = bool(u.u32())
        reply.data = u.u32()
    elif procedure == "READDIRPLUS" and entries:
        u.skip(8)  # cookieverf
        found: list[tuple[str, bytes]] = []
        while u.u32():
            u.u64()  # fileid
            name = u.opaque(255).decode(errors="surrogateescape")
            u.u64()  # cookie
            u.post_op_attr()
            handle = u.opaque(64) if u.u32() else b""
            found.append((name, handle))
        reply.entries = found
        reply.eof = bool(u.u32())
    return reply


def last_cookie(u: Unpacker) -> tuple[int, bytes, bool]:
    """From a successful READDIRPLUS reply positioned after its status and dir attributes:
    (last cookie, cookieverf, eof), to continue the listing."""
    verifier = u.data[u.at:u.at + 8]
    u.skip(8)
    cookie = 0
    while u.u32():
        u.u64()
        u.opaque(255)
        cookie = u.u64()
        u.post_op_attr()
        if u.u32():
            u.opaque(64)
    return cookie, verifier, bool(u.u32())
