"""``onesuite``: the command-line front end (a thin client of the core, like the mount)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .model import Site
from .settings import OVERRIDE_ORDERS, Settings, load_settings
from .sources.systemimager import load_site
from .stack import Stages, missing_overrides, node_stages

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
onesuite-fs serves a SystemImager image server (golden images, overrides and cluster.xml)
as one read-only FUSE mount with every node's effective root, resolved when a path is looked
up, without copying a tree:

  MOUNTPOINT/nodes/<host>/     the node's root: image + its overrides, as SystemImager
                               would have installed it
  MOUNTPOINT/groups/<group>/   a group's root, without any host override
  MOUNTPOINT/images/<image>/   a golden image as it is

Every entry carries the extended attribute user.onesuite.origin naming the layer it comes
from (e.g. "override:node001 /etc/hostname").
"""

EPILOG = """\
exit status: 0 success, 1 failure, 2 bad configuration or usage.
examples:
  onesuite nodes --root /srv/si
  onesuite mount --root /srv/si /export/roots
  getfattr -n user.onesuite.origin /export/roots/nodes/node001/etc/hostname
  onesuite umount /export/roots
"""


def _site_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("image server")
    group.add_argument("--root", type=Path, metavar="PREFIX",
                       help="where the server's tree is: PREFIX/etc/systemimager and "
                            "PREFIX/var/lib/systemimager (default: /)")
    group.add_argument("--config", type=Path, metavar="FILE",
                       help="onesuite.toml naming paths and policies explicitly "
                            "(command-line options win over it)")
    group.add_argument("--override-order", choices=OVERRIDE_ORDERS,
                       help="which SystemImager tool's override order to reproduce: "
                            "autoinstall (4.3 installs; default), updateclient "
                            "(si_updateclient: no host or image-named override), "
                            "pushoverrides (si_pushoverrides: first source wins)")
    group.add_argument("--allow-dynamic-nodes", action="store_true", default=None,
                       help="run cluster.xml <dynamic_node> commands (off by default: "
                            "they are shell commands)")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onesuite", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _site_options()

    mount = commands.add_parser(
        "mount", parents=[common], help="mount every node's root",
        description="Mount the per-node roots at MOUNTPOINT. Returns once the mount is "
                    "ready (or fails with the reason); the daemon keeps serving until "
                    "'onesuite umount MOUNTPOINT'. Read-only: every write fails with EROFS.")
    mount.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    mount.add_argument("-f", "--foreground", action="store_true",
                       help="stay in the foreground (logs to stderr; Ctrl-C unmounts)")
    mount.add_argument("--log", type=Path, metavar="FILE",
                       help="daemon log file (default: none in daemon mode)")
    mount.add_argument("--cache-timeout", type=float, metavar="SECONDS",
                       help="kernel entry/attribute cache time (default 300)")
    mount.add_argument("--debug-fuse", action="store_true", help="libfuse debug output")

    umount = commands.add_parser(
        "umount", help="unmount and wait for the daemon to exit",
        description="Unmount MOUNTPOINT and wait until its daemon has exited.")
    umount.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    umount.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for the daemon (default 30)")

    nodes = commands.add_parser(
        "nodes", parents=[common], help="list nodes with their groups, image and layers",
        description="Every node with its groups (most important first), its image and its "
                    "layer stack, lowest first (the last layer wins).")
    nodes.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def load(args: argparse.Namespace) -> tuple[Settings, Site]:
    settings = load_settings(args.config) if args.config else Settings()
    settings = settings.with_options(root=args.root, override_order=args.override_order,
                                     allow_dynamic_nodes=args.allow_dynamic_nodes,
                                     cache_timeout=getattr(args, "cache_timeout", None))
    site = load_site(settings)
    return settings, site


def report_warnings(site: Site, order: str) -> None:
    seen: set[str] = set()
    for warning in site.warnings:
        print(f"onesuite: warning: {warning}", file=sys.stderr)
    # Only overrides cluster.xml names explicitly: most nodes have no host override and the
    # image-named one is implicit, so those are shown by `onesuite nodes`, not warned about.
    for host in site.nodes:
        for entry in missing_overrides(node_stages(site, host, order)):
            if entry.role not in ("host", "script override") and entry.layer.name not in seen:
                seen.add(entry.layer.name)
                print(f"onesuite: warning: override {entry.layer.name!r} ({entry.role}, "
                      f"node {host}) has no directory at {entry.layer.path}; skipped, as "
                      "SystemImager does", file=sys.stderr)


def stack_json(stages: Stages) -> list[dict[str, Any]]:
    return [{"stage": number, "kind": e.layer.kind, "name": e.layer.name,
             "path": str(e.layer.path), "role": e.role, "present": e.present}
            for number, stage in enumerate(stages) for e in stage]


def cmd_nodes(args: argparse.Namespace) -> int:
    settings, site = load(args)
    order = settings.override_order
    report_warnings(site, order)
    rows = []
    for host, node in sorted(site.nodes.items()):
        rows.append({"name": host, "groups": list(node.groups), "image": node.image,
                     "layers": stack_json(node_stages(site, host, order))})
    if args.json:
        json.dump({"override_order": order, "nodes": rows}, sys.stdout, indent=2)
        print()
        return EXIT_OK
    for row in rows:
        print(f"{row['name']}  image {row['image']}  groups {', '.join(row['groups'])}")
        for number, layer in enumerate(row["layers"], 1):
            state = "" if layer["present"] else "  (missing: skipped)"
            stage = f"[stage {layer['stage']}] " if order == "pushoverrides" else ""
            print(f"  {number:2d}. {stage}{layer['kind']:8s} {layer['name']:24s} "
                  f"{layer['role']}{state}")
    return EXIT_OK


def cmd_mount(args: argparse.Namespace) -> int:
    from .mount import check_mountpoint, mount
    from .tree import Tree

    settings, site = load(args)
    report_warnings(site, settings.override_order)
    mountpoint = args.mountpoint.resolve()
    check_mountpoint(mountpoint)
    tree = Tree(site, settings.override_order)
    status = mount(tree, mountpoint, foreground=args.foreground,
                   cache_timeout=settings.cache_timeout, log_file=args.log,
                   debug=args.debug_fuse)
    if status == EXIT_OK and not args.foreground:
        print(f"onesuite: mounted {len(tree.entries['nodes'])} nodes, "
              f"{len(tree.entries['groups'])} groups, {len(tree.entries['images'])} images "
              f"at {mountpoint}")
    return status


def cmd_umount(args: argparse.Namespace) -> int:
    from .mount import umount

    umount(args.mountpoint.resolve(), timeout=args.timeout)
    return EXIT_OK


COMMANDS = {"mount": cmd_mount, "umount": cmd_umount, "nodes": cmd_nodes}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"onesuite: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
