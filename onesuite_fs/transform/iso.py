"""A node's root as a live ISO: ISOLINUX boots the kernel the root carries, with the whole
root as its initramfs (a gzip'd cpio, see cpio.py), so the node runs from RAM with no other
driver than the kernel itself: no CD-ROM, file system or network module is needed. The kernel
is started with ``rdinit=/sbin/init`` (the root's own init) unless --append names another.

The ISO is assembled by xorriso from a staging directory next to the output (kernel, initrd,
ISOLINUX files), which is removed afterwards.
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
from .cpio import write_initramfs
from .walk import Item, Root

ISOLINUX_BIN = ("/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/isolinux.bin")
LDLINUX_C32 = ("/usr/lib/syslinux/modules/bios/ldlinux.c32", "/usr/lib/syslinux/ldlinux.c32")
DEFAULT_INIT = "/sbin/init"
_MAX_LINKS = 16


@dataclass(frozen=True)
class Boot:
    kernel: Item  # a regular file of the root
    init: str | None  # the init the kernel is told to run, None when --append names one


def _first(paths: tuple[str, ...], package: str) -> str:
    for path in paths:
        if os.path.isfile(path):
            return path
    raise ConfigError(f"{paths[0]} is missing", hint=f"apt-get install {package}")


def tools() -> tuple[str, str, str]:
    """xorriso, isolinux.bin, ldlinux.c32 (ConfigError naming the package when missing)."""
    xorriso = shutil.which("xorriso")
    if xorriso is None:
        raise ConfigError("xorriso is not installed", hint="apt-get install xorriso")
    return xorriso, _first(ISOLINUX_BIN, "isolinux"), _first(LDLINUX_C32, "syslinux-common")


def _version_key(name: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _follow(root: Root, path: str) -> Item | None:
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


def find_kernel(root: Root, wanted: str | None = None) -> Item:
    """The kernel to boot: `wanted` (a path in the root), else /vmlinuz, else the newest
    /boot/vmlinuz-*. ConfigError when the root carries none."""
    host = root.entry.name
    if wanted is not None:
        found = _follow(root, wanted)
        if found is None or not found.is_reg:
            raise ConfigError(f"{host}'s root has no kernel file at {wanted}")
        return found
    found = _follow(root, "vmlinuz")
    if found is not None and found.is_reg:
        return found
    boot = root.lookup("boot")
    kernels: list[str] = []
    if boot is not None and boot.is_dir:
        kernels = sorted((child.name for child in root.children(boot)
                          if child.name.startswith("vmlinuz")), key=_version_key)
    for name in reversed(kernels):
        found = _follow(root, f"boot/{name}")
        if found is not None and found.is_reg:
            return found
    raise ConfigError(f"{host}'s root carries no kernel (no /vmlinuz, no /boot/vmlinuz-*): "
                      "an ISO cannot boot it",
                      hint="add a kernel to the image or an override, or name one with "
                           "--kernel PATH; tar, squashfs and cpio need none")


def check_init(root: Root, append: str) -> str | None:
    """The init the kernel will run; ConfigError when the root lacks it."""
    if re.search(r"(^|\s)rdinit=", append):
        return None
    found = _follow(root, DEFAULT_INIT)
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
    xorriso, isolinux_bin, ldlinux = tools()
    init = check_init(root, append)
    stage = out.with_name(out.name + ".stage")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        (stage / "boot").mkdir(parents=True)
        (stage / "isolinux").mkdir()
        shutil.copy(isolinux_bin, stage / "isolinux/isolinux.bin")
        shutil.copy(ldlinux, stage / "isolinux/ldlinux.c32")
        args = " ".join(filter(None, [f"rdinit={init}" if init else "", append.strip()]))
        (stage / "isolinux/isolinux.cfg").write_text(ISOLINUX_CFG.format(append=args))
        with open(stage / "boot/vmlinuz", "wb") as f:
            for chunk in root.chunks(kernel):
                f.write(chunk)
        with open(stage / "boot/initrd.gz", "wb") as f:
            written = write_initramfs(root, f, progress, on_skip=on_skip,
                                      spill_dir=out.parent)
        label = re.sub(r"[^A-Z0-9_]", "_", root.entry.name.upper())[:32] or "NODE"
        done = subprocess.run(
            [xorriso, "-as", "mkisofs", "-quiet", "-o", str(out), "-V", label, "-r", "-J",
             "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot",
             "-boot-load-size", "4", "-boot-info-table", str(stage)],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise OSError(f"xorriso failed ({done.returncode}): {done.stderr.strip()}")
        return written
    finally:
        shutil.rmtree(stage, ignore_errors=True)
