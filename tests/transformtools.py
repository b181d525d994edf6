"""Reading exported roots back with the real tools, and normalizing snapshots to what each
format can hold, for the transform tests."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import oracle
import pytest

CI = bool(os.environ.get("CI"))
OURS = ("user.onesuite.", "trusted.onesuite.")  # provenance the mount adds


def _default_signals() -> None:
    # A suite started from a background job (`cmd &` without job control) has SIGINT
    # ignored, and Python then never raises KeyboardInterrupt: give the child a terminal's.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_interruptible(argv: list[str]) -> subprocess.Popen[bytes]:
    """Start a onesuite command whose output stays quiet, with Ctrl-C delivered as from a
    terminal."""
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_default_signals)


def require(*tools: str) -> None:
    """Skip without the tools on a laptop; under CI=true a missing tool fails the test."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        message = f"needs {', '.join(missing)} (bash tools/setup.sh installs them)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)


def run(*argv: str | os.PathLike[str], cwd: Path | None = None,
        stdin: bytes | None = None) -> bytes:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, input=stdin, capture_output=True,
                          check=False)
    assert done.returncode == 0, f"{argv} failed ({done.returncode}): {done.stderr.decode()}"
    return done.stdout


def extract(fmt: str, archive: Path, dest: Path) -> Path:
    """Unpack an export with the format's own tool, as root (owners, devices, xattrs)."""
    dest.mkdir()
    if fmt == "tar":
        run("tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", archive,
            "-C", dest)
    elif fmt == "cpio":
        data = run("gzip", "-dc", archive)
        run("cpio", "-idmu", "--quiet", "--no-absolute-filenames", cwd=dest, stdin=data)
        # GNU cpio -m sets a directory's time before filling it, and leaves an existing "."
        # as it is; the kernel's initramfs unpacker defers times and sets "." (init/
        # initramfs.c). Take directory times, and the root's mode and owner, from the headers.
        for name, mode, uid, gid, mtime in newc_directories(data):
            if name == ".":
                os.chown(dest, uid, gid)
                os.chmod(dest, stat.S_IMODE(mode))
            os.utime(dest / name, (mtime, mtime), follow_symlinks=False)
    elif fmt == "squashfs":
        shutil.rmtree(dest)
        run("unsquashfs", "-no-progress", "-d", dest, archive)
    elif fmt == "raw":
        copy_root_partition(archive, dest)
    else:
        raise ValueError(fmt)
    return dest


def root_partition_offset(image: Path) -> int:
    """The byte offset of a disk image's ext4 root partition (the second), read by sfdisk."""
    table = json.loads(run("sfdisk", "--json", image))["partitiontable"]
    assert [p["type"] for p in table["partitions"]] == [
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"], table
    return table["partitions"][1]["start"] * table.get("sectorsize", 512)


def copy_root_partition(image: Path, dest: Path) -> None:
    """Copy the root partition of a raw disk image out with the kernel's ext4 (a read-only
    loop mount, detached by umount) and cp -a: owners, modes, times, xattrs, links, devices.
    The root directory itself takes the partition root's metadata."""
    mountpoint = dest.with_name(dest.name + ".mnt")
    mountpoint.mkdir()
    run("mount", "-t", "ext4", "-o", f"ro,loop,offset={root_partition_offset(image)}",
        image, mountpoint)
    try:
        run("cp", "-a", "--preserve=all", f"{mountpoint}/.", dest)
        top = os.stat(mountpoint)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        mountpoint.rmdir()
    # mke2fs makes /lost+found; the root had none (the sites of these tests have none).
    lost = dest / "lost+found"
    if lost.is_dir() and not any(lost.iterdir()):
        lost.rmdir()
        os.utime(dest, ns=(top.st_atime_ns, top.st_mtime_ns))


def newc_directories(data: bytes) -> list[tuple[str, int, int, int, int]]:
    """(name, mode, uid, gid, mtime) of every directory in an uncompressed newc archive, read
    from the headers (a reader independent of the writer under test: 13 hex fields)."""
    found, offset = [], 0
    while True:
        assert data[offset:offset + 6] == b"070701", f"bad newc magic at {offset}"
        fields = [int(data[offset + 6 + 8 * i:offset + 14 + 8 * i], 16) for i in range(13)]
        mode, uid, gid, mtime = fields[1], fields[2], fields[3], fields[5]
        size, namesize = fields[6], fields[11]
        name = data[offset + 110:offset + 110 + namesize - 1].decode()
        if name == "TRAILER!!!":
            return found
        if stat.S_ISDIR(mode):
            found.append((name, mode, uid, gid, mtime))
        offset += 110 + namesize
        offset += -offset % 4
        offset += size + (-size % 4)


def normalize(snapshot: dict[str, oracle.Entry], fmt: str,
              synthetic_dirs: tuple[str, ...] = ()) -> dict[str, oracle.Entry]:
    """What the format keeps: whole seconds (cpio, squashfs), no xattrs (cpio), no xattrs on
    the root (squashfs), no sockets (tar, squashfs). Synthetic directories (the /ram mount
    point) carry the server process's start time, which differs between two processes."""
    result = {}
    for path, entry in snapshot.items():
        if entry.kind == "sock" and fmt in ("tar", "squashfs"):
            continue
        if fmt in ("cpio", "squashfs", "raw"):
            entry = dataclasses.replace(entry, mtime_ns=entry.mtime_ns // 10**9 * 10**9)
        if fmt == "cpio" or (fmt == "squashfs" and path == "/"):
            entry = dataclasses.replace(entry, xattrs=())
        if path in synthetic_dirs:
            entry = dataclasses.replace(entry, mtime_ns=0)
        result[path] = entry
    return result


def serving_site(prefix: Path, image: str, image_dir: Path, hosts: list[str]) -> Path:
    """A SystemImager site whose one image is `image_dir` (named in onesuite.toml) and whose
    one group lists `hosts`; no override directories."""
    config = prefix / "etc/systemimager"
    config.mkdir(parents=True)
    (config / "cluster.xml").write_text(
        "<xml><name>all</name><override>all</override><group><name>nodes</name>"
        f"<image>{image}</image><node>{','.join(hosts)}</node></group></xml>\n")
    (prefix / "onesuite.toml").write_text(f'[images]\n{image} = "{image_dir}"\n')
    return prefix
