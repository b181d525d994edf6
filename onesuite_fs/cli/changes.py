"""onesuite plan, rollback and status --writes: what a running mount would change, returning
to an earlier generation, and the writes its nodes were refused."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .common import EXIT_FAILURE, EXIT_OK

PATHS_PRINTED = 20  # per group of nodes, in the table (--json has up to 200)
GROUPS_PRINTED = 30


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    plan = commands.add_parser(
        "plan", help="what a reload would change, before it is done",
        description="Ask a running mount what 'onesuite reload' would change now: it reads "
                    "the configuration and every layer as a reload would, compares the roots "
                    "it would serve with the ones it serves, and switches nothing. Nodes "
                    "with the same changes are listed together: each path added (+), "
                    "removed (-) or changed (~, with what: type, mode, owner, content, "
                    "target, device, layer), with the layer or oneSIS rule that provides "
                    "it before and after. Content counts as changed when its size or "
                    "modification time differs (no file is read). Large plans are cut, "
                    "with counts of the rest. Exit status: 0, 1 if it could not be made (a "
                    "configuration error, a reload running), 2 if the mount cannot be "
                    "asked. Needs root (see docs/live.md, 'Plan').")
    plan.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.set_defaults(func=cmd_plan)

    rollback = commands.add_parser(
        "rollback", help="return to the previous generation's configuration",
        description="Switch a running mount, atomically, to a new generation built from the "
                    "configuration of the generation before the one serving (cluster.xml, "
                    "the SystemImager configuration, onesuite.toml's policies and the oneSIS "
                    "rules, as that generation parsed them) over the layers as they are on "
                    "disk now: layer contents (images, overrides) cannot be rolled back. "
                    "The last 5 generations are kept; a second rollback goes one further "
                    "back. Afterwards the mount is pinned: automatic reloads build from that "
                    "configuration, and 'onesuite reload' reads it from disk again and "
                    "unpins. Exit status 1 when there is no earlier generation or the "
                    "rebuild fails (the serving generation stays). Needs root.")
    rollback.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    rollback.add_argument("--json", action="store_true", help="machine-readable output")
    rollback.set_defaults(func=cmd_rollback)


def _ask(mountpoint: Path, command: str) -> dict[str, Any]:
    from ..daemon.control import ask
    from ..progress import Progress

    line = Progress(f"{command}: waiting for the daemon", transient=True)

    def shown(progress: dict[str, int]) -> None:
        if "nodes" in progress:  # a plan: the site is read, then nodes compared
            line.label = f"{command}: comparing nodes' roots"
            line.total_entries = progress["nodes"]
            line.entries = progress.get("compared", 0) - 1
            line.entry()
        else:
            line.tick(0)  # the time it has waited

    try:
        return ask(mountpoint.resolve(), command, progress=shown)
    finally:
        line.close()


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def cmd_plan(args: argparse.Namespace) -> int:
    answer = _ask(args.mountpoint, "plan")
    if args.json:
        json.dump(answer, sys.stdout, indent=2, sort_keys=True)
        print()
    if answer.get("error"):
        print(f"onesuite: error: plan failed: {answer['error']}", file=sys.stderr)
        return EXIT_FAILURE
    if not args.json:
        _print_plan(answer)
    return EXIT_OK


def _print_plan(plan: dict[str, Any]) -> None:
    digests = plan["configuration"]
    same = digests["before"] == digests["after"]
    print(f"plan: a reload now would replace generation {plan['generation']}"
          + (" (pinned by a rollback: the reload would unpin it)" if plan.get("pinned") else ""))
    print(f"configuration {digests['before'][:12]} -> {digests['after'][:12]}"
          + (" (unchanged)" if same else " (changed)"))
    for key, what in (("nodes_added", "added"), ("nodes_removed", "removed"),
                      ("nodes_reconfigured", "reconfigured (stack or oneSIS rules)")):
        if plan[key]:
            shown = ", ".join(plan[key][:20]) + (" ..." if len(plan[key]) > 20 else "")
            print(f"nodes {what}: {len(plan[key])}: {shown}")
    counts = plan["paths"]
    print(f"{plan['nodes_changed']} node(s) see changes, {plan['nodes_unchanged']} none; "
          f"paths summed over nodes: {counts['added']} added, {counts['removed']} removed, "
          f"{counts['changed']} changed")
    for layer in plan["layers_changed"]:
        print(f"  layer {layer['layer']}: {layer['paths']} path(s) changed on disk")
    for group in plan["groups"][:GROUPS_PRINTED]:
        names = ", ".join(group["nodes"])
        if group["node_count"] > len(group["nodes"]):
            names += f" and {group['node_count'] - len(group['nodes'])} more"
        c = group["counts"]
        print(f"\n{names} ({group['node_count']} node(s)): {c['added']} added, "
              f"{c['removed']} removed, {c['changed']} changed")
        for change in group["changes"][:PATHS_PRINTED]:
            print("  " + _change_line(change))
        hidden = group["more"] + max(0, len(group["changes"]) - PATHS_PRINTED)
        if hidden:
            print(f"  ... and {hidden} more path(s) (--json lists up to 200)")
    more = plan["more_groups"] + max(0, len(plan["groups"]) - GROUPS_PRINTED)
    if more:
        print(f"\n... and {more} more group(s) of nodes")
    if plan.get("switched_meanwhile"):
        print("note: a reload switched while the plan was made; run plan again")


def _change_line(change: dict[str, Any]) -> str:
    from ..inspect.writable_rules import escape

    path = "/" + escape(change["path"])
    below = f" (and {change['below']} below)" if change["below"] else ""
    if change["status"] == "added":
        return f"+ {path}{below}  {escape(change['after'] or '')}"
    if change["status"] == "removed":
        return f"- {path}{below}  was {escape(change['before'] or '')}"
    return (f"~ {path}  {','.join(change['fields'])}  {escape(change['before'] or '')} -> "
            f"{escape(change['after'] or '')}")


def cmd_rollback(args: argparse.Namespace) -> int:
    answer = _ask(args.mountpoint, "rollback")
    if args.json:
        json.dump(answer, sys.stdout, indent=2, sort_keys=True)
        print()
    error = answer.get("error") or answer["report"]["error"]
    if error:
        print(f"onesuite: error: rollback failed: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if not args.json:
        report = answer["report"]
        print(f"rolled back: generation {report['generation']} serves the configuration of "
              f"generation {report['configuration_of']} over the layers as they are now; "
              f"{len(report['nodes_affected'])} node(s) affected")
        print("automatic reloads now build from that configuration; 'onesuite reload' "
              "reads it from disk again")
    return EXIT_OK


def cmd_status_writes(args: argparse.Namespace) -> int:
    answer = _ask(args.mountpoint, "writes")
    if args.json:
        json.dump(answer, sys.stdout, indent=2, sort_keys=True)
        print()
    if answer.get("error"):
        print(f"onesuite: error: {answer['error']}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        return EXIT_OK
    kept = sum(len(n["paths"]) for n in answer["nodes"])
    print(f"writes refused (EROFS): {answer['total']} in all; {len(answer['nodes'])} node(s), "
          f"{kept} path(s) kept; {answer['outside_nodes']} outside the node roots, "
          f"{answer['other_nodes']} by nodes past the cap of {answer['limits']['nodes']}")
    for node in answer["nodes"]:
        print(f"\n{node['node']}" + (f"  ({node['other']} more on paths past the cap of "
                                     f"{answer['limits']['paths_per_node']})"
                                     if node["other"] else ""))
        for row in node["paths"]:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(row["operations"].items()))
            print(f"  /{row['path']}  {ops}  first {_when(row['first'])}  "
                  f"last {_when(row['last'])}")
            if row["line"]:
                print(f"      -> {row['line']}    ({row['why']})")
            else:
                print(f"      no line proposed: {row['why']}")
    if answer["proposed"]:
        print("\nsysimage.conf lines that would make these writable:")
        for entry in answer["proposed"]:
            nodes = ", ".join(entry["nodes"][:10]) + (
                f" and {len(entry['nodes']) - 10} more" if len(entry["nodes"]) > 10 else "")
            covered = (f"  (covered by the directory {entry['covered_by']})"
                       if entry["covered_by"] else "")
            print(f"  {entry['line']}    # {nodes}{covered}")
    return EXIT_OK


def print_history(status: dict[str, Any]) -> None:
    """The generation history lines of `onesuite status`."""
    history = status.get("history") or []
    if not history:
        return
    print(f"generations kept (last {status.get('kept')}; rollback returns to the one before "
          "the configuration serving):")
    for record in history:
        digest = (record["config_digest"] or "not yet")[:12]
        of = (f", configuration of {record['configuration_of']}"
              if record["configuration_of"] != record["generation"] else "")
        print(f"  {record['generation']:>4}  {_when(record['at'])}  {record['trigger']:<8}  "
              f"config {digest}{of}  {record['nodes_affected']} node(s) affected")
    pinned = status.get("pinned")
    if pinned:
        print(f"pinned since {_when(pinned['since'])} to the configuration of generation "
              f"{pinned['configuration_of']}: {pinned['note']}")
