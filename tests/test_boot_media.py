"""onesuite export --format iso, raw and qcow2, booted for real in QEMU (TCG) guests.

One ISO boots four ways: BIOS and UEFI (OVMF), from a CD-ROM drive and from a USB stick (the
image as a USB mass-storage disk). Its kernel runs the whole root from RAM as its initramfs.
One disk image per format boots: raw with BIOS (gptmbr + SYSLINUX), qcow2 with UEFI (GRUB);
the root's initrd finds the partition the kernel's root=PARTUUID= names and switches to it.
In every case the node's own /sbin/init runs as PID 1 and prints the node's hostname (from
its host override: only n2's root has "n2") and what its root file system is, then powers
off; the kernel arguments arrive as given, whatever GRUB's parser would make of them.
Each console also shows which bootloader path ran, so a fallback cannot pass for
another path. The images are tiny (Debian's kernel and a static busybox, tools/boot_kit.sh);
each boot takes seconds to tens of seconds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from boottools import boot, boot_kit, ovmf, report, tiny_site
from conftest import run_onesuite
from transformtools import CI, require

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

# What GRUB's parser would expand ($root) or split (;): passed on literally.
LITERAL = "onesuite.check=$root;boot"
APPEND = f"console=ttyS0 panic=-1 {LITERAL}"
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"


def firmware(uefi: bool) -> list[str]:
    if not uefi:
        return []  # SeaBIOS
    found = ovmf()
    if found is None:
        message = "needs OVMF (bash tools/setup.sh installs the ovmf package)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return ["-bios", found]


def usb_stick(image: Path) -> list[str]:
    return ["-device", "qemu-xhci", "-drive", f"if=none,id=stick,format=raw,readonly=on,"
            f"file={image}", "-device", "usb-storage,drive=stick"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require("qemu-system-x86_64", "cpio")
    return tiny_site(tmp_path_factory.mktemp("media") / "site", boot_kit(), kernel=True,
                     initrd=True)


@pytest.fixture(scope="module")
def images(site):
    """n2's root exported once per format."""
    require("xorriso", "grub-mkimage", "mkfs.fat", "mcopy", "syslinux", "sfdisk", "mke2fs",
            "qemu-img")
    out = {}
    for fmt in ("iso", "raw", "qcow2"):
        out[fmt] = site.parent / f"n2.{fmt}"
        run_onesuite("export", "--root", site, "n2", "--format", fmt, "--append", APPEND,
                     out[fmt], timeout=300)
    return out


# (firmware, medium) -> what the console must show: the bootloader that ran from there.
ISO_PATHS = {
    ("bios", "cd"): ["Booting from DVD/CD", "ISOLINUX 6", " ETCD "],
    ("bios", "usb"): ["Booting from Hard Disk", "ISOLINUX 6", " EHDD "],
    ("uefi", "cd"): ['"UEFI QEMU DVD-ROM', "Welcome to GRUB"],
    ("uefi", "usb"): ['"UEFI QEMU QEMU USB HARDDRIVE', "Welcome to GRUB"],
}


def shows(lines: list[str], wanted: list[str]) -> bool:
    text = "\n".join(lines)
    return all(w in text for w in wanted)


@pytest.mark.parametrize("fw,medium", list(ISO_PATHS))
def test_iso_boots_to_the_nodes_root(fw, medium, images, tmp_path):
    iso = images["iso"]
    drive = ["-cdrom", str(iso)] if medium == "cd" else usb_stick(iso)
    status, lines = boot([*firmware(fw == "uefi"), *drive], tmp_path / "console.log")
    tail = "\n".join(lines[-40:])
    assert status == 0, tail
    assert shows(lines, ISO_PATHS[fw, medium]), tail
    node = report(lines, "NODE")
    assert node.get("HOSTNAME") == "n2", tail  # the host override: n2's root
    assert node.get("PID") == "1", tail  # the root's own /sbin/init runs as init
    assert node.get("ROOT") == "rootfs rootfs", tail  # from RAM: the initramfs is the root
    assert LITERAL in node.get("CMDLINE", "").split(), tail


def root_partition_uuid(raw: Path) -> str:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    roots = [p for p in table["partitions"] if p["type"] == ROOT_TYPE]
    assert len(roots) == 1, table
    return roots[0]["uuid"].lower()


@pytest.mark.parametrize("fmt,fw", [("raw", "bios"), ("qcow2", "uefi")])
def test_disk_image_boots_to_the_nodes_root(fmt, fw, images, tmp_path):
    image = images[fmt]
    if fmt == "qcow2":
        raw = tmp_path / "back.raw"  # what the guest sees, for the partition table
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(image),
                        str(raw)], check=True)
    else:
        raw = image
    partition = root_partition_uuid(raw)
    # snapshot=on: the guest's writes go to a temporary overlay, the image stays as exported.
    status, lines = boot([*firmware(fw == "uefi"), "-drive",
                          f"file={image},format={fmt},if=virtio,snapshot=on"],
                         tmp_path / "console.log")
    tail = "\n".join(lines[-40:])
    assert status == 0, tail
    loader = ["Booting from Hard Disk", "SYSLINUX 6"] if fw == "bios" else ["Welcome to GRUB"]
    assert shows(lines, loader), tail
    # The kernel was told the root partition, and the root's initrd found it by that GUID.
    assert report(lines, "DISK").get("FOUND") == f"/dev/vda2 {partition}", tail
    node = report(lines, "NODE")
    assert node.get("HOSTNAME") == "n2", tail
    assert node.get("PID") == "1", tail
    assert node.get("ROOT") == "/dev/vda2 ext4", tail  # the node's root on the disk
    assert LITERAL in node.get("CMDLINE", "").split(), tail


def test_bootable_images_are_readable_by_their_owner_only(images):
    """An image holds the node's secrets (/etc/shadow, host keys) whatever their modes in
    the root: no other user of the server may read it."""
    for fmt, image in images.items():
        assert image.stat().st_mode & 0o777 == 0o600, fmt
    assert sorted(p.name for p in images["iso"].parent.iterdir()) == [
        "n2.iso", "n2.qcow2", "n2.raw", "site"]  # no staging left behind
