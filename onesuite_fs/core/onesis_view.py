"""oneSIS rules laid over a node's merged tree (domain.md B.2): what mk-sysimage and
rc.preinit would leave, decided per directory when it is listed.

Three things change a directory's entries:

* LINKBACK: the path shows the content and metadata of the chosen variant (``name.<host>``,
  ``name.<a.b.c>``/``name.<a.b>``/``name.<a>``, ``name.<property>``, an explicit target, then
  ``name.default``) under its own name. No variant and no ``.default``: the file the tree
  has at that path is the default (mk-sysimage would have moved it to ``.default``); when
  there is none either, the path is a link to the missing ``.default``, dangling as on a real
  oneSIS node. ``-f`` keeps a link to a missing target instead of falling back.
* SERVICE: a service disabled on this node has no start script and no start links.
* RAMDIR/RAMFILE/LINKDIR/LINKFILE, per the site's policy: ``ram`` shows LINK* paths as
  mk-sysimage leaves them, symlinks into ``/ram`` (rc.preinit fills /ram at boot) with the
  original beside them as ``NAME.default``, and RAM* paths unchanged; ``persistent`` makes
  every such path a writable, node-private entry backed by the server's state directory.
"""

from __future__ import annotations

import fnmatch
import re
import stat
from collections.abc import Callable, Mapping
from typing import NamedTuple

from .onesis_rules import LinkBack, NodeRules, RamPath, class_chain
from .resolve import Child

RAM_DIR = "ram"

# Where a sysvinit or systemd image keeps a service's start script and start links.
_SERVICE_PATHS = (
    "etc/init.d/{name}",
    "etc/rc.d/init.d/{name}",
    "etc/rc[0-6S].d/[SK][0-9][0-9]{name}",
    "etc/rc.d/rc[0-6].d/[SK][0-9][0-9]{name}",
    "etc/systemd/system/*.wants/{name}.service",
)


class Linked(NamedTuple):
    """A LINKBACK path showing its chosen variant (a merged entry at another name)."""

    name: str
    variant: Child
    variant_parent: str  # source path of the directory holding the variant
    rule: str  # "file:line"
    reason: str  # e.g. "CLASS variant fstab.compute"


def chained_link_text(text: bytes, link_dir: str, layer_dir: str, depth: int | None) -> bytes:
    """The text a symlink shown at `link_dir` needs to resolve where oneSIS's link chain
    resolves it: a LINKBACK's variant (``/etc/conf.d/foo -> /ram/etc/conf.d/foo ->
    /opt/conf/foo.n2``) is reached through symlinks, so a relative text in it counts from the
    variant's directory `layer_dir` (``../shared/foo``: ``/opt/shared/foo``), not from where
    the view shows it. `depth`: how far below the LINKBACK'd directory the link is (None:
    the link is the LINKBACK'd path itself); a text that stays inside that directory means
    the same in both places and is kept. Both directories are paths of real directories
    (no symlink on the way: the merge never follows one), so a leading ``..`` cancels one
    of their components exactly; the rest of the text is kept as written."""
    if text.startswith(b"/") or link_dir == layer_dir:
        return text
    parts = text.split(b"/")
    climbs = 0
    while climbs < len(parts) and parts[climbs] == b"..":
        climbs += 1
    if depth is not None and climbs <= depth:
        return text  # resolves inside the LINKBACK'd directory: the same entry either way
    base = [p.encode("utf-8", "surrogateescape") for p in layer_dir.split("/") if p]
    kept = base[:max(len(base) - climbs, 0)] + parts[climbs:]
    here = [p.encode("utf-8", "surrogateescape") for p in link_dir.split("/") if p]
    if here[:max(len(here) - climbs, 0)] + parts[climbs:] == kept:
        return text  # climbs out to the same place from both (usr.n1/x -> ../usr/y at /usr)
    common = 0
    while common < min(len(here), len(kept) - 1) and here[common] == kept[common]:
        common += 1
    return b"/".join([b".."] * (len(here) - common) + kept[common:]) or b"."


class Synthetic(NamedTuple):
    """An entry no layer has: a link into /ram, a dangling LINKBACK, the /ram mount point."""

    name: str
    target: str | None  # symlink text, or None for a directory
    rule: str
    reason: str


class Writable(NamedTuple):
    """A node-private, writable path (``persistent`` policy) and what it starts from."""

    name: str
    rule: RamPath
    base: Child | None
    base_parent: str


Item = Child | Linked | Synthetic | Writable


class Attempt(NamedTuple):
    """One place a LINKBACK looks for its content (``onesuite explain`` lists them)."""

    kind: str  # "target" (explicit path), "variant", "default" (.default), "own" (the name)
    name: str  # the candidate's name in the directory, or the explicit target's path
    found: tuple[str, Child] | None  # (source path of its directory, its merged entry)


def _expand_braces(pattern: str) -> list[str]:
    """POSIX glob with GLOB_BRACE, as oneSIS's glob() sees ``{a,b}`` (node42)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [expanded for option in match.group(1).split(",")
            for expanded in _expand_braces(head + option + tail)]


def glob_matches(name: str, pattern: str) -> bool:
    """One path component against one glob component as oneSIS's Perl glob() (POSIX glob(3))
    matches it: `*`, `?` and a bracket expression never match a leading dot (the manual's
    node42 says patterns are expanded by glob; `/etc/ssh/*` leaves `/etc/ssh/.keep` alone), so
    a dot-file is matched only by a pattern that starts with a dot."""
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


class _PathRule(NamedTuple):
    parent: tuple[str, ...]  # glob per component of the parent directory
    name: str  # glob of the last component
    payload: RamPath | str  # a RAM*/LINK* line, or a disabled service's name

    def parent_matches(self, parts: tuple[str, ...]) -> bool:
        return len(parts) == len(self.parent) and all(
            glob_matches(part, glob) for part, glob in zip(parts, self.parent,
                                                                  strict=True))


def _path_rules(pattern: str, payload: RamPath | str) -> list[_PathRule]:
    rules = []
    for expanded in _expand_braces(pattern):
        parts = tuple(p for p in expanded.strip("/").split("/") if p)
        if parts:
            rules.append(_PathRule(parts[:-1], parts[-1], payload))
    return rules


def _location(rule: LinkBack | RamPath) -> str:
    return f"{rule.file}:{rule.line}"


class NodeOnesis:
    """One node's oneSIS rules, indexed by the directory they change."""

    def __init__(self, rules: NodeRules, policy: str, ram_prefix: str = "/ram") -> None:
        self.rules = rules
        self.policy = policy
        self.ram_prefix = ram_prefix.rstrip("/")
        self._linkbacks: dict[str, dict[str, LinkBack]] = {}
        for path, linkback in rules.linkbacks.items():
            parent, _, name = path.strip("/").rpartition("/")
            self._linkbacks.setdefault(parent, {})[name] = linkback
        self._ram_rules = [rule for ram in rules.ram_paths
                           for rule in _path_rules(ram.pattern, ram)]
        self._hidden = [rule for name, enabled in rules.services.items() if not enabled
                        for template in _SERVICE_PATHS
                        for rule in _path_rules(template.format(name=_escape(name)), name)]

    @property
    def has_writable_paths(self) -> bool:
        """Whether the node writes to its root (persistent RAM*/LINK* paths)."""
        return self.policy == "persistent" and bool(self._ram_rules)

    def may_reach_writable(self, view_dir: str) -> bool:
        """Whether this directory is on the way to, or inside, a persistent writable path:
        where a walk for a node's persistent entries must look (and nowhere else)."""
        if not self.has_writable_paths:
            return False
        parts = tuple(view_dir.split("/")) if view_dir else ()
        for rule in self._ram_rules:
            depth = len(rule.parent)
            if len(parts) <= depth:
                if rule.parent_matches(parts + rule.parent[len(parts):]):
                    return True
            elif rule.parent_matches(parts[:depth]) and glob_matches(parts[depth],
                                                                            rule.name):
                return True
        return False

    @property
    def needs_ram_dir(self) -> bool:
        return self.policy == "ram" and bool(self._ram_rules)

    def may_touch_below(self, view_dir: str) -> bool:
        """Whether any rule may change an entry of this directory or of one below it
        (`onesuite plan` compares only those when only the rules changed)."""
        if not view_dir:
            return True
        prefix = view_dir + "/"
        if any(d == view_dir or d.startswith(prefix) for d in self._linkbacks):
            return True
        parts = tuple(view_dir.split("/"))
        return any(len(parts) <= len(rule.parent) and all(
            fnmatch.fnmatchcase(part, glob) for part, glob in zip(parts, rule.parent,
                                                                  strict=False))
            for rule in (*self._ram_rules, *self._hidden))

    def touches(self, view_dir: str) -> bool:
        """Whether any rule may change the entries of this directory."""
        if view_dir in self._linkbacks or (view_dir == "" and self.needs_ram_dir):
            return True
        parts = tuple(view_dir.split("/")) if view_dir else ()
        return any(r.parent_matches(parts) for r in (*self._ram_rules, *self._hidden))

    def patch(self, view_dir: str, children: Mapping[str, Child], source_dir: str,
              lookup: Callable[[str], tuple[str, Child] | None]) -> dict[str, Item]:
        """The directory's entries with this node's rules applied. `lookup(abs_path)` finds
        an explicit LINKBACK target in the node's merged tree."""
        items: dict[str, Item] = dict(children)
        parts = tuple(view_dir.split("/")) if view_dir else ()
        for rule in self._hiding(parts):
            for name in [n for n in items if glob_matches(n, rule.name)]:
                del items[name]
        for rule in self._ram_rules:
            if rule.parent_matches(parts):
                self._apply_ram_rule(rule, view_dir, items, children, source_dir)
        for name, linkback in self._linkbacks.get(view_dir, {}).items():
            items[name] = self._choose_variant(linkback, name, view_dir, children, source_dir,
                                               lookup)
        if view_dir == "" and self.needs_ram_dir and RAM_DIR not in items:
            items[RAM_DIR] = Synthetic(RAM_DIR, None, "", "mount point of the /ram tmpfs")
        return items

    def _hiding(self, parts: tuple[str, ...]) -> list[_PathRule]:
        """The disabled services' rules that hide names in this directory."""
        return [rule for rule in self._hidden if rule.parent_matches(parts)]

    def hiding_services(self, view_path: str) -> list[str]:
        """The disabled services whose start script or link is `view_path` or a directory
        above it: the rules `patch` hides by, asked of one path (``onesuite explain``)."""
        parts = tuple(p for p in view_path.split("/") if p)
        for depth in range(1, len(parts) + 1):
            services = [rule.payload for rule in self._hiding(parts[:depth - 1])
                        if glob_matches(parts[depth - 1], rule.name)]
            if services:
                return list(dict.fromkeys(services))  # type: ignore[arg-type]
        return []

    def _apply_ram_rule(self, rule: _PathRule, view_dir: str, items: dict[str, Item],
                        children: Mapping[str, Child], source_dir: str) -> None:
        ram = rule.payload
        assert isinstance(ram, RamPath)
        names = [n for n in children if glob_matches(n, rule.name)]
        if not names and not any(_is_glob(part) for part in (*rule.parent, rule.name)):
            # mk-sysimage makes the path even when the image lacks it; Perl's glob returns
            # a pattern without * ? [ as it is (GLOB_NOMAGIC), one with them only matches.
            names = [rule.name]
        for name in names:
            path = f"{view_dir}/{name}" if view_dir else name
            if self.policy == "persistent":
                items[name] = Writable(name, ram, children.get(name), source_dir)
            elif ram.kind in ("LINKDIR", "LINKFILE"):
                items[name] = Synthetic(name, f"{self.ram_prefix}/{path}", _location(ram),
                                        f"{ram.kind} (rc.preinit fills {self.ram_prefix})")
                # mk-sysimage moves the original to NAME.default (manual node28, node74):
                # rc.preinit's -d copies from it. An image mk-sysimage already ran on has
                # its own NAME.default, which stays.
                default = f"{name}.default"
                if name in children and default not in children:
                    items[default] = Linked(default, children[name], source_dir,
                                            _location(ram), f"{ram.kind}: the original "
                                            f"{name}, moved to {default} by mk-sysimage")

    def moved_original(self, view_dir: str, name: str) -> str | None:
        """The original a LINKDIR/LINKFILE's `NAME.default` in this directory shows (`patch`
        adds it when the tree has NAME and no NAME.default), or None: for `onesuite explain`."""
        if self.policy != "ram" or not name.endswith(".default"):
            return None
        original = name.removesuffix(".default")
        parts = tuple(view_dir.split("/")) if view_dir else ()
        for rule in self._ram_rules:
            ram = rule.payload
            if (isinstance(ram, RamPath) and ram.kind in ("LINKDIR", "LINKFILE")
                    and rule.parent_matches(parts) and glob_matches(original, rule.name)):
                return original
        return None

    def variant_attempts(self, linkback: LinkBack, name: str, children: Mapping[str, Child],
                         source_dir: str,
                         lookup: Callable[[str], tuple[str, Child] | None]) -> list[Attempt]:
        """Every place the LINKBACK looks for its content, in the order it looks, and what
        each found: the explicit target or the variants (B.2.3), then ``.default``, then the
        tree's own entry. `chosen_attempt` says which one is shown; `_choose_variant` uses
        both, so ``onesuite explain`` and the mount cannot disagree."""
        rules = self.rules
        dot = "." if linkback.hidden else ""

        def here(candidate: str) -> tuple[str, Child] | None:
            return (source_dir, children[candidate]) if candidate in children else None

        if linkback.target_kind == "PATH":
            if "$CLASS" in (linkback.target or "") and rules.node_class is None:
                tried = []  # a node of no class has no such target: fall back to .default
            else:
                target = linkback.explicit_target(rules.hostname, rules.node_class)
                tried = [Attempt("target", target, lookup(target))]
        else:
            tried = [Attempt("variant", candidate, here(candidate))
                     for candidate in self._candidates(linkback, name, dot, children)]
        default = f"{dot}{name}.default"
        return [*tried, Attempt("default", default, here(default)),
                Attempt("own", name, here(name))]

    def _choose_variant(self, linkback: LinkBack, name: str, view_dir: str,
                        children: Mapping[str, Child], source_dir: str,
                        lookup: Callable[[str], tuple[str, Child] | None]) -> Item:
        """B.2.3: the deciding line's target kind, its candidates in order, then .default."""
        rule = _location(linkback)
        attempts = self.variant_attempts(linkback, name, children, source_dir, lookup)
        chosen = chosen_attempt(linkback, attempts)
        if chosen is not None and chosen.found is not None:
            parent, child = chosen.found
            return Linked(name, child, parent, rule, self._reason(linkback, chosen))
        if chosen is not None:  # -f: a link to the first candidate, missing as it is
            if chosen.kind == "target":
                return Synthetic(name, chosen.name, rule, f"forced link to missing {chosen.name}")
            where = f"/{view_dir}/{chosen.name}" if view_dir else f"/{chosen.name}"
            return Synthetic(name, where, rule, "forced link to a missing variant")
        default = attempts[-2].name
        missing = f"/{view_dir}/{default}" if view_dir else f"/{default}"
        return Synthetic(name, missing, rule, f"no variant and no {default}: dangling")

    @staticmethod
    def _reason(linkback: LinkBack, attempt: Attempt) -> str:
        if attempt.kind == "target":
            return f"target {attempt.name}"
        if attempt.kind == "variant":
            return f"{linkback.target_kind} variant {attempt.name}"
        if attempt.kind == "default":
            return f"default {attempt.name}"
        return "no variant: the tree's own entry is the default"

    def _candidates(self, linkback: LinkBack, name: str, dot: str,
                    children: Mapping[str, Child]) -> list[str]:
        rules = self.rules
        if linkback.target_kind == "NODE":
            return [f"{dot}{name}.{rules.hostname}"]
        if linkback.target_kind == "CLASS":
            chain = class_chain(rules.node_class) if rules.node_class else ()
            return [f"{dot}{name}.{cls}" for cls in chain]
        # PROPERTY: the first existing variant in alphanumeric order (B.2.3, UNCONFIRMED).
        return sorted(f"{dot}{name}.{prop}" for prop in rules.properties)


def chosen_attempt(linkback: LinkBack, attempts: list[Attempt]) -> Attempt | None:
    """The attempt a LINKBACK shows: the first found target or variant; with -f and none
    found, the first of them (found None: a link to it, missing); else the first found of
    .default and the tree's own entry. None: nothing at all, the path dangles."""
    leads = [a for a in attempts if a.kind in ("target", "variant")]
    chosen = next((a for a in leads if a.found is not None), None)
    if chosen is None and linkback.force and leads:
        return leads[0]
    return chosen or next((a for a in attempts if a.found is not None), None)


def _escape(name: str) -> str:
    """A service name as a literal inside a glob."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def synthetic_mode(item: Synthetic) -> int:
    return stat.S_IFLNK | 0o777 if item.target is not None else stat.S_IFDIR | 0o755
