"""onesuite export: every format read back with its own tool (tar, cpio, unsquashfs) equals,
entry for entry, the node's root as a real mount serves it; bad input fails before anything
is written, and an interrupted export never leaves a finished-looking file."""

from __future__ import annotations

import json
import os
import signal
import tarfile
import time

import oracle
import pytest
import sitegen
from conftest import ONESUITE, needs_root_fuse, run_onesuite
from sitetools import onesis_site
from transformtools import OURS, extract, normalize, require, run, start_interruptible

pytestmark = [needs_root_fuse(), pytest.mark.mount]

FORMATS = ("tar", "cpio", "squashfs", "raw")
TOOLS = {"tar": ("tar",), "cpio": ("cpio", "gzip"), "squashfs": ("mksquashfs", "unsquashfs"),
         "raw": ("mke2fs", "sfdisk", "mkfs.fat", "mcopy", "syslinux", "grub-mkimage")}


def export(site, host, fmt, out, *extra):
    return run_onesuite("export", "--root", site, host, "--format", fmt, out, *extra)


def check_formats(tmp_path, site, mount, hosts, synthetic=()):
    for fmt in FORMATS:
        require(*TOOLS[fmt])
    for host in hosts:
        mounted = oracle.snapshot(mount.node(host), ignore_xattr_prefixes=OURS)
        for fmt in FORMATS:
            out = tmp_path / f"{host}.{fmt}"
            # A disk image needs a kernel to boot; any file of the root stands in for one
            # here (it is copied to the EFI partition, the root partition is compared).
            extra = (("--kernel", next(path for path, entry in sorted(mounted.items())
                                       if entry.kind == "file")) if fmt == "raw" else ())
            export(site, host, fmt, out, *extra)
            # a whole root (host keys, shadow) is for its owner only, whatever the umask
            assert os.stat(out).st_mode & 0o7777 == 0o600, f"{out} mode"
            back = oracle.snapshot(extract(fmt, out, tmp_path / f"x-{host}-{fmt}"))
            differences = oracle.compare(normalize(mounted, fmt, synthetic),
                                         normalize(back, fmt, synthetic))
            assert not differences, f"{host} as {fmt}:\n" + "\n".join(differences)


@pytest.mark.parametrize("seed", [0, 5])
def test_random_site_exports_equal_the_mount(seed, tmp_path, mount_site):
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    mount = mount_site(spec.prefix)
    check_formats(tmp_path, spec.prefix, mount, spec.nodes()[:2])


def test_onesis_rules_are_exported_as_served(tmp_path, mount_site):
    site = onesis_site(tmp_path / "site")
    mount = mount_site(site)
    check_formats(tmp_path, site, mount, ["n2", "n3"], synthetic=("/ram",))
    assert (tmp_path / "x-n3-tar/etc/fstab").read_text() == "fstab: class compute\n"
    assert os.readlink(tmp_path / "x-n3-cpio/var/log") == "/ram/var/log"


def test_hard_links_stay_links(tmp_path):
    site = onesis_site(tmp_path / "site")
    image = site / "var/lib/systemimager/images/img"
    (image / "usr/bin").mkdir(parents=True)
    (image / "usr/bin/gzip").write_bytes(b"#!/bin/sh\n" * 100)
    os.link(image / "usr/bin/gzip", image / "usr/bin/gunzip")
    out = export_to(site, "n1", "tar", tmp_path)
    with tarfile.open(out) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert members["./usr/bin/gunzip"].isreg()  # sorts first: it carries the data
    gzip = members["./usr/bin/gzip"]
    assert gzip.islnk() and gzip.linkname == "./usr/bin/gunzip"
    assert not any(key.startswith(("SCHILY.xattr.user.onesuite", "SCHILY.xattr.trusted"))
                   for m in members.values() for key in m.pax_headers)
    for fmt in FORMATS:
        kernel = ("--kernel", "/usr/bin/gzip") if fmt == "raw" else ()  # any file will do
        dest = extract(fmt, export_to(site, "n1", fmt, tmp_path, *kernel), tmp_path / f"x-{fmt}")
        assert os.stat(dest / "usr/bin/gzip").st_ino == os.stat(dest / "usr/bin/gunzip").st_ino
        assert (dest / "usr/bin/gzip").read_bytes() == b"#!/bin/sh\n" * 100


def export_to(site, host, fmt, tmp_path, *extra):
    out = tmp_path / f"{host}.{fmt}"
    export(site, host, fmt, out, "--force", *extra)
    return out


def test_cpio_listing_names_every_entry(tmp_path):
    require("cpio", "gzip")
    site = onesis_site(tmp_path / "site")
    out = export_to(site, "n1", "cpio", tmp_path)
    listing = run("cpio", "-t", "--quiet", stdin=run("gzip", "-dc", out)).decode().split("\n")
    assert "etc/fstab" in listing and "." in listing and "ram" in listing
    assert "etc/fstab.n1" in listing


def test_squashfs_listing_has_numeric_owners(tmp_path):
    require("mksquashfs", "unsquashfs")
    spec = sitegen.generate_random_site(tmp_path / "site", 2)
    host = spec.nodes()[0]
    out = export_to(spec.prefix, host, "squashfs", tmp_path)
    listing = run("unsquashfs", "-lln", out).decode()
    assert " 0/0 " in listing and "squashfs-root/etc" in listing


def test_times_every_format_holds_and_those_it_cannot(tmp_path):
    """Whole-second times (most files of a real distro) in every format (mksquashfs 4.5.1
    refuses a whole-second pax record); times outside what squashfs and cpio (unsigned 32-bit
    seconds) and a disk image's ext4 (signed) hold clamped and reported, never wrapped into
    another century."""
    site = onesis_site(tmp_path / "site")
    etc = site / "var/lib/systemimager/images/img/etc"
    times = {"whole": 1_600_000_000 * 10**9, "old": -1_500_000_000,
             "late": 5_000_000_000 * 10**9 + 7}
    for name, ns in times.items():
        (etc / name).write_text(name)
        os.utime(etc / name, ns=(ns, ns))
    limit = 2**32 - 1
    shown = {"tar": times,
             "squashfs": {"whole": times["whole"], "old": 0, "late": limit * 10**9},
             "cpio": {"whole": times["whole"], "old": 0, "late": limit * 10**9},
             # ext4 as mke2fs 1.47.0 -d writes it: signed 32-bit whole seconds, rounded down
             "raw": {"whole": times["whole"], "old": -2 * 10**9, "late": (2**31 - 1) * 10**9}}
    for fmt in FORMATS:
        out = tmp_path / f"n1.{fmt}"
        done = export(site, "n1", fmt, out, *(("--kernel", "/etc/whole") if fmt == "raw" else ()))
        dest = extract(fmt, out, tmp_path / f"x-{fmt}")
        got = {name: (dest / "etc" / name).stat().st_mtime_ns for name in times}
        assert got == shown[fmt], fmt
        clamped = "cannot be stored: clamped" in done.stderr
        assert clamped == (fmt != "tar"), done.stderr
        if clamped:
            assert ("/etc/old" in done.stderr) == (fmt != "raw"), done.stderr
            assert "/etc/late" in done.stderr


# ----- bad input ------------------------------------------------------------------------------



def test_bad_input_fails_cleanly(tmp_path):
    site = onesis_site(tmp_path / "site")
    out = tmp_path / "out.tar"
    done = run_onesuite("export", "--root", site, "nosuch", "--format", "tar", out, check=False)
    assert done.returncode == 2 and "no node named 'nosuch'" in done.stderr
    iso = run_onesuite("export", "--root", site, "n1", "--format", "iso", tmp_path / "n1.iso",
                       check=False)
    assert iso.returncode == 2 and "carries no kernel" in iso.stderr
    for fmt in ("raw", "qcow2"):
        image = run_onesuite("export", "--root", site, "n1", "--format", fmt,
                             tmp_path / f"n1.{fmt}", check=False)
        assert image.returncode == 2 and "carries no kernel" in image.stderr, image.stderr
    # Boot options on a format that does not boot: a mistake, said so.
    misplaced = run_onesuite("export", "--root", site, "n1", "--format", "tar", "--append",
                             "console=ttyS0", out, check=False)
    assert misplaced.returncode == 2 and "bootable formats" in misplaced.stderr
    out.write_text("keep me")
    exists = run_onesuite("export", "--root", site, "n1", "--format", "tar", out, check=False)
    assert exists.returncode == 2 and "--force" in exists.stderr
    assert out.read_text() == "keep me"
    export(site, "n1", "tar", out, "--force")
    assert tarfile.is_tarfile(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tar", "site"]


@pytest.mark.parametrize("fmt", ["iso", "raw"])
def test_kernel_arguments_cannot_add_bootloader_lines(tmp_path, fmt):
    """--append goes into isolinux.cfg and syslinux.cfg lines: a newline (or any control
    character) would add bootloader commands of its own; GRUB would pass ' and \\ on
    escaped, and an unpaired double quote swallows the arguments after it. Refused before
    anything is written."""
    require("xorriso", "mke2fs", "sfdisk", "mkfs.fat", "mcopy", "syslinux", "grub-mkimage")
    site = onesis_site(tmp_path / "site")
    image = site / "var/lib/systemimager/images/img"
    (image / "boot").mkdir(exist_ok=True)
    (image / "boot/vmlinuz-1").write_bytes(b"not really a kernel")
    (image / "sbin").mkdir(exist_ok=True)
    (image / "sbin/init").write_text("#!/bin/sh\n")
    for append in ("quiet\n  KERNEL /boot/evil", "a\rb", "x\tLABEL", "caf\u00e9", "a" * 3000,
                   "it's", "a\\b", 'opt="a b'):
        done = run_onesuite("export", "--root", site, "n1", "--format", fmt, "--append",
                            append, tmp_path / f"n1.{fmt}", check=False)
        assert done.returncode == 2, done.stderr
        assert "kernel arguments" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_disk_image_of_a_root_over_512_mib(tmp_path):
    """Past 512 MiB of disk the EFI partition is still FAT of its own size (mkfs.fat on the
    whole disk with --offset would pick FAT32 from the disk's size, then fail), and holds
    what the bootloaders read; the file's zeros stay holes in the image."""
    require("mke2fs", "sfdisk", "mkfs.fat", "mcopy", "mdir", "syslinux", "grub-mkimage")
    site = onesis_site(tmp_path / "site")
    image = site / "var/lib/systemimager/images/img"
    with open(image / "big", "wb") as big:
        big.truncate(600 << 20)
    (image / "vmlinuz").write_bytes(b"not really a kernel\n" * 1000)
    out = tmp_path / "n1.raw"
    export(site, "n1", "raw", out)
    assert out.stat().st_size > 600 << 20 and out.stat().st_blocks * 512 < 200 << 20
    table = json.loads(run("sfdisk", "--json", out))["partitiontable"]
    esp = table["partitions"][0]["start"] * 512
    listing = run("mdir", "-i", f"{out}@@{esp}", "-b", "::/").decode()
    assert {"::/vmlinuz", "::/syslinux.cfg", "::/EFI/"} <= set(listing.split()), listing


def test_not_enough_space_is_refused_before_writing(tmp_path):
    site = onesis_site(tmp_path / "site")
    with open(site / "var/lib/systemimager/images/img/big", "wb") as big:
        big.truncate(64 << 20)  # sparse: costs nothing in the image
    small = tmp_path / "small"
    small.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", small)
    try:
        done = run_onesuite("export", "--root", site, "n1", "--format", "cpio",
                            small / "n1.cpio", check=False)
        assert done.returncode == 2 and "not enough space" in done.stderr
        assert os.listdir(small) == []
    finally:
        run("umount", small)


@pytest.mark.parametrize("fmt,how", [("cpio", signal.SIGINT), ("cpio", signal.SIGTERM),
                                     ("raw", signal.SIGTERM)])
def test_an_interrupted_export_leaves_no_finished_output(tmp_path, fmt, how):
    """Ctrl-C or kill: the partial file (and a disk image's staged root) is removed, the exit
    status says which signal."""
    if fmt == "raw":
        require("mke2fs", "sfdisk", "mkfs.fat", "mcopy", "syslinux", "grub-mkimage")
    site = onesis_site(tmp_path / "site")
    with open(site / "var/lib/systemimager/images/img/big", "wb") as big:
        # sparse; gzip'ing 4 GiB of zeros takes a while, staging 1 GiB of them too
        big.truncate((4 if fmt == "cpio" else 1) << 30)
    out = tmp_path / f"n1.{fmt}"
    extra = ["--kernel", "/etc/sysimage.conf"] if fmt == "raw" else []
    proc = start_interruptible([*ONESUITE, "export", "--root", str(site), "n1", "--format",
                                fmt, *extra, str(out)])
    try:
        while proc.poll() is None and not any(p.name.startswith(f".n1.{fmt}.onesuite-partial")
                                              for p in tmp_path.iterdir()):
            time.sleep(0.01)
        assert proc.poll() is None, "the export finished before it could be interrupted"
        proc.send_signal(how)
        _, errors = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + how, errors
    assert b"Traceback" not in errors and errors.startswith(b"onesuite: "), errors
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".n1.{fmt}")]
