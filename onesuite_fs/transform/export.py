"""``onesuite export``: one node's root as a tar, squashfs, gzip'd cpio initramfs, live ISO or
VM disk image (raw, qcow2).

Every check (the node exists, a bootable format has a kernel, the tools are installed, the
output may be written, there is room) runs before anything is written; the output appears
under its name only when complete.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ConfigError
from ..core.view import View
from ..progress import Progress
from . import boot_media, cpio, disk, iso, squashfs, tar
from .output import atomic_output, check_space, check_target
from .walk import measure, named_root

FORMATS = ("tar", "squashfs", "cpio", "iso", "raw", "qcow2")
_HEADER_ALLOWANCE = 1024  # bytes per entry on top of content: headers, padding, pax records


@dataclass
class ExportResult:
    entries: int
    bytes: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def export_node(tree: View, host: str, fmt: str, out: Path, *, force: bool = False,
                progress: bool | None = None, kernel: str | None = None,
                initrd: str | None = None, append: str = "") -> ExportResult:
    """Write `host`'s root to `out` in format `fmt` (see FORMATS)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}", hint=f"one of {', '.join(FORMATS)}")
    bootable = fmt in ("iso", *disk.FORMATS)
    if not bootable and (kernel is not None or initrd is not None or append):
        raise ConfigError(f"--kernel, --initrd and --append are for bootable formats, not {fmt}",
                          hint="use --format iso, raw or qcow2, or drop them")
    if fmt == "iso" and initrd is not None:
        raise ConfigError("an ISO boots the whole root as its initramfs: --initrd is for raw "
                          "and qcow2")
    root = named_root(tree, host)
    result = ExportResult(0, 0)
    # Before writing anything: the kernel (and initrd), the kernel arguments, the tools.
    boot = iso.find_kernel(root, kernel) if bootable else None
    disk_boot: disk.DiskBoot | None = None
    if fmt == "iso":
        iso.check_init(root, append)
        iso.tools()
    elif fmt in disk.FORMATS:
        assert boot is not None
        disk_boot = disk.DiskBoot(boot, disk.find_initrd(root, boot, initrd))
        boot_media.command_line(append)
        disk.tools(fmt)
        disk.check_privileges(fmt)
        if disk_boot.initrd is None:
            result.notes.append(f"{host}'s root has no initrd next to /{boot.path}: the "
                                "kernel must find and mount the root partition by itself")
    if fmt == "squashfs":
        squashfs.mksquashfs()
    check_target(out, force=force, directory=False)
    totals = measure(root)
    result.bytes = totals.bytes
    # Compression may shrink it, but nothing guarantees that: ask for the uncompressed size.
    needed = totals.bytes + _HEADER_ALLOWANCE * totals.entries
    layout = disk.plan(totals, disk_boot) if disk_boot is not None else None
    if layout is not None:
        needed = disk.space_needed(layout, fmt)
    elif fmt == "iso":
        needed *= 2  # staged first: its initramfs and the ISO holding it are both on disk
    check_space(out, needed, f"{host}'s root")
    bar = Progress(f"{host} -> {out.name}", totals.entries, totals.bytes, enabled=progress)

    def skip(path: str, why: str) -> None:
        result.skipped.append((path, why))

    try:
        with atomic_output(out) as temp:
            if fmt == "squashfs":
                result.entries = squashfs.write_squashfs(root, temp, bar, on_skip=skip)
            elif fmt == "iso":
                assert boot is not None
                result.entries = iso.write_iso(root, boot, temp, bar, append=append,
                                               on_skip=skip)
            elif disk_boot is not None:
                assert layout is not None
                result.entries = disk.write_disk(root, disk_boot, temp, fmt, layout, bar,
                                                 append=append, on_skip=skip)
            else:
                with open(temp, "wb") as stream:
                    if fmt == "tar":
                        result.entries = tar.write_tar(root, stream, bar, on_skip=skip,
                                                       spill_dir=out.parent)
                    else:
                        result.entries = cpio.write_initramfs(root, stream, bar, on_skip=skip,
                                                              spill_dir=out.parent)
    finally:
        bar.close()
    return result


def summarize_skips(skipped: list[tuple[str, str]], limit: int = 5) -> None:
    """Say on stderr what the format could not hold, grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for path, why in skipped:
        by_reason.setdefault(why, []).append(path)
    for why, paths in by_reason.items():
        shown = ", ".join(f"/{p.lstrip('/')}" for p in paths[:limit])
        more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
        print(f"onesuite: note: {why}: {shown}{more}", file=sys.stderr)
