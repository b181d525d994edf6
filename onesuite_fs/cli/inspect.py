"""onesuite preview, explain, diff: a node's effective root, before it boots, and why.

They read the same View the mount serves (oneSIS rules included) and need no mount. Output
follows `onesuite nodes`: a header line per subject, then two-space indented rows; layers in
colour on a terminal (NO_COLOR turns it off), plain when piped; `--json` is stable and
documented in docs/json.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from ..core.errors import ConfigError
from ..core.provenance import GENERATED_PREFIX, Provenance
from ..core.stack import Stages
from ..core.view import View
from ..inspect.diff import Difference, diff
from ..inspect.explain import (
    STEPS,
    Explanation,
    LayerFact,
    explain,
    explanation_json,
    hidden_paths,
    nearby,
)
from ..inspect.targets import Target, normalize_path, resolve_target
from ..inspect.walk import (
    Record,
    RecordSource,
    TreeView,
    install_keeps_text,
    make_view,
    record_json,
    walk,
)
from ..progress import Progress
from .common import EXIT_FAILURE, EXIT_OK, build_view, load, report_warnings
from .core import stack_json

TARGETS_HELP = """\
targets: node:NAME, group:NAME or image:NAME; a bare NAME is a node, else a group, else an
image. A group's root is its image and overrides without any host override; an image is
shown as it is. Unknown names are refused with the closest known ones.
"""

PREVIEW_EPILOG = TARGETS_HELP + """
each row: type and mode, uid:gid, size, path (-> link target), then where the entry comes
from: the layer (image:NAME or override:NAME) and, when it differs, the path inside it; a
oneSIS rule as file:line. A directory's layer is the one its mode and owner come from.

exit status: 0 success, 2 bad configuration, unknown target or missing path.
examples:
  onesuite preview --root /srv/si node001                 the whole root
  onesuite preview --root /srv/si node001 /etc --depth 1  like ls -l /etc
  onesuite preview --root /srv/si group:Login /etc/motd
  onesuite preview --root /srv/si node001 --json \
      | jq -r '.entries[] | select(.layer == "override:node001") | .path'
"""

EXPLAIN_EPILOG = TARGETS_HELP + """
shown: every layer of the stack, lowest first, with what it has at the path and what applying
it did (laid, replaces, merges, refused: non-empty directory, ...); the winner and the rule
that decided; for a LINKBACK the line (file:line), the node's class chain or properties and
each candidate tried in order. A missing path is explained too: which layers have its
nearest parent and names close to it.

exit status: 0 the path exists, 1 it does not (explained anyway), 2 bad configuration or
unknown target.
examples:
  onesuite explain --root /srv/si node001 /etc/motd
  onesuite explain --root /srv/si node001 /etc/fstab --json | jq '.linkbacks[0].tried'
  onesuite explain --override-order pushoverrides --root /srv/si node001 /etc/hosts
"""

DIFF_EPILOG = TARGETS_HELP + """\
dir:PATH (diff only) is a plain directory, e.g. a root built by rsync or copied from an
installed node.

compared: type, permission bits, owner, content of regular files (same backing file: equal
without reading; otherwise sizes, then SHA-256), symlink targets, device numbers. Not
compared: times, extended attributes. A directory only one side has is listed once, with the
number of entries below it.

exit status: 0 no difference, 1 differences (like diff(1)), 2 bad configuration, unknown
target, or PATH in neither.
examples:
  onesuite diff --root /srv/si node:node001 node:node002
  onesuite diff --root /srv/si group:Login node:login01 /etc
  onesuite diff --root /srv/si node:node001 dir:/mnt/node001-root
  onesuite diff --root /srv/si image:rhel9 node:node001 --json | jq '.counts'
"""

# --------------------------------------------------------------------------------------------
# Output style, shared by the three commands

_PALETTE = ("36", "33", "32", "35", "34", "91", "96", "93", "92", "95", "94", "31")
_STATUS_COLOURS = {"added": "32", "removed": "31", "changed": "33"}


class Style:
    """ANSI colours keyed by layer, only when stdout is a terminal and NO_COLOR is unset."""

    def __init__(self, layers: Iterable[str] = ()) -> None:
        self.enabled = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self._colours: dict[str, str] = {}
        for label in layers:
            self.colour_of(label)

    def colour_of(self, label: str) -> str:
        if label not in self._colours:
            self._colours[label] = _PALETTE[len(self._colours) % len(_PALETTE)]
        return self._colours[label]

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def layer(self, label: str, text: str | None = None) -> str:
        return self.paint(text if text is not None else label, self.colour_of(label))

    def bold(self, text: str) -> str:
        return self.paint(text, "1")


def stack_rows(stages: Stages, order: str, style: Style) -> list[str]:
    """The layer stack as `onesuite nodes` prints it, each layer in its colour."""
    rows = []
    for number, layer in enumerate(stack_json(stages), 1):
        state = "" if layer["present"] else "  (missing: skipped)"
        stage = f"[stage {layer['stage']}] " if order in ("pushoverrides", "warewulf") \
            else ""
        label = f"{layer['kind']}:{layer['name']}"
        text = f"{layer['kind']:8s} {layer['name']:24s}"
        rows.append(f"  {number:2d}. {stage}{style.layer(label, text)} {layer['role']}{state}")
    return rows


_WIDTH_SAMPLE = 4096  # entries that decide preview's name column width

def _emit_json(value: dict[str, Any]) -> None:
    json.dump(value, sys.stdout, indent=2)
    print()


def _emit_json_stream(head: dict[str, Any], key: str, items: Iterator[Any]) -> None:
    """`head` with `key` as a list of `items`, written one item at a time (the list of a
    200,000-entry root is never held)."""
    text = json.dumps(head, indent=2)
    sys.stdout.write(text[:-2] + f",\n  {json.dumps(key)}: [")
    for number, item in enumerate(items):
        sys.stdout.write(("," if number else "") + "\n    " + json.dumps(item))
    sys.stdout.write("\n  ]\n}\n")


def _target_json(target: Target) -> dict[str, str]:
    return {"spec": target.spec, "kind": target.kind, "name": target.name}


def _header(target: Target, tree: View, *extra: str) -> str:
    parts = [target.spec]
    if target.kind == "node":
        node = tree.site.nodes[target.name]
        parts += [f"image {node.image}", f"groups {', '.join(node.groups)}"]
    parts.append(f"order {tree.order}")
    return "  ".join([*parts, *extra])


def _origin_text(record: Record, style: Style) -> str:
    return record.provenance.terminal(record.path, style.layer)


def _shown_name(view: RecordSource, record: Record) -> str:
    if record.kind == "symlink":
        return f"{record.path} -> {view.target(record)}"
    return record.path


def _entry_row(view: RecordSource, record: Record, width: int, style: Style) -> str:
    name = _shown_name(view, record)
    size = f"{os.major(record.rdev)},{os.minor(record.rdev)}" if record.kind in (
        "chr", "blk") else str(record.size)
    owner = f"{record.uid}:{record.gid}"
    return (f"  {stat.filemode(record.mode)} {owner:>11s} {size:>9s}  {name:{width}s}  "
            f"{_origin_text(record, style)}")


# --------------------------------------------------------------------------------------------
# Loading


def _load(args: argparse.Namespace) -> View:
    settings, site = load(args)
    report_warnings(site, settings.override_order)
    return build_view(settings, site, one_pass=True)


def _missing(tree: View, target: Target, path: str) -> ConfigError:
    near = nearby(tree, target, path)
    return ConfigError(f"{path} does not exist in {target.spec}'s root",
                       hint=_near_text(near))


def _near_text(near: dict[str, Any]) -> str:
    layers = ", ".join(near["parent_layers"]) or "no layer of the stack"
    text = f"nearest existing parent {near['parent']} (in {layers})"
    if near["similar"]:
        similar = "; ".join(f"{s['name']} ({', '.join(s['layers'])})" for s in near["similar"])
        text += f"; similar names there: {similar}"
    return text


def _depth(value: str) -> int:
    depth = int(value)
    if depth < 0:
        raise argparse.ArgumentTypeError("depth must be 0 or more")
    return depth


# --------------------------------------------------------------------------------------------
# Commands


def _command(commands: Any, common: argparse.ArgumentParser, name: str, func: Any,
             summary: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand with the site options, a verbatim epilog, --json and its handler."""
    parser = commands.add_parser(name, parents=[common], help=summary, epilog=epilog,
                                 description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true",
                        help="machine-readable output (docs/json.md)")
    parser.set_defaults(func=func)
    return parser


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    preview = _command(
        commands, common, "preview", cmd_preview,
        "a node's effective root: every entry and the layer it comes from",
        "Show the root NODE will get, as the mount would serve it (oneSIS rules\n"
        "included), without mounting: each entry under PATH (default /) with its\n"
        "type, mode, owner, size and the layer or oneSIS rule it comes from.", PREVIEW_EPILOG)
    preview.add_argument("target", metavar="NODE", help="node, group:NAME or image:NAME")
    preview.add_argument("path", nargs="?", default="/", metavar="PATH",
                         help="where to start (default /)")
    preview.add_argument("--depth", type=_depth, metavar="N",
                         help="levels below PATH to show (0: PATH only; default: all)")

    explain_cmd = _command(
        commands, common, "explain", cmd_explain,
        "where a path of a node's root comes from, and why",
        "Every layer of NODE's stack that has PATH, lowest first, which one wins\n"
        "and why: the override order policy, group priorities, the merge rule that\n"
        "decided, and for a oneSIS LINKBACK the line and every variant tried in\n"
        "order.", EXPLAIN_EPILOG)
    explain_cmd.add_argument("target", metavar="NODE", help="node, group:NAME or image:NAME")
    explain_cmd.add_argument("path", metavar="PATH")

    diff_cmd = _command(
        commands, common, "diff", cmd_diff,
        "compare two roots: nodes, groups, images or a directory",
        "Entries added (only in B), removed (only in A) and changed between the\n"
        "roots A and B under PATH (default /), each with the layer it comes from\n"
        "on each side.", DIFF_EPILOG)
    diff_cmd.add_argument("a", metavar="A", help="node:NAME, group:NAME, image:NAME, dir:PATH")
    diff_cmd.add_argument("b", metavar="B", help="the same kinds as A")
    diff_cmd.add_argument("path", nargs="?", default="/", metavar="PATH",
                          help="compare only below this path (default /)")


def cmd_preview(args: argparse.Namespace) -> int:
    tree = _load(args)
    target = resolve_target(tree, args.target)
    path = normalize_path(args.path)
    view = TreeView(tree, target)
    top = view.stat(path)
    if top is None:
        raise _missing(tree, target, path)
    # Progress only while rows go elsewhere: on a terminal the rows themselves show it.
    progress = Progress(f"preview {target.spec}", transient=True,
                        enabled=sys.stderr.isatty() and not sys.stdout.isatty())
    try:
        records = walk(view, top, args.depth, progress.tick)
        assert target.entry is not None
        hidden = [gone for gone in hidden_paths(tree, target.entry, path)  # --whiteouts
                  if args.depth is None or _depth_below(path, gone["path"]) <= args.depth]
        if args.json:
            _emit_json_stream({"target": _target_json(target), "override_order": tree.order,
                               "path": path, "depth": args.depth,
                               "layers": stack_json(target.entry.stages), "hidden": hidden},
                              "entries", (record_json(view, r) for r in records))
            return EXIT_OK
        style = Style(f"{e.layer.kind}:{e.layer.name}" for s in target.entry.stages for e in s)
        depth = "" if args.depth is None else f" (depth {args.depth})"
        print(style.bold(_header(target, tree, f"{path}{depth}")))
        for row in stack_rows(target.entry.stages, tree.order, style):
            print(row)
        # The name column is as wide as the first entries need: the rest streams, so a root
        # of any size is shown in the memory of one directory listing per level.
        first = list(itertools.islice(records, _WIDTH_SAMPLE))
        width = min(48, max(len(_shown_name(view, r)) for r in first))
        for record in itertools.chain(first, records):
            print(_entry_row(view, record, width, style))
        for gone in hidden:  # not entries: what a whiteout list keeps out of the root
            shown = Provenance.whiteout(gone["layer"], gone["path"], gone["line"])
            print(f"  {'(hidden)':>32s}  {gone['path']:{width}s}  "
                  f"{shown.terminal(gone['path'], style.layer)}")
    finally:
        progress.close()
    return EXIT_OK


def _depth_below(top: str, path: str) -> int:
    return path.count("/") - (0 if top == "/" else top.count("/"))


def cmd_explain(args: argparse.Namespace) -> int:
    tree = _load(args)
    target = resolve_target(tree, args.target)
    path = normalize_path(args.path)
    result = explain(tree, target, path)
    view = TreeView(tree, target)
    status = EXIT_OK if result.record is not None else EXIT_FAILURE
    if args.json:
        _emit_json(explanation_json(result, view))
        return status
    style = Style(fact.layer for fact in result.layers)
    print(style.bold(_header(target, tree, path)))
    for line in _explain_lines(result, view, style):
        print(line)
    return status


def _explain_lines(result: Explanation, view: TreeView, style: Style) -> list[str]:
    lines = []
    for trace in result.linkbacks:
        data = trace.json()
        chain = ""
        if data["target_kind"] == "CLASS":
            tried = ", ".join(data["class_chain"]) or "none"
            chain = f"  class {data['class'] or '-'} (tried {tried})"
        elif data["target_kind"] == "PROPERTY":
            chain = f"  properties {', '.join(data['properties']) or '-'}"
        what = data["target"] or data["target_kind"]
        lines.append(f"  LINKBACK {data['path']} {what}  [{data['rule']}]{chain}")
        for number, tried in enumerate(data["tried"], 1):
            mark = "  <- shown" if tried["name"] == data["chosen"] else ""
            found = f"found {tried['source']}" if tried["found"] else "missing"
            lines.append(f"    {number}. {tried['kind']:8s} {tried['name']:32s} {found}{mark}")
        if data["result"] == "dangling":
            lines.append("    nothing found: the path is a dangling link, as on a oneSIS node")
        elif data["result"] == "forced-missing":
            lines.append("    -f: a link to the first candidate, although it is missing")
    if result.onesis is not None:
        kind = result.onesis["kind"]
        if kind == "SERVICE":
            lines.append(f"  hidden on this node: SERVICE {', '.join(result.onesis['services'])} "
                         "is disabled here")
        else:
            lines.append(f"  oneSIS: {result.onesis['origin']}")
    if result.updateclient is not None:
        kept = result.updateclient
        lines.append(f"  excluded by si_updateclient: {kept['excluded_by']} ({kept['line']}): "
                     "the node keeps what autoinstall laid; the layers are autoinstall's")
    if result.whiteout is not None:
        hidden = result.whiteout
        what = "hidden" if hidden["hidden"] else "laid again over a whiteout"
        lines.append(f"  {what}: {style.layer(hidden['layer'])} lists {hidden['path']} "
                     f"[{hidden['line']}]")
    if result.source is not None:
        lines.append(f"  {result.source} in the layers, lowest first:")
        lines += [_fact_row(number, fact, style)
                  for number, fact in enumerate(result.layers, 1)]
    winner = result.winner
    if winner is not None and winner["layer"] == "onesis":
        lines.append(f"  winner: a oneSIS rule [{winner['line']}], over every layer")
    elif winner is not None:
        who = "winner" if result.record is not None else "the layers' winner (not shown)"
        lines.append(f"  {who}: {style.layer(winner['layer'])} {winner['source']}: "
                     f"{winner['why']}")
    written = result.record.provenance if result.record is not None else None
    if written is not None and written.layer.startswith(GENERATED_PREFIX) and written.rule:
        lines.append(f"  written by the install itself: {written.reason} ({written.rule})")
    if result.record is not None and result.record.install_keeps is not None:
        shown = ("shown so (--fidelity install)" if view.root.view.fidelity == "install" else
                 "shown here: the override's bytes; --fidelity install shows the install's")
        lines.append(f"  note: {install_keeps_text(result.record.install_keeps)}; {shown}")
    if result.record is not None:
        lines.append(_entry_row(view, result.record, len(result.record.path), style))
    else:
        lines.append(f"  {result.path} is not in {result.target.spec}'s root")
        if result.near is not None:
            lines.append(f"  {_near_text(result.near)}")
    return lines


def _fact_row(number: int, fact: LayerFact, style: Style) -> str:
    kind, _, name = fact.layer.partition(":")
    role = fact.role + (f" (priority {fact.priority})" if fact.priority else "")
    text = style.layer(fact.layer, f"{kind:8s} {name:20s}")
    if not fact.present:
        return f"  {number:3d}. [{fact.stage}] {text} {role:26s} missing: skipped"
    if fact.meta is None:
        hides = f"{'whiteout':20s} {STEPS['hides']}" if fact.step == "hides" else "-"
        return f"  {number:3d}. [{fact.stage}] {text} {role:26s} {hides}"
    has = f"{stat.filemode(fact.meta.mode)} {fact.meta.uid}:{fact.meta.gid}"
    step = STEPS.get(fact.step or "", "not laid: its parent directory is not merged")
    mark = "  <- wins" if fact.wins else ""
    return f"  {number:3d}. [{fact.stage}] {text} {role:26s} {has:20s} {step}{mark}"


def cmd_diff(args: argparse.Namespace) -> int:
    tree = _load(args)
    a = resolve_target(tree, args.a, allow_dir=True)
    b = resolve_target(tree, args.b, allow_dir=True)
    path = normalize_path(args.path)
    views = make_view(tree, a), make_view(tree, b)
    progress = Progress(f"diff {a.spec} {b.spec}", transient=True)
    try:
        found = diff(*views, path, progress.tick)
    finally:
        progress.close()
    if found is None:
        entry_side = a if a.entry is not None else b
        if entry_side.entry is not None:
            raise _missing(tree, entry_side, path)
        raise ConfigError(f"{path} exists in neither {a.spec} nor {b.spec}")
    status = EXIT_FAILURE if found else EXIT_OK
    counts = {s: sum(1 for d in found if d.status == s) for s in ("added", "removed", "changed")}
    if args.json:
        _emit_json({"a": _target_json(a), "b": _target_json(b), "override_order": tree.order,
                    "path": path, "equal": not found, "counts": counts,
                    "differences": [_difference_json(views, d) for d in found]})
        return status
    style = Style(f"{e.layer.kind}:{e.layer.name}" for t in (a, b) if t.entry is not None
                  for s in t.entry.stages for e in s)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items()) if found else "no difference"
    print(style.bold(f"{a.spec} vs {b.spec}  order {tree.order}  {path}  {summary}"))
    width = min(48, max((len(d.path) for d in found), default=0))
    for difference in found:
        print(_difference_row(difference, width, style))
    return status


def _difference_json(views: tuple[RecordSource, RecordSource], d: Difference) -> dict[str, Any]:
    return {"path": d.path, "status": d.status, "fields": list(d.fields), "below": d.below,
            "a": record_json(views[0], d.a) if d.a is not None else None,
            "b": record_json(views[1], d.b) if d.b is not None else None}


def _difference_row(d: Difference, width: int, style: Style) -> str:
    status = style.paint(f"{d.status:8s}", _STATUS_COLOURS[d.status])
    what = ", ".join(d.fields) if d.fields else (d.a or d.b).kind  # type: ignore[union-attr]
    sides = [_origin_text(record, style) if record is not None else "-"
             for record in (d.a, d.b)]
    below = f"  (+{d.below} below)" if d.below else ""
    return f"  {status} {d.path:{width}s}  {what:14s} {sides[0]}  |  {sides[1]}{below}"

