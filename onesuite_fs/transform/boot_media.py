"""What the bootable exports (iso, raw, qcow2) share: the kernel command line, the tools and
bootloader files they need, a GRUB EFI program that finds its medium by a marker file, and
FAT images written with mtools (no mount, no loop device).

BIOS boots the syslinux family (ISOLINUX on a CD, SYSLINUX on a disk's FAT partition); UEFI
boots GRUB, built here with grub-mkimage as one x86_64 EFI program whose embedded
configuration finds the medium (``search --file`` for a name unique to this export) and
loads the kernel and initrd from it: no grub.cfg, no modules read at boot time.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ..core.errors import ConfigError

GRUB_EFI_MODULES_DIR = "/usr/lib/grub/x86_64-efi"
# x86's COMMAND_LINE_SIZE is 2048 bytes with the terminating NUL.
MAX_COMMAND_LINE = 2047
SECTOR = 512
MIB = 1 << 20


def need_program(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} is not installed", hint=f"apt-get install {package}")
    return found


def need_file(paths: tuple[str, ...], package: str) -> str:
    for path in paths:
        if os.path.isfile(path):
            return path
    raise ConfigError(f"{paths[0]} is missing", hint=f"apt-get install {package}")


def grub_efi_tools() -> str:
    """grub-mkimage, checked with the x86_64-efi modules it builds from."""
    mkimage = need_program("grub-mkimage", "grub-common")
    need_file((f"{GRUB_EFI_MODULES_DIR}/linux.mod",), "grub-efi-amd64-bin")
    return mkimage


def fat_tools() -> tuple[str, str, str]:
    """mkfs.fat, mmd, mcopy."""
    return (need_program("mkfs.fat", "dosfstools"), need_program("mmd", "mtools"),
            need_program("mcopy", "mtools"))


def command_line(*parts: str) -> str:
    """The kernel arguments: the parts joined, checked to be one line of printable ASCII
    that fits the kernel's limit and that every bootloader passes on unchanged. A newline or
    control character would add lines to isolinux.cfg or syslinux.cfg; GRUB passes a single
    quote or backslash to the kernel escaped (lib/cmdline.c), so neither is accepted; double
    quotes group words as the kernel reads them, so they must pair up."""
    line = " ".join(p.strip() for p in parts if p.strip())
    bad = [c for c in line if not " " <= c <= "~" or c in "'\\"]
    if bad:
        raise ConfigError(f"kernel arguments must be printable ASCII without ' or \\, "
                          f"not {bad[0]!r}",
                          hint="pass --append as one line, e.g. --append 'console=ttyS0'; "
                               "group words with double quotes: opt=\"a b\"")
    if line.count('"') % 2:
        raise ConfigError("kernel arguments have an unpaired double quote",
                          hint='close it: opt="a b"')
    if len(line) > MAX_COMMAND_LINE:
        raise ConfigError(f"kernel arguments are {len(line)} bytes; the kernel takes at most "
                          f"{MAX_COMMAND_LINE}", hint="shorten --append")
    return line


def kernel_params(line: str) -> list[str]:
    """The arguments of a checked command line as the kernel splits them (at spaces outside
    double quotes), without the quotes: GRUB quotes an argument with spaces again when it
    builds the kernel's command line."""
    params: list[str] = []
    current: list[str] = []
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif char == " " and not quoted:
            if current:
                params.append("".join(current))
            current = []
        else:
            current.append(char)
    if current:
        params.append("".join(current))
    return params


def grub_word(word: str) -> str:
    """A word quoted for GRUB's script parser: nothing in it is expanded or splits the line
    ($, ;, spaces and double quotes stay literal; the command line holds no single quote)."""
    return "'" + word + "'"


def new_marker() -> str:
    """A path unique to one export, for GRUB's ``search --file`` to find this medium among
    every disk the machine has."""
    return f"/onesuite-{secrets.token_hex(8)}"


def grub_efi_config(marker: str, kernel: str, initrd: str | None, args: str) -> str:
    lines = [f"search --no-floppy --file --set=root {marker}",
             " ".join(["linux", kernel, *(grub_word(a) for a in kernel_params(args))])]
    if initrd is not None:
        lines.append(f"initrd {initrd}")
    lines.append("boot")
    return "\n".join(lines) + "\n"


def write_grub_efi(out: Path, config: str, fs_modules: tuple[str, ...]) -> None:
    """BOOTX64.EFI: GRUB with `config` built in, and the modules it needs to read the medium
    (`fs_modules`: e.g. iso9660, fat)."""
    mkimage = grub_efi_tools()
    embedded = out.with_name(out.name + ".cfg")
    embedded.write_text(config)
    try:
        done = subprocess.run(
            [mkimage, "-O", "x86_64-efi", "-d", GRUB_EFI_MODULES_DIR, "-p", "/EFI/BOOT",
             "-c", str(embedded), "-o", str(out), "search", "search_fs_file", "linux",
             "boot", "echo", "part_gpt", "part_msdos", *fs_modules],
            capture_output=True, text=True, check=False)
    finally:
        embedded.unlink()
    if done.returncode != 0:
        raise OSError(f"grub-mkimage failed ({done.returncode}): {done.stderr.strip()}")


def mtools_env() -> dict[str, str]:
    # A FAT file system inside a disk image has no drive geometry worth checking.
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=mtools_env())
    if done.returncode != 0:
        raise OSError(f"{what} failed ({done.returncode}): "
                      f"{(done.stdout + done.stderr).strip()}")


def write_fat(image: Path, size: int, files: Mapping[str, Path], *,
              label: str = "ONESUITE") -> None:
    """A new file `image`: a FAT file system of `size` bytes holding `files` (path on the
    FAT, like EFI/BOOT/BOOTX64.EFI -> source file). mkfs.fat and mtools write the file
    directly: nothing is mounted. (A file of its own, not a partition written in place with
    mkfs.fat --offset: mkfs.fat 4.2 then picks the FAT type from the whole disk's size.)"""
    mkfs, mmd, mcopy = fat_tools()
    _run([mkfs, "-C", "-n", label, str(image), str(size // 1024)], "mkfs.fat")
    made: set[str] = set()
    for dest in sorted(files):
        parts = dest.strip("/").split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                _run([mmd, "-i", str(image), f"::/{directory}"], "mmd")
                made.add(directory)
        _run([mcopy, "-i", str(image), str(files[dest]), f"::/{'/'.join(parts)}"], "mcopy")


def copy_into(source: Path, image: Path, offset: int) -> None:
    """Write `source` into `image` at byte `offset`, a MiB at a time; runs of zeros are
    skipped, so a sparse image stays sparse."""
    with open(source, "rb") as src, open(image, "r+b") as out:
        position = offset
        while chunk := src.read(MIB):
            if chunk.count(0) != len(chunk):
                out.seek(position)
                out.write(chunk)
            position += len(chunk)


def fat_size(payload: int) -> int:
    """Bytes for a FAT file system holding `payload` bytes of files: room for the tables and
    clusters, whole MiB, at least 4 MiB (mkfs.fat's FAT12/16 choice needs no more)."""
    size = payload + payload // 8 + 2 * MIB
    return max(4 * MIB, -(-size // MIB) * MIB)
