"""What a SystemImager site is, once read and validated: plain frozen data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .errors import ConfigError

# HostRange::sort_group gives groups without a usable priority this rank.
MAXINT = 2**32 - 1  # HostRange.pm: unpack("I", pack("I", -1))



# The two variables an autoinstall script's OVERRIDES line names (sources/scripts.py).
GROUP_OVERRIDES = "$GROUP_OVERRIDES"
HOSTNAME = "$HOSTNAME"

@dataclass(frozen=True)
class ScriptOverrides:
    """The OVERRIDES list of the script a node runs: override names, and the two variables
    GROUP_OVERRIDES (global, then the groups' overrides reversed) and HOSTNAME in place."""

    script: Path
    line: int
    words: tuple[str, ...]  # names, GROUP_OVERRIDES, HOSTNAME

    @property
    def where(self) -> str:
        return f"{self.script}:{self.line}"


@dataclass(frozen=True)
class WrittenFile:
    """A file a 4.3 install writes into a node's root itself, after the image pass and before
    the overrides (docs/semantics.md, "What autoinstall writes after the image pass"): its
    path in the root, its bytes, the time it is shown with (the install's own is unknown: the
    modification time of the file its content comes from) and where the content comes from."""

    path: str  # relative to the root: "etc/fstab"
    content: bytes
    mtime_ns: int
    source: str  # "file:line" of what writes it (or of its input)
    what: str  # "echo $IMAGENAME > /a/etc/systemimager/IMAGE_LAST_SYNCED_TO", ...


@dataclass(frozen=True)
class Group:
    """A cluster.xml <group> (or the groups that cluster.txt lines name)."""

    name: str
    priority: int | None  # as written; None when absent (lower number = more important)
    image: str | None
    overrides: tuple[str, ...]  # XML order: the first is the most important
    nodes: tuple[str, ...]
    ip_range: str | None = None
    domain: str | None = None
    source: str = ""  # file:line, for messages
    # The <priority> text is exactly "0": Perl's `or` reads that string (and only it, not
    # "00" or " 0 ") as false, so sort_group ranks the group MAXINT (HostRange.pm:239-240).
    priority_perl_false: bool = False

    @property
    def rank(self) -> tuple[int, str]:
        """SystemImager's sort_group key: priority (missing or written "0" = MAXINT), then
        name. "00" or a 0 with spaces around is priority 0, the most important."""
        if self.priority is None or self.priority_perl_false:
            return (MAXINT, self.name.lower())
        return (self.priority, self.name.lower())


@dataclass(frozen=True)
class Cluster:
    """The cluster topology: every group with its nodes and overrides."""

    global_name: str
    global_overrides: tuple[str, ...]  # XML order: the first is the most important
    groups: tuple[Group, ...]  # sort_group order (most important first)
    source: str  # the file it came from
    master: str | None = None
    # Hosts (or, for a <dynamic_node> that failed, "<dynamic_node> of group G") that cannot be
    # served, with why: one bad entry costs only its nodes (issue 16, item 10).
    broken: dict[str, ConfigError] = field(default_factory=dict)

    @cached_property
    def _groups_by_host(self) -> dict[str, tuple[Group, ...]]:
        found: dict[str, list[Group]] = {}
        for group in self.groups:
            for host in group.nodes:
                found.setdefault(host, []).append(group)
        return {host: tuple(groups) for host, groups in found.items()}

    def groups_of(self, host: str) -> tuple[Group, ...]:
        """The host's groups, most important first."""
        return self._groups_by_host.get(host, ())

    def hosts(self) -> list[str]:
        """Every host that can be served (the broken ones are in `broken`)."""
        return sorted(h for h in self._groups_by_host if h not in self.broken)


@dataclass(frozen=True)
class Image:
    name: str
    path: Path
    found_by: str  # "rsync stub FILE" or "images directory"
    # Where the directory really is, checked at load (sources/layer_roots.py); None for a
    # site built in memory. allowed_by: the allow_layers_outside entry when elsewhere.
    real: Path | None = None
    allowed_by: Path | None = None


@dataclass(frozen=True)
class Node:
    name: str
    groups: tuple[str, ...]  # sort_group order
    image: str


@dataclass(frozen=True)
class SiteLayout:
    """Where a SystemImager server keeps things, already taken under --root."""

    root: Path
    config_dir: Path  # etc/systemimager
    cluster_xml: Path
    rsync_stubs_dir: Path
    images_dir: Path
    overrides_dir: Path
    scripts_dir: Path

    @property
    def cluster_txt(self) -> Path:
        return self.scripts_dir / "cluster.txt"


@dataclass(frozen=True)
class Site:
    layout: SiteLayout
    cluster: Cluster
    images: dict[str, Image]
    nodes: dict[str, Node]
    warnings: tuple[str, ...] = field(default=())
    # Names under overrides_dir that are directories, read once: one listdir, not a stat
    # per node and override.
    present_overrides: frozenset[str] = field(default=frozenset())
    # Where present overrides really are: the overrides directory's real path, and the
    # overrides elsewhere (name -> (real path, allow_layers_outside entry)).
    overrides_real_dir: Path | None = None
    overrides_elsewhere: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    # Overrides that are symlinks to a directory inside the overrides directory, as rsyncd
    # follows them: name -> that directory's real path (sources/layer_roots.py).
    overrides_linked: dict[str, Path] = field(default_factory=dict)
    # A Warewulf site's stacks (sources/warewulf_build.WarewulfStacks): stack.py asks it for
    # each view's stages instead of laying SystemImager overrides. None for SystemImager.
    warewulf: object | None = None
    # The nodes that cannot be served, each with its error (file, line, what to do); absent
    # from `nodes`. `--strict` refuses the site instead (sources/systemimager.py).
    broken: dict[str, ConfigError] = field(default_factory=dict)
    # host -> the OVERRIDES list of the autoinstall script it runs (sources/scripts.py);
    # a node without one follows the image-named rule.
    scripts: dict[str, ScriptOverrides] = field(default_factory=dict)
    chosen_scripts: dict[str, Path] = field(default_factory=dict)  # host -> its script
    # host -> what its install writes after the image pass (sources/install_writes.py);
    # laid into the node's root with --fidelity install (core/generated.py).
    install_writes: dict[str, tuple[WrittenFile, ...]] = field(default_factory=dict)

    def override_path(self, name: str) -> Path:
        return self.layout.overrides_dir / name

    def override_real(self, name: str) -> tuple[Path | None, Path | None]:
        """(real path, allowed_by) of a present override; (None, None) when unknown."""
        elsewhere = self.overrides_elsewhere.get(name)
        if elsewhere is not None:
            return elsewhere
        linked = self.overrides_linked.get(name)
        if linked is not None:
            return linked, None
        if self.overrides_real_dir is None or name not in self.present_overrides:
            return None, None
        return self.overrides_real_dir / name, None

    def broken_report(self) -> list[dict[str, object]]:
        """The broken nodes as --json and `onesuite status` show them, by name."""
        return [{"name": name, "error": error.message, "file": error.file,
                 "line": error.line, "hint": error.hint}
                for name, error in sorted(self.broken.items())]

    def layers_elsewhere(self) -> list[dict[str, str]]:
        """Every layer served from outside its directory (allowed), with its real path."""
        found = [{"kind": "image", "name": i.name, "path": str(i.path), "real_path": str(i.real),
                  "allowed_by": str(i.allowed_by)}
                 for i in self.images.values() if i.allowed_by is not None]
        found += [{"kind": "override", "name": name, "path": str(self.override_path(name)),
                   "real_path": str(real), "allowed_by": str(allowed)}
                  for name, (real, allowed) in sorted(self.overrides_elsewhere.items())]
        return found
