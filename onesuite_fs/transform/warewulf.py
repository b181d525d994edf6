"""``onesuite convert to-warewulf`` and ``from-warewulf``: SystemImager and Warewulf 4 sites,
each node's root the same, entry for entry (docs/warewulf.md, "Converting").

Both directions split the nodes' served roots with the splitter of ``convert
to-systemimager`` (transform/to_systemimager.py): what every node of the image has becomes
the image, what a class of nodes shares beyond it one layer per class, the rest one layer
per node. Only the names and the topology differ:

* to-warewulf: the class of a node is its most important SystemImager group; the image
  becomes ``chroots/IMG/rootfs``, each class layer an overlay and a profile (``image name``,
  ``system overlay: [CLASS]``), each node's layer an overlay named like the host in its
  ``system overlay``; nodes.conf lists every node with its profile.
* from-warewulf: the class of a node is its profile list; the result is a SystemImager site
  as ``convert to-systemimager`` writes one (a group per class, cluster.xml).

Rendered templates are plain files of the roots, so they end up as files of the layers: a
converted Warewulf site has no templates, and the SystemImager site from a Warewulf one has
the rendered files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..core.errors import ConfigError
from ..core.view import View
from ..progress import Progress
from ..sources.warewulf import _NODE_NAME, _OVERLAY_NAME
from .to_systemimager import IMAGES_DIR, OVERRIDES_DIR, Conversion, Layout, convert_to_systemimager
from .walk import HardLinks

CHROOTS = "var/lib/warewulf/chroots"
OVERLAYS = "var/lib/warewulf/overlays"
NODES_CONF = "etc/warewulf/nodes.conf"


def _class_name(text: str) -> str:
    """A profile/group name both systems accept."""
    clean = "".join(c if c.isalnum() or c in "._-" else "_" for c in text).lstrip("._-")
    return clean or "group"


def systemimager_classes(tree: View, hosts: list[str]) -> dict[str, str | None]:
    """to-warewulf: each node's most important SystemImager group."""
    classes: dict[str, str | None] = {}
    for host in hosts:
        groups = tree.site.nodes[host].groups
        classes[host] = _class_name(groups[0]) if groups else None
    return classes


def warewulf_classes(tree: View, hosts: list[str]) -> dict[str, str | None]:
    """from-warewulf: each node's profile list (nodes with the same profiles share layers)."""
    return {host: _class_name("-".join(tree.site.nodes[host].groups)) or None
            for host in hosts}


def _yaml_text(value: str) -> str:
    """A YAML scalar that stays text (names are checked to be plain)."""
    return value if _NODE_NAME.match(value) else '"' + value.replace('"', '\\"') + '"'


def check_names(hosts: list[str], image: str) -> None:
    for what, name in [("node", h) for h in hosts] + [("image", image)]:
        if not _NODE_NAME.match(name) or not _OVERLAY_NAME.match(name):
            raise ConfigError(f"{what} name {name!r} is not a Warewulf {what} name",
                              hint="Warewulf names use letters, digits, '.', '-', '_'")


def _refuse_templates(overlay: Path, name: str) -> None:
    """A file ending in .ww in a layer would be rendered as a template by Warewulf."""
    for directory, _dirs, files in os.walk(overlay):
        for file in files:
            if file.endswith(".ww"):
                path = os.path.relpath(os.path.join(directory, file), overlay)
                raise ConfigError(f"/{path} would be a node file of overlay {name!r}, but "
                                  "Warewulf renders every file ending in .ww as a template",
                                  hint="rename the file in the site, or leave that node "
                                       "on SystemImager")


def convert_to_warewulf(tree: View, image: str, hosts: list[str], out: Path,
                        progress: Progress, links: HardLinks | None = None
                        ) -> tuple[Conversion, Layout]:
    """Write the Warewulf site of `image`'s nodes into the (empty) directory `out`."""
    check_names(hosts, image)
    layout = Layout.plan(image, hosts, systemimager_classes(tree, hosts))
    staging = out / ".systemimager"
    staging.mkdir()
    done = convert_to_systemimager(tree, layout, hosts, staging, progress,
                                   str(tree.site.layout.root), links)
    chroot = out / CHROOTS / image
    chroot.mkdir(parents=True)
    os.rename(staging / IMAGES_DIR / image, chroot / "rootfs")
    overlays = out / OVERLAYS
    overlays.mkdir(parents=True)
    overrides = staging / OVERRIDES_DIR
    layers = [*layout.overrides, *(h for h in hosts if (overrides / h).is_dir())]
    for name in layers:
        (overlays / name).mkdir()
        os.rename(overrides / name, overlays / name / "rootfs")
        _refuse_templates(overlays / name / "rootfs", name)
    lines = ["# written by 'onesuite convert to-warewulf': a profile per SystemImager group",
             "# (a node's most important one), an overlay per group and per node", "",
             "nodeprofiles:"]
    for group, override in zip(layout.classes, layout.overrides, strict=True):
        lines += [f"  {_yaml_text(group)}:", f"    image name: {_yaml_text(image)}",
                  "    system overlay:", f"      - {_yaml_text(override)}"]
    lines.append("nodes:")
    for host in hosts:
        group = layout.classes[layout.class_of[host]]
        lines += [f"  {_yaml_text(host)}:", "    profiles:", f"      - {_yaml_text(group)}"]
        if (overlays / host).is_dir():
            lines += ["    system overlay:", f"      - {_yaml_text(host)}"]
    nodes_conf = out / NODES_CONF
    nodes_conf.parent.mkdir(parents=True)
    nodes_conf.write_text("\n".join(lines) + "\n")
    # The roots date entries no layer has (the /ram mount point) with the topology's time.
    os.utime(nodes_conf, ns=(tree.stable_ns, tree.stable_ns))
    shutil.rmtree(staging)
    return done, layout


def convert_from_warewulf(tree: View, image: str, hosts: list[str], out: Path,
                          progress: Progress, source: str, links: HardLinks | None = None
                          ) -> tuple[Conversion, Layout]:
    """Write the SystemImager site of `image`'s Warewulf nodes into `out` (empty)."""
    layout = Layout.plan(image, hosts, warewulf_classes(tree, hosts))
    done = convert_to_systemimager(tree, layout, hosts, out, progress, source, links)
    return done, layout
