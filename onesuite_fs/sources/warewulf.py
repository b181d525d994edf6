"""Reading a Warewulf 4 site: warewulf.conf, nodes.conf, images and overlays (docs/warewulf.md).

``--warewulf-root PREFIX`` is where the server's tree is, as ``--root`` is for SystemImager:
every path Warewulf names (its defaults, warewulf.conf ``paths:``) is taken under PREFIX.
What a node is follows Warewulf's own code (cited in docs/warewulf.md): its profiles, nested
ones first (node/mergo.go getProfilesProfiles), merged in order and the node's own fields
last; scalars override when set, lists append, maps merge key by key (mergo.Merge with
WithAppendSlice and WithOverride); ``~name`` removes a list entry (methods.go cleanList).
Pure reading: nothing here writes (rendering is warewulf_build.py).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.errors import ConfigError
from ..core.limits import Limits

MAX_YAML_BYTES = 64 << 20  # nodes.conf of 100,000 nodes is ~30 MB
MAX_YAML_DEPTH = 32  # nodes.conf nests five levels (nodes, node, netdevs, netdev, tags)
_OVERLAY_NAME = re.compile(r"^[a-zA-Z0-9\-._:]+$")  # overlay/config.go validOverlayName
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")

# Defaults of a packaged Warewulf (warewulf.spec: --prefix=/usr --sysconfdir=/etc
# --localstatedir=/var/lib; Variables.mk WWOVERLAYDIR, WWCHROOTDIR).
DEFAULT_PATHS = {
    "sysconfdir": "/etc",
    "datadir": "/usr/share",
    "localstatedir": "/var/lib",
    "wwoverlaydir": "/var/lib/warewulf/overlays",
    "wwchrootdir": "/var/lib/warewulf/chroots",
    "wwprovisiondir": "/var/lib/warewulf/provision",
    "bindir": "/usr/bin",
    "cachedir": "/var/cache",
    "ipxesource": "/usr/share/ipxe",
    "srvdir": "/var/lib",
    "firewallddir": "/usr/lib/firewalld/services",
    "systemddir": "/usr/lib/systemd/system",
    "wwclientdir": "/warewulf",
    "wwfilesdir": "/var/lib/warewulf",
}
LIST_FIELDS = ("profiles", "system overlay", "runtime overlay")


@dataclass(frozen=True)
class OverlayUse:
    """One overlay in a node's system or runtime list, and who put it there."""

    context: str  # "system" or "runtime"
    name: str
    source: str  # "profile NAME" or "node"


@dataclass(frozen=True)
class WWNode:
    name: str
    profiles: tuple[str, ...]  # expanded, nested first (getNodeProfiles)
    image: str
    overlays: tuple[OverlayUse, ...]  # system ones, then runtime ones, in Warewulf's order
    fields: dict  # the merged nodes.conf mapping (YAML keys), for templates
    line: int  # where nodes.conf defines it


@dataclass(frozen=True)
class WWProfile:
    name: str
    image: str | None
    overlays: tuple[OverlayUse, ...]
    line: int


@dataclass(frozen=True)
class WarewulfSite:
    root: Path
    conf_file: Path
    conf: dict  # warewulf.conf, {} when absent
    paths: dict[str, str]  # as Warewulf names them (absolute, not under root)
    nodes_conf: Path
    nodes: dict[str, WWNode]
    profiles: dict[str, WWProfile]
    images: dict[str, Path]  # name -> rootfs under root
    overlays: dict[str, Path]  # name -> rootfs under root (site over distribution)
    mtime_ns: int  # nodes.conf's: the time rendered files are given
    warnings: tuple[str, ...] = field(default=())

    def under_root(self, server_path: str) -> Path:
        return Path(os.path.normpath(self.root / server_path.lstrip("/")))


def primary_address(node: WWNode) -> str | None:
    """The node's address on its primary network device (methods.go updatePrimaryNetDev:
    'primary network', else the first device by name), without a prefix length."""
    devices = node.fields.get("network devices") or {}
    primary = str(node.fields.get("primary network") or "")
    if primary not in devices and devices:
        primary = sorted(devices)[0]
    address = (devices.get(primary) or {}).get("ipaddr")
    return str(address).split("/")[0] if address else None


# ----- YAML, bounded --------------------------------------------------------------------------
# libyaml's parser when PyYAML has it (5x faster for a large nodes.conf); same events.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Marked(dict):
    """A mapping that remembers where each key is (line numbers for messages)."""

    lines: dict[str, int]
    line: int


def read_yaml(path: Path, what: str) -> object:
    """A YAML file without aliases (no expansion bombs), size and depth bounded; mappings
    come back as _Marked with each key's line."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", file=str(path)) from None
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"{what} is larger than {MAX_YAML_BYTES >> 20} MiB", file=str(path),
                          hint="this is no Warewulf configuration")
    with open(path, "rb") as handle:  # read bounded: the file may grow after the stat
        data = handle.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} is larger than {MAX_YAML_BYTES >> 20} MiB", file=str(path),
                          hint="this is no Warewulf configuration")
    text = data.decode(errors="replace")
    try:
        depth = 0
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.AliasEvent):
                raise ConfigError("YAML aliases (*name) are not accepted", file=str(path),
                                  line=event.start_mark.line + 1,
                                  hint="write the values out: wwctl never writes aliases, and "
                                       "an alias can expand a small file beyond memory")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:  # before compose, which recurses per level
                    raise ConfigError(f"YAML nested deeper than {MAX_YAML_DEPTH}",
                                      file=str(path), line=event.start_mark.line + 1)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
                          file=str(path), line=mark.line + 1 if mark else None) from None
    return None if node is None else _construct(node, str(path), 0)


def _construct(node: yaml.Node, file: str, depth: int) -> object:
    if depth > MAX_YAML_DEPTH:
        raise ConfigError(f"YAML nested deeper than {MAX_YAML_DEPTH}", file=file,
                          line=node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out = _Marked()
        out.lines = {}
        out.line = node.start_mark.line + 1
        for key_node, value_node in node.value:
            key = _construct(key_node, file, depth + 1)
            if isinstance(key, dict | list):
                raise ConfigError("a mapping key must be a scalar", file=file,
                                  line=key_node.start_mark.line + 1)
            key = "" if key is None else str(key) if not isinstance(key, bool) else \
                str(key).lower()
            out[key] = _construct(value_node, file, depth + 1)
            out.lines[key] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, file, depth + 1) for item in node.value]
    if node.tag == "tag:yaml.org,2002:null":
        return None
    # Text, as Go's yaml decodes a scalar into a string field; a plain (unquoted) one is
    # marked, so where Warewulf decodes into interface{} (resources) it can be typed.
    return PlainScalar(node.value) if node.style in (None, "") else str(node.value)


class PlainScalar(str):
    """An unquoted YAML scalar: typed like yaml.v3 does when decoded into interface{}."""

    def typed(self) -> object:
        text = str(self)
        if text in ("true", "True", "TRUE", "false", "False", "FALSE"):
            return text.lower() == "true"
        if re.fullmatch(r"[-+]?\d+", text):
            return int(text)
        if re.fullmatch(r"0x[0-9a-fA-F]+|0o[0-7]+", text):
            return int(text, 0)
        if re.fullmatch(r"[-+]?(\.\d+|\d+(\.\d*)?)([eE][-+]?\d+)?", text):
            return float(text)
        return text


def _line(mapping: object, key: str) -> int | None:
    return getattr(mapping, "lines", {}).get(key) if isinstance(mapping, dict) else None


# ----- warewulf.conf -----------------------------------------------------------------------------
def read_conf(root: Path) -> tuple[Path, dict, dict[str, str]]:
    conf_file = root / "etc/warewulf/warewulf.conf"
    conf: dict = {}
    if conf_file.is_file():
        loaded = read_yaml(conf_file, "warewulf.conf")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("warewulf.conf must be a YAML mapping", file=str(conf_file))
        conf = loaded or {}
    paths = dict(DEFAULT_PATHS)
    given = conf.get("paths") or {}
    if not isinstance(given, dict):
        raise ConfigError("paths: must be a mapping", file=str(conf_file),
                          line=_line(conf, "paths"))
    for key, value in given.items():
        if key in paths and value:
            text = str(value)
            if not text.startswith("/") or ".." in text.split("/"):
                raise ConfigError(f"paths: {key}: {text} must be absolute, without '..'",
                                  file=str(conf_file), line=_line(given, key),
                                  hint="it is taken under --warewulf-root")
            paths[key] = os.path.normpath(text)
    if "wwoverlaydir" not in given and "localstatedir" in given:
        paths["wwoverlaydir"] = f"{paths['localstatedir']}/warewulf/overlays"
    if "wwchrootdir" not in given and "localstatedir" in given:
        paths["wwchrootdir"] = f"{paths['localstatedir']}/warewulf/chroots"
    return conf_file, conf, paths


# ----- nodes.conf ---------------------------------------------------------------------------------
def _merge(dest: dict, src: dict) -> None:
    """mergo.Merge(dest, src, WithAppendSlice, WithOverride) on YAML data: a set scalar
    overrides, a list appends, a mapping merges key by key."""
    for key, value in src.items():
        if isinstance(value, dict):
            inner = dest.get(key)
            if not isinstance(inner, dict):
                inner = dest[key] = {}
            _merge(inner, value)
        elif isinstance(value, list):
            old = dest.get(key)
            dest[key] = ([*old] if isinstance(old, list) else []) + list(value)
        elif value is not None and value != "":
            dest[key] = value


def clean_list(items: list[str]) -> list[str]:
    """methods.go cleanList: '~name' removes every 'name' (and itself)."""
    negated = {item[1:] for item in items if item.startswith("~")}
    return [item for item in items if item not in negated and item.lstrip("~") not in negated]


def _profile_chain(profiles: dict, names: list[str], visited: set[str]) -> list[str]:
    """mergo.go getProfilesProfiles: each profile's own profiles first, each once."""
    out: list[str] = []
    for name in names:
        if name.startswith("~"):
            out.append(name)
            continue
        if name in visited:
            continue
        visited.add(name)
        profile = profiles.get(name)
        if isinstance(profile, dict):
            out += _profile_chain(profiles, _strings(profile.get("profiles")), visited)
        out.append(name)
    return out


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _check_lists(entry: dict, file: str, what: str) -> None:
    for key in LIST_FIELDS:
        value = entry.get(key)
        if value is not None and not isinstance(value, list):
            raise ConfigError(f"{what}: {key!r} must be a list", file=file,
                              line=_line(entry, key), hint=f"write {key}: [{value}]")
    for device, netdev in (entry.get("network devices") or {}).items():
        if not isinstance(netdev, dict):
            raise ConfigError(f"{what}: network device {device!r} must be a mapping",
                              file=file, line=_line(entry.get("network devices"), device))
        for key in ("ipaddr", "netmask", "gateway", "ipaddr6", "gateway6"):
            value = netdev.get(key)
            if value not in (None, ""):
                try:
                    ipaddress.ip_address(str(value).split("/")[0])
                except ValueError:
                    raise ConfigError(f"{what}: network device {device!r}: {key} "
                                      f"{value!r} is not an IP address", file=file,
                                      line=_line(netdev, key)) from None


def merge_node(name: str, raw: dict, profiles: dict) -> tuple[dict, list[str], list[OverlayUse]]:
    """MergeNode (node/mergo.go): (merged fields, profile chain, overlays with sources)."""
    chain = clean_list(_profile_chain(profiles, _strings(raw.get("profiles")), set()))
    merged: dict = {}
    uses: dict[str, list[OverlayUse]] = {"system": [], "runtime": []}
    for profile_name in chain:
        profile = profiles.get(profile_name)
        if not isinstance(profile, dict):
            continue  # Warewulf warns "profile not found" and goes on
        _merge(merged, {k: v for k, v in profile.items() if k not in ("profiles", "comment")})
        for context in uses:
            uses[context] += [OverlayUse(context, n, f"profile {profile_name}")
                              for n in _strings(profile.get(f"{context} overlay"))]
    _merge(merged, {k: v for k, v in raw.items() if k != "profiles"})
    for context in uses:
        uses[context] += [OverlayUse(context, n, "node")
                          for n in _strings(raw.get(f"{context} overlay"))]
    merged["profiles"] = _strings(raw.get("profiles"))
    overlays: list[OverlayUse] = []
    for context in ("system", "runtime"):
        names = clean_list([u.name for u in uses[context]])
        merged[f"{context} overlay"] = names
        kept = [u for u in uses[context] if not u.name.startswith("~")]
        # cleanList keeps order and duplicates; match each kept name to its first source.
        for wanted in names:
            found = next(i for i, u in enumerate(kept) if u.name == wanted)
            overlays.append(kept.pop(found))
    kernel = merged.get("kernel")
    if isinstance(kernel, dict) and isinstance(kernel.get("args"), list):
        kernel["args"] = clean_list(_strings(kernel["args"]))
    return merged, chain, overlays


def read_nodes_conf(path: Path, limits: Limits) -> tuple[dict, dict]:
    data = read_yaml(path, "nodes.conf")
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError("nodes.conf must be a YAML mapping", file=str(path))
    nodes = data.get("nodes") or {}
    profiles = data.get("nodeprofiles") or {}
    for key, value in (("nodes", nodes), ("nodeprofiles", profiles)):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping of names", file=str(path),
                              line=_line(data, key))
    if len(nodes) > limits.max_nodes:
        raise ConfigError(f"{len(nodes):,} nodes, more than max_nodes {limits.max_nodes:,}",
                          file=str(path), hint="raise [limits] max_nodes if this is real")
    for kind, table in (("node", nodes), ("profile", profiles)):
        for name, entry in table.items():
            if not _NODE_NAME.match(name):
                raise ConfigError(f"{kind} name {name!r} is not a host name", file=str(path),
                                  line=_line(table, name),
                                  hint="letters, digits, '.', '-', '_'; at most 253")
            if entry is None:
                table[name] = entry = _Marked()
                entry.lines, entry.line = {}, _line(table, name) or 0
            if not isinstance(entry, dict):
                raise ConfigError(f"{kind} {name!r} must be a mapping", file=str(path),
                                  line=_line(table, name))
            _check_lists(entry, str(path), f"{kind} {name!r}")
    return nodes, profiles


def _overlay_dir(root: Path, paths: dict[str, str], name: str) -> Path | None:
    """overlay/config.go Get: the site overlay, else the distribution one; its rootfs
    (overlay.go Rootfs: DIR/rootfs when that is a directory, else DIR)."""
    for base in (paths["wwoverlaydir"], f"{paths['datadir']}/warewulf/overlays"):
        directory = root / base.lstrip("/") / name
        if directory.is_dir():
            rootfs = directory / "rootfs"
            return rootfs if rootfs.is_dir() else directory
    return None


def _inside(root: Path, path: Path, what: str, file: str, line: int | None) -> Path:
    """The real path of a layer, refused when a symlink takes it out of the site."""
    real = Path(os.path.realpath(path))
    top = Path(os.path.realpath(root))
    if real != top and top not in real.parents:
        raise ConfigError(f"{what} is {real}, outside --warewulf-root {root}", file=file,
                          line=line, hint="replace the symlink by the directory")
    return real


def load_warewulf(root: Path, limits: Limits) -> WarewulfSite:
    """Read and check the whole Warewulf site; ConfigError (file:line) for what is unusable."""
    root = Path(os.path.normpath(root))
    conf_file, conf, paths = read_conf(root)
    nodes_conf = root / paths["sysconfdir"].lstrip("/") / "warewulf/nodes.conf"
    raw_nodes, raw_profiles = read_nodes_conf(nodes_conf, limits)
    file = str(nodes_conf)
    warnings: list[str] = []
    overlays: dict[str, Path] = {}
    images: dict[str, Path] = {}

    def overlay(use: OverlayUse, line: int | None, who: str) -> None:
        if use.name in overlays:
            return
        if not _OVERLAY_NAME.match(use.name):
            raise ConfigError(f"{who}: overlay name {use.name!r} has illegal characters",
                              file=file, line=line)
        found = _overlay_dir(root, paths, use.name)
        if found is None:
            raise ConfigError(f"{who}: {use.context} overlay {use.name!r} ({use.source}) "
                              "does not exist", file=file, line=line,
                              hint=f"create it under {paths['wwoverlaydir']} (wwctl overlay "
                                   "create) or remove it from the list; Warewulf refuses to "
                                   "build this node's overlays")
        _inside(root, found, f"overlay {use.name!r}", file, line)
        overlays[use.name] = found

    def image(name: str, line: int | None, who: str) -> None:
        if name in images:
            return
        if not _OVERLAY_NAME.match(name):
            raise ConfigError(f"{who}: image name {name!r} has illegal characters",
                              file=file, line=line)
        rootfs = root / paths["wwchrootdir"].lstrip("/") / name / "rootfs"
        if not rootfs.is_dir():
            raise ConfigError(f"{who}: image {name!r} has no rootfs at {rootfs}", file=file,
                              line=line, hint="import or build the image (wwctl image "
                                              "import), or fix 'image name'")
        _inside(root, rootfs, f"image {name!r}", file, line)
        images[name] = rootfs

    profiles: dict[str, WWProfile] = {}
    for name, raw in raw_profiles.items():
        uses = tuple(OverlayUse(c, n, f"profile {name}") for c in ("system", "runtime")
                     for n in clean_list(_strings(raw.get(f"{c} overlay"))))
        image_name = raw.get("image name") or None
        profiles[name] = WWProfile(name, str(image_name) if image_name else None, uses,
                                   _line(raw_profiles, name) or 0)
    nodes: dict[str, WWNode] = {}
    for name, raw in raw_nodes.items():
        line = _line(raw_nodes, name)
        merged, chain, uses = merge_node(name, raw, raw_profiles)
        for missing in (p for p in chain if p not in raw_profiles and not p.startswith("~")):
            warnings.append(f"{file}:{line}: node {name}: profile {missing!r} not found "
                            "(Warewulf warns and goes on)")
        image_name = merged.get("image name")
        if not image_name:
            raise ConfigError(f"node {name!r} has no image: neither it nor its profiles "
                              f"({', '.join(chain) or 'none'}) set 'image name'", file=file,
                              line=line, hint="set 'image name' in a profile or the node")
        image(str(image_name), line, f"node {name!r}")
        for use in uses:
            owner = raw_profiles.get(use.source.removeprefix("profile ")) \
                if use.source.startswith("profile ") else raw
            overlay(use, _line(owner, f"{use.context} overlay") or line, f"node {name!r}")
        nodes[name] = WWNode(name, tuple(p for p in chain if p in raw_profiles),
                             str(image_name), tuple(uses), merged, line or 0)
    for profile in profiles.values():
        if profile.image:
            try:
                image(profile.image, profile.line, f"profile {profile.name!r}")
            except ConfigError as exc:
                warnings.append(f"{exc.message}; its group view is not shown")
        for use in profile.overlays:
            try:
                overlay(use, profile.line, f"profile {profile.name!r}")
            except ConfigError as exc:
                warnings.append(exc.message)
    try:
        mtime = nodes_conf.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return WarewulfSite(root, conf_file, conf, paths, nodes_conf, nodes, profiles, images,
                        overlays, mtime, tuple(warnings))
