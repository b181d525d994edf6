"""A node's root as a VM disk image, raw or qcow2, that boots with BIOS and with UEFI.

The disk is GPT with two partitions:

1. an EFI System partition (FAT): the kernel and initrd the root carries (copies), GRUB as
   EFI/BOOT/BOOTX64.EFI for UEFI, and SYSLINUX (ldlinux.sys + syslinux.cfg) for BIOS, whose
   boot code in sector 0 is syslinux's gptmbr.bin: it starts the partition marked "legacy
   BIOS bootable", this one;
2. the root, ext4, of type "Linux root (x86-64)" (the Discoverable Partitions
   Specification), with the node's root as the mount serves it.

Both bootloaders start the kernel with ``root=PARTUUID=<the root partition> ro`` and --append;
the kernel, or the root's initrd (/boot/initrd.img-<version> next to the kernel), mounts it.

Nothing is mounted and no loop device is used: sfdisk writes the partition table into the
image file, mkfs.fat and mtools the FAT partition (as a file of its own, then copied in),
syslinux its boot sector, and mke2fs (-E offset) the ext4 partition, populated from a
directory (-d). The mke2fs of Debian 12 (e2fsprogs 1.47.0) reads only a directory, so the
root is first written to a staging directory next to the output (as root: owners, modes,
device nodes, extended attributes, hard links; inside a directory of mode 0700, so no user
of the server can reach the node's setuid programs or devices), which is removed afterwards,
whatever happens. The image is readable by its owner only: it holds the node's secrets.
qcow2 is the raw image converted by qemu-img. Memory stays flat: each tool reads one file at
a time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..progress import Progress
from . import boot_media
from .boot_media import MIB, SECTOR
from .iso import follow, wanted_file
from .materialize import Writer
from .walk import Item, Root, Totals, clamped_seconds

FORMATS = ("raw", "qcow2")
GPT_MBR = ("/usr/lib/SYSLINUX/gptmbr.bin", "/usr/lib/syslinux/mbr/gptmbr.bin")
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # Linux root (x86-64)
ESP_LABEL = "ONESUITEESP"  # FAT: 11 characters at most
ROOT_LABEL = "onesuite-root"  # ext4: 16 at most
MIN_ESP = 64 * MIB
MIN_FREE = 256 * MIB  # free space in the root file system at least, a quarter at most
BLOCK = 4096
# mke2fs 1.47.0 -d stores a time as signed 32-bit seconds (it wraps anything else silently),
# though ext4 itself could hold more.
EXT4_TIMES = (-(2**31), 2**31 - 1)

SYSLINUX_CFG = """\
DEFAULT node
PROMPT 0
TIMEOUT 1
LABEL node
  KERNEL /vmlinuz
{initrd}  APPEND {append}
"""


@dataclass(frozen=True)
class DiskBoot:
    kernel: Item
    initrd: Item | None


@dataclass(frozen=True)
class Tools:
    sfdisk: str
    mke2fs: str
    debugfs: str
    syslinux: str
    gptmbr: str
    qemu_img: str | None


def tools(fmt: str) -> Tools:
    """Every program and file the format needs (ConfigError naming the package)."""
    need = boot_media.need_program
    found = Tools(sfdisk=need("sfdisk", "fdisk"), mke2fs=need("mke2fs", "e2fsprogs"),
                  debugfs=need("debugfs", "e2fsprogs"),
                  syslinux=need("syslinux", "syslinux"),
                  gptmbr=boot_media.need_file(GPT_MBR, "syslinux"),
                  qemu_img=need("qemu-img", "qemu-utils") if fmt == "qcow2" else None)
    boot_media.grub_efi_tools()
    boot_media.fat_tools()
    return found


def check_privileges(fmt: str) -> None:
    if os.geteuid() != 0:
        raise ConfigError(f"--format {fmt} stages the root with its owners and device nodes, "
                          "which needs root", hint="run the export as root")


def find_initrd(root: Root, kernel: Item, wanted: str | None) -> Item | None:
    """The initrd that goes with the kernel: `wanted` (a path in the root), else the one
    Debian's and Red Hat's kernel packages put next to it (/boot/initrd.img-V,
    /boot/initramfs-V.img, /initrd.img for /vmlinuz); None when the root has none."""
    if wanted is not None:
        return wanted_file(root, wanted, "initrd")
    directory, _, name = kernel.path.rpartition("/")
    candidates = ["initrd.img"] if kernel.path == "vmlinuz" else []
    if name.startswith("vmlinuz-"):
        version = name[len("vmlinuz-"):]
        prefix = f"{directory}/" if directory else ""
        candidates += [f"{prefix}initrd.img-{version}", f"{prefix}initramfs-{version}.img"]
    candidates.append("initrd.img")
    for path in candidates:
        found = follow(root, path)
        if found is not None and found.is_reg:
            return found
    return None


@dataclass(frozen=True)
class Layout:
    """Byte offsets and sizes, all whole MiB (aligned for any disk)."""

    esp_start: int
    esp_size: int
    root_start: int
    root_size: int
    total: int
    inodes: int


def plan(totals: Totals, boot: DiskBoot) -> Layout:
    files = boot.kernel.attr.size + (boot.initrd.attr.size if boot.initrd else 0)
    esp = max(MIN_ESP, boot_media.fat_size(files + 2 * MIB))
    # Every entry takes at least a block (its tail, a directory's listing).
    content = totals.bytes + BLOCK * totals.entries
    root = content + max(MIN_FREE, content // 4)
    root = -(-root // MIB) * MIB
    return Layout(esp_start=MIB, esp_size=esp, root_start=MIB + esp, root_size=root,
                  total=MIB + esp + root + MIB, inodes=totals.entries + totals.entries // 4 + 4096)


def space_needed(layout: Layout, fmt: str) -> int:
    """The staging directory and the image's written part, and the qcow2 converted from it."""
    used = layout.root_size - MIN_FREE + layout.esp_size
    return used * (3 if fmt == "qcow2" else 2)


def write_disk(root: Root, boot: DiskBoot, out: Path, fmt: str, layout: Layout,
               progress: Progress, *, append: str = "",
               on_skip: Callable[[str, str], None] | None = None) -> int:
    """Write the disk image to `out` (a temporary name the caller renames), readable by its
    owner only; the number of entries of the root.

    Everything is built in a private directory next to `out` (mode 0700): the staged root
    holds the node's setuid programs and device nodes with the node's owners, which no user
    of the server may reach, and the image holds the node's secrets."""
    found = tools(fmt)
    check_privileges(fmt)
    part_uuid = str(uuid.uuid4())
    args = boot_media.command_line(f"root=PARTUUID={part_uuid}", "ro", append)
    work = out.with_name(out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    stage, raw = work / "root", work / "disk.raw"
    try:
        work.mkdir(mode=0o700)  # inside the try: a signal right after it still removes it
        writer = _Stager(progress, spill_dir=out.parent, on_skip=on_skip)
        try:
            writer.subtrees([(root, root.top(), stage)])
        finally:
            writer.close()
        with open(raw, "wb") as f:
            f.truncate(layout.total)
        _partition(found, raw, layout, part_uuid)
        _write_esp(found, root, boot, raw, layout, args, work / "esp")
        _run([found.mke2fs, "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-L", ROOT_LABEL,
              "-N", str(layout.inodes), "-d", str(stage),
              "-E", f"offset={layout.root_start},lazy_itable_init=1,lazy_journal_init=1,"
                    "nodiscard", str(raw), f"{layout.root_size // 1024}k"], "mke2fs")
        _set_root(found, root, raw, layout)
        image = raw
        if fmt == "qcow2":
            assert found.qemu_img is not None
            image = work / "disk.qcow2"
            _run([found.qemu_img, "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
                  str(image)], "qemu-img convert")
        os.chmod(image, 0o600)
        os.replace(image, out)
        return writer.entries
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Stager(Writer):
    """Writes the root to the staging directory with times mke2fs can store: clamped (and
    reported) rather than wrapped into another century."""

    def __init__(self, progress: Progress, *, spill_dir: Path,
                 on_skip: Callable[[str, str], None] | None) -> None:
        super().__init__(progress, spill_dir=spill_dir)
        self.on_skip = on_skip
        self.bar = progress

    def entry(self, root: Root, item: Item, dest: Path, *, directory_meta: bool = True) -> None:
        super().entry(root, item, dest, directory_meta=directory_meta)
        self.bar.entry()  # Writer counts the bytes

    def set_meta(self, root: Root, item: Item, dest: Path) -> None:
        super().set_meta(root, item, dest)
        attr = item.attr
        low, high = EXT4_TIMES
        if not all(low <= ns // 10**9 <= high for ns in (attr.atime_ns, attr.mtime_ns)):
            mtime = clamped_seconds(item, low, high, on_skip=self.on_skip)
            atime = min(max(attr.atime_ns // 10**9, low), high)
            os.utime(dest, (atime, mtime), follow_symlinks=False)


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env=boot_media.mtools_env())
    if done.returncode != 0:
        raise OSError(f"{what} failed ({done.returncode}): "
                      f"{(done.stdout + done.stderr).strip()}")


def _set_root(found: Tools, root: Root, raw: Path, layout: Layout) -> None:
    """Give the file system's root directory (inode 2) the root's mode, owner and time: mke2fs
    1.47.0 -d fills the directory but leaves its own metadata as mke2fs made it."""
    top = root.top().attr
    seconds = min(max(top.mtime_ns // 10**9, EXT4_TIMES[0]), EXT4_TIMES[1])
    commands = "".join(f"sif <2> {field} {value}\n" for field, value in (
        ("mode", f"0{top.mode:o}"), ("uid", top.uid), ("gid", top.gid),
        ("mtime", f"@{seconds}"), ("atime", f"@{seconds}")))
    done = subprocess.run([found.debugfs, "-w", "-f", "-",
                           f"{raw}?offset={layout.root_start}"], input=commands,
                          capture_output=True, text=True, check=False)
    errors = [line for line in done.stderr.splitlines() if not line.startswith("debugfs ")]
    if done.returncode != 0 or errors:
        raise OSError(f"debugfs failed ({done.returncode}): {' '.join(errors)}")


def _partition(found: Tools, raw: Path, layout: Layout, part_uuid: str) -> None:
    script = (
        "label: gpt\n"
        f"label-id: {uuid.uuid4()}\n"
        f"start={layout.esp_start // SECTOR}, size={layout.esp_size // SECTOR}, "
        f'type={ESP_TYPE}, name="EFI System", attrs="LegacyBIOSBootable"\n'
        f"start={layout.root_start // SECTOR}, size={layout.root_size // SECTOR}, "
        f'type={ROOT_TYPE}, uuid={part_uuid}, name="{ROOT_LABEL}"\n')
    done = subprocess.run([found.sfdisk, "--quiet", "--no-reread", "--no-tell-kernel",
                           str(raw)], input=script, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise OSError(f"sfdisk failed ({done.returncode}): {done.stderr.strip()}")
    # gptmbr.bin goes where the MBR's boot code is (the first 440 bytes): the protective
    # partition entry and signature sfdisk wrote stay.
    code = Path(found.gptmbr).read_bytes()[:440]
    with open(raw, "r+b") as f:
        f.write(code)


def _write_esp(found: Tools, root: Root, boot: DiskBoot, raw: Path, layout: Layout,
               args: str, work: Path) -> None:
    work.mkdir()
    try:
        files = {"vmlinuz": _copy_out(root, boot.kernel, work / "vmlinuz")}
        if boot.initrd is not None:
            files["initrd.img"] = _copy_out(root, boot.initrd, work / "initrd.img")
        marker = boot_media.new_marker()
        files[marker.lstrip("/")] = work / "marker"
        (work / "marker").write_text("onesuite-fs disk image: GRUB finds it by this name\n")
        files["syslinux.cfg"] = work / "syslinux.cfg"
        files["syslinux.cfg"].write_text(SYSLINUX_CFG.format(
            initrd="  INITRD /initrd.img\n" if boot.initrd is not None else "", append=args))
        files["EFI/BOOT/BOOTX64.EFI"] = work / "bootx64.efi"
        boot_media.write_grub_efi(
            work / "bootx64.efi",
            boot_media.grub_efi_config(marker, "/vmlinuz",
                                       "/initrd.img" if boot.initrd is not None else None,
                                       args), ("fat",))
        esp = work / "esp.img"
        boot_media.write_fat(esp, layout.esp_size, files, label=ESP_LABEL)
        _run([found.syslinux, "--install", str(esp)], "syslinux")
        boot_media.copy_into(esp, raw, layout.esp_start)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _copy_out(root: Root, item: Item, dest: Path) -> Path:
    with open(dest, "wb") as f:
        for chunk in root.chunks(item):
            f.write(chunk)
    return dest
