"""What a reload would change, node by node, before anything switches (`onesuite plan`).

Two Views of one site are compared: the one being served and the one a reload would build.
Walking every node's whole root twice would cost the site's size times its nodes, so the
comparison is narrowed the way the roots are made:

- a node whose configuration did not change (the same layers in the same order, the same
  override order and fidelity, the same oneSIS class, properties and rules) can only change
  where one of its layers changed: each layer's snapshot is compared once, and only the
  paths it changed are looked up in that node's two roots (plus the LINKBACK paths of a
  directory where something changed: a new variant file changes what the LINKBACK shows);
- a node whose configuration changed is walked whole, both roots in lockstep; nodes with
  the same configuration before and after share that walk.

Entries are compared as `onesuite diff` compares them (type, mode, owner, link target,
device numbers), except content, which is "changed" when the size or the modification time
differs (the plan reads no file), and the layer that provides the entry ("layer": another
layer or rule wins now). Nodes whose changes are the same are reported together. Output is
bounded: at most `paths` paths per group of nodes and `groups` groups, with counts of the
rest.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..core.entry import Entry
from ..core.layers import Layer, Meta
from ..core.view import View
from ..core.walk import Item, Root, merged_children

PATHS_SHOWN = 200  # per group of nodes
GROUPS_SHOWN = 200
NODES_NAMED = 50  # per group


@dataclass(frozen=True)
class Change:
    path: str
    status: str  # "added", "removed", "changed"
    fields: tuple[str, ...]  # for "changed"
    before: str | None  # provenance (user.onesuite.origin text)
    after: str | None
    below: int = 0  # entries under an added or removed directory, not listed singly

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "status": self.status, "fields": list(self.fields),
                "before": self.before, "after": self.after, "below": self.below}


def configuration_digest(view: View) -> str:
    """SHA-256 of the configuration as parsed: every node's layer stack, its oneSIS class,
    properties and rules (with file:line), the nodes left out and why, the override order,
    fidelity and link policy. Equal digests: the same configuration (comments and layout of
    the files do not count; layer contents do not either)."""
    sha = hashlib.sha256()
    sha.update(json.dumps([view.order, view.fidelity,
                           view.onesis.policy if view.onesis else None]).encode())
    for _name, entry in sorted(view.entries["nodes"].items()):
        sha.update(_signature(view, entry, with_name=True).encode("utf-8", "surrogateescape"))
    sha.update(json.dumps(view.site.broken_report(), sort_keys=True, default=str).encode())
    return sha.hexdigest()


def _signature(view: View, entry: Entry, *, with_name: bool = False) -> str:
    """What decides a node's root besides its layers' contents."""
    return json.dumps([_rules_signature(view, entry, with_name=with_name),
                       _stack(entry)], sort_keys=True, default=str)


def _stack(entry: Entry) -> list[list[object]]:
    """The layers present, in order (a host override with no directory adds nothing)."""
    return [[number, e.layer.kind, e.layer.name, str(e.layer.path), e.layer.image_pass]
            for number, stage in enumerate(entry.stages) for e in stage if e.present]


def _rules_signature(view: View, entry: Entry, *, with_name: bool = False) -> str:
    """What decides a node's root besides its layers: policies and oneSIS rules."""
    onesis = view.onesis.describe(view, entry) if view.onesis is not None else None
    # A LINKBACK may pick a variant named after the host: then the host is part of it.
    named = with_name or any(lb["target"] == "NODE" or "$NODE" in str(lb["target"])
                             for lb in (onesis or {}).get("linkbacks", ()))
    return json.dumps([entry.name if named else None, view.order, view.fidelity, onesis],
                      sort_keys=True, default=str)


def _origin(root: Root, item: Item | None) -> str | None:
    return None if item is None else root.provenance(item).xattr_text()


def _fields(old: Root, a: Item, new: Root, b: Item) -> tuple[str, ...]:
    x, y = a.attr, b.attr
    if stat.S_IFMT(x.mode) != stat.S_IFMT(y.mode):
        return ("type",)
    found = []
    if stat.S_IMODE(x.mode) != stat.S_IMODE(y.mode):
        found.append("mode")
    if (x.uid, x.gid) != (y.uid, y.gid):
        found.append("owner")
    if stat.S_ISREG(x.mode) and (x.size, x.mtime_ns) != (y.size, y.mtime_ns):
        found.append("content")
    elif stat.S_ISLNK(x.mode) and old.readlink(a) != new.readlink(b):
        found.append("target")
    elif (stat.S_ISCHR(x.mode) or stat.S_ISBLK(x.mode)) and x.rdev != y.rdev:
        found.append("device")
    if _origin(old, a) != _origin(new, b):
        found.append("layer")
    return tuple(found)


def _count_below(root: Root, item: Item) -> int:
    if not item.is_dir:
        return 0
    return sum(1 for _ in root.walk(item)) - 1


def _compare(old: Root, a: Item | None, new: Root, b: Item | None) -> Change | None:
    if a is None and b is None:
        return None
    if a is None:
        assert b is not None
        return Change(b.path, "added", (), None, _origin(new, b), _count_below(new, b))
    if b is None:
        return Change(a.path, "removed", (), _origin(old, a), None, _count_below(old, a))
    fields = _fields(old, a, new, b)
    if not fields or (a.is_dir and fields == ("layer",)):
        return None  # a directory shown from another layer's copy, same metadata
    return Change(a.path, "changed", fields, _origin(old, a), _origin(new, b))


def _walk_both(old: Root, new: Root, prune: Callable[[str], bool] | None = None
               ) -> Iterator[Change]:
    """Every difference of two roots, walking both in lockstep (below an added or removed
    directory only counted). With `prune`, a directory shown from the same place on both
    sides is entered only when prune(path) says something may differ below it."""
    roots = [old, new]
    pending: list[tuple[dict[int, Item], bool]] = [({0: old.top(), 1: new.top()}, False)]
    while pending:
        items, whole = pending.pop()
        for _name, present in merged_children(roots, items):
            a, b = present.get(0), present.get(1)
            change = _compare(old, a, new, b)
            if change is not None:
                yield change
            if a is not None and b is not None and a.is_dir and b.is_dir:
                if prune is None or whole:
                    pending.append(({0: a, 1: b}, whole))
                elif _origin(old, a) != _origin(new, b):  # another variant: all of it
                    pending.append(({0: a, 1: b}, True))
                elif prune(a.path):
                    pending.append(({0: a, 1: b}, False))


@dataclass
class _LayerDiffs:
    """Each layer's changed paths between two snapshots, computed once per layer."""

    old: View
    new: View
    _old_ids: dict[Layer, int] = field(default_factory=dict)
    _new_ids: dict[Layer, int] = field(default_factory=dict)
    _changed: dict[Layer, frozenset[str]] = field(default_factory=dict)
    _all: dict[tuple[int, Layer], frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._old_ids = {layer: n for n, layer in enumerate(self.old.store.layers)}
        self._new_ids = {layer: n for n, layer in enumerate(self.new.store.layers)}

    def changed(self, layer: Layer) -> frozenset[str]:
        found = self._changed.get(layer)
        if found is None:
            found = self._changed[layer] = frozenset(self._diff(layer))
        return found

    def _diff(self, layer: Layer) -> Iterator[str]:
        old_id, new_id = self._old_ids.get(layer), self._new_ids.get(layer)
        pending = [""]
        while pending:
            directory = pending.pop()
            before = _listing(self.old, old_id, directory)
            after = _listing(self.new, new_id, directory)
            for name in before.keys() | after.keys():
                x, y = before.get(name), after.get(name)
                path = f"{directory}/{name}" if directory else name
                if x is None or y is None or not _same_meta(x, y):
                    yield path
                if x is not None and y is not None and x.is_dir and y.is_dir:
                    pending.append(path)
                elif (x is not None and x.is_dir) or (y is not None and y.is_dir):
                    pending.append(path)  # added or removed: what is below changed too

    def all_paths(self, view: View, layer: Layer) -> frozenset[str]:
        """Every path of `layer` as `view` read it (a layer a node gained or lost)."""
        key = (id(view), layer)
        found = self._all.get(key)
        if found is None:
            ids = self._old_ids if view is self.old else self._new_ids
            found = self._all[key] = frozenset(self._walk(view, ids.get(layer)))
        return found

    @staticmethod
    def _walk(view: View, layer_id: int | None) -> Iterator[str]:
        pending = [""]
        while pending:
            directory = pending.pop()
            for name, meta in _listing(view, layer_id, directory).items():
                path = f"{directory}/{name}" if directory else name
                yield path
                if meta.is_dir:
                    pending.append(path)

    def layers_changed(self) -> list[dict[str, object]]:
        return [{"layer": layer.label, "path": str(layer.path), "paths": len(paths)}
                for layer, paths in sorted(self._changed.items(), key=lambda p: p[0].label)
                if paths]


def _listing(view: View, layer_id: int | None, directory: str) -> dict[str, Meta]:
    if layer_id is None:
        return {}
    return view.store.listing(layer_id, directory) or {}


def _same_meta(x: Meta, y: Meta) -> bool:
    if x.is_dir and y.is_dir:  # a directory's times change with its names: not compared
        return (x.mode, x.uid, x.gid) == (y.mode, y.uid, y.gid)
    return (x.mode, x.uid, x.gid, x.size, x.mtime_ns, x.rdev) == (
        y.mode, y.uid, y.gid, y.size, y.mtime_ns, y.rdev)


def _paths_changed_for(view: View, entry: Entry, diffs: _LayerDiffs) -> list[str]:
    """The paths of a node's root that a change of one of its layers may have changed."""
    paths: set[str] = set()
    for stage in entry.stages:
        for stacked in stage:
            if stacked.present:
                paths |= diffs.changed(stacked.layer)
    onesis = view.node_onesis(entry)
    if onesis is not None and paths:
        directories = {p.rpartition("/")[0] for p in paths}
        paths |= {lb.strip("/") for lb in onesis.rules.linkbacks
                  if lb.strip("/").rpartition("/")[0] in directories}
    return sorted(paths)


def _rules_changes(old: View, before: Entry, new: View, after: Entry,
                   diffs: _LayerDiffs) -> list[Change]:
    """A node whose layers are the same but whose oneSIS rules changed: the directories
    either side's rules may touch (a different LINKBACK variant directory whole), and what
    its layers changed on disk."""
    was, now = old.node_onesis(before), new.node_onesis(after)
    if old.order != new.order or old.fidelity != new.fidelity:
        return list(_walk_both(Root(old, before), Root(new, after)))

    def prune(path: str) -> bool:
        return any(rules is not None and rules.may_touch_below(path) for rules in (was, now))

    old_root, new_root = Root(old, before), Root(new, after)
    found = {c.path: c for c in _walk_both(old_root, new_root, prune)}
    for change in _point_changes(old_root, new_root, _paths_changed_for(new, after, diffs)):
        found.setdefault(change.path, change)
    return [found[p] for p in sorted(found, key=lambda p: p.split("/"))]


def _restacked_paths(old: View, before: Entry, new: View, after: Entry,
                     diffs: _LayerDiffs) -> list[str] | None:
    """For a node whose layer stack changed but whose rules did not: every path of the
    layers it gained or lost, and what changed in the layers it kept. None when the kept
    layers changed order (then only a whole walk tells)."""
    def present(entry: Entry) -> list[tuple[int, Layer]]:
        return [(n, e.layer) for n, stage in enumerate(entry.stages) for e in stage
                if e.present]

    was, now = present(before), present(after)
    kept = {layer for _, layer in was} & {layer for _, layer in now}
    if [x for x in was if x[1] in kept] != [x for x in now if x[1] in kept]:
        return None
    paths: set[str] = set()
    for layer in kept:
        paths |= diffs.changed(layer)
    for view, stack in ((old, was), (new, now)):
        for _, layer in stack:
            if layer not in kept:
                paths |= diffs.all_paths(view, layer)
    onesis = new.node_onesis(after)
    if onesis is not None and paths:
        directories = {p.rpartition("/")[0] for p in paths}
        paths |= {lb.strip("/") for lb in onesis.rules.linkbacks
                  if lb.strip("/").rpartition("/")[0] in directories}
    return sorted(paths, key=lambda p: p.split("/"))


def _point_changes(old_root: Root, new_root: Root, paths: list[str]) -> list[Change]:
    """Look each path up in both roots (sorted parents first, each directory's descendants
    right after it); below an added or removed directory, only count."""
    changes: list[Change] = []
    absorbed: str | None = None
    for path in sorted(paths, key=lambda p: p.split("/")):
        if absorbed is not None and path.startswith(absorbed):
            continue
        absorbed = None
        change = _compare(old_root, old_root.lookup(path), new_root, new_root.lookup(path))
        if change is None:
            continue
        changes.append(change)
        absorbed = path + "/" if change.status != "changed" else None
    return changes


def plan(old: View, new: View, *, paths_shown: int = PATHS_SHOWN,
         groups_shown: int = GROUPS_SHOWN, tick=None) -> dict[str, object]:  # noqa: ANN001
    """What serving `new` instead of `old` changes in the nodes' roots (docs/live.md)."""
    old_nodes, new_nodes = old.entries["nodes"], new.entries["nodes"]
    diffs = _LayerDiffs(old, new)
    walked: dict[tuple[str, str], tuple[Change, ...]] = {}
    by_changes: dict[tuple[Change, ...], list[str]] = {}
    reconfigured: list[str] = []
    for name in sorted(old_nodes.keys() & new_nodes.keys()):
        before, after = old_nodes[name], new_nodes[name]
        old_sig, new_sig = _signature(old, before), _signature(new, after)
        if old_sig == new_sig:
            found = tuple(_point_changes(Root(old, before), Root(new, after),
                                         _paths_changed_for(new, after, diffs)))
        else:
            reconfigured.append(name)
            restacked = None
            if _rules_signature(old, before) == _rules_signature(new, after):
                restacked = _restacked_paths(old, before, new, after, diffs)
            if restacked is not None:
                found = tuple(_point_changes(Root(old, before), Root(new, after), restacked))
            elif _stack(before) == _stack(after):  # only the rules (or a policy) changed
                key = (old_sig, new_sig)
                if key not in walked:
                    walked[key] = tuple(_rules_changes(old, before, new, after, diffs))
                found = walked[key]
            else:
                key = (old_sig, new_sig)
                if key not in walked:
                    walked[key] = tuple(_walk_both(Root(old, before), Root(new, after)))
                found = walked[key]
        if found:
            by_changes.setdefault(found, []).append(name)
        if tick is not None:
            tick()
    groups = sorted(by_changes.items(), key=lambda g: (-len(g[1]), g[1][0]))
    counts = {"added": 0, "removed": 0, "changed": 0}
    rendered = []
    for changes, nodes in groups[:groups_shown]:
        group_counts = {s: sum(1 for c in changes if c.status == s) for s in counts}
        rendered.append({"nodes": nodes[:NODES_NAMED], "node_count": len(nodes),
                         "counts": group_counts,
                         "changes": [c.to_json() for c in changes[:paths_shown]],
                         "more": max(0, len(changes) - paths_shown)})
    for changes, nodes in groups:
        for change in changes:
            counts[change.status] += len(nodes)
    return {
        "configuration": {"before": configuration_digest(old),
                          "after": configuration_digest(new)},
        "nodes_added": sorted(new_nodes.keys() - old_nodes.keys()),
        "nodes_removed": sorted(old_nodes.keys() - new_nodes.keys()),
        "nodes_reconfigured": reconfigured,
        "nodes_changed": sum(len(nodes) for nodes in by_changes.values()),
        "nodes_unchanged": len(old_nodes.keys() & new_nodes.keys())
        - sum(len(nodes) for nodes in by_changes.values()),
        "paths": counts,  # summed over nodes
        "groups": rendered,
        "more_groups": max(0, len(groups) - groups_shown),
        "layers_changed": diffs.layers_changed(),
    }
