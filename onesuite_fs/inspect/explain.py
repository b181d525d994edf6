"""Why a path of a node's root is what it is: every layer of the stack that has it, lowest
first, what applying each did under the merge rules (docs/semantics.md), which one won and
why, and for a LINKBACK the variants tried in order.

The View answers *what* a path is. Why is asked of the code that decides it: the merge rule's
own record of the path (`Resolver.trace`, resolve.py), the LINKBACK choice
(`NodeOnesis.variant_attempts`, `chosen_attempt`) and SERVICE hiding
(`NodeOnesis.hiding_services`), all in onesis_view.py. This module only maps those records
onto the stack's layers and words them.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field, replace
from typing import Any

from ..core.layers import Meta
from ..core.onesis_rules import LinkBack, class_chain
from ..core.onesis_view import Attempt, NodeOnesis, chosen_attempt
from ..core.provenance import Kind, Provenance
from ..core.resolve import Contribution, MergedDir
from ..core.updateclient import excluding_rule
from ..core.view import Entry, View
from .targets import Target, close_matches, path_parts
from .walk import KINDS, Record, TreeView, mode_string

ORDER_POLICIES = {
    "autoinstall": "autoinstall (SystemImager 4.3 installs): one rsync per layer, lowest "
                   "first, so the last layer applied wins",
    "updateclient": "updateclient (si_updateclient): one rsync per layer, lowest first, no "
                    "host or image-named override, so the last layer applied wins",
    "pushoverrides": "pushoverrides (si_pushoverrides): the autoinstall passes, then one "
                     "rsync of every override (host, groups by priority, global): the first "
                     "source wins, but a directory beats a non-directory",
    "warewulf": "warewulf (a Warewulf 4 node: its image, then its system and runtime "
                "overlays in nodes.conf order, each unpacked over the last; within one "
                "overlay its rendered templates win over its own files): the last overlay "
                "applied wins",
}

# What applying a layer did to the path (LayerFact.step); documented in docs/json.md.
STEPS = {
    "laid": "laid: nothing was there before",
    "replaces": "replaces the non-directory below it",
    "merges": "directory merges; its metadata now comes from this layer",
    "dir-replaces-non-dir": "a directory replaces the non-directory below it",
    "replaces-empty-dir": "replaces the empty directory below it",
    "refused-non-empty-dir": "refused: rsync cannot delete a non-empty directory",
    "earlier-source-wins": "not copied: an earlier source of the same rsync wins",
    "beats-earlier-source": "a directory beats the non-directory of an earlier source",
    "beaten-by-directory": "not copied: a later source's directory beats it",
    "merges-into-earlier-source": "directory contents merged; metadata from the first source",
    "quick-check-keeps": "not copied (--fidelity install): same size and mtime as the file "
                         "below, so rsync -av only sets its mode and owner",
    # --whiteouts (core/whiteouts.py)
    "hides": "its whiteout list hides the path from every layer below it",
    "hidden-by-whiteout": "not copied: an earlier source's whiteout list hides it",
    "written-into": "the install writes a file into it (--fidelity install); it keeps its "
                    "mode, owner and time from below",
}

# The rule that decided the winner (winner["rule"]).
RULES = {
    "only-layer": "only one layer has it",
    "last-wins": "the last layer applied wins",
    "directory-merge": "directories merge; metadata from the last layer applied",
    "directory-replaces-non-directory": "a directory replaces a non-directory",
    "replaces-empty-directory": "a non-directory replaces an empty directory",
    "non-empty-directory-kept": "type conflict: a non-empty directory stays "
                                "(rsync: cannot delete non-empty directory)",
    "first-source-wins": "one rsync with several sources: the first source wins",
    "directory-beats-non-directory": "one rsync with several sources: a directory beats a "
                                     "non-directory",
}


@dataclass
class LayerFact:
    """One layer of the stack and what it has at the path."""

    stage: int
    layer: str
    role: str
    present: bool  # False: the override directory does not exist (skipped)
    priority: int | None = None  # the group's <priority>, for a group's override
    meta: Meta | None = None  # what this layer has at the path (None: nothing)
    step: str | None = None  # a key of STEPS: what applying it did
    wins: bool = False

    def json(self) -> dict[str, Any]:
        meta = self.meta
        return {"stage": self.stage, "layer": self.layer, "role": self.role,
                "present": self.present, "priority": self.priority,
                "type": KINDS.get(stat.S_IFMT(meta.mode)) if meta else None,
                "mode": mode_string(meta.mode) if meta else None,
                "uid": meta.uid if meta else None, "gid": meta.gid if meta else None,
                "size": meta.size if meta else None,
                "step": self.step, "wins": self.wins}


@dataclass
class LinkbackTrace:
    """A LINKBACK met on the way to the path: the line, and every candidate tried."""

    view_path: str
    linkback: LinkBack
    node_class: str | None
    properties: tuple[str, ...]
    attempts: list[Attempt]
    chosen: Attempt | None

    def json(self) -> dict[str, Any]:
        lb = self.linkback
        chosen = self.chosen
        result = ("dangling" if chosen is None else
                  "forced-missing" if chosen.found is None else "linked")
        return {
            "path": self.view_path, "rule": f"{lb.file}:{lb.line}",
            "target_kind": lb.target_kind, "target": lb.target, "hidden": lb.hidden,
            "force": lb.force, "class": self.node_class,
            "class_chain": list(class_chain(self.node_class)) if self.node_class else [],
            "properties": list(self.properties),
            "tried": [{"kind": a.kind, "name": a.name, "found": a.found is not None,
                       "source": _abs(_join(a.found[0], a.found[1].name))
                       if a.found is not None else None} for a in self.attempts],
            "chosen": chosen.name if chosen is not None else None,
            "result": result,
        }


@dataclass
class Explanation:
    target: Target
    order: str
    path: str
    record: Record | None  # what the view shows (None: nothing)
    origin: str | None  # user.onesuite.origin of that entry
    source: str | None  # where in the layers the content is read (None: a oneSIS entry)
    layers: list[LayerFact]
    linkbacks: list[LinkbackTrace] = field(default_factory=list)
    onesis: dict[str, Any] | None = None  # a oneSIS rule that made or hid the entry
    winner: dict[str, Any] | None = None
    near: dict[str, Any] | None = None  # for a missing path: what is close to it
    # --override-order updateclient: the exclusion that keeps the path as installed
    updateclient: dict[str, Any] | None = None
    # --whiteouts: the list line that hides the path (or a directory above it), or that a
    # later layer laid it again over
    whiteout: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------
# Paths in the layers


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _abs(relative: str) -> str:
    return "/" + relative


def merged_dir(tree: View, entry: Entry, source: str) -> MergedDir | None:
    """The merged directory at `source` (relative, "" = root) of the entry's layers."""
    if not source:
        top = tree.store.metadata_layer(entry.contribution)
        return tree.resolver.merged_dir("", entry.contribution, top, tree.store.root_meta(top))
    found = tree.merged_lookup(entry, source)
    if found is None or found[1].contribution is None:
        return None
    child = found[1]
    assert child.contribution is not None
    return tree.resolver.merged_dir(source, child.contribution, child.layer, child.meta)


def trace_source(tree: View, entry: Entry,
                 path: str) -> tuple[str | None, list[LinkbackTrace]]:
    """Where `path` of the view is in the layers (relative; None when a LINKBACK shows no
    layer entry), following every LINKBACK on the way with the mount's own choice."""
    onesis = tree.node_onesis(entry)
    source = ""
    traces: list[LinkbackTrace] = []
    view = ""
    for part in path_parts(path):
        view = _join(view, part)
        linkback = onesis.rules.linkback_for("/" + view) if onesis is not None else None
        if linkback is None:
            # A LINKDIR/LINKFILE's NAME.default no layer has: the original NAME it shows.
            moved = (onesis.moved_original(view.rpartition("/")[0], part)
                     if onesis is not None else None)
            if moved is not None and tree.merged_lookup(entry, _join(source, part)) is None:
                part = moved
            source = _join(source, part)
            continue
        assert onesis is not None
        trace = _linkback_trace(tree, entry, onesis, linkback, view, source, part)
        traces.append(trace)
        chosen = trace.chosen
        if chosen is None or chosen.found is None:
            return None, traces
        source = _join(chosen.found[0], chosen.found[1].name)
    return source, traces


def _linkback_trace(tree: View, entry: Entry, onesis: NodeOnesis, linkback: LinkBack,
                    view: str, source_dir: str, name: str) -> LinkbackTrace:
    directory = merged_dir(tree, entry, source_dir)
    children = directory.children if directory is not None else {}
    attempts = onesis.variant_attempts(linkback, name, children, source_dir,
                                       lambda target: tree.merged_lookup(entry, target))
    rules = onesis.rules
    return LinkbackTrace("/" + view, linkback, rules.node_class, rules.properties, attempts,
                         chosen_attempt(linkback, attempts))


# --------------------------------------------------------------------------------------------
# The stack and the merge rule's trace


def stack_facts(tree: View, entry: Entry) -> tuple[list[LayerFact], list[int | None]]:
    """Every layer of the entry's stack, lowest first, with its store id (None: missing)."""
    ids = {layer: number for number, layer in enumerate(tree.store.layers)}
    priorities = {g.name: g.priority for g in tree.site.cluster.groups}
    facts, layer_ids = [], []
    for number, stage in enumerate(entry.stages):
        for item in stage:
            group = item.role.removeprefix("group ") if item.role.startswith("group ") else None
            facts.append(LayerFact(number, item.layer.label, item.role, item.present,
                                   priorities.get(group) if group else None))
            layer_ids.append(ids.get(item.layer) if item.present else None)
    return facts, layer_ids


def merge_facts(tree: View, entry: Entry, facts: list[LayerFact], layer_ids: list[int | None],
                source: str) -> str | None:
    """Fill in what every layer has at `source` (relative, "" = root) and, from the merge
    rule's own trace, what applying it did and which one wins; returns the deciding rule (a
    key of RULES), or None when no layer's copy of it takes part."""
    parent_source, _, name = source.rpartition("/")
    parent: Contribution | None = entry.contribution
    if parent_source:
        found = tree.merged_lookup(entry, parent_source)
        parent = found[1].contribution if found is not None else None
        if parent is None:
            return None  # the parent is not a directory of the merged tree
    for fact, layer in zip(facts, layer_ids, strict=True):
        if layer is not None:
            fact.meta = (tree.store.root_meta(layer) if not source
                         else (tree.store.listing(layer, parent_source) or {}).get(name))
    trace = tree.resolver.trace(source, parent)
    fact_of = _facts_by_stage(facts, layer_ids, parent)
    for key in trace.whiteouts:
        facts[fact_of[key]].step = "hides"
    for key, step in trace.steps.items():
        facts[fact_of[key]].step = step
    if trace.winner is None:
        return None
    facts[fact_of[trace.winner]].wins = True
    return trace.rule


def _facts_by_stage(facts: list[LayerFact], layer_ids: list[int | None],
                    parent: Contribution) -> dict[tuple[int, int], int]:
    """(stage of `parent`, layer) -> index of its fact. A parent's contribution keeps, in
    order, the stages of the stack whose copy of it took part; matched from the last stage
    back, because a directory that replaces a non-directory starts its contribution anew
    (the only way an earlier stage of a layer named twice, by updateclient, drops out)."""
    stack: dict[int, dict[int, int]] = {}
    for index, (fact, layer) in enumerate(zip(facts, layer_ids, strict=True)):
        if layer is not None:
            stack.setdefault(fact.stage, {})[layer] = index
    stages = list(stack.values())  # the stack's contribution, stage by stage
    found: dict[tuple[int, int], int] = {}
    position = len(stages)
    for number in reversed(range(len(parent))):
        position -= 1
        while not stages[position].keys() >= set(parent[number]):
            position -= 1
            assert position >= 0, "a contribution is not a part of its stack"
        for layer in parent[number]:
            found[(number, layer)] = stages[position][layer]
    return found


# --------------------------------------------------------------------------------------------
# explain


def explain(tree: View, target: Target, path: str) -> Explanation:
    """Everything known about `path` (absolute, normalized) of the target's view."""
    entry = target.entry
    assert entry is not None
    view = TreeView(tree, target)
    record = view.stat(path)
    kept = None
    if entry.installed is not None and path != "/":
        kept = excluding_rule(entry.installed.excludes, path.strip("/"),
                              record.is_dir if record is not None else None)
        if kept is not None:  # si_updateclient neither copies nor deletes it: as installed
            entry = replace(entry, stages=entry.installed.stages,
                            contribution=entry.installed.contribution, installed=None)
    facts, layer_ids = stack_facts(tree, entry)
    source, traces = trace_source(tree, entry, path)
    result = Explanation(target, tree.order, path, record,
                         record.origin if record is not None else None, None, facts, traces)
    if kept is not None:
        result.updateclient = {
            "excluded_by": kept.text, "line": kept.where,
            "why": "si_updateclient neither copies nor deletes an excluded path: the node "
                   "keeps what autoinstall laid (the layers below are autoinstall's)"}
    found = record.provenance if record is not None else None
    if found is not None and found.kind in (Kind.SYNTHETIC, Kind.PERSISTENT):
        # A RAM/LINK path or the /ram mount point: no layer's entry is shown.
        origin = found.xattr_text()
        result.onesis = {"kind": found.kind.value, "rule": found.shown_rule, "origin": origin}
        result.winner = {"layer": found.layer, "source": found.source, "rule": "onesis",
                         "line": found.shown_rule, "why": origin}
    if source is None:
        return result  # a LINKBACK that shows no layer entry: the trace says why
    result.source = _abs(source) if source else "/"
    rule = merge_facts(tree, entry, facts, layer_ids, source)
    if result.winner is None and rule is not None:
        winner = next(f for f in facts if f.wins)
        line = traces[-1].json()["rule"] if traces else None
        result.winner = {"layer": winner.layer, "source": result.source, "rule": rule,
                         "line": line,
                         "why": f"{RULES[rule]}; order {ORDER_POLICIES[tree.order]}"}
    result.whiteout = whiteout_of(tree, entry, facts, layer_ids, source)
    if record is None:
        result.onesis = _hidden_by_service(tree, entry, path) if rule is not None else None
        result.near = nearby(tree, target, path)
    return result


def whiteout_of(tree: View, entry: Entry, facts: list[LayerFact],
                layer_ids: list[int | None], source: str) -> dict[str, Any] | None:
    """--whiteouts: the list line that hides `source` (relative) or the first directory
    above it that is hidden, from the merge rule's own trace of each level; or, for a path
    shown, the last line a later layer laid it again over. None: no list names it."""
    if not tree.store.whiteouts or not source:
        return None
    parts = source.split("/")
    parent: Contribution | None = entry.contribution
    for depth in range(1, len(parts) + 1):
        here = "/".join(parts[:depth])
        if parent is None:
            return None  # a non-directory on the way: nothing below it to hide
        trace = tree.resolver.trace(here, parent)
        key = trace.hidden_at
        if key is not None and trace.winner is None:
            return _whiteout_json(tree, facts, layer_ids, parent, key, here, hidden=True)
        if trace.winner is None:
            return None  # no layer has it: nothing hidden
        if depth == len(parts):
            return (_whiteout_json(tree, facts, layer_ids, parent, key, here, hidden=False)
                    if key is not None else None)
        found = tree.resolver.child(None, here.rpartition("/")[0], parent, parts[depth - 1])
        parent = found.contribution if found is not None else None
    return None


def hidden_paths(tree: View, entry: Entry, under: str = "/") -> list[dict[str, Any]]:
    """--whiteouts: every path at or below `under` (absolute) that a list of the entry's
    stack hides from its root (the highest hidden directory, not what is below it), each as
    explain's `whiteout` says it (path, layer, line). Lists are short: each listed path is
    traced as explain traces it."""
    if not tree.store.whiteouts:
        return []
    facts, layer_ids = stack_facts(tree, entry)
    prefix = under.strip("/")
    found: dict[str, dict[str, Any]] = {}
    for layer in dict.fromkeys(i for i in layer_ids if i is not None):
        lists = tree.store.whiteouts.get(layer)
        for relpath, _line in lists.paths() if lists is not None else ():
            if prefix and relpath != prefix and not relpath.startswith(prefix + "/"):
                continue
            hidden = whiteout_of(tree, entry, facts, layer_ids, relpath)
            if hidden is not None and hidden["hidden"]:
                found.setdefault(hidden["path"], hidden)
    return [found[path] for path in sorted(found)]


def _whiteout_json(tree: View, facts: list[LayerFact], layer_ids: list[int | None],
                   parent: Contribution, key: tuple[int, int], listed: str, *,
                   hidden: bool) -> dict[str, Any]:
    fact = facts[_facts_by_stage(facts, layer_ids, parent)[key]]
    lists = tree.store.whiteouts.get(key[1])
    assert lists is not None
    where = lists.where(listed)
    return {"hidden": hidden, "path": _abs(listed), "layer": fact.layer, "line": where,
            "origin": Provenance.whiteout(fact.layer, _abs(listed), where).xattr_text(),
            "why": (f"{fact.layer}'s whiteout list hides {_abs(listed)} from every layer "
                    "below it" if hidden else
                    f"{fact.layer}'s whiteout list hides it from the layers below; a later "
                    "layer lays it again")}


def _hidden_by_service(tree: View, entry: Entry, path: str) -> dict[str, Any] | None:
    """The layers have the path but the view does not: is it (or a directory above it) a
    disabled service's start script or link? Asked of the rule that hides it."""
    onesis = tree.node_onesis(entry)
    if onesis is None:
        return None
    disabled = onesis.hiding_services(path)
    return {"kind": "SERVICE", "services": disabled} if disabled else None


def nearby(tree: View, target: Target, path: str) -> dict[str, Any]:
    """For a path the view does not have: its nearest existing parent, which layers have
    that parent, and names there close to the missing one (with the layers that have them)."""
    entry = target.entry
    assert entry is not None
    view = TreeView(tree, target)
    parts = path_parts(path)
    parent_parts: list[str] = []
    for part in parts[:-1]:
        if view.stat("/" + _join(*parent_parts, part)) is None:
            break
        parent_parts.append(part)
    parent = "/" + "/".join(parent_parts)
    missing = parts[len(parent_parts)] if len(parent_parts) < len(parts) else ""
    record = view.stat(parent)
    source, _ = trace_source(tree, entry, parent)
    facts, layer_ids = stack_facts(tree, entry)
    having: list[str] = []
    names: dict[str, list[str]] = {}
    if record is not None and record.is_dir:
        for child in view.children(record):
            names.setdefault(child.name, []).append(child.provenance.layer)
    for fact, layer in zip(facts, layer_ids, strict=True):
        listing = tree.store.listing(layer, source) if layer is not None and source is not None \
            else None
        if listing is None:
            continue
        having.append(fact.layer)
        for name in listing:
            names.setdefault(name, []).append(fact.layer)
    close = close_matches(missing, list(names))
    return {"parent": parent, "parent_layers": having,
            "similar": [{"name": n, "layers": list(dict.fromkeys(names[n]))} for n in close]}


def explanation_json(result: Explanation, view: TreeView) -> dict[str, Any]:
    from .walk import record_json

    return {
        "target": {"spec": result.target.spec, "kind": result.target.kind,
                   "name": result.target.name},
        "override_order": result.order,
        "policy": ORDER_POLICIES[result.order],
        "path": result.path,
        "exists": result.record is not None,
        "entry": record_json(view, result.record) if result.record is not None else None,
        "source": result.source,
        "linkbacks": [trace.json() for trace in result.linkbacks],
        "onesis": result.onesis,
        "layers": [fact.json() for fact in result.layers],
        "winner": result.winner,
        "near": result.near,
        "updateclient": result.updateclient,
        "whiteout": result.whiteout,
    }
