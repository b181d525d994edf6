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
from .scripts import ScriptOverrides, node_scripts, script_image
from .server_conf import appconfig_values, rsyncd_module_paths

# si_lsimage skips these rsync modules: they are not images (domain.md A.1.2).
RESERVED_MODULES = {"scripts", "boot", "overrides", "torrents"}
_STUB_NAME = re.compile(r"^\d+")


def under_root(root: Path, server_path: str) -> Path:
    """A path as the server names it (absolute), taken under --root, normalized."""
    return Path(os.path.normpath(root / server_path.lstrip("/")))


def read_systemimager_conf(path: Path) -> dict[str, tuple[str, int]]:
    """KEY (upper case) -> (value, line) of systemimager.conf as AppConfig reads it
    (sources/server_conf.py); missing file = {}."""
    if not path.is_file():
        return {}
    return appconfig_values(path.read_text(errors="surrogateescape"))


def resolve_layout(settings: SiteOptions) -> SiteLayout:
    """Where everything is: explicit settings first, then systemimager.conf, then defaults.
    A directory systemimager.conf names stays below --root: no '..', not the root itself."""
    root = Path(os.path.normpath(settings.root))
    config_dir = root / "etc/systemimager"
    conf_file = config_dir / "systemimager.conf"
    conf = read_systemimager_conf(conf_file)

    def pick(explicit: Path | None, key: str, default: str,
             module: StubPath | None = None) -> Path:
        if explicit is not None:
            return explicit
        if module is not None:
            return _module_dir(root, key, module)
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

    stubs_dir = pick(settings.rsync_stubs_dir, "RSYNC_STUB_DIR", "/etc/systemimager/rsync_stubs")
    # Clients fetch ::overrides/NAME/ and ::scripts/ (4.3 etc/rsync_stubs/10header lines
    # 43-47 define both modules with their own path=): where rsyncd serves them wins.
    modules = read_rsync_stubs(stubs_dir)
    return SiteLayout(
        root=root,
        config_dir=config_dir,
        cluster_xml=settings.cluster_xml or config_dir / "cluster.xml",
        rsync_stubs_dir=stubs_dir,
        images_dir=pick(settings.images_dir, "DEFAULT_IMAGE_DIR",
                        "/var/lib/systemimager/images"),
        overrides_dir=pick(settings.overrides_dir, "DEFAULT_OVERRIDE_DIR",
                           "/var/lib/systemimager/overrides", modules.get("overrides")),
        scripts_dir=pick(settings.scripts_dir, "AUTOINSTALL_SCRIPT_DIR",
                         "/var/lib/systemimager/scripts", modules.get("scripts")),
    )


def _module_dir(root: Path, key: str, module: StubPath) -> Path:
    """The directory an [overrides] or [scripts] stub serves, under --root: no '..', not
    the root itself (as for an image's path=, and as for systemimager.conf's `key`)."""
    if has_dotdot(module.server_path) or under_root(root, module.server_path) == root:
        raise ConfigError(f"path={module.server_path} leaves the server's tree (--root "
                          f"{root}): a directory with '..' or the root itself",
                          file=module.file, line=module.line,
                          hint=f"name the directory by its absolute path without '..' "
                               f"(it replaces {key} of systemimager.conf)")
    return under_root(root, module.server_path)


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
        text = stub.read_text(errors="surrogateescape")
        for module, (value, number) in rsyncd_module_paths(text).items():
            modules[module] = StubPath(value, str(stub), number)
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


def assign_images(cluster: Cluster, images: dict[str, Image], scripts_dir: Path | None = None
                  ) -> tuple[dict[str, Node], dict[str, ConfigError]]:
    """Each node's image: the most important of its groups that names one (A.3.3), else the
    IMAGENAME its autoinstall script sets (4.3 Server.pm lines 1991-1993: `[ -z $IMAGENAME ]
    && IMAGENAME=...`, read from `scripts_dir`). A node without one, or whose image does not
    exist or has no directory, is broken (the error says which file and line asked for it):
    upstream, only that node's install fails."""
    nodes: dict[str, Node] = {}
    broken: dict[str, ConfigError] = {}
    for host in cluster.hosts():
        groups = cluster.groups_of(host)
        chosen = next((g for g in groups if g.image), None)
        from_script = (script_image(scripts_dir, host, tuple(g.name for g in groups))
                       if chosen is None and scripts_dir is not None else None)
        if from_script is not None:
            script, line, image = from_script
            if image not in images:
                broken[host] = ConfigError(
                    f"image {image!r} does not exist; node {host} (no group names an image) "
                    f"runs {script.name}, whose IMAGENAME asked for it", file=str(script),
                    line=line, hint="create the image, or add an <image> to one of the "
                                    "node's groups")
                continue
            nodes[host] = Node(host, tuple(g.name for g in groups), image)
            continue
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
    stub, _, line = image.found_by.removeprefix("rsync stub ").rpartition(":")  # "FILE:LINE"
    return stub, int(line) if line.isdigit() else None


def layer_places(settings: SiteOptions, layout: SiteLayout) -> LayerPlaces:
    """The rules of where layers may be, for this site (sources/layer_roots.py)."""
    explicit = [p for p in (settings.images_dir, settings.overrides_dir) if p is not None]
    explicit += [path.parent for path in settings.images.values()]
    return LayerPlaces(layout.root, tuple(explicit), settings.allow_layers_outside,
                       settings.allow_layers_outside_source)


def place_images(images: dict[str, Image], layout: SiteLayout, places: LayerPlaces,
                 used: set[str], warn: Callable[[str], None]
                 ) -> tuple[dict[str, Image], dict[str, ConfigError]]:
    """The images that may be served, each with its real path, and the used ones that may
    not (name -> why). An image elsewhere (a symlink leaving its directory, '..', a
    symlinked directory on the way) is refused, unless allowed: only the nodes using it are
    broken, as upstream only their rsync of the module fails. A symlink to a directory
    inside the images directory is served as that directory, as rsyncd follows it. An
    unused entry of the images directory is only skipped (a convenience link of the admin's)."""
    placed: dict[str, Image] = {}
    refused: dict[str, ConfigError] = {}
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
            if name not in used:
                if image.found_by == "images directory":
                    warn(f"{exc.message}; not served (no group uses it)")
                continue
            refused[name] = exc
            continue
        if placement is None:
            continue  # no directory: assign_images has said whether that matters
        placed[name] = replace(image, real=placement.real, allowed_by=placement.allowed_by)
    return placed, refused


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


class PlacedOverrides(NamedTuple):
    present: frozenset[str]  # names that exist and may be laid
    real_dir: Path | None  # the overrides directory's real path
    elsewhere: dict[str, tuple[Path, Path]]  # name -> (real path, allowed_by)
    linked: dict[str, Path]  # symlinks inside the overrides directory -> the real directory
    refused: dict[str, ConfigError]  # used ones that lead outside: name -> why


def place_overrides(overrides_dir: Path, places: LayerPlaces, used: set[str]
                    ) -> PlacedOverrides:
    """The override directories that exist and may be laid. A symlink to a directory inside
    the overrides directory is laid as that directory (rsyncd follows it); an override that
    leads elsewhere is refused, unless allowed, when a stack uses it: `refused`, which costs
    only the nodes laying it."""
    try:
        entries = list(os.scandir(overrides_dir))
    except (FileNotFoundError, NotADirectoryError):
        return PlacedOverrides(frozenset(), None, {}, {}, {})
    present: set[str] = set()
    elsewhere: dict[str, tuple[Path, Path]] = {}
    linked: dict[str, Path] = {}
    refused: dict[str, ConfigError] = {}
    home_inside = bool(entries) and places.home_is_inside(overrides_dir)
    real_dir = Path(os.path.realpath(overrides_dir))
    for entry in entries:
        if entry.name not in used or not entry.is_dir():
            continue  # no stack lays it (or a link to no directory): never opened
        what = f"override {entry.name!r}"
        if not entry.is_symlink() and home_inside:
            present.add(entry.name)  # the common case: one check for the directory
            continue
        try:
            if entry.is_symlink():
                placement = places.place(Path(entry.path), overrides_dir, what,
                                         file=str(overrides_dir),
                                         fix="replace the symlink by the directory")
            else:
                placement = places.place_child(overrides_dir, entry.name, what)
        except ConfigError as exc:
            refused[entry.name] = exc
            continue
        if placement is None:
            continue
        present.add(entry.name)
        if placement.allowed_by is not None:
            elsewhere[entry.name] = (placement.real, placement.allowed_by)
        elif placement.real != real_dir / entry.name:
            linked[entry.name] = placement.real
    return PlacedOverrides(frozenset(present), real_dir, elsewhere, linked, refused)


def node_override_names(node: Node, cluster: Cluster,
                        scripts: dict[str, ScriptOverrides]) -> set[str]:
    """Every override name the node's stack may lay (any --override-order)."""
    names = {node.name, node.image, *cluster.global_overrides}
    for group in cluster.groups_of(node.name):
        names.update(group.overrides)
    script = scripts.get(node.name)
    if script is not None:
        names.update(w for w in script.words if not w.startswith("$"))
    return names


def break_nodes_of_refused_layers(nodes: dict[str, Node], cluster: Cluster,
                                  scripts: dict[str, ScriptOverrides],
                                  images: dict[str, ConfigError],
                                  overrides: dict[str, ConfigError]
                                  ) -> dict[str, ConfigError]:
    """The nodes that use a refused image or override, each with the first such layer's
    error; they are removed from `nodes`."""
    broken: dict[str, ConfigError] = {}
    for host, node in list(nodes.items()):
        error = images.get(node.image)
        if error is None and overrides:
            bad = sorted(node_override_names(node, cluster, scripts) & overrides.keys())
            error = overrides[bad[0]] if bad else None
        if error is not None:
            broken[host] = ConfigError(f"{error.message}; node {host} uses it, and is not "
                                       "served", file=error.file, line=error.line,
                                       column=error.column, hint=error.hint)
            del nodes[host]
    return broken


def load_site(settings: SiteOptions) -> Site:
    """Read and validate the whole server; raises ConfigError on anything unusable. A node
    that alone cannot be served is in `Site.broken` (every node's, with `settings.strict`,
    refuses the site)."""
    warnings: list[str] = []
    layout = resolve_layout(settings)
    places = layer_places(settings, layout)
    cluster = read_cluster(layout, settings, warnings.append)
    images = discover_images(layout, settings.images)
    nodes, broken = assign_images(cluster, images, layout.scripts_dir)
    broken = {**cluster.broken, **broken}
    if settings.strict:
        refuse_broken(broken)
    used_images = {group.image for group in cluster.groups if group.image}
    used_images |= {node.image for node in nodes.values()}  # an IMAGENAME of a script too
    images, refused_images = place_images(images, layout, places, used_images, warnings.append)
    scripts, chosen = node_scripts(layout.scripts_dir,
                                   {h: (n.groups, n.image) for h, n in nodes.items()},
                                   warnings.append)
    overrides = place_overrides(layout.overrides_dir, places,
                                used_override_names(cluster, images, scripts))
    broken.update(break_nodes_of_refused_layers(nodes, cluster, scripts, refused_images,
                                                overrides.refused))
    if settings.strict:
        refuse_broken(broken)
    written = install_writes(nodes, images, Path(cluster.source), chosen, layout.scripts_dir,
                             warnings.append)
    return Site(layout=layout, cluster=cluster, images=images, nodes=nodes,
                warnings=tuple(warnings), present_overrides=overrides.present,
                overrides_real_dir=overrides.real_dir, overrides_elsewhere=overrides.elsewhere,
                overrides_linked=overrides.linked, broken=broken, scripts=scripts,
                chosen_scripts=chosen, install_writes=written)
