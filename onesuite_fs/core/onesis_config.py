"""Where each node's oneSIS rules come from.

By default a node's rules are ``/etc/sysimage.conf`` as the node's own merged root has it (an
override may carry a different one), with INCLUDE paths taken in that same root; every
distinct file is parsed once, at start, so a bad line stops the mount with file and line.
``--onesis-config FILE`` gives one file for every node instead (its INCLUDEs are relative to
the file's directory).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError
from .limits import DEFAULT_LIMITS, Limits
from .onesis_rules import RamPath, SysimageConfig, limiters_match
from .onesis_view import NodeOnesis, Writable
from .resolve import Child
from .state import NodeAttrs
from .sysimage_conf import MAX_ID, parse_sysimage_conf

if TYPE_CHECKING:
    from .entry import Entry
    from .layers import LayerStore
    from .model import Site
    from .resolve import Resolver


class MergedRoots(Protocol):
    """What loading the rules reads of a site's roots (core/view.py's View has it): the
    merged layers without rules, to find each node's sysimage.conf, INCLUDEs and owners."""

    site: Site
    entries: dict[str, dict[str, Entry]]
    store: LayerStore
    resolver: Resolver
    stable_ns: int  # the times of entries no layer has (a persistent path not made yet)

    def merged_lookup(self, entry: Entry, path: str) -> tuple[str, Child] | None: ...
    def node_onesis(self, entry: Entry) -> NodeOnesis | None: ...

SYSIMAGE_CONF = "etc/sysimage.conf"


@dataclass
class OnesisSource:
    config_file: Path | None = None
    policy: str = "ram"
    ram_prefix: str = "/ram"
    limits: Limits = DEFAULT_LIMITS
    _configs: dict[str, SysimageConfig | None] = field(default_factory=dict)
    # host -> (class, properties), matched once at load so no request ever runs a pattern
    _identities: dict[str, tuple[str | None, tuple[str, ...]]] = field(default_factory=dict)

    # ----- reading the configurations ---------------------------------------------------
    def load(self, tree: MergedRoots) -> None:
        """Parse every distinct sysimage.conf the nodes see, match every node's class and
        properties, and check every -u/-g owner a persistent path will need: everything
        that can be wrong is found now, with file and line (errors: ConfigError)."""
        self._parse_all(tree)
        owners = OwnerTables(tree)
        for host, entry in tree.entries["nodes"].items():
            config = self._configs.get(host)
            if config is None:
                continue
            try:
                identity = self._identities[host] = config.identity(host)
            except ValueError as exc:  # a host name oneSIS cannot match (checked upstream)
                groups = tree.site.cluster.groups_of(host)
                where = groups[0].source if groups else tree.site.cluster.source
                file, _, line = where.rpartition(":")
                raise ConfigError(f"node {host!r}: {exc}", file=file or where,
                                  line=int(line) if line.isdigit() else None,
                                  hint="rename the node: a host name is one word") from None
            if self.policy == "persistent":
                node_class, properties = identity
                subclasses = config.policy.class_matches_subclasses
                for rule in config.ram_paths:
                    if (rule.user is not None or rule.group is not None) and limiters_match(
                            rule, host, node_class, properties,
                            class_matches_subclasses=subclasses):
                        owners.check(entry, rule)

    def _parse_all(self, tree: MergedRoots) -> None:
        if self.config_file is not None:
            shared = self._parse_file(self.config_file)
            self._configs = dict.fromkeys(tree.entries["nodes"], shared)
            return
        parsed: dict[tuple[int, str], SysimageConfig] = {}
        for host, entry in tree.entries["nodes"].items():
            found = tree.merged_lookup(entry, SYSIMAGE_CONF)
            if found is None or not stat.S_ISREG(found[1].meta.mode):
                self._configs[host] = None
                continue
            key = (found[1].layer, SYSIMAGE_CONF)
            if key not in parsed:
                parsed[key] = self._parse_in_tree(tree, entry, found[1])
            self._configs[host] = parsed[key]

    def _parse_file(self, path: Path) -> SysimageConfig:
        base = path.parent

        def load_include(include: str) -> tuple[str, str]:
            target = base / include
            return str(target), target.read_text(errors="surrogateescape")

        try:
            text = path.read_text(errors="surrogateescape")
        except OSError as exc:
            raise ConfigError(f"cannot read the oneSIS configuration: {exc.strerror}",
                              file=str(path)) from None
        return parse_sysimage_conf(text, filename=str(path), load_include=load_include,
                                   limits=self.limits)

    def _parse_in_tree(self, tree: MergedRoots, entry: Entry, found: Child) -> SysimageConfig:
        def read(child: Child, path: str) -> str:
            fd = tree.store.open_file(child.layer, path)
            with os.fdopen(fd, "rb") as f:
                return f.read().decode("utf-8", "surrogateescape")

        def display(child: Child, path: str) -> str:
            return str(tree.store.layer(child.layer).path / path)

        def load_include(include: str) -> tuple[str, str]:
            hit = tree.merged_lookup(entry, include)  # relative to the image root
            if hit is None or not stat.S_ISREG(hit[1].meta.mode):
                raise FileNotFoundError(include)
            path = include.strip("/")
            return display(hit[1], path), read(hit[1], path)

        return parse_sysimage_conf(read(found, SYSIMAGE_CONF),
                                   filename=display(found, SYSIMAGE_CONF),
                                   load_include=load_include, limits=self.limits)

    def distinct_configs(self) -> list[SysimageConfig]:
        return list({id(c): c for c in self._configs.values() if c is not None}.values())

    def config_of(self, host: str) -> SysimageConfig | None:
        return self._configs.get(host)

    def for_node(self, tree: MergedRoots, entry: Entry) -> NodeOnesis | None:
        config = self._configs.get(entry.name)
        if config is None:
            return None
        rules = config.rules_for(entry.name, identity=self._identities.get(entry.name))
        return NodeOnesis(rules, self.policy, self.ram_prefix)

    def describe(self, tree: MergedRoots, entry: Entry) -> dict[str, Any] | None:
        """A node's class, properties and the rules that apply to it (for `onesuite nodes`)."""
        onesis = tree.node_onesis(entry)
        if onesis is None:
            return None
        rules = onesis.rules
        return {
            "config": self._configs[entry.name].filename,  # type: ignore[union-attr]
            "class": rules.node_class,
            "properties": list(rules.properties),
            "link_policy": self.policy,
            "linkbacks": [{"path": lb.path, "target": lb.target or lb.target_kind,
                           "hidden": lb.hidden, "force": lb.force,
                           "rule": f"{lb.file}:{lb.line}"} for lb in rules.linkbacks.values()],
            "ram_paths": [{"kind": r.kind, "pattern": r.pattern, "duplicate": r.duplicate,
                           "rule": f"{r.file}:{r.line}"} for r in rules.ram_paths],
            "services": dict(rules.services),
        }

    # ----- what a persistent path is made as (daemon/persistent_paths.py makes it) -----
    def writable_attrs(self, tree: MergedRoots, entry: Entry, item: Writable) -> NodeAttrs:
        """What a persistent path shows once made (B.2.2): a directory for RAMDIR/LINKDIR,
        else a regular file; mode and owner from -m/-u/-g, else the tree's entry's, else
        0755/0644 root. The mount makes it with these; preview shows them before."""
        rule, base = item.rule, item.base
        is_dir = rule.kind in ("RAMDIR", "LINKDIR")
        uid, gid = self._owner(tree, entry, rule, base)
        default_mode = 0o755 if is_dir else 0o644
        mode = rule.mode if rule.mode is not None else (
            stat.S_IMODE(base.meta.mode) if base is not None else default_mode)
        kind = stat.S_IFDIR if is_dir else stat.S_IFREG
        return NodeAttrs(kind | stat.S_IMODE(mode), uid, gid)

    @staticmethod
    def copies_base(item: Writable) -> bool:
        """Whether the path starts as a copy of the tree's entry (-d over a directory for a
        directory rule, over a regular file for a file rule), else empty."""
        base = item.base
        if not item.rule.duplicate or base is None:
            return False
        if item.rule.kind in ("RAMDIR", "LINKDIR"):
            return base.contribution is not None
        return stat.S_ISREG(base.meta.mode)

    def _owner(self, tree: MergedRoots, entry: Entry, rule: Any,
               base: Child | None) -> tuple[int, int]:
        uid = base.meta.uid if base is not None else 0
        gid = base.meta.gid if base is not None else 0
        owners = OwnerTables(tree)
        if rule.user is not None:
            uid = owners.numeric_id(entry, "etc/passwd", rule.user, rule)
        if rule.group is not None:
            gid = owners.numeric_id(entry, "etc/group", rule.group, rule)
        return uid, gid


class OwnerTables:
    """-u/-g: a number, or a name looked up in the node's own /etc/passwd or /etc/group (what
    the node itself would use: oneSIS's rc.preinit chowns on the node). Each distinct table
    file is read once."""

    def __init__(self, tree: MergedRoots) -> None:
        self.tree = tree
        self._tables: dict[tuple[int, str], dict[str, str]] = {}

    def check(self, entry: Entry, rule: RamPath) -> None:
        if rule.user is not None:
            self.numeric_id(entry, "etc/passwd", rule.user, rule)
        if rule.group is not None:
            self.numeric_id(entry, "etc/group", rule.group, rule)

    def numeric_id(self, entry: Entry, table: str, name: str, rule: RamPath) -> int:
        if name.isascii() and name.isdigit():
            return int(name)  # range checked when the line was parsed
        value = self._table(entry, table).get(name)
        if value is None:
            raise ConfigError(f"{rule.kind} {rule.pattern}: {name!r} is not in /{table} of "
                              f"node {entry.name}", file=rule.file, line=rule.line,
                              hint="use a numeric id, or add the name to the image's "
                                   f"/{table}")
        if not (value.isascii() and value.isdigit()) or int(value[:11]) > MAX_ID:
            raise ConfigError(f"{rule.kind} {rule.pattern}: {name!r} has id {value[:20]!r} in "
                              f"/{table} of node {entry.name}, not 0 to {MAX_ID}",
                              file=rule.file, line=rule.line,
                              hint=f"fix the entry in the image's /{table}, or use a number")
        return int(value)

    def _table(self, entry: Entry, table: str) -> dict[str, str]:
        found = self.tree.merged_lookup(entry, table)
        if found is None or not stat.S_ISREG(found[1].meta.mode):
            return {}
        key = (found[1].layer, table)
        if key not in self._tables:
            fd = self.tree.store.open_file(found[1].layer, table)
            ids: dict[str, str] = {}
            with os.fdopen(fd, "r", errors="surrogateescape") as f:
                for line in f:
                    fields = line.split(":")
                    if len(fields) > 2 and fields[2].strip().isdigit():
                        ids.setdefault(fields[0], fields[2].strip())
            self._tables[key] = ids
        return self._tables[key]
