"""onesuite nodes, mount, umount: the core commands."""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from ..core.stack import Stages, node_stages
from ..service import logs
from ..service.ready import report_mount_ready
from .changes import cmd_status_writes, print_history
from .common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_serving_options,
    build_tree,
    build_view,
    live_options,
    load,
    report_warnings,
)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    mount = commands.add_parser(
        "mount", parents=[common], help="mount every node's root",
        description="Mount the per-node roots at MOUNTPOINT. Returns once the mount is "
                    "ready (or fails with the reason); the daemon keeps serving until "
                    "'onesuite umount MOUNTPOINT'. Read-only: every write fails with EROFS.")
    mount.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    mount.add_argument("-f", "--foreground", action="store_true",
                       help="stay in the foreground (logs to stderr; Ctrl-C unmounts); "
                            "under systemd (Type=notify) it reports ready once the mount "
                            "answers")
    mount.add_argument("--log-file", "--log", dest="log", type=Path, metavar="FILE",
                       help="log file, reopened when logrotate moves it (default: none in "
                            "daemon mode; stderr, or the journal under systemd, with -f)")
    mount.add_argument("--cache-timeout", type=float, metavar="SECONDS",
                       help="kernel entry/attribute cache time (default 300)")
    mount.add_argument("--debug-fuse", action="store_true", help="libfuse debug output")
    add_serving_options(mount)
    mount.set_defaults(func=cmd_mount)

    reload = commands.add_parser(
        "reload", help="re-read the image server now",
        description="Make a running mount re-read cluster.xml, images, overrides and "
                    "sysimage.conf, switch to the new generation in one step and invalidate "
                    "exactly what changed. A configuration that fails to parse leaves the "
                    "old generation serving; the error is printed and the exit status is 1. "
                    "The daemon does the same on SIGHUP, and by itself when it sees changes. "
                    "After 'onesuite rollback' only this (or SIGHUP) reads the configuration "
                    "from disk again and unpins; 'onesuite plan' shows what it would change.")
    reload.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    reload.add_argument("--json", action="store_true", help="machine-readable output")
    reload.set_defaults(func=cmd_reload)

    status = commands.add_parser(
        "status", help="generation, last reload and counters of a running mount",
        description="What a running mount serves: its generation and when it was loaded, "
                    "what the last reload changed (nodes and paths affected), the last "
                    "generations kept (number, time, what triggered it, configuration "
                    "digest) and whether a rollback pinned the configuration, and counters "
                    "(lookups, reads, errors, cache invalidations). --writes lists the "
                    "writes the nodes were refused instead.")
    status.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--writes", action="store_true",
                        help="the writes the nodes were refused (EROFS), per node and path, "
                             "with the sysimage.conf line (LINKDIR/LINKFILE/RAMDIR/RAMFILE) "
                             "that would make each writable and why; needs root "
                             "(docs/live.md, 'Writes the nodes were refused')")
    status.set_defaults(func=cmd_status)

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
                    "layer stack, lowest first (the last layer wins). Nodes that cannot be "
                    "served (no image, a group defined twice, a failing <dynamic_node>) are "
                    "listed last with their file:line and reason, and the exit status is "
                    "then 1 (with --strict the whole site is refused instead).")
    nodes.add_argument("--json", action="store_true", help="machine-readable output")
    nodes.set_defaults(func=cmd_nodes)


def stack_json(stages: Stages) -> list[dict[str, Any]]:
    return [{"stage": number, "kind": e.layer.kind, "name": e.layer.name,
             "path": str(e.layer.path), "role": e.role, "present": e.present,
             "real_path": None if e.layer.real is None or not e.present else str(e.layer.real),
             "allowed_by": None if e.layer.allowed_by is None else str(e.layer.allowed_by)}
            for number, stage in enumerate(stages) for e in stage]


def cmd_nodes(args: argparse.Namespace) -> int:
    settings, site = load(args)
    order = settings.override_order
    report_warnings(site, order)
    view = build_view(settings, site)
    rows = []
    for host, node in sorted(site.nodes.items()):
        entry = view.entries["nodes"].get(host)
        onesis = view.onesis.describe(view, entry) if view.onesis and entry else None
        written = [{"path": "/" + w.path, "content": w.content.decode("utf-8", "replace"),
                    "from": f"{w.source} ({w.what})"}
                   for w in site.install_writes.get(host, ())]
        rows.append({"name": host, "groups": list(node.groups), "image": node.image,
                     "layers": stack_json(node_stages(site, host, order)), "onesis": onesis,
                     "script": str(site.chosen_scripts[host]) if host in site.chosen_scripts
                     else None,
                     "written_after_image_pass": written})
    status = EXIT_FAILURE if site.broken else EXIT_OK
    if args.json:
        json.dump({"override_order": order, "nodes": rows,
                   "broken": site.broken_report()}, sys.stdout, indent=2)
        print()
        return status
    for row in rows:
        print(f"{row['name']}  image {row['image']}  groups {', '.join(row['groups'])}")
        if row["onesis"] is not None:
            onesis = row["onesis"]
            print(f"      oneSIS class {onesis['class'] or '-'}  properties "
                  f"{', '.join(onesis['properties']) or '-'}  ({len(onesis['linkbacks'])} "
                  f"LINKBACK, {len(onesis['ram_paths'])} RAM/LINK rules, from "
                  f"{onesis['config']})")
        if row["script"] is not None:
            print(f"      autoinstall script {row['script']}")
        print("      an install also writes, after the image pass (in the served root with "
              "--fidelity install): "
              + ", ".join(f"{w['path']} ({w['from']})" for w in row["written_after_image_pass"]))
        for number, layer in enumerate(row["layers"], 1):
            state = "" if layer["present"] else "  (missing: skipped)"
            stage = f"[stage {layer['stage']}] " if order == "pushoverrides" else ""
            print(f"  {number:2d}. {stage}{layer['kind']:8s} {layer['name']:24s} "
                  f"{layer['role']}{state}")
            if layer["allowed_by"] is not None:
                print(f"        really at {layer['real_path']} (outside its directory, "
                      f"allowed by allow_layers_outside {layer['allowed_by']})")
    for name, error in sorted(site.broken.items()):
        print(f"{name}  NOT SERVED: {error.location()}: {error.message}")
    return status


def cmd_mount(args: argparse.Namespace) -> int:
    from ..daemon.mount import check_mountpoint, mount

    settings, site = load(args)
    report_warnings(site, settings.override_order)
    mountpoint = args.mountpoint.resolve()
    check_mountpoint(mountpoint)
    tree = build_tree(settings, site)
    if args.foreground and args.log is not None:
        logs.configure(args.verbose, args.log)
    status = mount(tree, mountpoint, foreground=args.foreground,
                   cache_timeout=settings.cache_timeout, log_file=args.log,
                   debug=args.debug_fuse, live=live_options(args, settings, site, tree),
                   on_ready=partial(report_mount_ready, mountpoint))
    if status == EXIT_OK and not args.foreground:
        print(f"onesuite: mounted {len(tree.entries['nodes'])} nodes, "
              f"{len(tree.entries['groups'])} groups, {len(tree.entries['images'])} images "
              f"at {mountpoint}")
    return status


def _print_status(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        json.dump(status, sys.stdout, indent=2, sort_keys=True)
        print()
        return
    loaded = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status["loaded_at"]))
    print(f"generation {status['generation']}, loaded {loaded}; "
          f"{status['reloads']} reload(s), {status['failed_reloads']} failed")
    fingerprint = status.get("fingerprint")
    print(f"store fingerprint {fingerprint} (equal on every server serving the same store)"
          if fingerprint else "store fingerprint: not yet (the first full read is running)")
    last = status.get("last_reload")
    if last:
        if last["error"]:
            print(f"last reload FAILED (generation {status['generation']} kept serving):\n"
                  f"  {last['error']}")
        else:
            print(f"last reload: generation {last['generation']} in {last['seconds']} s, "
                  f"{len(last['nodes_affected'])} node(s) affected, "
                  f"{last['invalidated_entries']} entries and {last['invalidated_inodes']} "
                  "inodes invalidated")
            for path in last["paths_changed"][:20]:
                print(f"  changed: {path}")
            if len(last["paths_changed"]) > 20:
                print(f"  ... and {len(last['paths_changed']) - 20} more")
    for broken in status.get("broken_nodes", []):
        where = f"{broken['file']}:{broken['line']}" if broken["line"] else broken["file"]
        print(f"node {broken['name']} not served: {where}: {broken['error']}")
    for layer in status.get("layers_elsewhere", []):
        print(f"{layer['kind']} {layer['name']} really at {layer['real_path']} (outside its "
              f"directory, allowed by allow_layers_outside {layer['allowed_by']})")
    failures = status.get("handler_errors") or {}
    if failures.get("count"):
        print(f"{failures['count']} request(s) failed inside the daemon (answered EIO; "
              "see the daemon log), the last:")
        for failure in failures.get("recent", [])[-5:]:
            print(f"  {failure['operation']} {failure['path']}: {failure['error']}")
    print_history(status)
    counters = status.get("counters", {})
    if counters:
        print("counters: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))


def cmd_reload(args: argparse.Namespace) -> int:
    from ..daemon.mount import reload

    status = reload(args.mountpoint.resolve())
    _print_status(status, args.json)
    last = status.get("last_reload") or {}
    if last.get("error"):
        first_line = str(last["error"]).splitlines()[0]
        print(f"onesuite: error: reload failed, generation {status['generation']} keeps "
              f"serving: {first_line}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from ..daemon.mount import daemon_status

    if args.writes:
        return cmd_status_writes(args)
    _print_status(daemon_status(args.mountpoint.resolve()), args.json)
    return EXIT_OK


def cmd_umount(args: argparse.Namespace) -> int:
    from ..daemon.mount import umount

    umount(args.mountpoint.resolve(), timeout=args.timeout)
    return EXIT_OK


