"""Record a real boot set: a QEMU (TCG) guest boots one node of the benchmark site from
`onesuite serve` over NFSv3 (an overlayroot: tmpfs over the read-only NFS root, as a diskless
node runs) to systemd's multi-user target, while tcpdump captures its NFS and MOUNT traffic in
the server's network namespace. The capture is decoded here into the boot's NFS calls in the
order the guest sent them, each naming its object by path (handles are per server), with the
status the server answered: bench/data/boot-trace.json, which bench/nfs_storm.py replays.

  python -m bench.boot_record [--node node00002] [--out bench/data/boot-trace.json]

Needs root, qemu-system-x86_64, tcpdump, ganesha and rpcbind; the site is the storm's
(tools/scalesite.py, image "systemd": the debootstrap image plus systemd-sysv). A TCG boot to
multi-user takes a few minutes here.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from boottools import boot_kit, module_path  # noqa: I001  (tests/ is on sys.path via bench)
from nfstools import Netns, Serve
from scalesite import ScaleParams, cached_site

from . import nfs3
from .common import workdir

HERE = Path(__file__).resolve().parent
TRACE = HERE / "data" / "boot-trace.json"
GUEST_INIT = HERE / "boot_guest_init"
MODULES = ("virtio_pci", "virtio_net", "nfsv3", "overlay")
BOOT_TIMEOUT = 900.0
SITE_NODES = 10


# --------------------------------------------------------------------------------------------
# The capture: pcap records -> TCP payloads per direction -> RPC records


def pcap_packets(data: bytes) -> Iterator[bytes]:
    """The link-layer frames of a classic pcap file (either byte order, us or ns stamps)."""
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise ValueError("not a pcap file")
    linktype = struct.unpack_from(order + "I", data, 20)[0]
    at = 24
    while at + 16 <= len(data):
        length = struct.unpack_from(order + "I", data, at + 8)[0]
        frame = data[at + 16:at + 16 + length]
        at += 16 + length
        if linktype == 1:  # Ethernet (tcpdump on lo)
            if frame[12:14] == b"\x08\x00":
                yield frame[14:]
        elif linktype == 113:  # Linux cooked
            if frame[14:16] == b"\x08\x00":
                yield frame[16:]
        elif linktype == 101:  # raw IP
            yield frame


def tcp_segments(packets: Iterator[bytes]) -> Iterator[tuple[tuple[str, int, str, int], int,
                                                            bytes]]:
    """(stream key, sequence number, payload) of every IPv4 TCP segment with data."""
    for ip in packets:
        if ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        header = (ip[0] & 15) * 4
        total = struct.unpack_from(">H", ip, 2)[0]
        tcp = ip[header:total]
        src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
        sport, dport, seq = struct.unpack_from(">HHI", tcp, 0)
        payload = tcp[(tcp[12] >> 4) * 4:]
        if payload:
            yield (src, sport, dst, dport), seq, payload


def rpc_records(segments: Iterator[tuple[tuple[str, int, str, int], int, bytes]],
                ) -> Iterator[tuple[tuple[str, int, str, int], bytes]]:
    """Whole RPC messages (record marking undone) per stream, in capture order; segments
    seen twice (retransmissions) are skipped by their sequence number."""
    buffers: dict[tuple[str, int, str, int], bytearray] = {}
    expected: dict[tuple[str, int, str, int], int] = {}
    pending: dict[tuple[str, int, str, int], list[bytes]] = {}
    for key, seq, payload in segments:
        if key in expected:
            gap = (seq - expected[key]) & 0xFFFFFFFF
            if gap >= 0x80000000:  # before what we have: a retransmission
                overlap = (expected[key] - seq) & 0xFFFFFFFF
                if overlap >= len(payload):
                    continue
                payload = payload[overlap:]
            elif gap:
                raise ValueError(f"capture lost {gap} bytes of {key}: record again with a "
                                 "larger tcpdump buffer")
        expected[key] = (seq + len(payload)) & 0xFFFFFFFF
        buffer = buffers.setdefault(key, bytearray())
        buffer += payload
        while len(buffer) >= 4:
            (mark,) = struct.unpack_from(">I", buffer, 0)
            size = mark & 0x7FFFFFFF
            if len(buffer) < 4 + size:
                break
            pending.setdefault(key, []).append(bytes(buffer[4:4 + size]))
            del buffer[:4 + size]
            if mark & 0x80000000:
                yield key, b"".join(pending.pop(key))


# --------------------------------------------------------------------------------------------
# RPC messages -> the boot's calls by path


def decode(capture: bytes) -> tuple[list[list[object]], dict[str, int]]:
    """The boot's calls, each [procedure, path, arguments..., status] in the order they were
    sent (the shape nfs3_replay.py replays), and what was skipped (by reason)."""
    paths: dict[bytes, str] = {}
    calls: dict[int, tuple[nfs3.Call, list[object]]] = {}
    ops: list[list[object]] = []
    skipped: Counter[str] = Counter()
    for _key, message in rpc_records(tcp_segments(pcap_packets(capture))):
        try:
            _decode_one(message, paths, calls, ops, skipped)
        except (nfs3.XdrError, struct.error):
            skipped["undecodable"] += 1
    return [op for op in ops if op[-1] is not None], dict(skipped)


def _decode_one(message: bytes, paths: dict[bytes, str],
                calls: dict[int, tuple[nfs3.Call, list[object]]], ops: list[list[object]],
                skipped: Counter[str]) -> None:
    """One RPC message: a call is appended to `ops` (its status left None until its reply);
    a reply fills in its call's status and teaches `paths` the handles it names."""
    if len(message) < 8:
        raise nfs3.XdrError("truncated")
    if struct.unpack_from(">I", message, 4)[0] == nfs3.CALL:
        call = nfs3.decode_call(message)
        if call is None:
            skipped["NULL, or not NFSv3/MOUNT v3"] += 1
            return
        if call.program == nfs3.MOUNT_PROGRAM:
            calls[call.xid] = (call, [])
            return
        name = nfs3.PROCEDURES.get(call.procedure, str(call.procedure))
        if call.fh not in paths:
            skipped[f"{name} on an unknown handle"] += 1
            return
        path = paths[call.fh]
        op: list[object] = [name, path]
        if name == "LOOKUP":
            op.append(call.name)
        elif name == "ACCESS":
            op.append(call.access)
        elif name == "READ":
            op += [call.offset, call.count]
        elif name == "READDIRPLUS":
            op += [call.offset, call.dircount, call.count]
        elif name not in ("GETATTR", "READLINK", "FSINFO", "FSSTAT", "PATHCONF"):
            skipped[name] += 1
            return
        op.append(None)  # the status, from the reply
        ops.append(op)
        calls[call.xid] = (call, op)
        return
    xid = struct.unpack_from(">I", message, 0)[0]
    if xid not in calls:
        return
    call, op = calls.pop(xid)
    body = nfs3.reply_body(message)
    if body is None:
        op[-1] = "RPC-ERROR" if op else None
        return
    if call.program == nfs3.MOUNT_PROGRAM:
        if call.procedure != nfs3.MOUNTPROC_MNT:
            return
        reply = nfs3.decode_reply("MNT", body)
        if reply.status == 0:
            paths[reply.fh] = ""
        return
    name = str(op[0])
    reply = nfs3.decode_reply(name, body)
    op[-1] = nfs3.STATUS.get(reply.status, str(reply.status))
    if name == "LOOKUP" and reply.status == 0:
        paths.setdefault(reply.fh, nfs3.join(str(op[1]), call.name))
    elif name == "READDIRPLUS" and reply.entries:
        for entry, handle in reply.entries:
            if handle:
                paths.setdefault(handle, nfs3.join(str(op[1]), entry))


def summarize(ops: list[list[object]]) -> dict[str, object]:
    counts = Counter(str(op[0]) for op in ops)
    read = [op for op in ops if op[0] == "READ"]
    return {"calls": len(ops), "by_procedure": dict(sorted(counts.items())),
            "files_read": len({op[1] for op in read}),
            "bytes_asked": sum(int(op[3]) for op in read),  # type: ignore[call-overload]
            "not_ok": dict(Counter(f"{op[0]} {op[-1]}" for op in ops if op[-1] != "OK"))}


# --------------------------------------------------------------------------------------------
# The guest


def build_initramfs(kit: Path, work: Path) -> Path:
    tree = work / "initramfs"
    for d in ("bin", "proc", "sys", "dev", "lib/modules"):
        (tree / d).mkdir(parents=True)
    shutil.copy2(kit / "bin/busybox", tree / "bin/busybox")
    modules = next((kit / "lib/modules").iterdir())
    order: list[str] = []

    def add(name: str) -> None:
        if name in order:
            return
        path = module_path(modules, name)
        for field in path.read_bytes().split(b"\0"):
            if field.startswith(b"depends="):
                for dep in filter(None, field[8:].decode().split(",")):
                    add(dep)
        shutil.copy2(path, tree / "lib/modules" / f"{name}.ko")
        order.append(name)

    for name in MODULES:
        add(name)
    (tree / "lib/modules/load-order").write_text(" ".join(order) + "\n")
    shutil.copy2(GUEST_INIT, tree / "init")
    os.chmod(tree / "init", 0o755)
    listing = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree, input=listing,
                             capture_output=True, check=True).stdout
    initrd = work / "initrd.gz"
    initrd.write_bytes(gzip.compress(archive, compresslevel=1))
    return initrd


def record(node: str, work: Path, say) -> tuple[bytes, float, list[str]]:  # type: ignore[no-untyped-def]
    """Boot `node` once; (the capture, seconds to multi-user, console lines)."""
    prefix, _ = cached_site(ScaleParams(SITE_NODES, image="systemd"))
    kit = boot_kit()
    initrd = build_initramfs(kit, work)
    kernel = next((kit / "boot").glob("vmlinuz-*"))
    config = work / "onesuite.toml"
    # slirp: the guest's connections come from the namespace's loopback, from any port.
    config.write_text(f'[nfs]\nprivileged_ports = false\n\n[nfs.addresses]\n{node} = '
                      '"127.0.0.1"\n')
    mnt, capture, console = work / "mnt", work / "boot.pcap", work / "console.log"
    mnt.mkdir()
    ns = Netns("record")
    server = Serve(ns, prefix, mnt, work / "state", "--config", str(config),
                   "--protocols", "3,4", private_run=True, rpcbind=True)
    dump = qemu = None
    try:
        server.start()
        dump = subprocess.Popen([*ns.prefix, "tcpdump", "-i", "lo", "-s", "0", "-B", "65536",
                                 "-U", "-w", str(capture), "tcp port 2049 or tcp port 20048"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # tcpdump listening before the guest's first packet
        say(f"boot_record: booting {node} (TCG; a few minutes)")
        started = time.monotonic()
        with open(console, "wb") as out:
            qemu = subprocess.Popen(
                [*ns.prefix, "qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-nographic",
                 "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd), "-append",
                 f"console=ttyS0 panic=-1 quiet onesuite.node={node}",
                 "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            done = None
            while time.monotonic() - started < BOOT_TIMEOUT and qemu.poll() is None:
                text = console.read_bytes().decode(errors="replace")
                if "GUEST-BOOT-DONE" in text or "GUEST-RESULT FAIL" in text:
                    done = time.monotonic() - started
                    break
                time.sleep(0.5)
        lines = console.read_bytes().decode(errors="replace").replace("\r", "").splitlines()
        if done is None or not any(line.startswith("GUEST-BOOT-DONE") for line in lines):
            raise RuntimeError("the guest did not finish booting:\n" + "\n".join(lines[-40:]))
        time.sleep(1.0)  # the last replies reach tcpdump
        return b"", done, lines
    finally:
        if qemu is not None and qemu.poll() is None:
            qemu.kill()
            qemu.wait(timeout=30)
        if dump is not None and dump.poll() is None:
            dump.send_signal(signal.SIGINT)
            try:
                _, err = dump.communicate(timeout=30)
                say("boot_record: tcpdump: " + err.decode(errors="replace").strip()
                    .replace("\n", "; "))
            except subprocess.TimeoutExpired:
                dump.kill()
                dump.wait()
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
        else:
            server.cleanup()
        ns.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node", default="node00002")
    parser.add_argument("--out", type=Path, default=TRACE)
    parser.add_argument("--pcap", type=Path, help="decode this capture instead of booting")
    parser.add_argument("--keep-pcap", type=Path, help="keep the capture here")
    args = parser.parse_args()

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    seconds, lines = None, []
    with workdir("boot-record") as work:
        if args.pcap:
            capture = args.pcap.read_bytes()
        else:
            _, seconds, lines = record(args.node, work, say)
            capture = (work / "boot.pcap").read_bytes()
            if args.keep_pcap:
                args.keep_pcap.write_bytes(capture)
    ops, skipped = decode(capture)
    done = next((line for line in lines if line.startswith("GUEST-BOOT-DONE")), "")
    trace = {
        "what": "the NFSv3 calls of one systemd boot of the debootstrap image (+ systemd-sysv) "
                "from onesuite serve, overlayroot over the read-only NFS root, to multi-user; "
                "each op: [procedure, path, arguments..., status]",
        "node": args.node, "site": f"tools/scalesite.py --nodes {SITE_NODES} --image systemd",
        "boot_seconds": round(seconds, 1) if seconds else None,
        "systemd_state": done.partition(" ")[2] or None,
        "skipped": skipped, "summary": summarize(ops), "ops": ops,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({k: v for k, v in trace.items() if k != "ops"}, f, indent=1)
    # one op per line: a diff of two recordings stays readable
    text = args.out.read_text().rstrip()[:-1].rstrip() + ',\n "ops": [\n' + ",\n".join(
        json.dumps(op) for op in ops) + "\n ]\n}\n"
    args.out.write_text(text)
    say(json.dumps(trace["summary"]) + f" skipped {skipped} state {trace['systemd_state']} "
        f"boot {seconds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
