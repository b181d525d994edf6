"""Reading a SystemImager image server: layout, systemimager.conf, rsync stubs, topology.

``--root PREFIX`` is where the server's tree is; every absolute path the server's own files
name (stub ``path=``, systemimager.conf directories) is taken under PREFIX (domain.md A.1).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from ..core.errors import ConfigError
from ..core.model import Cluster, Image, Node, Site, SiteLayout
from ..core.names import check_name, name_problem
from .cluster_txt import parse_cluster_txt
from .cluster_xml import parse_cluster_xml, run_dynamic_node
from .install_writes import install_writes
from .layer_roots import LayerPlaces, has_dotdot
from .options import SiteOptions
from .scripts import ScriptOverrides, node_scripts

# si_lsimage skips these rsync modules: they are not images (domain.md A.1.2).
RESERVED_MODULES = {"scripts", "boot", "overrides", "torrents"}
_CONF_LINE = re.compile(r"^\s*([A-Z_]+)\s*=\s*(.*?)\s*$")
_STUB_NAME = re.compile(r"^\d+")
_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_PATH_KEY = re.compile(r"^\s*path\s*=\s*(\S+)\s*$")


def under_root(root: Path, server_path: str) -> Path:
    """A path as the server names it (absolute), taken under --root, normalized."""
    return Path(os.path.normpath(root / server_path.lstrip("/")))


def read_systemimager_conf(path: Path) -> dict[str, tuple[str, int]]:
    """KEY -> (value, line) of systemimager.conf (classic format); missing file = {}."""
    if not path.is_file():
        return {}
    values = {}
    for number, raw in enumerate(path.read_text(errors="surrogateescape").splitlines(), 1):
        line = raw.split("#", 1)[0]
        match = _CONF_LINE.match(line)
        if match:
            values[match.group(1)] = (match.group(2), number)
    return values


def resolve_layout(settings: SiteOptions) -> SiteLayout:
    """Where everything is: explicit settings first, then systemimager.conf, then defaults.
    A directory systemimager.conf names stays below --root: no '..', not the root itself."""
    root = Path(os.path.normpath(settings.root))
    config_dir = root / "etc/systemimager"
    conf_file = config_dir / "systemimager.conf"
    conf = read_systemimager_conf(conf_file)

    def pick(explicit: Path | None, key: str, default: str) -> Path:
        if explicit is not None:
            return explicit
        value, line = conf.get(key) or (default, None)
        if not value:
            value, line = default, None
        if has_dotdot(value) or under_root(root, value) == root:
            raise ConfigError(f"{key} = {value} leaves the server's tree (--root {root}): "
                              "a directory with '..' or the root itself",
                              file=str(conf_file), line=line,
                              hint=f"name the directory by its absolute path without '..' "
                                   f"(the default is {default})")
        return under_root(root, value)

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


class StubPath(NamedTuple):
    server_path: str  # as path= writes it
    file: str  # the stub
    line: int


def read_rsync_stubs(stub_dir: Path) -> dict[str, StubPath]:
    """module -> its path= (with stub file and line) from the stubs gen_rsyncd_conf would
    concatenate."""
    modules: dict[str, StubPath] = {}
    if not stub_dir.is_dir():
        return modules
    names = sorted(p.name for p in stub_dir.iterdir()
                   if _STUB_NAME.match(p.name) and not p.name.endswith(("~", ".bak")))
    for name in names:
        stub = stub_dir / name
        if not stub.is_file():
            continue
        section = None
        text = stub.read_text(errors="surrogateescape")
        for number, raw in enumerate(text.splitlines(), 1):
            if raw.lstrip().startswith(("#", ";")):
                continue
            header = _SECTION.match(raw)
            if header:
                section = header.group(1).strip()
                continue
            path = _PATH_KEY.match(raw)
            if path and section is not None:
                modules[section] = StubPath(path.group(1), str(stub), number)
    return modules


def discover_images(layout: SiteLayout, explicit: dict[str, Path]) -> dict[str, Image]:
    """Every image the server knows: explicit settings, rsync stubs, the images directory.
    A stub's path= with '..' is refused here (its file and line); where each directory
    really is is checked by place_images."""
    images: dict[str, Image] = {}
    if layout.images_dir.is_dir():
        for entry in sorted(layout.images_dir.iterdir()):
            if entry.is_dir() and name_problem(entry.name) is None:
                images[entry.name] = Image(entry.name, entry, "images directory")
    for module, stub in read_rsync_stubs(layout.rsync_stubs_dir).items():
        if module not in RESERVED_MODULES and name_problem(module) is None:
            if has_dotdot(stub.server_path):
                raise ConfigError(f"image {module!r}: path={stub.server_path} has '..': it "
                                  f"may leave the images directory {layout.images_dir}",
                                  file=stub.file, line=stub.line,
                                  hint="write the image's directory without '..' "
                                       "(si_getimage writes DEFAULT_IMAGE_DIR/NAME)")
            images[module] = Image(module, under_root(layout.root, stub.server_path),
                                   f"rsync stub {stub.file}:{stub.line}")
    for name, path in explicit.items():
        images[name] = Image(check_name("image", name), path, "configuration file")
    return images


def read_cluster(layout: SiteLayout, settings: SiteOptions,
                 warn: Callable[[str], None]) -> Cluster:
    """cluster.xml when present, else the scripts/cluster.txt clients read."""
    if layout.cluster_xml.is_file():
        runner = run_dynamic_node if settings.allow_dynamic_nodes else None
        return parse_cluster_xml(layout.cluster_xml, dynamic_nodes=runner, warn=warn,
                                 limits=settings.limits, strict=settings.strict)
    if layout.cluster_txt.is_file():
        return parse_cluster_txt(layout.cluster_txt, settings.limits)
    raise ConfigError(
        f"no cluster topology: neither {layout.cluster_xml} nor {layout.cluster_txt} exists",
        hint="check --root (the server's tree must hold etc/systemimager/cluster.xml) "
             "or name the file with cluster_xml in the --config file")


def assign_images(cluster: Cluster, images: dict[str, Image]
                  ) -> tuple[dict[str, Node], dict[str, ConfigError]]:
    """Each node's image: the most important of its groups that names one (A.3.3). A node
    without one, or whose image does not exist or has no directory, is broken (the error
    says which file and line asked for it): upstream, only that node's install fails."""
    nodes: dict[str, Node] = {}
    broken: dict[str, ConfigError] = {}
    for host in cluster.hosts():
        groups = cluster.groups_of(host)
        chosen = next((g for g in groups if g.image), None)
        if chosen is None:
            file, line = _source_of(groups[0].source, cluster.source)
            broken[host] = ConfigError(
                f"node {host!r} has no image: none of its groups "
                f"({', '.join(g.name for g in groups)}) names an <image>",
                file=file, line=line, hint="add an <image> to one of those groups")
            continue
        assert chosen.image is not None
        if chosen.image not in images:
            file, line = _source_of(chosen.source, cluster.source)
            broken[host] = ConfigError(
                f"image {chosen.image!r} does not exist; node {host} (group {chosen.name}) "
                "asked for it", file=file, line=line,
                hint="create the image (si_getimage), add its rsync stub, or fix the "
                     "group's <image>")
            continue
        nodes[host] = Node(host, tuple(g.name for g in groups), chosen.image)
    for image in images.values():
        users = [n.name for n in nodes.values() if n.image == image.name]
        if not users:
            continue
        try:
            is_dir, why = image.path.is_dir(), "has no directory"
        except OSError as exc:  # a path= past PATH_MAX (ENAMETOOLONG), EACCES...
            is_dir, why = False, f"cannot be read ({exc.strerror})"
        if not is_dir:
            file, line = _stub_path_line(image)
            shown = str(image.path)
            if len(shown) > 200:
                shown = f"{shown[:200]}... ({len(shown):,} chars)"
            for user in users:
                broken[user] = ConfigError(f"image {image.name!r} ({image.found_by}) {why} "
                                           f"at {shown}; node {user} uses it",
                                           file=file, line=line,
                                           hint="fix the stub's path= or restore the image")
                del nodes[user]
    return nodes, broken


def refuse_broken(broken: dict[str, ConfigError]) -> None:
    """--strict: the whole site is refused for its first broken node, saying how many."""
    if not broken:
        return
    name, first = min(broken.items(), key=lambda item: (item[1].file or "",
                                                        item[1].line or 0, item[0]))
    more = f" (and {len(broken) - 1} more broken node(s))" if len(broken) > 1 else ""
    raise ConfigError(f"{first.message}{more}", file=first.file, line=first.line,
                      column=first.column, hint=first.hint)


def _source_of(source: str, fallback: str) -> tuple[str, int | None]:
    """(file, line) of a Group.source "file:line"."""
    file, _, line = source.rpartition(":")
    return (file, int(line)) if file and line.isdigit() else (fallback, None)


def _stub_path_line(image: Image) -> tuple[str | None, int | None]:
    """Where the rsync stub that named an image says its path= (for the message only)."""
    if not image.found_by.startswith("rsync stub "):
        return None, None
    stub = image.found_by.removeprefix("rsync stub ").rpartition(":")[0]  # "FILE:LINE"
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


def layer_places(settings: SiteOptions, layout: SiteLayout) -> LayerPlaces:
    """The rules of where layers may be, for this site (sources/layer_roots.py)."""
    explicit = [p for p in (settings.images_dir, settings.overrides_dir) if p is not None]
    explicit += [path.parent for path in settings.images.values()]
    return LayerPlaces(layout.root, tuple(explicit), settings.allow_layers_outside,
                       settings.allow_layers_outside_source)


def place_images(images: dict[str, Image], layout: SiteLayout, places: LayerPlaces,
                 used: set[str], warn: Callable[[str], None]) -> dict[str, Image]:
    """The images that may be served, each with its real path. An image elsewhere (a
    symlink, '..', a symlinked directory on the way) is refused, unless allowed; an unused
    entry of the images directory is only skipped (a convenience link of the admin's)."""
    placed: dict[str, Image] = {}
    for name, image in images.items():
        home = image.path.parent if image.found_by == "configuration file" else layout.images_dir
        file, _, line = image.found_by.removeprefix("rsync stub ").rpartition(":")
        from_stub = image.found_by.startswith("rsync stub ")
        try:
            placement = places.place(
                image.path, home,
                f"image {name!r}" if from_stub else f"image {name!r} ({image.found_by})",
                file=file if from_stub else None, line=int(line) if from_stub else None,
                fix="fix the stub's path=" if from_stub else "")
        except ConfigError as exc:
            if image.found_by == "images directory" and name not in used:
                warn(f"{exc.message}; not served (no group uses it)")
                continue
            raise
        if placement is None:
            continue  # no directory: assign_images has said whether that matters
        placed[name] = replace(image, real=placement.real, allowed_by=placement.allowed_by)
    return placed


def used_override_names(cluster: Cluster, images: dict[str, Image],
                        scripts: dict[str, ScriptOverrides] | None = None) -> set[str]:
    """Every override name some stack may lay: global, group, image-named and host ones, and
    those the nodes' autoinstall scripts name."""
    names = set(cluster.global_overrides) | set(cluster.hosts()) | set(images)
    for group in cluster.groups:
        names.update(group.overrides)
    for script in (scripts or {}).values():
        names.update(w for w in script.words if not w.startswith("$"))
    return names


def place_overrides(overrides_dir: Path, places: LayerPlaces, used: set[str]
                    ) -> tuple[frozenset[str], Path | None, dict[str, tuple[Path, Path]]]:
    """The override directories that exist and may be laid: (names, real path of the
    overrides directory, those elsewhere: name -> (real path, allowed_by)). An override
    that is a symlink or lies elsewhere is refused, unless allowed, when a stack uses it."""
    try:
        entries = list(os.scandir(overrides_dir))
    except (FileNotFoundError, NotADirectoryError):
        return frozenset(), None, {}
    present: set[str] = set()
    elsewhere: dict[str, tuple[Path, Path]] = {}
    home_inside = bool(entries) and places.home_is_inside(overrides_dir)
    for entry in entries:
        if entry.name not in used or not entry.is_dir():
            continue  # no stack lays it: never opened
        what = f"override {entry.name!r}"
        if not entry.is_symlink() and home_inside:
            present.add(entry.name)  # the common case: one check for the directory
            continue
        if entry.is_symlink():
            placement = places.place(Path(entry.path), overrides_dir, what,
                                     fix="replace the symlink by the directory")
        else:
            placement = places.place_child(overrides_dir, entry.name, what)
        if placement is None:
            continue
        present.add(entry.name)
        if placement.allowed_by is not None:
            elsewhere[entry.name] = (placement.real, placement.allowed_by)
    return frozenset(present), Path(os.path.realpath(overrides_dir)), elsewhere


def load_site(settings: SiteOptions) -> Site:
    """Read and validate the whole server; raises ConfigError on anything unusable. A node
    that alone cannot be served is in `Site.broken` (every node's, with `settings.strict`,
    refuses the site)."""
    warnings: list[str] = []
    layout = resolve_layout(settings)
    places = layer_places(settings, layout)
    cluster = read_cluster(layout, settings, warnings.append)
    images = discover_images(layout, settings.images)
    nodes, broken = assign_images(cluster, images)
    broken = {**cluster.broken, **broken}
    if settings.strict:
        refuse_broken(broken)
    used_images = {group.image for group in cluster.groups if group.image}
    images = place_images(images, layout, places, used_images, warnings.append)
    scripts, chosen = node_scripts(layout.scripts_dir,
                                   {h: (n.groups, n.image) for h, n in nodes.items()},
                                   warnings.append)
    present, overrides_real, elsewhere = place_overrides(
        layout.overrides_dir, places, used_override_names(cluster, images, scripts))
    written = install_writes(nodes, images, Path(cluster.source), chosen, layout.scripts_dir,
                             warnings.append)
    return Site(layout=layout, cluster=cluster, images=images, nodes=nodes,
                warnings=tuple(warnings), present_overrides=present,
                overrides_real_dir=overrides_real, overrides_elsewhere=elsewhere,
                broken=broken, scripts=scripts, chosen_scripts=chosen,
                install_writes=written)
