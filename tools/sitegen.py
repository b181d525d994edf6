"""Random SystemImager image servers, to test onesuite-fs against an rsync oracle.

`generate_random_site` writes a real server tree under a prefix (cluster.xml, rsync stubs,
images, overrides) and returns a `SiteSpec` describing it. The trees are built to stress the
union rules: the same paths in several layers with different content, mode and owner, type
conflicts planted on purpose, special files, xattrs and hard links. Every layer owns its own
mtime window, so rsync's quick check (same size and same mtime -> skip) never hides a change.
Every image also has the entries autoinstall's image pass leaves out (lost+found/, /proc/*).

CLI: python tools/sitegen.py random PREFIX --seed N [--images K --groups G --nodes N ...]
prints a JSON summary of the generated site.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

CONFIG_DIR = Path("etc/systemimager")
STUB_DIR = CONFIG_DIR / "rsync_stubs"
IMAGES_DIR = Path("var/lib/systemimager/images")
OVERRIDES_DIR = Path("var/lib/systemimager/overrides")
MAXINT = 2**32 - 1  # HostRange.pm: my $MAXINT = unpack("I", pack("I", -1));

EPOCH = 1_600_000_000  # layer i owns the mtimes [EPOCH + i*LAYER_SPAN, EPOCH + (i+1)*LAYER_SPAN)
LAYER_SPAN = 1000  # seconds

HEADER_STUB = """\
list = yes
timeout = 600
uid = root
gid = root
use chroot = yes

[overrides]
path = /var/lib/systemimager/overrides

[scripts]
path = /var/lib/systemimager/scripts

"""

IMAGE_NAMES = ("RHEL9", "SuSE15", "Debian12")
GROUP_NAMES = ("Login", "compute", "Storage", "gpu", "Service", "admin", "IO", "batch")
PRIORITIES = (None, None, 0, 10, 10, 20, 30)  # 0 means "none" too (Perl's `or` in sort_group)
MISSING_OVERRIDE = "legacy"  # sometimes named in cluster.xml, never created
HOT_FILES = (  # paths many overrides set, so the winner depends on the order policy
    "etc/motd",
    "etc/hosts",
    "etc/issue",
    "etc/resolv.conf",
    "etc/sysconfig/network",
    "etc/ssh/sshd_config",
    "etc/profile.d/site.sh",
)
BASE_DIRS = (
    "etc/sysconfig", "etc/ssh", "etc/profile.d", "usr/bin", "usr/sbin", "usr/lib",
    "usr/share/doc", "var/log", "var/lib", "var/spool/cron", "dev", "tmp", "root", "home",
    "opt", "mnt", "srv",
)  # fmt: skip
EXTRA_DIRS = (
    "etc/cron.d", "etc/default", "usr/lib/modules", "usr/share/man/man1", "usr/local/bin",
    "var/cache", "var/lib/nfs", "home/alice", "opt/app/conf", "boot",
)  # fmt: skip
EMPTY_DIRS = ("mnt", "srv")  # left empty in the images
FIXED_DIR_MODES = {"tmp": 0o1777, "root": 0o700}
NAME_WORDS = (
    "passwd", "group", "fstab", "profile", "bashrc", "crontab", "app.conf", "README",
    "ls", "cat", "sudo", "mount", "libc.so.6", "libm.so.6", "messages", "secure", "ntp.conf",
    "exports", "id_rsa.pub", "lvm.conf", "modules.dep", "vmlinuz", "initrd.img",
)  # fmt: skip
HARD_LINKS = (("usr/bin/gzip", "usr/bin/gunzip"), ("usr/sbin/e2fsck", "usr/sbin/fsck.ext4"))
DEVICES = (
    ("dev/null", "chr", 1, 3), ("dev/zero", "chr", 1, 5), ("dev/ttyS0", "chr", 4, 64),
    ("dev/sda", "blk", 8, 0), ("dev/loop0", "blk", 7, 0),
)  # fmt: skip
CAP_FILE = "usr/bin/ping"
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")  # VFS_CAP v2
FILE_MODES = (0o644,) * 5 + (0o755,) * 3 + (0o600, 0o444, 0o711, 0o640, 0o4755, 0o2755, 0o6711)
DIR_MODES = (0o755,) * 6 + (0o700, 0o711, 0o750, 0o775, 0o1777, 0o2775, 0o555)
SPECIAL_MODES = (0o600, 0o620, 0o660, 0o666)
IDS = (0,) * 6 + (1, 2, 100, 999, 1000, 1001, 4242, 65534, 123456)  # many not in /etc/passwd

# Planted type conflicts: name -> (shape in the upper layer, shape in the lower layer).
CONFLICT_SHAPES = {
    "file_over_nonempty_dir": ("file", "nonempty_dir"),
    "file_over_empty_dir": ("file", "empty_dir"),
    "symlink_over_dir": ("symlink", "nonempty_dir"),
    "dir_over_file": ("nonempty_dir", "file"),
    "dir_over_symlink": ("nonempty_dir", "dir_symlink"),
    "symlink_over_file": ("symlink", "file"),
    "fifo_over_file": ("fifo", "file"),
}
CONFLICT_PARENTS = ("etc", "usr/share", "var/lib", "opt")


# --------------------------------------------------------------------------------------------
# The description of a site


@dataclass
class GroupSpec:
    """One cluster.xml <group>; `overrides` in XML order (first = most important)."""

    name: str
    priority: int | None
    image: str | None
    overrides: list[str]
    nodes: list[str]  # expanded host names, string-sorted and unique as SystemImager has them


@dataclass(frozen=True)
class ConflictSpec:
    """A path given different types in two layers on purpose.

    `lower` and `upper` are the layers' root directories; `upper` outranks `lower` in every
    order policy that includes both. `path` is absolute inside the node root ("/etc/x").
    """

    path: str
    kind: str  # a key of CONFLICT_SHAPES
    lower: Path
    upper: Path


@dataclass
class SiteSpec:
    """What `generate_random_site` wrote: the cluster.xml content and where the trees are."""

    master: str
    global_name: str
    global_overrides: list[str]  # XML order, first = most important
    groups: list[GroupSpec]  # XML order
    images: dict[str, Path]  # image name -> image directory
    prefix: Path
    conflicts: list[ConflictSpec] = field(default_factory=list)
    # Paths where an upper layer's file has the size and mtime (whole seconds) of the file
    # below it but other bytes and mode: a 4.3 install keeps the lower bytes (rsync's quick
    # check), the intent view shows the upper ones.
    quick_checks: list[str] = field(default_factory=list)

    def nodes(self) -> list[str]:
        """All hosts named by any group, sorted and unique."""
        return sorted({host for group in self.groups for host in group.nodes})

    def groups_of(self, host: str) -> list[GroupSpec]:
        """The host's groups in HostRange::sort_group order (most important first)."""
        return [group for group in sort_groups(self.groups) if host in group.nodes]

    def image_of(self, host: str) -> str | None:
        """The image of the most important of the host's groups that names one."""
        return next((group.image for group in self.groups_of(host) if group.image), None)

    def override_dir(self, name: str) -> Path:
        return self.prefix / OVERRIDES_DIR / name

    def summary(self) -> dict[str, object]:
        """A JSON-friendly description, paths relative to the prefix."""
        overrides_root = self.prefix / OVERRIDES_DIR
        referenced = [*self.global_overrides, *(o for g in self.groups for o in g.overrides)]
        return {
            "prefix": str(self.prefix),
            "master": self.master,
            "global_name": self.global_name,
            "global_overrides": self.global_overrides,
            "groups": [vars(group) for group in self.groups],
            "images": {
                name: str(path.relative_to(self.prefix)) for name, path in self.images.items()
            },
            "nodes": self.nodes(),
            "override_dirs": sorted(p.name for p in overrides_root.iterdir()),
            "missing_overrides": sorted(
                {n for n in referenced if not self.override_dir(n).is_dir()}
            ),
            "conflicts": [
                {
                    "path": c.path,
                    "kind": c.kind,
                    "lower": str(c.lower.relative_to(self.prefix)),
                    "upper": str(c.upper.relative_to(self.prefix)),
                }
                for c in self.conflicts
            ],
        }


def sort_groups(groups: Iterable[GroupSpec]) -> list[GroupSpec]:
    """HostRange::sort_group: priority ascending (missing or 0 -> MAXINT), then name, no case."""
    return sorted(groups, key=lambda g: (g.priority or MAXINT, g.name.lower()))


# --------------------------------------------------------------------------------------------
# Planned trees (in memory first, so that conflicts can be planted across layers)


@dataclass
class PlannedEntry:
    """One entry to write; `target` is a symlink's text or, for "hardlink", the linked path."""

    kind: str  # dir, file, symlink, fifo, chr, blk, hardlink
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    mtime_ns: int
    data: bytes = b""
    target: str = ""
    rdev: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


@dataclass
class _Options:
    entries_per_layer: tuple[int, int]
    image_entries: tuple[int, int]
    special_files: bool
    xattrs: bool


class _Layer:
    """The planned entries of one image or override, keyed by relative path ("" = its root)."""

    def __init__(self, root: Path, index: int, rng: random.Random, opts: _Options) -> None:
        self.root = root
        self.rng = rng
        self.opts = opts
        self.first_ns = (EPOCH + index * LAYER_SPAN) * 10**9
        self.entries: dict[str, PlannedEntry] = {}
        self.ensure_dir("")

    @property
    def label(self) -> str:
        return f"{self.root.parent.name}/{self.root.name}"

    def mtime(self) -> int:
        return self.first_ns + self.rng.randrange((LAYER_SPAN - 1) * 10**9)

    def owner(self) -> tuple[int, int]:
        return self.rng.choice(IDS), self.rng.choice(IDS)

    def maybe_xattrs(self, rel: str) -> dict[str, bytes]:
        if not self.opts.xattrs or self.rng.random() > 0.15:
            return {}
        xattrs = {"user.note": f"{self.label}:{rel}".encode()}
        if self.rng.random() < 0.3:
            xattrs["user.empty"] = b""
        return xattrs

    def ensure_dir(self, rel: str) -> None:
        """Add `rel` and its missing ancestors as directories with random metadata."""
        parts = rel.split("/") if rel else []
        for depth in range(len(parts) + 1):
            path = "/".join(parts[:depth])
            if path not in self.entries:
                self.entries[path] = self.dir_entry(path)

    def add(self, rel: str, entry: PlannedEntry) -> None:
        self.ensure_dir(rel.rpartition("/")[0])
        self.entries[rel] = entry

    def dir_entry(self, rel: str) -> PlannedEntry:
        if rel in FIXED_DIR_MODES:
            mode, uid, gid = FIXED_DIR_MODES[rel], 0, 0
        elif rel == "":  # a node's "/": odd modes here are rare but legal
            mode, (uid, gid) = self.rng.choice((0o755,) * 4 + (0o750, 0o700)), (0, 0)
        else:
            mode, (uid, gid) = self.rng.choice(DIR_MODES), self.owner()
        return PlannedEntry("dir", mode, uid, gid, self.mtime(), xattrs=self.maybe_xattrs(rel))

    def file_entry(self, rel: str) -> PlannedEntry:
        size = self.rng.choice((0, 1, 17, 64, 300, 1500, 4096, 9000))
        data = f"{self.label}:{rel}\n".encode() + self.rng.randbytes(size)
        uid, gid = self.owner()
        mode = self.rng.choice(FILE_MODES)
        return PlannedEntry(
            "file", mode, uid, gid, self.mtime(), data, xattrs=self.maybe_xattrs(rel)
        )

    def symlink_entry(self, rel: str, target: str | None = None) -> PlannedEntry:
        if target is None:
            name = rel.rpartition("/")[2]
            target = self.rng.choice(
                (
                    "passwd",  # relative sibling
                    "../" * rel.count("/") + "usr/bin/python3",  # relative with ..
                    "/etc/passwd",  # absolute
                    f"/nonexistent/{name}",  # dangling
                    "/usr/share",  # to a directory
                    f"{name}.{self.root.name}",  # dangling, names the layer
                )
            )
        uid, gid = self.owner()
        return PlannedEntry("symlink", 0o777, uid, gid, self.mtime(), target=target)

    def special_entry(self, kind: str, major: int = 0, minor: int = 0) -> PlannedEntry:
        uid, gid = self.owner()
        mode = self.rng.choice(SPECIAL_MODES)
        return PlannedEntry(kind, mode, uid, gid, self.mtime(), rdev=os.makedev(major, minor))

    def random_nondir(self, rel: str) -> PlannedEntry:
        """Mostly a file, sometimes a symlink or (with special files) a fifo or device."""
        roll = self.rng.random()
        if roll < 0.75 or (roll >= 0.9 and not self.opts.special_files):
            return self.file_entry(rel)
        if roll < 0.9:
            return self.symlink_entry(rel)
        if roll < 0.95:
            return self.special_entry("fifo")
        return self.special_entry(self.rng.choice(("chr", "blk")), 240, self.rng.randrange(256))


class _Registry:
    """One shape per path across all layers (dir or non-dir), so that the random, generic
    entries never create type conflicts by accident: those are planted on purpose only."""

    def __init__(self) -> None:
        self.shapes: dict[str, str] = {}  # path -> "dir" | "nondir" | "reserved"

    def fits(self, rel: str, shape: str) -> bool:
        parts = rel.split("/")
        ancestors = ("/".join(parts[:i]) for i in range(1, len(parts)))
        return (
            all(self.shapes.get(a, "dir") == "dir" for a in ancestors)
            and self.shapes.get(rel, shape) == shape
        )

    def claim(self, rel: str, shape: str) -> None:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            self.shapes["/".join(parts[:i])] = "dir"
        self.shapes[rel] = shape

    def of_shape(self, shape: str) -> list[str]:
        return [path for path, s in self.shapes.items() if s == shape]


class _Planner:
    """Plans the images and overrides of one site, layer by layer, from one random stream."""

    def __init__(self, rng: random.Random, opts: _Options) -> None:
        self.rng = rng
        self.opts = opts
        self.registry = _Registry()
        self.layers: list[_Layer] = []

    def new_layer(self, root: Path) -> _Layer:
        layer = _Layer(root, len(self.layers), self.rng, self.opts)
        self.layers.append(layer)
        return layer

    def add_generic(self, layer: _Layer, rel: str, entry: PlannedEntry) -> bool:
        """Add a non-directory at `rel` unless the layer has it or its shape is taken."""
        if rel in layer.entries or not self.registry.fits(rel, "nondir"):
            return False
        self.registry.claim(rel, "nondir")
        layer.add(rel, entry)
        return True

    def add_dir(self, layer: _Layer, rel: str) -> None:
        if self.registry.fits(rel, "dir"):
            self.registry.claim(rel, "dir")
            layer.ensure_dir(rel)

    def fresh_path(self, layer: _Layer) -> str:
        dirs = [d for d in layer.entries if layer.entries[d].kind == "dir" and d not in EMPTY_DIRS]
        parent = self.rng.choice(sorted(dirs))
        name = f"{self.rng.choice(NAME_WORDS)}{self.rng.choice(('', '.1', '-2', '.old', '3'))}"
        return f"{parent}/{name}" if parent else name

    def plan_image(self, root: Path) -> _Layer:
        layer = self.new_layer(root)
        dirs = [*BASE_DIRS, *self.rng.sample(EXTRA_DIRS, self.rng.randint(2, len(EXTRA_DIRS)))]
        for rel in dirs:
            self.add_dir(layer, rel)
        for rel in HOT_FILES:
            if self.rng.random() < 0.7:
                self.add_generic(layer, rel, layer.file_entry(rel))
        self.add_standard_entries(layer)
        target = self.rng.randint(*self.opts.image_entries)
        while len(layer.entries) < target:
            rel = self.fresh_path(layer)
            self.add_generic(layer, rel, layer.random_nondir(rel))
        return layer

    def add_standard_entries(self, layer: _Layer) -> None:
        """Entries every image has: symlinks of each flavour, hard links, devices, a capability."""
        for rel, target in (
            ("etc/localtime", "/usr/share/zoneinfo/UTC"),  # absolute, dangling
            ("usr/bin/python", "python3"),  # relative, dangling
            ("usr/lib/libfoo.so", "../lib/libfoo.so.1"),  # relative with ..
            ("etc/mtab", "/proc/self/mounts"),
            ("var/run", "../run"),
        ):
            self.add_generic(layer, rel, layer.symlink_entry(rel, target))
        for first, second in HARD_LINKS:
            if self.add_generic(layer, first, layer.file_entry(first)):
                self.add_generic(layer, second, PlannedEntry("hardlink", 0, 0, 0, 0, target=first))
        cap_file = layer.file_entry(CAP_FILE)
        cap_file.mode, cap_file.uid, cap_file.gid = 0o755, 0, 0
        if self.opts.xattrs:
            cap_file.xattrs = {"security.capability": CAP_NET_RAW}
        self.add_generic(layer, CAP_FILE, cap_file)
        if self.opts.special_files:
            for rel, kind, major, minor in DEVICES:
                self.add_generic(layer, rel, layer.special_entry(kind, major, minor))
            self.add_generic(layer, "dev/initctl", layer.special_entry("fifo"))

    def plan_override(self, root: Path) -> _Layer:
        layer = self.new_layer(root)
        reusable = self.registry.of_shape("nondir")
        for _ in range(self.rng.randint(*self.opts.entries_per_layer)):
            roll = self.rng.random()
            if roll < 0.4 and reusable:
                rel = self.rng.choice(reusable)
            elif roll < 0.65:
                rel = self.rng.choice(HOT_FILES)
            elif roll < 0.9:
                self.add_dir(layer, self.rng.choice(BASE_DIRS + EXTRA_DIRS))
                rel = self.fresh_path(layer)
            else:
                rel = f"opt/{root.name}/{self.rng.choice(NAME_WORDS)}"
            self.add_generic(layer, rel, layer.random_nondir(rel))
        return layer

    def plant_conflicts(self, pairs: Sequence[tuple[_Layer, _Layer]]) -> list[ConflictSpec]:
        """Put every conflict kind on each (lower, upper) pair, each at a path of its own."""
        conflicts = []
        for number, (lower, upper) in enumerate(pairs):
            for kind, (upper_shape, lower_shape) in CONFLICT_SHAPES.items():
                if "fifo" in (upper_shape, lower_shape) and not self.opts.special_files:
                    continue
                rel = f"{self.rng.choice(CONFLICT_PARENTS)}/tc-{kind}-{number}"
                self.registry.claim(rel, "reserved")
                self.plant(lower, rel, lower_shape)
                self.plant(upper, rel, upper_shape)
                conflicts.append(ConflictSpec(f"/{rel}", kind, lower.root, upper.root))
        return conflicts

    def plant(self, layer: _Layer, rel: str, shape: str) -> None:
        if shape == "file":
            layer.add(rel, layer.file_entry(rel))
        elif shape == "symlink":
            layer.add(rel, layer.symlink_entry(rel))
        elif shape == "dir_symlink":
            layer.add(rel, layer.symlink_entry(rel, "/usr/share"))
        elif shape == "fifo":
            layer.add(rel, layer.special_entry("fifo"))
        else:
            layer.ensure_dir(rel)
            if shape == "nonempty_dir":
                child = f"{rel}/from-{layer.root.name}"
                layer.add(child, layer.file_entry(child))


# --------------------------------------------------------------------------------------------
# Topology


def host_ranges(hosts: Iterable[str]) -> list[str]:
    """Compress host names into SystemImager range items: node001-node003, node007.

    Only runs of two or more become ranges (older HostRange.pm took "a-a" literally).
    """
    literals: list[str] = []
    runs: list[list[tuple[str, str]]] = []  # consecutive (prefix, digits) of the same width
    for host in sorted(set(hosts)):
        match = re.fullmatch(r"(.*?)(\d+)", host)
        if match is None:
            literals.append(host)
            continue
        prefix, digits = match.groups()
        last = runs[-1][-1] if runs else None
        if (
            last
            and last[0] == prefix
            and len(last[1]) == len(digits)
            and (int(last[1]) + 1 == int(digits))
        ):
            runs[-1].append((prefix, digits))
        else:
            runs.append([(prefix, digits)])
    ranges = [
        "".join(run[0]) if len(run) == 1 else f"{''.join(run[0])}-{''.join(run[-1])}"
        for run in runs
    ]
    return ranges + literals


def _plan_topology(
    rng: random.Random,
    prefix: Path,
    n_images: int,
    n_groups: int,
    n_nodes: int,
    missing_override: bool,
) -> SiteSpec:
    images = {name: prefix / IMAGES_DIR / name for name in rng.sample(IMAGE_NAMES, n_images)}
    names = rng.sample(GROUP_NAMES, n_groups)
    groups = [
        GroupSpec(name, rng.choice(PRIORITIES), rng.choice([*images, None]), [], [])
        for name in names
    ]
    if all(g.priority is not None for g in groups):
        rng.choice(groups).priority = None
    if all(g.image for g in groups) and n_groups > 1:
        rng.choice(groups).image = None
    if not any(g.image for g in groups):
        rng.choice(groups).image = rng.choice(list(images))
    for group in groups:
        group.overrides = _group_overrides(rng, group, list(images))
    hosts = [f"node{n:03d}" for n in sorted(rng.sample(range(1, 3 * n_nodes + 1), n_nodes))]
    _assign_hosts(rng, groups, hosts)
    global_overrides = ["all"] if rng.random() < 0.6 else rng.sample(["all", "site"], 2)
    if missing_override:
        if rng.random() < 0.5:
            global_overrides.append(MISSING_OVERRIDE)
        else:
            rng.choice(groups).overrides.append(MISSING_OVERRIDE)
    return SiteSpec("master1", "all", global_overrides, groups, images, prefix)


def _group_overrides(rng: random.Random, group: GroupSpec, images: list[str]) -> list[str]:
    """The group's own override, sometimes a shared one or one named like an image."""
    overrides = [group.name] if rng.random() < 0.85 else []
    if rng.random() < 0.35:
        overrides.append("common")
    if rng.random() < 0.25:
        overrides.append(rng.choice(images))  # like Login -> SuSE10 in the shipped example
    rng.shuffle(overrides)
    return overrides


def _assign_hosts(rng: random.Random, groups: list[GroupSpec], hosts: list[str]) -> None:
    """Put each host in 1-3 groups, every group gets a host, every host gets an image."""
    members: dict[str, set[str]] = {g.name: set() for g in groups}
    for host in hosts:
        for group in rng.sample(groups, rng.randint(1, min(3, len(groups)))):
            members[group.name].add(host)
    for group in groups:
        if not members[group.name]:
            members[group.name].add(rng.choice(hosts))
    with_image = [g for g in groups if g.image]
    for host in hosts:
        if not any(host in members[g.name] for g in with_image):
            members[rng.choice(with_image).name].add(host)
    for group in groups:
        group.nodes = sorted(members[group.name])


# --------------------------------------------------------------------------------------------
# Writing


def write_cluster_xml(spec: SiteSpec, rng: random.Random | None = None) -> Path:
    """Write cluster.xml as SystemImager's; with `rng`, vary how <node> lists are spelled."""
    lines = [
        "<xml>",
        f"\t<master>{escape(spec.master)}</master>",
        f"\t<name>{escape(spec.global_name)}</name>",
        *(f"\t<override>{escape(o)}</override>" for o in spec.global_overrides),
    ]
    for group in spec.groups:
        lines += ["\t<group>", f"\t\t<name>{escape(group.name)}</name>"]
        if group.priority is not None:
            lines.append(f"\t\t<priority>{group.priority}</priority>")
        if group.image is not None:
            lines.append(f"\t\t<image>{escape(group.image)}</image>")
        lines += [f"\t\t<override>{escape(o)}</override>" for o in group.overrides]
        lines += [f"\t\t<node>{escape(text)}</node>" for text in _node_texts(group.nodes, rng)]
        lines.append("\t</group>")
    lines.append("</xml>")
    path = spec.prefix / CONFIG_DIR / "cluster.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _node_texts(hosts: list[str], rng: random.Random | None) -> list[str]:
    """The <node> element texts: range items joined by "," or " ", in one or two elements.

    Separators are single characters on purpose: SystemImager splits on /,| |\\n/, so ", "
    would produce an empty host name.
    """
    items = host_ranges(hosts)
    if rng is None:
        return [",".join(items)]
    if rng.random() < 0.2:
        items.append(rng.choice(items))  # SystemImager de-duplicates
    rng.shuffle(items)
    cut = rng.randint(1, len(items)) if rng.random() < 0.3 else len(items)
    return [rng.choice((",", " ")).join(part) for part in (items[:cut], items[cut:]) if part]


def write_rsync_stubs(spec: SiteSpec) -> None:
    """10header plus one 40<IMAGE> stub per image, in create_image_stub's exact format."""
    stub_dir = spec.prefix / STUB_DIR
    stub_dir.mkdir(parents=True, exist_ok=True)
    (stub_dir / "10header").write_text(HEADER_STUB)
    for name, path in spec.images.items():
        server_path = "/" + str(path.relative_to(spec.prefix))
        (stub_dir / f"40{name}").write_text(f"[{name}]\n\tpath={server_path}\n\n")


def write_layer(root: Path, entries: dict[str, PlannedEntry]) -> None:
    """Create a planned tree; directory metadata goes last, deepest first, since creating
    children changes a directory's mtime."""
    root.mkdir(parents=True)
    ordered = sorted(entries.items())  # a parent sorts before its descendants
    for rel, entry in ordered:
        if entry.kind != "hardlink":
            _create(root / rel if rel else root, entry)
    for rel, entry in ordered:
        if entry.kind == "hardlink":
            os.link(root / entry.target, root / rel)
    dirs = [(rel, e) for rel, e in ordered if e.kind == "dir"]
    for rel, entry in sorted(dirs, key=lambda item: _depth(item[0]), reverse=True):
        _set_metadata(root / rel if rel else root, entry)


def _depth(rel: str) -> int:
    return rel.count("/") + 1 if rel else 0


def _create(path: Path, entry: PlannedEntry) -> None:
    if entry.kind == "dir":
        path.mkdir(exist_ok=True)
        return
    if entry.kind == "file":
        path.write_bytes(entry.data)
    elif entry.kind == "symlink":
        path.symlink_to(entry.target)
    elif entry.kind == "fifo":
        os.mkfifo(path)
    else:
        type_bit = stat.S_IFCHR if entry.kind == "chr" else stat.S_IFBLK
        os.mknod(path, entry.mode | type_bit, entry.rdev)
    _set_metadata(path, entry)


def _set_metadata(path: Path, entry: PlannedEntry) -> None:
    """Owner first (chown clears setuid and security.capability), then mode, xattrs, mtime."""
    os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
    if entry.kind != "symlink":
        os.chmod(path, entry.mode)
    for name, value in entry.xattrs.items():
        os.setxattr(path, name, value, follow_symlinks=False)
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)


# --------------------------------------------------------------------------------------------
# The generator


def generate_random_site(
    prefix: Path,
    seed: int,
    *,
    n_images: int | None = None,
    n_groups: int = 3,
    n_nodes: int = 6,
    host_override_share: float = 0.5,
    entries_per_layer: tuple[int, int] = (3, 15),
    image_entries: tuple[int, int] = (30, 120),
    conflicts: bool = True,
    special_files: bool = True,
    xattrs: bool = True,
    missing_override: bool | None = None,
) -> SiteSpec:
    """Write a random SystemImager server tree under `prefix` (empty or absent); the same
    seed and options always give the same tree. `n_images` and `missing_override` are drawn
    at random when None; `entries_per_layer` bounds each override's random entries."""
    prefix = Path(prefix)
    if prefix.exists() and any(prefix.iterdir()):
        raise ValueError(f"{prefix} is not empty")
    rng = random.Random(seed)
    n_images = n_images or rng.randint(1, 2)
    if missing_override is None:
        missing_override = rng.random() < 0.5
    spec = _plan_topology(rng, prefix, n_images, n_groups, n_nodes, missing_override)
    opts = _Options(entries_per_layer, image_entries, special_files, xattrs)
    planner = _Planner(rng, opts)
    image_layers = [planner.plan_image(path) for path in spec.images.values()]
    host_overrides = [h for h in spec.nodes() if rng.random() < host_override_share]
    override_layers = {
        name: planner.plan_override(spec.override_dir(name))
        for name in _override_names(spec, host_overrides)
    }
    if conflicts:
        pairs = _conflict_pairs(rng, spec, image_layers, override_layers, host_overrides)
        spec.conflicts = planner.plant_conflicts(pairs)
        spec.quick_checks = _plant_quick_checks(pairs)
    for layer in image_layers:
        _add_image_pass_excludes(layer)
    if override_layers:
        _add_fixed(next(iter(override_layers.values())), IN_OVERRIDE_LOST_FOUND)
    write_cluster_xml(spec, rng)
    write_rsync_stubs(spec)
    for layer in planner.layers:
        write_layer(layer.root, layer.entries)
    write_autoinstall_scripts(spec)
    return spec


MASTER_SCRIPT = """\
#!/bin/sh
# This master autoinstall script was created with SystemImager (as si_mkautoinstallscript
# writes one; only the lines onesuite-fs reads are here).
{image_line}
{overrides_line}
# Leave notice of which image is installed on the client
echo $IMAGENAME > /a/etc/systemimager/IMAGE_LAST_SYNCED_TO || shellout

### BEGIN generate new fstab file from autoinstallscript.conf ###
cat <<'EOF' > /a/etc/fstab
# fstab of the script {name}
LABEL=/	/	ext4	defaults	1	1	# /dev/sda2
/dev/sda1	swap	swap	defaults	0	0
proc	/proc	proc	defaults	0	0
EOF
### END generate new fstab file from autoinstallscript.conf ###

for OVERRIDE in $OVERRIDES
do
    rsync -av --numeric-ids $IMAGESERVER::overrides/$OVERRIDE/ /a/
done
"""


def write_autoinstall_scripts(spec: SiteSpec) -> None:
    """The scripts directory as si_mkautoinstallscript and si_addclients leave it: IMAGE.master
    for every image (--script defaults to the image), GROUP.master for the first group made
    with --script GROUP --overrides extra-GROUP (its own script-named override and one laid
    after the host's, both with files), and the last host linked to it
    (HOST.sh -> GROUP.master) although not in that group. Fixed content, no random draw."""
    scripts = spec.prefix / "var/lib/systemimager/scripts"
    scripts.mkdir(parents=True, exist_ok=True)

    def master(name: str, image: str, extra: str = "") -> None:
        overrides = f'[ -z $OVERRIDES ] && OVERRIDES="{name} $GROUP_OVERRIDES $HOSTNAME{extra}"'
        (scripts / f"{name}.master").write_text(MASTER_SCRIPT.format(
            image_line=f"[ -z $IMAGENAME ] && IMAGENAME={image}", overrides_line=overrides,
            name=name))

    for image in spec.images:
        master(image, image)
    # A group whose name no override has: its script-named override and the --overrides
    # one are new, so the planted conflicts keep their precedence.
    group = next((g for g in spec.groups if g.image and g.name not in spec.images
                  and not spec.override_dir(g.name).exists()), None)
    if group is not None:
        extra = f"extra-{group.name}"
        master(group.name, group.image or "", f" {extra}")
        # The --overrides one also replaces the fstab the script writes (it comes later).
        for name, rel in ((group.name, "etc/motd"), (extra, f"opt/from-script-{extra}"),
                          (extra, "etc/fstab")):
            own = spec.override_dir(name)
            (own / rel).parent.mkdir(parents=True)
            (own / rel).write_text(f"{rel} from the script's override {name}\n")
        outsider = next((h for h in reversed(spec.nodes()) if h not in group.nodes), None)
        if outsider is not None:
            os.symlink(f"{group.name}.master", scripts / f"{outsider}.sh")
    # Fixed times, so that a seed always writes the same tree.
    fixed = (EPOCH * 10**9 - 5000 * 10**9,) * 2
    for top in [scripts, *(spec.override_dir(n) for n in (
            [group.name, f"extra-{group.name}"] if group is not None else []))]:
        for path in sorted(top.rglob("*"), reverse=True) + [top]:
            os.utime(path, ns=fixed, follow_symlinks=False)


# What autoinstall's image pass leaves out (rsync --exclude=lost+found/ --exclude=/proc/*),
# next to what it copies: a file named lost+found, the /proc directory itself. Fixed
# metadata, no random draw, so the random layers of a seed stay as they were.
IMAGE_PASS_ENTRIES = {
    "lost+found": "dir", "lost+found/#12345": "file", "usr/lost+found": "dir",
    "var/lost+found": "file", "proc": "dir", "proc/cpuinfo": "file", "proc/sys": "dir",
    "proc/sys/kernel": "file",
}
IN_OVERRIDE_LOST_FOUND = {"lost+found": "dir", "lost+found/from-override": "file"}


def _add_fixed(layer: _Layer, entries: dict[str, str]) -> None:
    for rel, kind in entries.items():
        parent = rel.rpartition("/")[0]
        if parent and parent not in layer.entries:
            layer.entries[parent] = PlannedEntry("dir", 0o755, 0, 0, layer.first_ns)
        if rel in layer.entries:
            continue
        mode = 0o700 if kind == "dir" else 0o444
        layer.entries[rel] = PlannedEntry(kind, mode, 0, 0, layer.first_ns + 10**9,
                                          data=f"{rel}\n".encode() if kind == "file" else b"")


QUICK_CHECK_SIZE = 24


def _plant_quick_checks(pairs: Sequence[tuple[_Layer, _Layer]]) -> list[str]:
    """Files rsync's quick check skips (same size, same mtime second, other bytes and mode):
    one per (lower, upper) pair, and one through a whole chain of pairs (image, global,
    group or host: an install keeps the image's bytes through every pass). Fixed metadata,
    no random draw."""
    planted: list[str] = []
    second = EPOCH * 10**9 - 10**9 * 1000  # a second no layer's own window uses
    chain = list({id(layer): layer for layer in [pairs[0][0], *(u for _l, u in pairs)]}.values()
                 ) if pairs else []
    plans = [(f"etc/qc-pair-{n}", [lower, upper]) for n, (lower, upper) in enumerate(pairs)]
    plans.append(("etc/qc-chain", chain))
    for rel, layers in plans:
        for step, layer in enumerate(layers):
            data = f"{step} {rel} {layer.label}".encode()[:QUICK_CHECK_SIZE].ljust(QUICK_CHECK_SIZE)
            if "etc" not in layer.entries:
                layer.entries["etc"] = PlannedEntry("dir", 0o755, 0, 0, layer.first_ns)
            layer.entries[rel] = PlannedEntry("file", (0o644, 0o600, 0o640, 0o400)[step % 4],
                                              step, step, second + step * 1000, data)
        planted.append(f"/{rel}")
    return planted


# si_updateclient's exclude list, as the systemimager-client package puts it in a golden
# image (a part of SystemImager's etc/updateclient.local.exclude), and paths the random
# layers have: with --override-order updateclient these keep the installed node's entries.
UPDATECLIENT_EXCLUDE = "etc/systemimager/updateclient.local.exclude"
UPDATECLIENT_EXCLUDES = """\
# Do NOT modify these exclusions or VERY STRANGE things may happen!
/etc/mtab
/proc/*
/sys/*
/var/log/*
  /indented/lines/are/not/used
relative/are/not/used
/etc/sysconfig/network
/etc/fstab
/etc/hosts
/etc/profile.d/site*
/home/*
/tmp/*
"""


def _add_image_pass_excludes(layer: _Layer) -> None:
    _add_fixed(layer, IMAGE_PASS_ENTRIES)
    _add_fixed(layer, {"etc/systemimager": "dir"})
    layer.entries[UPDATECLIENT_EXCLUDE] = PlannedEntry(
        "file", 0o644, 0, 0, layer.first_ns + 10**9, UPDATECLIENT_EXCLUDES.encode())


def _override_names(spec: SiteSpec, host_overrides: list[str]) -> list[str]:
    """Override directories to create: the referenced ones but MISSING_OVERRIDE, one named
    like each image (the script override) and the chosen host overrides."""
    names = [*spec.global_overrides, *(o for g in spec.groups for o in g.overrides)]
    names += [*spec.images, *host_overrides]
    return [name for name in dict.fromkeys(names) if name != MISSING_OVERRIDE]


def _conflict_pairs(
    rng: random.Random,
    spec: SiteSpec,
    images: list[_Layer],
    overrides: dict[str, _Layer],
    host_overrides: list[str],
) -> list[tuple[_Layer, _Layer]]:
    """(lower, upper) layer pairs whose precedence is the same under every order policy:
    each image below the most important existing global override, and that global override
    below one group or host override. Overrides named like an image are left out: as a
    node's script override they are applied before the global ones."""
    top_global = overrides[next(n for n in spec.global_overrides if n in overrides)]
    group_overrides = {o for g in spec.groups for o in g.overrides if o in overrides}
    uppers = sorted(group_overrides - set(spec.images)) + host_overrides
    pairs = [(image, top_global) for image in images]
    if uppers:
        pairs.append((top_global, overrides[rng.choice(uppers)]))
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    random_cmd = commands.add_parser("random", help="write a random site under PREFIX")
    random_cmd.add_argument("prefix", type=Path, metavar="PREFIX")
    random_cmd.add_argument("--seed", type=int, required=True)
    random_cmd.add_argument("--images", type=int, choices=range(1, len(IMAGE_NAMES) + 1))
    random_cmd.add_argument("--groups", type=int, default=3, choices=range(1, len(GROUP_NAMES) + 1))
    random_cmd.add_argument("--nodes", type=int, default=6)
    random_cmd.add_argument("--host-override-share", type=float, default=0.5)
    random_cmd.add_argument("--no-conflicts", action="store_true")
    random_cmd.add_argument("--no-special-files", action="store_true")
    random_cmd.add_argument("--no-xattrs", action="store_true")
    args = parser.parse_args(argv)
    spec = generate_random_site(
        args.prefix,
        args.seed,
        n_images=args.images,
        n_groups=args.groups,
        n_nodes=args.nodes,
        host_override_share=args.host_override_share,
        conflicts=not args.no_conflicts,
        special_files=not args.no_special_files,
        xattrs=not args.no_xattrs,
    )
    json.dump(spec.summary(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
