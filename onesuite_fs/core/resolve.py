"""Merging layer directories the way SystemImager's rsync passes do (domain.md A.2.3-A.2.5).

A node's stack is a sequence of *stages*, applied in order onto an empty root. A stage is a
tuple of layers copied by one rsync run:

* sequential orders (4.3 autoinstall, si_updateclient): one layer per stage, so the layer
  applied last wins;
* si_pushoverrides: the image, then ONE stage with every override as a source of one
  multi-source rsync, where the first source wins and a directory beats a non-directory
  (rsync's ``clean_flist`` rule).

Applying a stage onto the tree built so far follows ``rsync -a`` without ``--force`` or
``--delete``: a directory merges into a directory and takes the new metadata; a non-directory
replaces a non-directory or an *empty* directory, but never a non-empty one (rsync: "cannot
delete non-empty directory"); a directory replaces a non-directory. Nothing is ever deleted,
unless whiteouts are on (``--whiteouts``, whiteouts.py): then a layer's list hides the names
it lists from what came before it (`_Hiding`), within the same two functions.

Only the layers whose copy of a directory actually took part in it are kept for that directory
(its *contribution*), and merged listings are cached by (path, contribution): two nodes whose
stacks differ only in a host override share every directory that override does not touch.

This is the only place the rule is written. `Resolver.trace` runs the same two functions
(`_stage_entries`, `_apply_stage`) for one name with a MergeTrace that records what each
branch did; `onesuite explain` shows that record, so it cannot disagree with the mount.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterable
from typing import NamedTuple

from .bounded import BoundedCache
from .layers import LayerStore, Meta
from .whiteouts import Whiteouts

# Per stage, the ids of the layers whose copy of a directory is merged into it.
Contribution = tuple[tuple[int, ...], ...]


class Child(NamedTuple):
    """One entry of a merged directory: where its winning copy lives."""

    name: str
    layer: int  # the winning layer (for a directory: the one giving its metadata)
    meta: Meta
    contribution: Contribution | None  # set for directories only

    @property
    def is_dir(self) -> bool:
        return self.contribution is not None


class MergedDir:
    """The merged listing of one directory for one contribution; immutable once built.

    `kept`: the files whose bytes an install would take from another layer than the one
    whose entry replaced them (rsync's quick check, see Resolver): name -> (layer whose
    bytes an install keeps, layer whose entry came last); None when there is none."""

    __slots__ = ("path", "contribution", "layer", "meta", "children", "names", "kept")

    def __init__(self, path: str, contribution: Contribution, layer: int, meta: Meta,
                 children: dict[str, Child],
                 kept: dict[str, tuple[int, int]] | None = None) -> None:
        self.path = path
        self.contribution = contribution
        self.layer = layer
        self.meta = meta
        self.children = children
        self.names = sorted(children)
        self.kept = kept

    def child_path(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name


class _Pending:
    """A child while stages are applied: mutable, turned into a Child at the end."""

    __slots__ = ("layer", "meta", "contribution", "kept", "by")

    def __init__(self, layer: int, meta: Meta, dir_layers: list[int] | None) -> None:
        self.layer = layer
        self.meta = meta
        self.contribution: list[tuple[int, ...]] | None = (
            [tuple(dir_layers)] if dir_layers is not None else None)
        # The (layer, meta) whose bytes an install has here when not this entry's own: a
        # regular file replaced by one of the same size and mtime (rsync's quick check).
        self.kept: tuple[int, Meta] | None = None
        self.by = layer  # the layer whose entry came last (its mode and owner are shown)


def quick_check_keeps(content: tuple[int, Meta], new: Meta) -> bool:
    """Whether `rsync -av` (no -c, no -I) skips copying `new` over the destination file whose
    bytes are `content`'s: both regular files, same size, same mtime in whole seconds (what
    rsync compares; the destination keeps its own nanoseconds). It still sets the mode,
    owner and group. Nothing to flag when both are the same backing file."""
    old = content[1]
    return (stat.S_ISREG(old.mode) and stat.S_ISREG(new.mode) and old.size == new.size
            and old.mtime_ns // 1_000_000_000 == new.mtime_ns // 1_000_000_000
            and (old.dev, old.ino) != (new.dev, new.ino))


# What applying a stage's entry did (MergeTrace.applied) -> the rule it decides by (None: it
# was refused and decides nothing). Keys and rules are documented in docs/json.md.
_APPLY_RULES: dict[str, str | None] = {
    "laid": "only-layer",
    "merges": "directory-merge",
    "dir-replaces-non-dir": "directory-replaces-non-directory",
    "replaces": "last-wins",
    "replaces-empty-dir": "replaces-empty-directory",
    "refused-non-empty-dir": None,
    # --fidelity install: an install's rsync skipped the bytes (same size and mtime) and set
    # only mode and owner: the earlier content stays the winner.
    "quick-check-keeps": None,
    # A file the install writes itself into an existing directory (generated.py): the
    # directory stays the one below.
    "written-into": None,
}


class MergeTrace:
    """What the merge rule did with one name, recorded by the branches of `_stage_entries`
    and `_apply_stage` while they merge it (Resolver.trace).

    `steps` maps (stage number in the contribution merged, layer) to what happened to that
    layer's copy: within its stage (``earlier-source-wins``, ``merges-into-earlier-source``,
    ``beats-earlier-source``, ``beaten-by-directory``), or, for the stage's own entry, what
    laying it onto the tree built so far did (the keys of _APPLY_RULES). `winner` is the
    (stage, layer) whose copy is the entry; `rule` the rule that decided it."""

    def __init__(self) -> None:
        self.steps: dict[tuple[int, int], str] = {}
        self.winner: tuple[int, int] | None = None
        # (stage, layer) whose bytes an install keeps under the winner's entry (rsync's quick
        # check), when it is not the winner's own: explain's note.
        self.install_keeps: tuple[int, int] | None = None
        self._stage = -1
        self._stage_rule: str | None = None  # the in-stage rule that picked the stage's entry
        self._decided: str | None = None
        self._refused_since = False  # a later stage was refused by a non-empty directory
        # --whiteouts: (stage, layer) of every list that names the path, and the last one
        # that hid a copy of it (from the tree below, or from a later source of its stage).
        self.whiteouts: list[tuple[int, int]] = []
        self.hidden_at: tuple[int, int] | None = None

    @property
    def rule(self) -> str | None:
        """The deciding rule (see docs/json.md, winner.rule); None when nothing has the name."""
        if self.winner is None:
            return None
        return "non-empty-directory-kept" if self._refused_since else self._decided

    def stage_begins(self) -> None:
        self._stage += 1
        self._stage_rule = None

    def in_stage(self, layer: int, step: str) -> None:
        """A source of the current stage (several only with pushoverrides' one rsync)."""
        self.steps[(self._stage, layer)] = step
        if step == "hidden-by-whiteout":
            self.hidden_at = self._stage_hider()
        if step == "beats-earlier-source":
            self._stage_rule = "directory-beats-non-directory"
        elif step in ("earlier-source-wins", "merges-into-earlier-source"):
            self._stage_rule = self._stage_rule or "first-source-wins"

    def hides(self, layer: int) -> None:
        """The list of `layer`, a source of the current stage, names the path."""
        self.whiteouts.append((self._stage, layer))

    def _stage_hider(self) -> tuple[int, int] | None:
        return next((key for key in self.whiteouts if key[0] == self._stage), None)

    def hidden_below(self) -> None:
        """The tree built so far lost the path to a list of the current stage."""
        self.hidden_at = self._stage_hider()
        self.winner, self._decided, self._refused_since = None, None, False
        self.install_keeps = None

    def applied(self, layer: int, step: str) -> None:
        """The stage's entry, from `layer`, laid onto the tree built so far."""
        key = (self._stage, layer)
        self.steps.setdefault(key, step)  # a directory that beat a source keeps that step
        if step in ("quick-check-keeps", "written-into"):
            return  # the bytes or the directory (and the winner) stay where they were
        rule = _APPLY_RULES[step]
        if rule is None:
            self._refused_since = True
            return
        self.winner, self._decided, self._refused_since = key, self._stage_rule or rule, False
        self.install_keeps = None

    def laid_at(self, layer: int) -> int:
        """The last stage that laid `layer`'s copy of the name traced."""
        return max((stage for stage, found in self.steps if found == layer), default=-1)

    def keeps(self, stage: int, layer: int) -> None:
        """An install keeps the bytes laid at (stage, layer) under the entry just applied."""
        self.install_keeps = (stage, layer)


class _Hiding:
    """What the whiteouts of one stage's sources do to one directory's names (--whiteouts,
    whiteouts.py), collected while `_stage_entries` reads the sources in order:

    * `hidden`: name -> the first source whose list hides it; the tree built so far loses
      the name before the stage is laid (`hide_below`), and every later source's copy is
      skipped. The hiding source's own copy is laid (an opaque directory).
    * a source that hides something *below* a name (its list names `dir/x`) takes part in
      that directory even where it has no copy of it: its layer joins the directory's
      contribution in stage order, so the merged directory below knows of the list (and is
      cached apart from the nodes without it). It never makes the directory exist, never
      gives its metadata and never wins a type conflict.
    """

    __slots__ = ("hidden", "_blocked", "_joining")

    def __init__(self) -> None:
        self.hidden: dict[str, int] = {}
        self._blocked: set[str] = set()  # hidden by an earlier source of this stage
        self._joining: dict[str, list[int]] = {}  # passing through, no directory met yet

    def source(self, lists: Whiteouts | None, layer: int, path: str, only: str | None,
               listing: dict[str, Meta], entries: dict[str, _Pending],
               trace: MergeTrace | None) -> dict[str, Meta]:
        """The source's listing without what an earlier source hid; notes what it hides."""
        if self._blocked:
            shown = {n: m for n, m in listing.items() if n not in self._blocked}
            if trace is not None and len(shown) != len(listing):
                trace.in_stage(layer, "hidden-by-whiteout")
            listing = shown
        if lists is None:
            return listing
        names = lists.hidden.get(path)
        if names:
            for name in names if only is None else ([only] if only in names else []):
                if name in self._blocked:
                    continue
                self.hidden.setdefault(name, layer)
                if trace is not None:
                    trace.hides(layer)
        passing = lists.passes.get(path)
        if passing:
            for name in passing if only is None else ([only] if only in passing else []):
                found = listing.get(name)
                if name in self._blocked or (found is not None and found.is_dir):
                    continue  # its own directory takes part anyway
                earlier = entries.get(name)
                if earlier is not None and earlier.contribution is not None:
                    earlier.contribution[0] += (layer,)
                else:
                    self._joining.setdefault(name, []).append(layer)
        if names:
            self._blocked.update(names)  # after its own listing: its own copy stays
        return listing

    def starts_directory(self, name: str, pending: _Pending) -> None:
        """A source's directory became the stage's entry: sources passing through it
        earlier in the stage join it, before it, in stage order."""
        joining = self._joining.pop(name, None)
        if joining and pending.contribution is not None:
            pending.contribution[0] = (*joining, *pending.contribution[0])

    def hide_below(self, state: dict[str, _Pending], trace: MergeTrace | None) -> None:
        for name in self.hidden:
            if state.pop(name, None) is not None and trace is not None:
                trace.hidden_below()

    def join_directories(self, incoming: dict[str, _Pending],
                         state: dict[str, _Pending]) -> None:
        """Sources that only pass through a directory the stage did not lay join the one
        the tree has (as a stage of their own in its contribution)."""
        for name, layers in self._joining.items():
            current = state.get(name)
            laid = incoming.get(name)
            if current is None or current.contribution is None:
                continue
            if laid is not None and current is laid:
                continue  # laid by this stage: joined in starts_directory already
            current.contribution.append(tuple(layers))


class Resolver:
    """Builds and caches merged directories over one LayerStore (with `cache_limit`, only
    that many entries of recent ones: one-pass readers)."""

    def __init__(self, store: LayerStore, cache_limit: int | None = None, *,
                 quick_check: bool = False, install: bool = False) -> None:
        """`quick_check`: the overrides are laid by `rsync -av` without -c or -I (4.3
        autoinstall), so an install keeps a file's bytes when the next layer's file has
        the same size and mtime: recorded (MergedDir.kept, MergeTrace.install_keeps) for
        preview and explain. `install` also shows it that way (--fidelity install)."""
        self.store = store
        self.quick_check = quick_check
        self.install = install and quick_check
        self._dirs: dict[tuple[str, Contribution], MergedDir] | BoundedCache = (
            {} if cache_limit is None
            else BoundedCache(lambda merged: 1 + len(merged.children), cache_limit))
        self._lock = threading.Lock()

    def root(self, stages: Iterable[Iterable[int]]) -> MergedDir:
        """The merged root of a stack; every layer's root is a directory by construction."""
        contribution = tuple(tuple(stage) for stage in stages if stage)
        top = self.store.metadata_layer(contribution)
        return self.merged_dir("", contribution, top, self.store.lstat(top, ""))

    def cached_dir(self, path: str, contribution: Contribution) -> MergedDir | None:
        return self._dirs.get((path, contribution))

    def merged_count(self) -> int:
        """How many merged directories are cached (only grows without a cache limit)."""
        return len(self._dirs)

    def merged_dir(self, path: str, contribution: Contribution, layer: int,
                   meta: Meta) -> MergedDir:
        """The merged directory; `layer`/`meta` are its metadata winner (the first directory
        of the last stage that has it), as the parent's listing recorded them."""
        key = (path, contribution)
        found = self._dirs.get(key)
        if found is not None:
            return found
        kept: dict[str, tuple[int, int]] = {}
        built = MergedDir(path, contribution, layer, meta,
                          self._merge_children(path, contribution, kept_out=kept),
                          kept or None)
        # Another thread may have built it meanwhile; keep the first so identity is stable.
        with self._lock:
            return self._dirs.setdefault(key, built)

    def dir_of(self, parent: MergedDir, child: Child) -> MergedDir:
        assert child.contribution is not None
        return self.merged_dir(parent.child_path(child.name), child.contribution,
                               child.layer, child.meta)

    def _merge_children(self, path: str, contribution: Contribution, only: str | None = None,
                        trace: MergeTrace | None = None,
                        kept_out: dict[str, tuple[int, int]] | None = None) -> dict[str, Child]:
        state: dict[str, _Pending] = {}
        for stage in contribution:
            if trace is not None:
                trace.stage_begins()
            hiding = _Hiding() if self.store.whiteouts else None
            incoming = self._stage_entries(path, stage, only, trace, hiding)
            if hiding is not None:
                hiding.hide_below(state, trace)
            self._apply_stage(path, incoming, state, trace)
            if hiding is not None:
                hiding.join_directories(incoming, state)
        if kept_out is not None:
            kept_out.update((name, (p.kept[0], p.by)) for name, p in state.items()
                            if p.kept is not None)
        return {
            name: Child(name, p.layer, p.meta,
                        tuple(p.contribution) if p.contribution is not None else None)
            for name, p in state.items()
        }

    def child(self, parent: MergedDir | None, path: str, contribution: Contribution,
              name: str) -> Child | None:
        """One entry of a directory, merged without merging the whole directory (cheap when
        only one path matters, e.g. finding every node's /etc/sysimage.conf)."""
        if parent is not None:
            return parent.children.get(name)
        return self._merge_children(path, contribution, only=name).get(name)

    def trace(self, path: str, contribution: Contribution) -> MergeTrace:
        """What the merge rule does with the entry at `path` (relative; "" is the root),
        given its parent's contribution (for the root, the stack's). The stage numbers of
        the trace count the stages of that contribution."""
        parent, _, name = path.rpartition("/")
        trace = MergeTrace()
        self._merge_children(parent, contribution, only=name, trace=trace)
        return trace

    def resolve_path(self, root_contribution: Contribution, path: str) -> Child | None:
        """The entry at `path` (no leading '/') of the stack, or None; not for the root."""
        contribution, parent_path, found = root_contribution, "", None
        for part in path.split("/"):
            if contribution is None:
                return None  # a non-directory on the way
            cached = self.cached_dir(parent_path, contribution)
            found = self.child(cached, parent_path, contribution, part)
            if found is None:
                return None
            contribution = found.contribution
            parent_path = f"{parent_path}/{part}" if parent_path else part
        return found

    def _stage_entries(self, path: str, stage: tuple[int, ...], only: str | None = None,
                       trace: MergeTrace | None = None,
                       hiding: _Hiding | None = None) -> dict[str, _Pending]:
        """One rsync run with several sources: the first source wins, a directory beats a
        non-directory, and the contents of every source's directory are merged.

        `hiding` (--whiteouts, whiteouts.py): a source's list hides a name from the sources
        after it and from the tree built so far (`_Hiding.hide_below`), never its own copy."""
        entries: dict[str, _Pending] = {}
        for layer in stage:
            listing = (self.store.listing(layer, path) or {}) if only is None \
                else self._one_entry(layer, path, only)
            if hiding is not None:
                listing = hiding.source(self.store.whiteouts.get(layer), layer, path, only,
                                        listing, entries, trace)
            for name, meta in listing.items():
                found = entries.get(name)
                if found is None:
                    entries[name] = _Pending(layer, meta, [layer] if meta.is_dir else None)
                    if hiding is not None and meta.is_dir:
                        hiding.starts_directory(name, entries[name])
                elif found.contribution is not None:
                    if meta.is_dir:
                        found.contribution[0] += (layer,)
                    if trace is not None:
                        trace.in_stage(layer, "merges-into-earlier-source" if meta.is_dir
                                       else "earlier-source-wins")
                elif meta.is_dir:
                    if trace is not None:
                        trace.in_stage(found.layer, "beaten-by-directory")
                        trace.in_stage(layer, "beats-earlier-source")
                    entries[name] = _Pending(layer, meta, [layer])
                    if hiding is not None:
                        hiding.starts_directory(name, entries[name])
                elif trace is not None:
                    trace.in_stage(layer, "earlier-source-wins")
        return entries

    def _one_entry(self, layer: int, path: str, name: str) -> dict[str, Meta]:
        """The layer's listing of `path` cut to `name`; the root is traced as the one entry,
        named "", of the directory above it."""
        if not path and not name:
            return {"": self.store.root_meta(layer)}
        meta = (self.store.listing(layer, path) or {}).get(name)
        return {} if meta is None else {name: meta}

    def _apply_stage(self, path: str, incoming: dict[str, _Pending],
                     state: dict[str, _Pending], trace: MergeTrace | None = None) -> None:
        """Lay one stage's entries onto the tree built so far, as rsync -a would."""
        for name, new in incoming.items():
            current = state.get(name)
            if current is None:
                state[name] = new
                step = "laid"
            elif new.contribution is not None:
                if current.contribution is not None:  # directory into directory: merge
                    current.contribution.append(new.contribution[0])
                    generated = self.store.generated_ids
                    if not generated or new.layer not in generated:
                        current.layer, current.meta = new.layer, new.meta
                        step = "merges"
                    else:  # a file written into it sets no mode, owner or time
                        step = "written-into"
                else:  # a directory replaces a non-directory
                    state[name] = new
                    step = "dir-replaces-non-dir"
            elif current.contribution is None:  # non-directory over non-directory
                step = self._replace_file(name, current, new, state, trace)
            elif self._is_empty(f"{path}/{name}" if path else name, current.contribution):
                state[name] = new  # rsync removes an empty directory to make way
                step = "replaces-empty-dir"
            else:  # rsync cannot delete a non-empty directory; it stays as it is.
                step = "refused-non-empty-dir"
            if trace is not None:
                trace.applied(new.layer, step)

    def _replace_file(self, name: str, current: _Pending, new: _Pending,
                      state: dict[str, _Pending], trace: MergeTrace | None) -> str:
        """A non-directory laid over a non-directory: it replaces it, except that with rsync's
        quick check an install keeps the bytes it has (recorded; shown with `install`)."""
        content = current.kept or (current.layer, current.meta)
        # A redirect writes whatever is there; a file the install wrote itself has the
        # install's time, which no override's file matches.
        generated = self.store.generated_ids
        if not self.quick_check or not quick_check_keeps(content, new.meta) or (
                generated and (content[0] in generated or new.layer in generated)):
            state[name] = new
            return "replaces"
        if trace is not None:  # the (stage, layer) the kept bytes were laid by
            trace.keeps(trace.laid_at(content[0]), content[0])
        if not self.install:
            new.kept = content
            state[name] = new
            return "replaces"
        shown = content[1]._replace(mode=new.meta.mode, uid=new.meta.uid, gid=new.meta.gid)
        kept = _Pending(content[0], shown, None)
        kept.kept, kept.by = content, new.layer
        state[name] = kept
        return "quick-check-keeps"

    def _is_empty(self, path: str, contribution: list[tuple[int, ...]]) -> bool:
        # Without whiteouts nothing is ever deleted, so a merged directory is empty exactly
        # when every copy of it that was merged in was empty; with them, what it shows counts.
        if self.store.whiteouts:
            return not self._merge_children(path, tuple(contribution))
        return not any(self.store.listing(layer, path) for stage in contribution
                       for layer in stage)

    def walk(self, root: MergedDir) -> Iterable[tuple[MergedDir, Child]]:
        """Every (parent, child) below root, depth first in sorted order."""
        stack = [root]
        while stack:
            directory = stack.pop()
            for name in directory.names:
                child = directory.children[name]
                yield directory, child
            for name in reversed(directory.names):
                child = directory.children[name]
                if child.is_dir:
                    stack.append(self.dir_of(directory, child))
