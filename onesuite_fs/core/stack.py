"""Which layers make up a node's root, in which order (domain.md A.2.2-A.2.5, D.2, D.5).

Three SystemImager tools lay overrides differently; each is a policy here:

* ``autoinstall`` (4.3, the default): image, the override named like the master script (the
  image name), global overrides in reverse XML order, ``reverse(unique(field 4 of the node's
  cluster.txt lines))``, the override named like the host; one rsync each, last wins.
  Not de-duplicated, exactly as the tool runs them (the script override can appear twice).
* ``updateclient``: image, global overrides reversed, then ``reverse(field 4)`` (not made
  unique: si_updateclient's Perl has no unique step); no script-named and no host override.
* ``pushoverrides``: pushes onto an installed node, so the ``autoinstall`` stack first, then
  ONE multi-source rsync of host, groups in sort_group order (each group's overrides in XML
  order), global overrides in XML order; first source wins.

A stack is a list of stages (see resolve.py); an override whose directory is missing is
listed (so ``onesuite nodes`` can show it) but not laid, as SystemImager only warns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .layers import Layer
from .model import GROUP_OVERRIDES, HOSTNAME, Group, Site


@dataclass(frozen=True)
class StackEntry:
    layer: Layer
    role: str  # why it is in the stack: "image", "script override", "group Login", ...
    present: bool  # False when the directory does not exist (skipped, as SystemImager does)


# Immutable, so that nodes with the same stack can share one (see `memo` below).
Stages = tuple[tuple[StackEntry, ...], ...]
Memo = dict[object, object]


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for name in names:
        if name:
            seen.setdefault(name, None)
    return list(seen)


def _group_override_roles(groups: tuple[Group, ...]) -> dict[str, str]:
    roles: dict[str, str] = {}
    for group in groups:
        for name in group.overrides:
            roles.setdefault(name, f"group {group.name}")
    return roles


def build_stages(site: Site, *, image: str | None, groups: tuple[Group, ...],
                 host: str | None, order: str, memo: Memo | None = None) -> Stages:
    """The stages for a node (host set) or a group's view (host None).

    `memo`, shared across calls, makes equal entries and stacks one object: 10,000 nodes
    then cost a few stacks and their host entries, not 10,000 copies of every layer."""
    shared: Memo = memo if memo is not None else {}

    def intern(value: object) -> object:
        return shared.setdefault(value, value)

    def override(name: str, role: str) -> StackEntry:
        key = ("override", name, role)
        found = shared.get(key)
        if found is None:
            path = site.override_path(name)
            real, allowed_by = site.override_real(name)
            real = path if real == path else real  # one object per override, not two
            entry = StackEntry(Layer("override", name, path, real, allowed_by), role,
                               name in site.present_overrides)
            found = shared[key] = intern(entry)
        return found  # type: ignore[return-value]

    stages: list[tuple[StackEntry, ...]] = []
    if image is not None:  # the image pass: without lost+found/ and /proc/* (layers.py)
        stages.append((intern(StackEntry(image_layer(site, image, image_pass=True),
                                         "image", True)),))  # type: ignore[arg-type]
    roles = _group_override_roles(groups)
    global_roles = {name: "global" for name in site.cluster.global_overrides}
    field4 = [name for group in groups for name in group.overrides]
    # si_pushoverrides pushes onto an installed node: the autoinstall passes come first.
    installed = "autoinstall" if order == "pushoverrides" else order
    # autoinstall's shell takes unique names (`unique`); si_updateclient's Perl does not.
    group_sequence = _unique(field4) if installed == "autoinstall" else [n for n in field4 if n]
    group_part = [override(n, "global") for n in reversed(site.cluster.global_overrides)]
    group_part += [override(n, roles[n]) for n in reversed(group_sequence)]
    script = site.scripts.get(host) if host is not None and installed == "autoinstall" else None
    sequence: list[StackEntry] = []
    if script is not None:  # OVERRIDES="NAME $GROUP_OVERRIDES $HOSTNAME --overrides..."
        variables_seen = False
        for word in script.words:
            if word == GROUP_OVERRIDES:
                sequence += group_part
            elif word == HOSTNAME:
                sequence.append(override(host or "", "host"))
            else:
                sequence.append(override(word, "script --overrides" if variables_seen
                                         else "script override"))
            variables_seen |= word.startswith("$")
    else:
        if installed == "autoinstall" and image is not None:
            sequence.append(override(image, "script override"))
        sequence += group_part
        if installed == "autoinstall" and host is not None:
            sequence.append(override(host, "host"))
    stages += [(entry,) for entry in sequence]
    if order == "pushoverrides":
        # One rsync with many sources: a name given twice acts at its first position.
        names = _unique([host or "", *field4, *site.cluster.global_overrides])
        stages.append(tuple(override(n, "host" if n == host else roles.get(n) or global_roles[n])
                            for n in names))
    return intern(tuple(intern(stage) for stage in stages))  # type: ignore[return-value]


def node_stages(site: Site, host: str, order: str, memo: Memo | None = None) -> Stages:
    if site.warewulf is not None:  # image, then overlays in Warewulf's order (warewulf.md)
        return site.warewulf.node_stages[host]  # type: ignore[attr-defined,no-any-return]
    node = site.nodes[host]
    return build_stages(site, image=node.image, groups=site.cluster.groups_of(host), host=host,
                        order=order, memo=memo)


def group_stages(site: Site, group: Group, order: str, memo: Memo | None = None) -> Stages:
    if site.warewulf is not None:
        return site.warewulf.group_stages.get(group.name, ())  # type: ignore[attr-defined]
    # An image that does not exist breaks the group's nodes (Site.broken); the group's view
    # is then its overrides alone, as for a group that names no image.
    image = group.image if group.image in site.images else None
    return build_stages(site, image=image, groups=(group,), host=None, order=order,
                        memo=memo)


def image_layer(site: Site, image: str, *, image_pass: bool = False) -> Layer:
    """The image's layer; `image_pass`: as a node's install copies it (layers.py)."""
    found = site.images[image]
    return Layer("image", image, found.path, found.real, found.allowed_by, image_pass=image_pass)


def image_stages(site: Site, image: str) -> Stages:
    return ((StackEntry(image_layer(site, image), "image", True),),)


def missing_overrides(stages: Stages) -> list[StackEntry]:
    return [entry for stage in stages for entry in stage if not entry.present]
