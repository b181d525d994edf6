"""onesuite nodes, mount, umount: the core commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..stack import Stages, node_stages
from .common import EXIT_OK, build_tree, load, report_warnings


def register(commands: Any, common: argparse.ArgumentParser) -> None:
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
    mount.set_defaults(func=cmd_mount)

    umount = commands.add_parser(
        "umount", help="unmount and wait for the daemon to exit",
        description="Unmount MOUNTPOINT and wait until its daemon has exited.")
    umount.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    umount.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for the daemon (default 30)")
    umount.set_defaults(func=cmd_umount)

    nodes = commands.add_parser(
        "nodes", parents=[common], help="list nodes with their groups, image and layers",
        description="Every node with its groups (most important first), its image and its "
                    "layer stack, lowest first (the last layer wins).")
    nodes.add_argument("--json", action="store_true", help="machine-readable output")
    nodes.set_defaults(func=cmd_nodes)


def stack_json(stages: Stages) -> list[dict[str, Any]]:
    return [{"stage": number, "kind": e.layer.kind, "name": e.layer.name,
             "path": str(e.layer.path), "role": e.role, "present": e.present}
            for number, stage in enumerate(stages) for e in stage]


def cmd_nodes(args: argparse.Namespace) -> int:
    settings, site = load(args)
    order = settings.override_order
    report_warnings(site, order)
    tree = build_tree(settings, site)
    rows = []
    for host, node in sorted(site.nodes.items()):
        entry = tree.entries["nodes"].get(host)
        onesis = tree.onesis.describe(tree, entry) if tree.onesis and entry else None
        rows.append({"name": host, "groups": list(node.groups), "image": node.image,
                     "layers": stack_json(node_stages(site, host, order)), "onesis": onesis})
    if args.json:
        json.dump({"override_order": order, "nodes": rows}, sys.stdout, indent=2)
        print()
        return EXIT_OK
    for row in rows:
        print(f"{row['name']}  image {row['image']}  groups {', '.join(row['groups'])}")
        if row["onesis"] is not None:
            onesis = row["onesis"]
            print(f"      oneSIS class {onesis['class'] or '-'}  properties "
                  f"{', '.join(onesis['properties']) or '-'}  ({len(onesis['linkbacks'])} "
                  f"LINKBACK, {len(onesis['ram_paths'])} RAM/LINK rules, from "
                  f"{onesis['config']})")
        for number, layer in enumerate(row["layers"], 1):
            state = "" if layer["present"] else "  (missing: skipped)"
            stage = f"[stage {layer['stage']}] " if order == "pushoverrides" else ""
            print(f"  {number:2d}. {stage}{layer['kind']:8s} {layer['name']:24s} "
                  f"{layer['role']}{state}")
    return EXIT_OK


def cmd_mount(args: argparse.Namespace) -> int:
    from ..mount import check_mountpoint, mount

    settings, site = load(args)
    report_warnings(site, settings.override_order)
    mountpoint = args.mountpoint.resolve()
    check_mountpoint(mountpoint)
    tree = build_tree(settings, site)
    status = mount(tree, mountpoint, foreground=args.foreground,
                   cache_timeout=settings.cache_timeout, log_file=args.log,
                   debug=args.debug_fuse)
    if status == EXIT_OK and not args.foreground:
        print(f"onesuite: mounted {len(tree.entries['nodes'])} nodes, "
              f"{len(tree.entries['groups'])} groups, {len(tree.entries['images'])} images "
              f"at {mountpoint}")
    return status


def cmd_umount(args: argparse.Namespace) -> int:
    from ..mount import umount

    umount(args.mountpoint.resolve(), timeout=args.timeout)
    return EXIT_OK


