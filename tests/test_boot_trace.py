"""The boot recorder's decoder (bench/boot_record.py): a capture of NFSv3 and MOUNT traffic,
as tcpdump writes it, becomes the boot's calls by path, in the order they were sent, with the
status the server answered. Captures are built here byte by byte (Ethernet, IPv4, TCP, ONC RPC
record marking, XDR), including what a real one holds: a message split over segments, two
in one segment, a retransmission, calls on handles learnt from READDIRPLUS, and garbage."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import nfs3  # noqa: E402
from bench.boot_record import decode, summarize  # noqa: E402

CLIENT, SERVER = (bytes([10, 0, 2, 15]), 800), (bytes([127, 0, 0, 1]), 2049)
FATTR = bytes(nfs3.FATTR3_SIZE)


class Capture:
    """A pcap file of TCP segments between one client and one server port."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.seq = {"up": 1000, "down": 5000}

    def segment(self, direction: str, payload: bytes, seq: int | None = None) -> None:
        (src, sport), (dst, dport) = (CLIENT, SERVER) if direction == "up" else (SERVER, CLIENT)
        number = self.seq[direction] if seq is None else seq
        if seq is None:
            self.seq[direction] += len(payload)
        tcp = struct.pack(">HHIIBBHHH", sport, dport, number, 0, 5 << 4, 0x18, 65535, 0, 0)
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6,
                         0, src, dst)
        self.frames.append(b"\0" * 12 + b"\x08\x00" + ip + tcp + payload)

    def bytes(self) -> bytes:
        out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
        for frame in self.frames:
            out.append(struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame)
        return b"".join(out)


def record(message: bytes) -> bytes:
    return struct.pack(">I", 0x80000000 | len(message)) + message


def call(xid: int, program: int, procedure: int, args: bytes) -> bytes:
    version = nfs3.MOUNT_V3 if program == nfs3.MOUNT_PROGRAM else nfs3.NFS_V3
    return nfs3.call_header(xid, program, version, procedure) + args


def reply(xid: int, results: bytes) -> bytes:
    return nfs3.Packer().u32(xid).u32(nfs3.REPLY).u32(0).u32(0).opaque(b"").u32(0).bytes() + \
        results


def fh(name: str) -> bytes:
    return name.encode().ljust(16, b"\0")


def nfs(procedure: str, handle: bytes, extra: bytes = b"") -> bytes:
    return nfs3.Packer().opaque(handle).bytes() + extra


def boot_capture() -> Capture:
    cap = Capture()
    p = nfs3.Packer
    # MOUNT /nodes/n1 -> root handle
    cap.segment("up", record(call(1, nfs3.MOUNT_PROGRAM, 1, p().opaque(b"/nodes/n1").bytes())))
    cap.segment("down", record(reply(1, p().u32(0).opaque(fh("root")).u32(0).bytes())))
    # LOOKUP etc, split over two segments, and a GETATTR in the same segment as its tail
    lookup = record(call(2, nfs3.NFS_PROGRAM, 3, nfs("LOOKUP", fh("root"),
                                                     p().opaque(b"etc").bytes())))
    getattr_root = record(call(3, nfs3.NFS_PROGRAM, 1, nfs("GETATTR", fh("root"))))
    cap.segment("up", lookup[:10])
    cap.segment("up", lookup[10:] + getattr_root)
    cap.segment("down", record(reply(2, p().u32(0).opaque(fh("etc")).u32(1).bytes() + FATTR
                                     + p().u32(0).bytes())))
    cap.segment("down", record(reply(3, p().u32(0).bytes() + FATTR)))
    # A retransmission of the last server segment: skipped
    cap.segment("down", cap.frames[-1][54:], seq=cap.seq["down"] - len(cap.frames[-1][54:]))
    # LOOKUP of a missing name: NOENT
    cap.segment("up", record(call(4, nfs3.NFS_PROGRAM, 3, nfs("LOOKUP", fh("etc"),
                                                              p().opaque(b"nope").bytes()))))
    cap.segment("down", record(reply(4, p().u32(2).u32(0).bytes())))
    # READDIRPLUS of etc names hostname's handle; then READ of it by that handle
    cap.segment("up", record(call(5, nfs3.NFS_PROGRAM, 17, nfs(
        "READDIRPLUS", fh("etc"), p().u64(0).bytes() + bytes(8) + p().u32(4096).u32(32768)
        .bytes()))))
    entries = p().u32(0).u32(0).bytes() + bytes(8)  # status OK, no dir attributes, cookieverf
    for number, name in enumerate(("..", "hostname")):
        entries += (p().u32(1).u64(number + 10).opaque(name.encode()).u64(number + 1)
                    .u32(1).bytes() + FATTR + p().u32(1).opaque(fh(f"etc/{name}")).bytes())
    entries += p().u32(0).u32(1).bytes()  # no more entries, eof
    cap.segment("down", record(reply(5, entries)))
    cap.segment("up", record(call(6, nfs3.NFS_PROGRAM, 6, nfs(
        "READ", fh("etc/hostname"), p().u64(0).u32(4096).bytes()))))
    cap.segment("down", record(reply(6, p().u32(0).u32(0).u32(9).u32(1).opaque(b"node0001\n")
                                     .bytes())))
    # A call on a handle never seen in this capture, and a message that is garbage
    cap.segment("up", record(call(7, nfs3.NFS_PROGRAM, 1, nfs("GETATTR", fh("elsewhere")))))
    cap.segment("up", record(b"\0\0\0\x08\0\0\0\0\0\0"))
    return cap


def test_capture_becomes_the_calls_by_path_in_order():
    ops, skipped = decode(boot_capture().bytes())
    assert ops == [["LOOKUP", "", "etc", "OK"], ["GETATTR", "", "OK"],
                   ["LOOKUP", "etc", "nope", "NOENT"],
                   ["READDIRPLUS", "etc", 0, 4096, 32768, "OK"],
                   ["READ", "etc/hostname", 0, 4096, "OK"]]
    assert skipped == {"GETATTR on an unknown handle": 1, "undecodable": 1}
    summary = summarize(ops)
    assert summary["files_read"] == 1 and summary["bytes_asked"] == 4096
    assert summary["not_ok"] == {"LOOKUP NOENT": 1}


def test_a_capture_that_lost_bytes_is_refused():
    cap = boot_capture()
    del cap.frames[2]  # the first half of a split message
    with pytest.raises(ValueError, match="lost"):
        decode(cap.bytes())


def test_dot_dot_and_dot_resolve_within_the_root():
    assert nfs3.join("", "etc") == "etc"
    assert nfs3.join("etc/ssh", "..") == "etc"
    assert nfs3.join("etc", ".") == "etc"
    assert nfs3.join("", "..") == ""  # the export's root has no parent to leave to
