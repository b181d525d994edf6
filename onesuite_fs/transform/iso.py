"""A node's root as a live ISO: the kernel the root carries boots with the whole root as its
initramfs (a gzip'd cpio, see cpio.py), so the node runs from RAM with no other driver than
the kernel itself: no CD-ROM, USB, file system or network module is needed. The kernel is
started with ``rdinit=/sbin/init`` (the root's own init) unless --append names another.

One image boots four ways. BIOS from a CD: ISOLINUX (El Torito). BIOS from a USB stick or
any disk: the isohybrid MBR (ISOLINUX's isohdpfx.bin) jumps to the same ISOLINUX. UEFI from
a CD: the El Torito EFI entry, a small FAT image holding GRUB as EFI/BOOT/BOOTX64.EFI. UEFI
from a disk: the same FAT image is also a GPT partition of type EFI System
(``-isohybrid-gpt-basdat``). GRUB finds the ISO 9660 file system by a name unique to this
ISO and loads the same kernel and initramfs ISOLINUX does (see boot_media.py).

The ISO is assembled by xorriso from a staging directory next to the output (kernel, initrd,
ISOLINUX files, the EFI image; mode 0700), which is removed afterwards. The ISO is readable
by its owner only: it holds the node's secrets.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..progress import Progress
from . import boot_media
from .cpio import write_initramfs
from .walk import Item, Root

ISOLINUX_BIN = ("/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/isolinux.bin")
ISOHYBRID_MBR = ("/usr/lib/ISOLINUX/isohdpfx.bin", "/usr/lib/syslinux/isohdpfx.bin")
LDLINUX_C32 = ("/usr/lib/syslinux/modules/bios/ldlinux.c32", "/usr/lib/syslinux/ldlinux.c32")
DEFAULT_INIT = "/sbin/init"
_MAX_LINKS = 16


@dataclass(frozen=True)
class Boot:
    kernel: Item  # a regular file of the root
    init: str | None  # the init the kernel is told to run, None when --append names one


def tools() -> tuple[str, str, str, str]:
    """xorriso, isolinux.bin, ldlinux.c32, isohdpfx.bin; checks the GRUB and FAT tools too
    (ConfigError naming the package when missing)."""
    xorriso = boot_media.need_program("xorriso", "xorriso")
    found = (xorriso, boot_media.need_file(ISOLINUX_BIN, "isolinux"),
             boot_media.need_file(LDLINUX_C32, "syslinux-common"),
             boot_media.need_file(ISOHYBRID_MBR, "isolinux"))
    boot_media.grub_efi_tools()
    boot_media.fat_tools()
    return found


def _version_key(name: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def follow(root: Root, path: str) -> Item | None:
    """The entry `path` names inside the root, following symlinks as the node would (never
    outside the root: '..' stops at '/')."""
    parts = [p for p in path.strip("/").split("/") if p]
    done: list[str] = []
    for _ in range(_MAX_LINKS):
        item: Item | None = None
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                done = done[:-1]
                continue
            item = root.lookup("/".join([*done, part]))
            if item is None:
                return None
            if item.is_link:
                target = root.readlink(item).decode("utf-8", "surrogateescape")
                parts = [p for p in target.split("/") if p] + parts
                if target.startswith("/"):
                    done = []
                break
            done.append(part)
        else:
            return item if item is not None else root.lookup("/".join(done))
    return None


def wanted_file(root: Root, wanted: str, what: str) -> Item:
    """The regular file the admin named (`--kernel`, `--initrd`), symlinks followed in the
    root; ConfigError when the root has none there."""
    found = follow(root, wanted)
    if found is None or not found.is_reg:
        raise ConfigError(f"{root.entry.name}'s root has no {what} file at {wanted}")
    return found


def find_kernel(root: Root, wanted: str | None = None) -> Item:
    """The kernel to boot: `wanted` (a path in the root), else /vmlinuz, else the newest
    /boot/vmlinuz-*. ConfigError when the root carries none."""
    if wanted is not None:
        return wanted_file(root, wanted, "kernel")
    found = follow(root, "vmlinuz")
    if found is not None and found.is_reg:
        return found
    boot = root.lookup("boot")
    kernels: list[str] = []
    if boot is not None and boot.is_dir:
        kernels = sorted((child.name for child in root.children(boot)
                          if child.name.startswith("vmlinuz")), key=_version_key)
    for name in reversed(kernels):
        found = follow(root, f"boot/{name}")
        if found is not None and found.is_reg:
            return found
    raise ConfigError(f"{root.entry.name}'s root carries no kernel (no /vmlinuz, "
                      "no /boot/vmlinuz-*): an ISO or disk image cannot boot it",
                      hint="add a kernel to the image or an override, or name one with "
                           "--kernel PATH; tar, squashfs and cpio need none")


def check_init(root: Root, append: str) -> str | None:
    """The init the kernel will run; ConfigError when the root lacks it, or when the kernel
    arguments are not one line of printable ASCII."""
    boot_media.command_line(append)
    if re.search(r"(^|\s)rdinit=", append):
        return None
    found = follow(root, DEFAULT_INIT)
    if found is None or not found.is_reg:
        raise ConfigError(f"{root.entry.name}'s root has no {DEFAULT_INIT}: the ISO would not "
                          "get past the kernel",
                          hint="install an init in the image, or pass --append "
                               "'rdinit=/path/to/program'")
    return DEFAULT_INIT


ISOLINUX_CFG = """\
DEFAULT node
PROMPT 0
TIMEOUT 1
LABEL node
  KERNEL /boot/vmlinuz
  INITRD /boot/initrd.gz
  APPEND {append}
"""


def write_iso(root: Root, kernel: Item, out: Path, progress: Progress, *, append: str = "",
              on_skip: Callable[[str, str], None] | None = None) -> int:
    xorriso, isolinux_bin, ldlinux, isohybrid_mbr = tools()
    init = check_init(root, append)
    args = boot_media.command_line(f"rdinit={init}" if init else "", append)
    stage = out.with_name(out.name + ".stage")
    shutil.rmtree(stage, ignore_errors=True)
    # Private while it is built: the initramfs and the ISO hold the node's secrets.
    stage.mkdir(mode=0o700)
    try:
        (stage / "boot").mkdir()
        (stage / "isolinux").mkdir()
        shutil.copy(isolinux_bin, stage / "isolinux/isolinux.bin")
        shutil.copy(ldlinux, stage / "isolinux/ldlinux.c32")
        (stage / "isolinux/isolinux.cfg").write_text(ISOLINUX_CFG.format(append=args))
        marker = boot_media.new_marker()
        (stage / marker.lstrip("/")).write_text("onesuite-fs live ISO: GRUB finds it by this "
                                                "name\n")
        _write_efi_image(stage, marker, args)
        with open(stage / "boot/vmlinuz", "wb") as f:
            for chunk in root.chunks(kernel):
                f.write(chunk)
        with open(stage / "boot/initrd.gz", "wb") as f:
            written = write_initramfs(root, f, progress, on_skip=on_skip,
                                      spill_dir=out.parent)
        label = re.sub(r"[^A-Z0-9_]", "_", root.entry.name.upper())[:32] or "NODE"
        image = stage / "image.iso"
        done = subprocess.run(
            [xorriso, "-as", "mkisofs", "-quiet", "-o", str(image), "-V", label, "-r", "-J",
             "-isohybrid-mbr", isohybrid_mbr,
             "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot",
             "-boot-load-size", "4", "-boot-info-table",
             "-eltorito-alt-boot", "-e", "boot/efi.img", "-no-emul-boot",
             "-isohybrid-gpt-basdat", "-m", "image.iso", str(stage)],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise OSError(f"xorriso failed ({done.returncode}): {done.stderr.strip()}")
        os.chmod(image, 0o600)
        os.replace(image, out)
        return written
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_efi_image(stage: Path, marker: str, args: str) -> None:
    """boot/efi.img: a FAT image with GRUB as EFI/BOOT/BOOTX64.EFI, for the El Torito EFI
    entry and the GPT's EFI System partition."""
    grub = stage / "bootx64.efi"
    boot_media.write_grub_efi(
        grub, boot_media.grub_efi_config(marker, "/boot/vmlinuz", "/boot/initrd.gz", args),
        ("iso9660",))
    boot_media.write_fat(stage / "boot/efi.img", boot_media.fat_size(grub.stat().st_size),
                         {"EFI/BOOT/BOOTX64.EFI": grub}, label="ONESUITEEFI")
    grub.unlink()
