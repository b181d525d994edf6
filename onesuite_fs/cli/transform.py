"""onesuite export, onesuite convert: a node's root as an archive or image, and whole layouts
converted between SystemImager and oneSIS (onesuite_fs.transform)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import EXIT_OK, build_tree, load, report_warnings

EXPORT_DESCRIPTION = """\
Write NODE's root, exactly as the mount serves it (overrides and oneSIS rules applied), to
OUT in one of these formats:

  tar        POSIX pax tar: numeric owners, nanosecond times, extended attributes
             (SCHILY.xattr, as GNU tar --xattrs), hard links as link entries. Extract with
             tar --xattrs --xattrs-include='*' --numeric-owner -xpf OUT
  squashfs   a squashfs image (squashfs-tools' mksquashfs, gzip compression): whole-second
             times; the root directory's extended attributes are not stored
  cpio       a gzip'd cpio newc archive, usable as a Linux initramfs (Warewulf style):
             whole-second times, no extended attributes
  iso        a live ISO (ISOLINUX + xorriso) booting the kernel the root carries
             (/vmlinuz or the newest /boot/vmlinuz-*) with the whole root as its initramfs,
             running rdinit=/sbin/init unless --append names another

The root is read as it is written (memory stays flat); OUT appears only when it is complete
(it is written under a hidden temporary name next to it). Sockets cannot be stored in tar or
squashfs; what a format cannot hold is listed on stderr. onesuite-fs's own provenance
attributes (user.onesuite.*, trusted.onesuite.*) are never exported.
"""

EXPORT_EPILOG = """\
errors (exit 2, nothing written): an unknown node, an existing OUT without --force, a missing
tool, an ISO of a root without a kernel or init, not enough space for the uncompressed root.
examples:
  onesuite export --root /srv/si node001 --format tar node001.tar
  onesuite export --root /srv/si node001 --format cpio /tftpboot/node001.img
  onesuite export --root /srv/si node001 --format iso --append 'console=ttyS0' node001.iso
"""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    export = commands.add_parser(
        "export", parents=[common], help="write a node's root as tar, squashfs, cpio or ISO",
        description=EXPORT_DESCRIPTION, epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("node", metavar="NODE", help="the node (cluster.xml host name)")
    export.add_argument("out", type=Path, metavar="OUT", help="the file to write")
    export.add_argument("--format", required=True, choices=("tar", "squashfs", "cpio", "iso"),
                        help="what to write (see above)")
    export.add_argument("--force", action="store_true",
                        help="replace OUT if it exists (only once the new one is complete)")
    export.add_argument("--kernel", metavar="PATH",
                        help="iso: the kernel inside the root (default: /vmlinuz, else the "
                             "newest /boot/vmlinuz-*)")
    export.add_argument("--append", default="", metavar="ARGS",
                        help="iso: more kernel arguments, e.g. 'console=ttyS0' or "
                             "'rdinit=/usr/local/sbin/boot-me'")
    progress = export.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="show a progress bar on stderr (default: when it is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    export.set_defaults(func=cmd_export)
    register_convert(commands, common)


def cmd_export(args: argparse.Namespace) -> int:
    from ..transform.export import export_node, summarize_skips
    from ..transform.output import human

    settings, site = load(args)
    report_warnings(site, settings.override_order)
    tree = build_tree(settings, site)
    result = export_node(tree, args.node, args.format, args.out, force=args.force,
                         progress=args.progress, kernel=args.kernel, append=args.append)
    summarize_skips(result.skipped)
    print(f"onesuite: wrote {args.out} ({args.format}): {result.entries:,} entries, "
          f"{human(result.bytes)} of file content")
    return EXIT_OK


TO_ONESIS_DESCRIPTION = """\
Write the oneSIS image of every node that uses the SystemImager image IMG into the directory
OUT: the base (what all those nodes share) with each path where nodes differ turned into
oneSIS variants next to it (name.default, name.<class>, name.<host>; a whole directory when
the directory itself differs; hidden .name.<variant> in directories read by glob such as
etc/sysconfig/network-scripts or *.d), and a generated /etc/sysimage.conf: one
NODECLASS_MAP line per node, mapping it to a class that stands for its combination of
SystemImager groups, and the LINKBACK lines. Served by onesuite-fs (as the image of a site
listing the same nodes), every node's root is the root it had, entry for entry, except for
the variant files themselves and the limits below.

Limits (reported on stderr): oneSIS has no variant of / itself, so the root directory takes
the most common mode, owner and time; a path only some nodes have is limited to them with
-c/-n, which onesuite-fs serves exactly but mk-sysimage would turn into a dangling link on the
others; an existing /etc/sysimage.conf is replaced by the generated one.
"""

def register_convert(commands: Any, common: argparse.ArgumentParser) -> None:
    convert = commands.add_parser(
        "convert", help="convert a site between SystemImager and oneSIS layouts",
        description="Convert whole layouts: to-onesis (a SystemImager image and its nodes' "
                    "overrides as one oneSIS image). The output is written under a temporary "
                    "name and renamed when complete.")
    jobs = convert.add_subparsers(dest="job", required=True, metavar="JOB")
    to_onesis = jobs.add_parser(
        "to-onesis", parents=[common], help="SystemImager image + overrides -> oneSIS image",
        description=TO_ONESIS_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  onesuite convert to-onesis --root /srv/si --image rhel9 "
               "/var/lib/oneSIS/rhel9\n")
    to_onesis.add_argument("--image", required=True, metavar="IMG",
                           help="the SystemImager image whose nodes to convert")
    to_onesis.add_argument("out", type=Path, metavar="OUT", help="the oneSIS image directory")
    to_onesis.add_argument("--force", action="store_true",
                           help="replace OUT if it is not empty (once the new one is complete)")
    to_onesis.set_defaults(func=cmd_to_onesis)


def cmd_to_onesis(args: argparse.Namespace) -> int:
    from ..transform.output import atomic_output, check_target, human
    from ..transform.progress import Progress
    from ..transform.to_onesis import convert_to_onesis

    settings, site = load(args)
    report_warnings(site, settings.override_order)
    tree = build_tree(settings, site)
    check_target(args.out, force=args.force, directory=True)
    bar = Progress(f"to-onesis {args.image}")
    try:
        with atomic_output(args.out, directory=True) as temp:
            done = convert_to_onesis(tree, args.image, temp, bar)
    finally:
        bar.close()
    for limit in done.limits:
        print(f"onesuite: limit: {limit}", file=sys.stderr)
    print(f"onesuite: wrote the oneSIS image {args.out}: {len(done.hosts)} nodes in "
          f"{len(done.groups)} classes, {len(done.linkbacks)} LINKBACK paths, "
          f"{done.entries:,} entries, {human(done.bytes)} of file content")
    return EXIT_OK
