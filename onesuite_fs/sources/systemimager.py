"""Reading a SystemImager image server: layout, systemimager.conf, rsync stubs, topology.

``--root PREFIX`` is where the server's tree is; every absolute path the server's own files
name (stub ``path=``, systemimager.conf directories) is taken under PREFIX (domain.md A.1).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from ..model import Cluster, Image, Node, Site, SiteLayout
from ..names import check_name, name_problem
from ..settings import Settings
from .cluster_txt import parse_cluster_txt
from .cluster_xml import parse_cluster_xml, run_dynamic_node

# si_lsimage skips these rsync modules: they are not images (domain.md A.1.2).
RESERVED_MODULES = {"scripts", "boot", "overrides", "torrents"}
_CONF_LINE = re.compile(r"^\s*([A-Z_]+)\s*=\s*(.*?)\s*$")
_STUB_NAME = re.compile(r"^\d+")
_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_PATH_KEY = re.compile(r"^\s*path\s*=\s*(\S+)\s*$")


def under_root(root: Path, server_path: str) -> Path:
    """A path as the server names it (absolute), taken under --root."""
    return root / server_path.lstrip("/")


def read_systemimager_conf(path: Path) -> dict[str, str]:
    """KEY = value pairs of systemimager.conf (classic format); missing file = {}."""
    if not path.is_file():
        return {}
    values = {}
    for raw in path.read_text(errors="surrogateescape").splitlines():
        line = raw.split("#", 1)[0]
        match = _CONF_LINE.match(line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def resolve_layout(settings: Settings) -> SiteLayout:
    """Where everything is: explicit settings first, then systemimager.conf, then defaults."""
    root = settings.root
    config_dir = root / "etc/systemimager"
    conf = read_systemimager_conf(config_dir / "systemimager.conf")

    def pick(explicit: Path | None, key: str, default: str) -> Path:
        if explicit is not None:
            return explicit
        return under_root(root, conf.get(key) or default)

    return SiteLayout(
        root=root,
        config_dir=config_dir,
        cluster_xml=settings.cluster_xml or config_dir / "cluster.xml",
        rsync_stubs_dir=pick(settings.rsync_stubs_dir, "RSYNC_STUB_DIR",
                             "/etc/systemimager/rsync_stubs"),
        images_dir=pick(settings.images_dir, "DEFAULT_IMAGE_DIR",
                        "/var/lib/systemimager/images"),
        overrides_dir=pick(settings.overrides_dir, "DEFAULT_OVERRIDE_DIR",
                           "/var/lib/systemimager/overrides"),
        scripts_dir=pick(settings.scripts_dir, "AUTOINSTALL_SCRIPT_DIR",
                         "/var/lib/systemimager/scripts"),
    )


def read_rsync_stubs(stub_dir: Path) -> dict[str, tuple[str, str]]:
    """module -> (server path, stub file) from the stubs gen_rsyncd_conf would concatenate."""
    modules: dict[str, tuple[str, str]] = {}
    if not stub_dir.is_dir():
        return modules
    names = sorted(p.name for p in stub_dir.iterdir()
                   if _STUB_NAME.match(p.name) and not p.name.endswith(("~", ".bak")))
    for name in names:
        stub = stub_dir / name
        if not stub.is_file():
            continue
        section = None
        for raw in stub.read_text(errors="surrogateescape").splitlines():
            if raw.lstrip().startswith(("#", ";")):
                continue
            header = _SECTION.match(raw)
            if header:
                section = header.group(1).strip()
                continue
            path = _PATH_KEY.match(raw)
            if path and section is not None:
                modules[section] = (path.group(1), str(stub))
    return modules


def discover_images(layout: SiteLayout, explicit: dict[str, Path]) -> dict[str, Image]:
    """Every image the server knows: explicit settings, rsync stubs, the images directory."""
    images: dict[str, Image] = {}
    if layout.images_dir.is_dir():
        for entry in sorted(layout.images_dir.iterdir()):
            if entry.is_dir() and name_problem(entry.name) is None:
                images[entry.name] = Image(entry.name, entry, "images directory")
    for module, (server_path, stub) in read_rsync_stubs(layout.rsync_stubs_dir).items():
        if module not in RESERVED_MODULES and name_problem(module) is None:
            images[module] = Image(module, under_root(layout.root, server_path),
                                   f"rsync stub {stub}")
    for name, path in explicit.items():
        images[name] = Image(check_name("image", name), path, "configuration file")
    return images


def read_cluster(layout: SiteLayout, settings: Settings,
                 warn: Callable[[str], None]) -> Cluster:
    """cluster.xml when present, else the scripts/cluster.txt clients read."""
    if layout.cluster_xml.is_file():
        runner = run_dynamic_node if settings.allow_dynamic_nodes else None
        return parse_cluster_xml(layout.cluster_xml, dynamic_nodes=runner, warn=warn,
                                 limits=settings.limits)
    if layout.cluster_txt.is_file():
        return parse_cluster_txt(layout.cluster_txt, settings.limits)
    raise ConfigError(
        f"no cluster topology: neither {layout.cluster_xml} nor {layout.cluster_txt} exists",
        hint="check --root (the server's tree must hold etc/systemimager/cluster.xml) "
             "or name the file with cluster_xml in the --config file")


def assign_images(cluster: Cluster, images: dict[str, Image]) -> dict[str, Node]:
    """Each node's image: the most important of its groups that names one (A.3.3)."""
    nodes: dict[str, Node] = {}
    missing: dict[str, list[str]] = {}
    for host in cluster.hosts():
        groups = cluster.groups_of(host)
        chosen = next((g for g in groups if g.image), None)
        if chosen is None:
            file, line = _source_of(groups[0].source, cluster.source)
            raise ConfigError(
                f"node {host!r} has no image: none of its groups "
                f"({', '.join(g.name for g in groups)}) names an <image>",
                file=file, line=line, hint="add an <image> to one of those groups")
        assert chosen.image is not None
        if chosen.image not in images:
            missing.setdefault(chosen.image, []).append(f"{host} (group {chosen.name}, "
                                                        f"{chosen.source})")
        nodes[host] = Node(host, tuple(g.name for g in groups), chosen.image)
    if missing:
        image, askers = next(iter(missing.items()))
        more = f" and {len(askers) - 1} more node(s)" if len(askers) > 1 else ""
        first = next(g for g in cluster.groups if g.image == image)
        file, line = _source_of(first.source, cluster.source)
        raise ConfigError(f"image {image!r} does not exist; node {askers[0]}{more} asked "
                          f"for it", file=file, line=line,
                          hint="create the image (si_getimage), add its rsync stub, or fix "
                               "the group's <image>")
    for image in images.values():
        if not image.path.is_dir():
            users = [n.name for n in nodes.values() if n.image == image.name]
            if users:
                file, line = _stub_path_line(image)
                raise ConfigError(f"image {image.name!r} ({image.found_by}) has no directory "
                                  f"at {image.path}; node {users[0]} uses it",
                                  file=file, line=line,
                                  hint="fix the stub's path= or restore the image")
    return nodes


def _source_of(source: str, fallback: str) -> tuple[str, int | None]:
    """(file, line) of a Group.source "file:line"."""
    file, _, line = source.rpartition(":")
    return (file, int(line)) if file and line.isdigit() else (fallback, None)


def _stub_path_line(image: Image) -> tuple[str | None, int | None]:
    """Where the rsync stub that named an image says its path= (for the message only)."""
    if not image.found_by.startswith("rsync stub "):
        return None, None
    stub = image.found_by.removeprefix("rsync stub ")
    section = None
    try:
        lines = Path(stub).read_text(errors="surrogateescape").splitlines()
    except OSError:
        return stub, None
    for number, raw in enumerate(lines, 1):
        header = _SECTION.match(raw)
        if header:
            section = header.group(1).strip()
        elif section == image.name and _PATH_KEY.match(raw):
            return stub, number
    return stub, None


def present_overrides(overrides_dir: Path) -> frozenset[str]:
    """Names of the override directories that exist (a symlink to a directory counts: the
    layer root is configuration, not image content)."""
    try:
        entries = list(os.scandir(overrides_dir))
    except FileNotFoundError:
        return frozenset()
    return frozenset(e.name for e in entries if e.is_dir())


def load_site(settings: Settings) -> Site:
    """Read and validate the whole server; raises ConfigError on anything unusable."""
    warnings: list[str] = []
    layout = resolve_layout(settings)
    cluster = read_cluster(layout, settings, warnings.append)
    images = discover_images(layout, settings.images)
    nodes = assign_images(cluster, images)
    images = {name: image for name, image in images.items() if image.path.is_dir()}
    return Site(layout=layout, cluster=cluster, images=images, nodes=nodes,
                warnings=tuple(warnings), present_overrides=present_overrides(layout.overrides_dir))
