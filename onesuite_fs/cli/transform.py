"""onesuite export, onesuite convert: a node's root as an archive or image, and whole layouts
converted between SystemImager and oneSIS (onesuite_fs.transform)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import EXIT_OK, build_view, load, report_warnings

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
  iso        a live ISO booting the kernel the root carries (/vmlinuz or the newest
             /boot/vmlinuz-*) with the whole root as its initramfs, running
             rdinit=/sbin/init unless --append names another. One hybrid image boots from
             a CD and from a USB stick or disk (dd it), with BIOS (ISOLINUX) and UEFI
             (GRUB)
  raw        a VM disk image (GPT: an EFI System partition with the root's kernel and
             initrd, SYSLINUX for BIOS and GRUB for UEFI; an ext4 partition with the
             root), booting with root=PARTUUID=<root partition> ro. The root's initrd
             (/boot/initrd.img-<version> next to the kernel, or --initrd) must be able to
             mount it; the root's /etc/fstab is used as it is. Needs root (the root is
             staged in a directory next to OUT, with its owners, for mke2fs -d)
  qcow2      the raw image converted to qcow2 (qemu-img)

The root is read as it is written (memory stays flat); OUT appears only when it is complete
(it is written under a hidden temporary name next to it). Sockets cannot be stored in tar or
squashfs; what a format cannot hold is listed on stderr. onesuite-fs's own provenance
attributes (user.onesuite.*, trusted.onesuite.*) are never exported.
"""

EXPORT_EPILOG = """\
errors (exit 2, nothing written): an unknown node, an existing OUT without --force, a missing
tool, an ISO or disk image of a root without a kernel, an ISO of a root without an init,
kernel arguments that are not one line of printable ASCII, not enough space.
examples:
  onesuite export --root /srv/si node001 --format tar node001.tar
  onesuite export --root /srv/si node001 --format cpio /tftpboot/node001.img
  onesuite export --root /srv/si node001 --format iso --append 'console=ttyS0' node001.iso
  onesuite export --root /srv/si node001 --format qcow2 --append 'console=ttyS0' node001.qcow2
"""


def add_progress_options(parser: argparse.ArgumentParser) -> None:
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="show a progress bar on stderr (default: when it is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false")


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    export = commands.add_parser(
        "export", parents=[common],
        help="write a node's root as tar, squashfs, cpio, ISO or VM disk image",
        description=EXPORT_DESCRIPTION, epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("node", metavar="NODE", help="the node (cluster.xml host name)")
    export.add_argument("out", type=Path, metavar="OUT", help="the file to write")
    export.add_argument("--format", required=True,
                        choices=("tar", "squashfs", "cpio", "iso", "raw", "qcow2"),
                        help="what to write (see above)")
    export.add_argument("--force", action="store_true",
                        help="replace OUT if it exists (only once the new one is complete)")
    export.add_argument("--kernel", metavar="PATH",
                        help="iso, raw, qcow2: the kernel inside the root (default: /vmlinuz, "
                             "else the newest /boot/vmlinuz-*)")
    export.add_argument("--initrd", metavar="PATH",
                        help="raw, qcow2: the initrd inside the root (default: the one next "
                             "to the kernel, /boot/initrd.img-<version> or /initrd.img)")
    export.add_argument("--append", default="", metavar="ARGS",
                        help="iso, raw, qcow2: more kernel arguments, e.g. 'console=ttyS0' "
                             "or (iso) 'rdinit=/usr/local/sbin/boot-me'")
    add_progress_options(export)
    export.set_defaults(func=cmd_export)
    register_convert(commands, common)


def cmd_export(args: argparse.Namespace) -> int:
    from ..progress import human
    from ..transform.export import export_node, summarize_skips

    settings, site = load(args)
    report_warnings(site, settings.override_order)
    tree = build_view(settings, site, one_pass=True)
    result = export_node(tree, args.node, args.format, args.out, force=args.force,
                         progress=args.progress, kernel=args.kernel, initrd=args.initrd,
                         append=args.append)
    summarize_skips(result.skipped)
    for note in result.notes:
        print(f"onesuite: note: {note}", file=sys.stderr)
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
                    "overrides as one oneSIS image), to-systemimager (a oneSIS image and its "
                    "nodes as a golden image, class and host overrides and cluster.xml). The "
                    "output is written under a temporary name and renamed when complete.")
    jobs = convert.add_subparsers(dest="job", required=True, metavar="JOB")
    to_onesis = jobs.add_parser(
        "to-onesis", parents=[common], help="SystemImager image + overrides -> oneSIS image",
        description=TO_ONESIS_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="errors (exit 2, OUT left as it was): an unknown image or one no node uses, a "
               "non-empty OUT\nwithout --force, not enough space for one node's root, a "
               "differing path that cannot\nbe a LINKBACK.\n"
               "example:\n  onesuite convert to-onesis --root /srv/si --image rhel9 "
               "/var/lib/oneSIS/rhel9\n")
    to_onesis.add_argument("--image", required=True, metavar="IMG",
                           help="the SystemImager image whose nodes to convert")
    to_onesis.add_argument("out", type=Path, metavar="OUT", help="the oneSIS image directory")
    to_onesis.add_argument("--force", action="store_true",
                           help="replace OUT if it is not empty (once the new one is complete)")
    add_progress_options(to_onesis)
    to_onesis.set_defaults(func=cmd_to_onesis)
    register_to_systemimager(jobs)
    register_warewulf(jobs, common)


def cmd_to_onesis(args: argparse.Namespace) -> int:
    from ..progress import Progress, human
    from ..transform.output import atomic_output, check_space, check_target
    from ..transform.to_onesis import convert_to_onesis, image_hosts
    from ..transform.walk import measure, named_root

    settings, site = load(args)
    report_warnings(site, settings.override_order)
    tree = build_view(settings, site, one_pass=True)
    hosts = image_hosts(tree, args.image)
    check_target(args.out, force=args.force, directory=True)
    # The base is one node's root at least (1 KiB per entry for inodes and directories);
    # the variants are usually small next to it. Every path is visited once per image.
    totals = measure(named_root(tree, hosts[0]))
    check_space(args.out, totals.bytes + 1024 * totals.entries, "the oneSIS image")
    bar = Progress(f"to-onesis {args.image}", totals.entries, 0, enabled=args.progress)
    try:
        with atomic_output(args.out, directory=True) as temp:
            done = convert_to_onesis(tree, args.image, temp, bar, totals.links)
    finally:
        bar.close()
    for limit in done.limits:
        print(f"onesuite: limit: {limit}", file=sys.stderr)
    _warn_hidden_paths(tree, done.linkbacks)
    print(f"onesuite: wrote the oneSIS image {args.out}: {len(done.hosts)} nodes in "
          f"{len(done.groups)} classes, {len(done.linkbacks)} LINKBACK paths, "
          f"{done.entries:,} entries, {human(done.bytes)} of file content")
    return EXIT_OK


def _warn_hidden_paths(tree: Any, linkbacks: list[Any]) -> None:
    """--whiteouts: oneSIS has no way to hide a path for some nodes. The converted image
    gives the other nodes LINKBACK lines limited to them (-c/-n): onesuite-fs serves the
    path absent where no line names the node, but mk-sysimage on a real oneSIS server
    leaves those nodes a dangling link. Say which paths, never drop them silently."""
    catalog = tree.store.whiteouts
    hidden = [lb.path for lb in linkbacks
              if lb.limited is not None and catalog.covers(lb.path.strip("/"))]
    if not hidden:
        return
    shown = "\n".join(f"  {path}" for path in hidden[:20])
    more = f"\n  ... and {len(hidden) - 20} more" if len(hidden) > 20 else ""
    print(f"onesuite: warning: {len(hidden)} path(s) a whiteout list hides for some nodes "
          "became LINKBACK lines limited to the other nodes: onesuite-fs serves them absent, "
          "but oneSIS cannot hide a path (mk-sysimage on a real oneSIS server gives those "
          f"nodes a dangling link):\n{shown}{more}", file=sys.stderr)


TO_SYSTEMIMAGER_DESCRIPTION = """\
Write a SystemImager image server tree under OUT_PREFIX that gives every node of FILE the
root onesuite-fs serves it from the oneSIS image ONESIS_IMAGE (its sysimage.conf applied:
LINKBACK variants chosen, SERVICE, RAM/LINK paths as links into /ram):

  OUT_PREFIX/var/lib/systemimager/images/IMG/     the golden image: what every node has; a
                                                  path whose value differs between nodes
                                                  has the value of its .default variant
                                                  (else the most common one)
  OUT_PREFIX/var/lib/systemimager/overrides/CLASS/  per oneSIS class: what all its members
                                                  share beyond the image
  OUT_PREFIX/var/lib/systemimager/overrides/HOST/   per node, only where needed: the rest
                                                  (applied last, automatically)
  OUT_PREFIX/var/lib/systemimager/overrides/all/    empty (cluster.xml needs a global one)
  OUT_PREFIX/etc/systemimager/cluster.xml         a group per class (<image>, <override>
                                                  named like the class, <node> in range
                                                  syntax); also rsync_stubs/40IMG and
                                                  var/lib/systemimager/scripts/cluster.txt

The layers are for SystemImager's autoinstall order (the default; pushoverrides gives the
same roots; updateclient applies no host override). /etc/sysimage.conf stays in the image as
the nodes had it: onesuite-fs serves the same roots with or without --no-onesis, as the
rules are already applied. An override or class named like a host or the image gets a
suffix (_2). The nodes' roots are walked together, one directory at a time, and written as
they are read (memory stays flat); a progress bar (paths and bytes) is drawn on stderr when
it is a terminal.

FILE lists the nodes: host names separated by new lines, commas or white space, '#' starts
a comment, and SystemImager ranges such as node001-node064 (zero-padded to the width of the
first number; '\\-' is a literal hyphen) are expanded as cluster.xml's <node> is. oneSIS
bracket ranges (node[001-064]) are not accepted.
"""

TO_SYSTEMIMAGER_EPILOG = """\
errors (exit 2, nothing written): OUT_PREFIX exists and is not empty (without --force), a node
no NODECLASS line of sysimage.conf matches (without --allow-unclassified), an image that is
not a oneSIS image (no /etc/sysimage.conf), a bad sysimage.conf line, not enough space for
one node's root. A run that fails or is interrupted leaves only a hidden
.OUT_PREFIX.onesuite-partial.PID next to it, which is removed when it can be.
example:
  onesuite convert to-systemimager /var/lib/oneSIS/rhel9 --nodes nodes.txt /srv/si
  onesuite mount --root /srv/si /export/roots
"""


def register_to_systemimager(jobs: Any) -> None:
    job = jobs.add_parser(
        "to-systemimager", help="oneSIS image -> SystemImager golden image + overrides",
        description=TO_SYSTEMIMAGER_DESCRIPTION, epilog=TO_SYSTEMIMAGER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    job.add_argument("image_dir", type=Path, metavar="ONESIS_IMAGE",
                     help="the oneSIS image's root directory (with /etc/sysimage.conf)")
    job.add_argument("out", type=Path, metavar="OUT_PREFIX",
                     help="where to write the image server tree (absent or empty)")
    job.add_argument("--nodes", required=True, type=Path, metavar="FILE",
                     help="the nodes to convert for (see above)")
    job.add_argument("--image", metavar="IMG",
                     help="the SystemImager image's name (default: ONESIS_IMAGE's name)")
    job.add_argument("--allow-unclassified", action="store_true",
                     help="accept nodes no NODECLASS line matches; they form a group "
                          "'unclassified' and see the .default variants")
    job.add_argument("--force", action="store_true",
                     help="replace OUT_PREFIX if it is not empty (once the new one is "
                          "complete)")
    add_progress_options(job)
    job.set_defaults(func=cmd_to_systemimager)


def cmd_to_systemimager(args: argparse.Namespace) -> int:
    from ..progress import Progress, human
    from ..transform.output import atomic_output, check_space, check_target
    from ..transform.to_systemimager import (
        Layout,
        check_image_name,
        convert_to_systemimager,
        node_classes,
        onesis_tree,
        read_nodes_file,
    )
    from ..transform.walk import measure, named_root

    image_dir = args.image_dir.resolve()
    image = check_image_name(args.image or image_dir.name)
    hosts = read_nodes_file(args.nodes)
    check_target(args.out, force=args.force, directory=True)
    tree = onesis_tree(image_dir, image, hosts)
    layout = Layout.plan(image, hosts, node_classes(tree, hosts, args.allow_unclassified))
    # One node's root is what the golden image needs at least (1 KiB per entry for the
    # inodes and directories); the overrides are usually small next to it.
    totals = measure(named_root(tree, hosts[0]))
    check_space(args.out, totals.bytes + 1024 * totals.entries, "the image server tree")
    bar = Progress("to-systemimager", totals.entries, 0, enabled=args.progress)
    try:
        with atomic_output(args.out, directory=True) as temp:
            done = convert_to_systemimager(tree, layout, hosts, temp, bar, str(image_dir),
                                           totals.links)
    finally:
        bar.close()
    hosted = len(done.host_paths)
    print(f"onesuite: wrote the SystemImager site {args.out}: image {image}, "
          f"{len(layout.classes)} class override(s), {hosted} host override(s) for "
          f"{len(hosts)} nodes, {done.entries:,} entries, {human(done.bytes)} of file content")
    return EXIT_OK


TO_WAREWULF_DESCRIPTION = """\
Write a Warewulf 4 site under OUT_PREFIX that gives every node using the SystemImager image
IMG the root onesuite-fs serves it (overrides and oneSIS rules applied), entry for entry:

  OUT_PREFIX/var/lib/warewulf/chroots/IMG/rootfs/    the image: what every node has
  OUT_PREFIX/var/lib/warewulf/overlays/GROUP/rootfs/ per group (a node's most important
                                                     SystemImager group): what its nodes
                                                     share beyond the image
  OUT_PREFIX/var/lib/warewulf/overlays/HOST/rootfs/  per node, only where needed: the rest
  OUT_PREFIX/etc/warewulf/nodes.conf                 a profile per group (image name, its
                                                     overlay), every node with its profile
                                                     and its own overlay

The roots are split as 'convert to-systemimager' splits them (see its --help): the nodes'
roots are walked together and written as they are read. Serve the result with
'onesuite mount --warewulf-root OUT_PREFIX'; wwctl reads it as well (overlays are system
overlays; no templates).
"""

FROM_WAREWULF_DESCRIPTION = """\
Write a SystemImager image server tree under OUT_PREFIX that gives every node of the
Warewulf site (--warewulf-root) using the image IMG the root onesuite-fs serves it (image,
overlays in Warewulf's order, templates rendered), entry for entry: the golden image IMG,
an override and a group per combination of profiles, host overrides where needed,
cluster.xml (as 'convert to-systemimager' writes them; see its --help).
"""


def register_warewulf(jobs: Any, common: argparse.ArgumentParser) -> None:
    for name, description, helptext, func in (
            ("to-warewulf", TO_WAREWULF_DESCRIPTION,
             "SystemImager image + overrides -> Warewulf 4 site", cmd_to_warewulf),
            ("from-warewulf", FROM_WAREWULF_DESCRIPTION,
             "Warewulf 4 site -> SystemImager golden image + overrides", cmd_from_warewulf)):
        job = jobs.add_parser(
            name, parents=[common], help=helptext, description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="errors (exit 2, OUT_PREFIX left as it was): an unknown image, a non-empty "
                   "OUT_PREFIX without --force,\nnot enough space for one node's root, a name "
                   "the other system cannot use.\nexamples:\n"
                   "  onesuite convert to-warewulf --root /srv/si --image rhel9 /srv/ww\n"
                   "  onesuite convert from-warewulf --warewulf-root / --image rocky9 /srv/si\n")
        job.add_argument("--image", metavar="IMG",
                         help="the image whose nodes to convert (default: the only one)")
        job.add_argument("out", type=Path, metavar="OUT_PREFIX",
                         help="where to write the site (absent or empty)")
        job.add_argument("--force", action="store_true",
                         help="replace OUT_PREFIX if it is not empty (once the new one is "
                              "complete)")
        add_progress_options(job)
        job.set_defaults(func=func)


def _convert_setup(args: argparse.Namespace, what: str) -> tuple[Any, str, list[str], Any]:
    from ..core.errors import ConfigError
    from ..progress import Progress
    from ..settings import Settings, load_settings
    from ..transform.output import check_space, check_target
    from ..transform.to_onesis import image_hosts
    from ..transform.walk import measure, named_root

    configured = load_settings(args.config) if args.config else Settings()
    if what == "from-warewulf" and args.warewulf_root is None and \
            configured.warewulf_root is None:
        raise ConfigError("convert from-warewulf reads a Warewulf site",
                          hint="name it with --warewulf-root PREFIX or [warewulf] root")
    settings, site = load(args)
    report_warnings(site, settings.override_order)
    if what == "from-warewulf" and site.warewulf is None:
        raise ConfigError("convert from-warewulf reads a Warewulf site",
                          hint="name it with --warewulf-root PREFIX or [warewulf] root")
    if what == "to-warewulf" and site.warewulf is not None:
        raise ConfigError("convert to-warewulf reads a SystemImager site",
                          hint="drop --warewulf-root; name the site with --root")
    tree = build_view(settings, site, one_pass=True)
    image = args.image
    if image is None:
        used = sorted({n.image for n in site.nodes.values()})
        if len(used) != 1:
            raise ConfigError(f"the nodes use {len(used)} images: {', '.join(used)}",
                              hint="name one with --image IMG")
        image = used[0]
    hosts = image_hosts(tree, image)
    check_target(args.out, force=args.force, directory=True)
    totals = measure(named_root(tree, hosts[0]))
    check_space(args.out, totals.bytes + 1024 * totals.entries, "the converted site")
    bar = Progress(what, totals.entries, 0, enabled=args.progress)
    return tree, image, hosts, (bar, totals)


def cmd_to_warewulf(args: argparse.Namespace) -> int:
    from ..progress import human
    from ..transform.output import atomic_output
    from ..transform.warewulf import convert_to_warewulf

    tree, image, hosts, (bar, totals) = _convert_setup(args, "to-warewulf")
    try:
        with atomic_output(args.out, directory=True) as temp:
            done, layout = convert_to_warewulf(tree, image, hosts, temp, bar, totals.links)
    finally:
        bar.close()
    print(f"onesuite: wrote the Warewulf site {args.out}: image {image}, "
          f"{len(layout.classes)} profile(s) with an overlay each, {len(done.host_paths)} "
          f"node overlay(s) for {len(hosts)} nodes, {done.entries:,} entries, "
          f"{human(done.bytes)} of file content")
    return EXIT_OK


def cmd_from_warewulf(args: argparse.Namespace) -> int:
    from ..progress import human
    from ..transform.output import atomic_output
    from ..transform.warewulf import convert_from_warewulf

    tree, image, hosts, (bar, totals) = _convert_setup(args, "from-warewulf")
    try:
        with atomic_output(args.out, directory=True) as temp:
            done, layout = convert_from_warewulf(tree, image, hosts, temp, bar,
                                                 str(tree.site.warewulf.site.nodes_conf),
                                                 totals.links)
    finally:
        bar.close()
    print(f"onesuite: wrote the SystemImager site {args.out}: image {image}, "
          f"{len(layout.classes)} group override(s), {len(done.host_paths)} host override(s) "
          f"for {len(hosts)} nodes, {done.entries:,} entries, {human(done.bytes)} of file "
          "content")
    return EXIT_OK
