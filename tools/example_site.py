#!/usr/bin/env python3
"""Build the bundled example SystemImager server tree into a directory.

git keeps the files of examples/site but not their owners, special modes, hard links,
fifos, extended attributes or empty directories; examples/site.fixups lists those, and this
tool applies them to a fresh copy. Every mtime is then set to one fixed time so that the
tree is the same on every machine.

The same tree holds a small Warewulf 4 site (examples/warewulf): its image is a copy of the
SystemImager image rocky9, its overlays are templates; serve it with
``onesuite mount --warewulf-root DEST``.

usage: example_site.py DEST        # DEST/etc/systemimager, DEST/var/lib/systemimager,
                                   # DEST/etc/warewulf, DEST/var/lib/warewulf, DEST/usr/share
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SITE = REPO / "examples" / "site"
FIXUPS = REPO / "examples" / "site.fixups"
WAREWULF = REPO / "examples" / "warewulf"
WAREWULF_IMAGE = "var/lib/warewulf/chroots/rocky9/rootfs"
FIXED_MTIME_NS = 1_700_000_000 * 10**9  # 2023-11-14, any fixed time will do


def _apply(dest: Path, verb: str, args: list[str], where: str) -> None:
    path = dest / args[0]
    if verb == "dir":
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, int(args[1], 8))
        os.chown(path, int(args[2]), int(args[3]))
    elif verb == "mode":
        os.chmod(path, int(args[1], 8))
    elif verb == "owner":
        os.chown(path, int(args[1]), int(args[2]), follow_symlinks=False)
    elif verb == "link":
        os.link(path, dest / args[1])
    elif verb == "fifo":
        os.mkfifo(path, int(args[1], 8))
    elif verb == "xattr":
        os.setxattr(path, args[1], bytes.fromhex(args[2]), follow_symlinks=False)
    else:
        raise SystemExit(f"{where}: unknown fixup {verb!r}")


def apply_fixups(dest: Path) -> None:
    variables: dict[str, str] = {}
    for number, raw in enumerate(FIXUPS.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" in line and " " not in line:
            name, value = line.split("=", 1)
            variables[name] = value
            continue
        for name, value in variables.items():
            line = line.replace(f"${name}", value)
        verb, *args = line.split()
        _apply(dest, verb, args, f"{FIXUPS}:{number}")


def set_fixed_times(dest: Path) -> None:
    # Children first: touching an entry changes its parent directory's mtime.
    for dirpath, dirnames, filenames in os.walk(dest, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(FIXED_MTIME_NS, FIXED_MTIME_NS),
                     follow_symlinks=False)
    os.utime(dest, ns=(FIXED_MTIME_NS, FIXED_MTIME_NS))


def add_warewulf_site(dest: Path) -> None:
    """The Warewulf site beside the SystemImager one: its files, and the image rocky9
    copied with everything the fixups gave it (cp -a: owners, modes, links, xattrs)."""
    shutil.copytree(WAREWULF, dest, symlinks=True, dirs_exist_ok=True)
    os.chmod(dest / "root", 0o550)
    os.chmod(dest / "root/.ssh", 0o700)
    os.chmod(dest / "root/.ssh/authorized_keys", 0o600)
    image = dest / WAREWULF_IMAGE
    image.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", "--", str(dest / "var/lib/systemimager/images/rocky9"),
                    str(image)], check=True)
    # A Warewulf image has no oneSIS configuration (its LINKBACK would pick /etc/issue).
    for name in ("sysimage.conf", "issue.compute", "issue.default", "issue.login"):
        (image / "etc" / name).unlink()


def build(dest: Path) -> Path:
    """Write the example server tree to dest (replacing what was there); return dest."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(SITE, dest, symlinks=True)
    apply_fixups(dest)
    add_warewulf_site(dest)
    set_fixed_times(dest)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("example_site.py: needs root (it sets owners and special modes)",
              file=sys.stderr)
        return 2
    build(args.dest)
    print(args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
