"""``onesuite convert to-onesis``: the nodes of one SystemImager image as one oneSIS image.

The base is what every node shares; where nodes differ, the path becomes a oneSIS LINKBACK:
its variants ``name.default``, ``name.<class>`` and ``name.<host>`` (hidden as
``.name.<variant>`` in directories that software reads by glob) sit next to it, and the
generated ``/etc/sysimage.conf`` maps every node to a class and names the paths.

* A class stands for a combination of SystemImager groups: nodes with the same groups had the
  same layers except their host override.
* Per path, the value most nodes show is ``.default``; a class whose members mostly show
  another gets ``name.<class>``; a node that differs from its class gets ``name.<host>`` and a
  second, later LINKBACK line (NODE, limited with -n) that wins for it.
* A directory whose own mode, owner, time or attributes differ, or whose type differs, is a
  variant as a whole (its subtree is copied per variant). A directory that is the same
  everywhere is shared and compared entry by entry below it.
* A path only some nodes have gets LINKBACK lines limited (-c/-n) to those nodes, and no entry
  in the base: a node no line names does not have it (under onesuite-fs; mk-sysimage on a
  real oneSIS server would leave those nodes a dangling link).
* What cannot be expressed: the root directory's own metadata (oneSIS has no variant of /):
  the base takes the most common one and every other node is reported.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ConfigError
from ..core.onesis_config import SYSIMAGE_CONF
from ..core.onesis_rules import NOT_LINKBACKS
from ..core.view import View
from ..progress import Progress
from .compare import Comparer
from .materialize import Writer
from .walk import HardLinks, Item, Root, merged_children, named_root

# Directories whose files software picks up by pattern (network scripts read ifcfg-*, run-parts
# and the *.d conventions read every file): variants there are hidden (.name.variant) so that
# name.default or name.node001 is not read as one more configuration file.
GLOB_READ_DIRS = (re.compile(r".*\.d"), re.compile(r"etc/sysconfig/network-scripts"),
                  re.compile(r"etc/sysconfig/network"), re.compile(r"etc/cron\.(hourly|daily|"
                                                                   r"weekly|monthly)"),
                  re.compile(r"etc/network/if-[a-z-]+\.d"), re.compile(r"etc/init\.d"))
_REPRESENTABLE = re.compile(r"[^\s#\x00]+")  # sysimage.conf splits on spaces, '#' comments


@dataclass
class Linkback:
    path: str
    hidden: bool
    class_lines: list[str]  # variant classes
    node_lines: list[str]  # hosts with their own variant
    limited: tuple[list[str], list[str]] | None  # (classes, hosts) when not every node has it
    files: list[str] = field(default_factory=list)  # the variants' names in the directory


@dataclass
class Conversion:
    """What a conversion produced, for the summary and the tests."""

    hosts: list[str]
    classes: dict[str, str]  # host -> class
    groups: dict[str, tuple[str, ...]]  # class -> groups
    linkbacks: list[Linkback] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)
    entries: int = 0
    bytes: int = 0


def class_names(groups_by_host: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """host -> class: one class per distinct group combination, named after its groups
    (characters oneSIS gives a meaning, such as '.', become '_'; never a host's name)."""
    taken: set[str] = {"default", *groups_by_host}
    by_groups: dict[tuple[str, ...], str] = {}
    for groups in sorted(set(groups_by_host.values())):
        base = re.sub(r"[^A-Za-z0-9_-]", "_", "_".join(groups)) or "nogroup"
        name, number = base, 2
        while name in taken:
            name, number = f"{base}_{number}", number + 1
        taken.add(name)
        by_groups[groups] = name
    return {host: by_groups[groups] for host, groups in groups_by_host.items()}


def is_glob_read(parent: str) -> bool:
    return any(pattern.fullmatch(parent) for pattern in GLOB_READ_DIRS)


class _Planner:
    def __init__(self, roots: list[Root], conversion: Conversion, out: Path,
                 progress: Progress) -> None:
        self.roots = roots
        self.hosts = [r.entry.name for r in roots]
        self.conversion = conversion
        self.classes = [conversion.classes[h] for h in self.hosts]
        self.out = out
        self.compare = Comparer()
        self.writer = Writer(progress, spill_dir=out.parent)
        self.progress = progress

    # ----- shared directories --------------------------------------------------------------
    def run(self) -> None:
        tops = [r.top() for r in self.roots]
        keys = Counter(self.compare.meta_key(r, i) for r, i in zip(self.roots, tops, strict=True))
        common = keys.most_common(1)[0][0]
        chosen = next(n for n, (r, i) in enumerate(zip(self.roots, tops, strict=True))
                      if self.compare.meta_key(r, i) == common)
        odd = [h for h, r, i in zip(self.hosts, self.roots, tops, strict=True)
               if self.compare.meta_key(r, i) != common]
        if odd:
            self.conversion.limits.append(
                f"/: mode, owner, time or attributes of the root directory differ on "
                f"{', '.join(odd)}; oneSIS has no variant of /, the image has "
                f"{self.hosts[chosen]}'s")
        self.shared_dir(tops, self.out)
        self.writer.finish_dir(self.roots[chosen], tops[chosen], self.out)

    def shared_dir(self, items: list[Item], dest: Path) -> None:
        """Write a directory every root has with the same metadata: its entries one by one."""
        for name, child in merged_children(self.roots, dict(enumerate(items))):
            path = f"{items[0].path}/{name}" if items[0].path else name
            if path == SYSIMAGE_CONF:
                continue  # replaced by the generated one
            self.entry(path, child, dest / name, items)

    def entry(self, path: str, items: dict[int, Item], dest: Path, parents: list[Item]) -> None:
        self.progress.entry()
        everyone = len(items) == len(self.roots)
        roots = [self.roots[n] for n in items]
        values = list(items.values())
        if everyone and all(i.is_dir for i in values) and len(
                {self.compare.meta_key(r, i) for r, i in zip(roots, values, strict=True)}) == 1:
            self.writer.entry(roots[0], values[0], dest)
            self.shared_dir(values, dest)
            self.writer.finish_dir(roots[0], values[0], dest)
            return
        if everyone and not any(i.is_dir for i in values) and self.compare.same_files(roots,
                                                                                       values):
            self.writer.entry(roots[0], values[0], dest)
        else:
            self.variants(path, items, dest.parent, parents)
        # Memory: what this path needed (files to link its variants to, content hashes)
        # cannot come back; only real hard links are kept.
        self.writer.release()
        self.compare.release()

    # ----- variants ------------------------------------------------------------------------
    def taken(self, parents: list[Item], names: Iterable[str]) -> list[str]:
        """Which of `names` a real entry next to the path has, in some root."""
        return sorted(name for name in set(names) if any(
            root.child(parent, name) is not None
            for root, parent in zip(self.roots, parents, strict=True)))

    def variants(self, path: str, items: dict[int, Item], directory: Path,
                 parents: list[Item]) -> None:
        parent, _, name = path.rpartition("/")
        if not _REPRESENTABLE.fullmatch(path) or "/" + path in NOT_LINKBACKS:
            raise ConfigError(f"/{path} differs between nodes but cannot be a LINKBACK "
                              "(white space or '#' in its name, or a path oneSIS refuses)",
                              hint="make it the same on every node of the image")
        groups: dict[bytes, list[int]] = {}
        for n, fp in self.compare.fingerprints(self.roots, items).items():
            groups.setdefault(fp, []).append(n)
        default = max(groups, key=lambda fp: (len(groups[fp]), -groups[fp][0]))
        value = {n: fp for fp, members in groups.items() for n in members}
        class_value: dict[str, bytes] = {}
        for cls in dict.fromkeys(self.classes[n] for n in items):
            members = [n for n in items if self.classes[n] == cls]
            counts = Counter(value[n] for n in members)
            best = max(counts.values())
            class_value[cls] = default if counts[default] == best else next(
                value[n] for n in members if counts[value[n]] == best)
        wanted: dict[str, bytes] = {"default": default}
        wanted.update((cls, fp) for cls, fp in class_value.items() if fp != default)
        own = [n for n in items if value[n] != class_value[self.classes[n]]]
        wanted.update((self.hosts[n], value[n]) for n in own)
        hidden = is_glob_read(parent)
        names = {suffix: f"{'.' if hidden else ''}{name}.{suffix}" for suffix in wanted}
        if self.taken(parents, names.values()):
            hidden = True  # a real file already has that name: the hidden form is free
            names = {suffix: f".{name}.{suffix}" for suffix in wanted}
            taken = self.taken(parents, names.values())
            if taken:
                raise ConfigError(f"/{path}: its variant names are taken by real files "
                                  f"({', '.join(taken)})",
                                  hint="the roots already hold oneSIS variant files (from an "
                                       "earlier conversion?); remove or rename them in the "
                                       "image, or make the path the same on every node")
        representative = {fp: members[0] for fp, members in groups.items()}
        self.writer.subtrees([(self.roots[representative[fp]], items[representative[fp]],
                               directory / names[suffix]) for suffix, fp in wanted.items()])
        limited = None
        if len(items) < len(self.roots):
            full = [c for c in class_value if all(
                n in items for n, k in enumerate(self.classes) if k == c)]
            limited = (full, [self.hosts[n] for n in items if self.classes[n] not in full])
        self.conversion.linkbacks.append(Linkback(
            "/" + path, hidden, sorted(c for c in wanted if c in class_value),
            [self.hosts[n] for n in own], limited, sorted(names.values())))


def sysimage_conf(conversion: Conversion, source: str) -> str:
    lines = [f"# /etc/sysimage.conf written by 'onesuite convert to-onesis' from {source}.",
             "# One class per combination of SystemImager groups:"]
    for cls, groups in sorted(conversion.groups.items()):
        lines.append(f"#   {cls}: {', '.join(groups) or '(no group)'}")
    lines += [f"NODECLASS_MAP {host} {conversion.classes[host]}" for host in conversion.hosts]
    for lb in conversion.linkbacks:
        flags = " -h" if lb.hidden else ""
        limit = ""
        if lb.limited is not None:
            classes, hosts = lb.limited
            limit = (f" -c {','.join(classes)}" if classes else "") + (
                f" -n {','.join(hosts)}" if hosts else "")
        # Only node variants: one NODE line (name.<host>, else .default). Class variants:
        # a CLASS line for all, then a NODE line for the nodes that differ from their class
        # (the last line that applies to a node decides).
        kind = "NODE" if lb.node_lines and not lb.class_lines else "CLASS"
        lines.append(f"LINKBACK {lb.path} {kind}{flags}{limit}")
        if lb.node_lines and lb.class_lines:
            lines.append(f"LINKBACK {lb.path} NODE{flags} -n {','.join(lb.node_lines)}")
    return "\n".join(lines) + "\n"


def _write_conf(out: Path, text: str, etc_variants: list[str]) -> None:
    """Put the configuration at etc/sysimage.conf, without changing the recorded times of the
    directories it goes into. When /etc itself is a LINKBACK (nodes differ in its metadata),
    the base gets a plain etc/ holding only the configuration (where rc.preinit and
    onesuite-fs read it), and every variant of etc gets a copy, so each node's /etc has it."""
    targets = [out / "etc"] + [out / name for name in etc_variants
                               if (out / name).is_dir() and not (out / name).is_symlink()]
    if not etc_variants and os.path.lexists(out / "etc") and not (out / "etc").is_dir():
        raise ConfigError("the image's /etc is not a directory; the oneSIS configuration "
                          "has nowhere to go")
    top = out.lstat()
    for etc in targets:
        times = None
        if etc.is_dir():
            st = etc.lstat()
            times = (st.st_atime_ns, st.st_mtime_ns)
        else:
            etc.mkdir(mode=0o755)
        (etc / "sysimage.conf").write_text(text)
        os.chmod(etc / "sysimage.conf", 0o644)
        if times is not None:
            os.utime(etc, ns=times)
    os.utime(out, ns=(top.st_atime_ns, top.st_mtime_ns))  # a new etc/ changed it


def image_hosts(tree: View, image: str) -> list[str]:
    """The nodes that use `image`, in name order; ConfigError when there are none."""
    site = tree.site
    if image not in site.images:
        raise ConfigError(f"no image named {image!r} on this image server",
                          hint=f"known: {', '.join(sorted(site.images)) or 'none'}")
    hosts = sorted(h for h, node in site.nodes.items()
                   if node.image == image and h in tree.entries["nodes"])
    if not hosts:
        raise ConfigError(f"no node uses the image {image!r}")
    return hosts


def convert_to_onesis(tree: View, image: str, out: Path, progress: Progress,
                      links: HardLinks | None = None) -> Conversion:
    """Write the oneSIS image of `image`'s nodes into the (empty) directory `out`. `links`:
    which files have two names in a node's root (`measure` of one root; they share the
    image), else every multiply-linked file is remembered."""
    site = tree.site
    hosts = image_hosts(tree, image)
    groups = {h: tuple(site.nodes[h].groups) for h in hosts}
    classes = class_names(groups)
    conversion = Conversion(hosts, classes, {classes[h]: groups[h] for h in hosts})
    roots = [named_root(tree, h) for h in hosts]
    for root in roots:
        root.links = links or root.links
    planner = _Planner(roots, conversion, out, progress)
    try:
        planner.run()
    finally:
        planner.writer.close()
    etc = next((lb for lb in conversion.linkbacks if lb.path == "/etc"), None)
    if etc is not None:
        conversion.limits.append("/etc differs between nodes as a whole: it is a LINKBACK, "
                                 "the base etc/ holds only sysimage.conf, each variant a copy")
    source = f"image {image} of {site.layout.root}"
    _write_conf(out, sysimage_conf(conversion, source), etc.files if etc else [])
    conversion.entries, conversion.bytes = planner.writer.entries, planner.writer.bytes
    return conversion
