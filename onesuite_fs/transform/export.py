"""``onesuite export``: one node's root as a tar, squashfs, gzip'd cpio initramfs or live ISO.

Every check (the node exists, the ISO has a kernel, the output may be written, there is room)
runs before anything is written; the output appears under its name only when complete.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ConfigError
from ..core.view import View
from ..progress import Progress
from . import cpio, iso, squashfs, tar
from .output import atomic_output, check_space, check_target
from .walk import measure, named_root

FORMATS = ("tar", "squashfs", "cpio", "iso")
_HEADER_ALLOWANCE = 1024  # bytes per entry on top of content: headers, padding, pax records


@dataclass
class ExportResult:
    entries: int
    bytes: int
    skipped: list[tuple[str, str]] = field(default_factory=list)


def export_node(tree: View, host: str, fmt: str, out: Path, *, force: bool = False,
                progress: bool | None = None, kernel: str | None = None,
                append: str = "") -> ExportResult:
    """Write `host`'s root to `out` in format `fmt` (see FORMATS)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}", hint=f"one of {', '.join(FORMATS)}")
    root = named_root(tree, host)
    boot = iso.find_kernel(root, kernel) if fmt == "iso" else None  # before writing anything
    if fmt == "iso":
        iso.check_init(root, append)
    if fmt == "squashfs":
        squashfs.mksquashfs()
    if fmt == "iso":
        iso.tools()
    check_target(out, force=force, directory=False)
    totals = measure(root)
    # Compression may shrink it, but nothing guarantees that: ask for the uncompressed size.
    needed = totals.bytes + _HEADER_ALLOWANCE * totals.entries
    # An ISO is staged first: its initramfs and the ISO holding it are both on disk.
    check_space(out, needed * (2 if fmt == "iso" else 1), f"{host}'s root")
    bar = Progress(f"{host} -> {out.name}", totals.entries, totals.bytes, enabled=progress)
    result = ExportResult(0, totals.bytes)

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
