"""Where each node's oneSIS rules come from, and making its persistent paths.

By default a node's rules are ``/etc/sysimage.conf`` as the node's own merged root has it (an
override may carry a different one), with INCLUDE paths taken in that same root; every
distinct file is parsed once, at start, so a bad line stops the mount with file and line.
``--onesis-config FILE`` gives one file for every node instead (its INCLUDEs are relative to
the file's directory).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .onesis_view import NodeOnesis, Writable
from .resolve import Child
from .sources.onesis import SysimageConfig, parse_sysimage_conf
from .state import DIR_MODE, FILE_MODE, NodeAttrs, write_node_attrs

if TYPE_CHECKING:
    from .state import NodeState
    from .tree import Entry, Tree

SYSIMAGE_CONF = "etc/sysimage.conf"
_COPY_CHUNK = 1 << 20
log = logging.getLogger("onesuite.state")


@dataclass
class OnesisSource:
    config_file: Path | None = None
    policy: str = "ram"
    ram_prefix: str = "/ram"
    _configs: dict[str, SysimageConfig | None] = field(default_factory=dict)

    # ----- reading the configurations ---------------------------------------------------
    def load(self, tree: Tree) -> None:
        """Parse every distinct sysimage.conf the nodes see (errors: ConfigError)."""
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
        return parse_sysimage_conf(text, filename=str(path), load_include=load_include)

    def _parse_in_tree(self, tree: Tree, entry: Entry, found: Child) -> SysimageConfig:
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
                                   load_include=load_include)

    def distinct_configs(self) -> list[SysimageConfig]:
        return list({id(c): c for c in self._configs.values() if c is not None}.values())

    def config_of(self, host: str) -> SysimageConfig | None:
        return self._configs.get(host)

    def for_node(self, tree: Tree, entry: Entry) -> NodeOnesis | None:
        config = self._configs.get(entry.name)
        if config is None:
            return None
        return NodeOnesis(config.rules_for(entry.name), self.policy, self.ram_prefix)

    def describe(self, tree: Tree, entry: Entry) -> dict[str, Any] | None:
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

    # ----- persistent paths -------------------------------------------------------------
    def create_writable(self, tree: Tree, entry: Entry, state: NodeState, path: str,
                        item: Writable) -> None:
        """Make a node's persistent path the first time it is used: empty, or a copy of the
        tree's entry with -d; mode and owner from -m/-u/-g, else mirrored (B.2.2). Built in
        the staging area, which is emptied whatever happens: a failed copy (a full disk)
        leaves nothing behind, and the next use tries again."""
        try:
            with state.staging() as staging:
                built = staging / "entry"
                self._build_writable(tree, entry, item, built)
                state.make_parents(path)
                state.publish(built, path)
        except OSError as exc:
            log.error("node %s: cannot make persistent path /%s (%s %s, %s:%s): %s",
                      entry.name, path, item.rule.kind, item.rule.pattern, item.rule.file,
                      item.rule.line, exc.strerror or exc)
            raise

    def _build_writable(self, tree: Tree, entry: Entry, item: Writable, built: Path) -> None:
        rule, base = item.rule, item.base
        is_dir = rule.kind in ("RAMDIR", "LINKDIR")
        base_path = f"{item.base_parent}/{base.name}" if base and item.base_parent else (
            base.name if base else "")
        if is_dir:
            if rule.duplicate and base is not None and base.contribution is not None:
                self._copy_dir(tree, base, base_path, built)
            else:
                os.mkdir(built, DIR_MODE)
        elif rule.duplicate and base is not None and stat.S_ISREG(base.meta.mode):
            self._copy_file(tree, base.layer, base_path, built)
        else:
            os.close(os.open(built, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        uid, gid = self._owner(tree, entry, rule, base)
        default_mode = 0o755 if is_dir else 0o644
        mode = rule.mode if rule.mode is not None else (
            stat.S_IMODE(base.meta.mode) if base is not None else default_mode)
        kind = stat.S_IFDIR if is_dir else stat.S_IFREG
        write_node_attrs(built, NodeAttrs(kind | stat.S_IMODE(mode), uid, gid))

    def _owner(self, tree: Tree, entry: Entry, rule: Any, base: Child | None) -> tuple[int, int]:
        uid = base.meta.uid if base is not None else 0
        gid = base.meta.gid if base is not None else 0
        if rule.user is not None:
            uid = _numeric_id(tree, entry, "etc/passwd", rule.user, rule)
        if rule.group is not None:
            gid = _numeric_id(tree, entry, "etc/group", rule.group, rule)
        return uid, gid

    def _copy_file(self, tree: Tree, layer: int, path: str, dest: Path) -> None:
        with os.fdopen(tree.store.open_file(layer, path), "rb") as src:
            out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                             FILE_MODE)
            with os.fdopen(out_fd, "wb") as out:
                shutil.copyfileobj(src, out, _COPY_CHUNK)

    def _copy_dir(self, tree: Tree, base: Child, base_path: str, dest: Path) -> None:
        """Copy a merged directory (all its layers) to dest. Stored 0700/0600 and the
        daemon's; each entry's mode, owner and device number are node attributes, and a
        device node, FIFO or socket is an empty stand-in (state.py)."""
        assert base.contribution is not None
        mdir = tree.resolver.merged_dir(base_path, base.contribution, base.layer, base.meta)
        os.mkdir(dest, DIR_MODE)
        for name in mdir.names:
            child = mdir.children[name]
            source = f"{base_path}/{name}" if base_path else name
            target = dest / name
            mode = child.meta.mode
            if child.contribution is not None:
                self._copy_dir(tree, child, source, target)
            elif stat.S_ISREG(mode):
                self._copy_file(tree, child.layer, source, target)
            elif stat.S_ISLNK(mode):
                os.symlink(tree.store.readlink(child.layer, source), target)
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            write_node_attrs(target, NodeAttrs.of(child.meta))
            os.utime(target, ns=(child.meta.atime_ns, child.meta.mtime_ns),
                     follow_symlinks=False)


def _numeric_id(tree: Tree, entry: Entry, table: str, name: str, rule: Any) -> int:
    """-u/-g: a number, or a name looked up in the node's own /etc/passwd or /etc/group."""
    if name.isdigit():
        return int(name)
    found = tree.merged_lookup(entry, table)
    if found is not None:
        fd = tree.store.open_file(found[1].layer, table)
        with os.fdopen(fd, "r", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(":")
                if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
                    return int(fields[2])
    raise ConfigError(f"{rule.kind} {rule.pattern}: {name!r} is not in the node's /{table}",
                      file=rule.file, line=rule.line, hint="use a numeric id or add the name")
