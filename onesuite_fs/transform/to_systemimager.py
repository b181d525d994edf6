"""``onesuite convert to-systemimager``: a oneSIS image and its nodes as a SystemImager site.

Every node's root is read as onesuite-fs serves it from the oneSIS image (its class's and its
own LINKBACK variants chosen, SERVICE applied, RAM/LINK paths as links into /ram under the
``ram`` policy), and the roots are split into three kinds of layers:

* the **golden image**: what every node has. A path every node has, but with different
  values, gets the value the ``name.default`` (or ``.name.default``) variant next to it
  shows, else the most common one;
* one **override per class**, named like the class: what all members of the class share
  beyond the image (preferring the ``name.<class>`` variant, else their most common value);
* one **override per node**, named like the host (SystemImager applies ``overrides/<host>``
  last in the autoinstall order): the rest.

Overrides cannot delete (no whiteouts), so a path is in a layer only when every node the layer
reaches has it, and a directory only when every such node has a directory there (a
non-directory over a non-empty directory is refused by rsync). rsync gives a directory the
metadata of the last layer that has it, so after a directory's entries are written, each
node's layered mode, owner, time and attributes are checked and the directory is added to the
node's host override wherever they would be wrong.

Streaming: the nodes' roots are walked in lockstep, their listings merged in name order one
entry at a time (`merged_children`), so what is held is the View's own listing of each
directory on the current path, not a copy per node; everything is written as it is decided.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from ..core.errors import ConfigError
from ..core.model import Cluster, Group, Image, Node, Site, SiteLayout
from ..core.names import check_name
from ..core.onesis_config import SYSIMAGE_CONF, OnesisSource
from ..core.view import View
from ..progress import Progress
from ..sources.cluster_txt import render_cluster_txt
from ..sources.hostrange import expand_item, expand_range_list
from ..sources.systemimager import RESERVED_MODULES
from .compare import Comparer
from .materialize import Writer
from .walk import HardLinks, Item, Root, merged_children, named_root

IMAGES_DIR = "var/lib/systemimager/images"
OVERRIDES_DIR = "var/lib/systemimager/overrides"
SCRIPTS_DIR = "var/lib/systemimager/scripts"
CONFIG_DIR = "etc/systemimager"
GROUP = "onesis"  # the one group of the in-memory site that reads the oneSIS image
UNCLASSIFIED = "unclassified"
_NUMBERED = re.compile(r"(.*?)(\d+)")


# ----- input -----------------------------------------------------------------------------
def read_nodes_file(path: Path) -> list[str]:
    """Host names, one or more a line (split on commas and white space), `#` comments;
    SystemImager range items (`node001-node010`, zero-padded to the start's width; `\\-` is a
    literal hyphen) are expanded as cluster.xml's <node> is. Sorted, without duplicates."""
    try:
        text = path.read_text(errors="surrogateescape")
    except OSError as exc:
        raise ConfigError(f"cannot read the node list: {exc.strerror}", file=str(path)) from None
    hosts: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        for item in re.split(r"[,\s]+", raw.split("#", 1)[0]):
            for host in expand_item(item) if item else []:
                check_name("node", host, file=str(path), line=number)
                if ":" in host:  # cluster.txt separates its fields with ':'
                    raise ConfigError(f"node name {host!r} contains ':'", file=str(path),
                                      line=number, hint="SystemImager cannot name such a host")
                hosts.add(host)
    if not hosts:
        raise ConfigError("the node list names no node", file=str(path),
                          hint="one host name (or range such as node001-node010) a line")
    return sorted(hosts)


def onesis_site(image_dir: Path, image: str, hosts: list[str]) -> Site:
    """An in-memory SystemImager site whose one image is the oneSIS image and whose one group
    has every node, with no override: served by a View, each node's root is what onesuite-fs
    serves from the oneSIS image (its sysimage.conf decides the classes)."""
    conf = image_dir / SYSIMAGE_CONF
    # The View dates the entries no layer has (the /ram mount point, links into it) with the
    # topology's mtime; for a oneSIS image the topology is its sysimage.conf.
    cluster = Cluster(global_name="all", global_overrides=(),
                      groups=(Group(GROUP, None, image, (), tuple(hosts)),), source=str(conf))
    nowhere = image_dir / ".onesuite-no-such-dir"
    layout = SiteLayout(root=image_dir, config_dir=nowhere, cluster_xml=conf,
                        rsync_stubs_dir=nowhere, images_dir=image_dir.parent,
                        overrides_dir=nowhere, scripts_dir=nowhere)
    return Site(layout=layout, cluster=cluster,
                images={image: Image(image, image_dir, "oneSIS image")},
                nodes={h: Node(h, (GROUP,), image) for h in hosts})


def onesis_tree(image_dir: Path, image: str, hosts: list[str]) -> View:
    """The View serving the oneSIS image to `hosts` (ram link policy: read-only, no state)."""
    if not image_dir.is_dir():
        raise ConfigError(f"{image_dir} is not a directory", hint="name a oneSIS image root")
    if not (image_dir / SYSIMAGE_CONF).is_file():
        raise ConfigError(f"{image_dir} is not a oneSIS image: it has no /{SYSIMAGE_CONF}",
                          hint="ONESIS_IMAGE is the image's root directory (where "
                               "mk-sysimage ran)")
    return View(onesis_site(image_dir, image, hosts), "autoinstall", OnesisSource(), None,
                bounded_caches=True)


# ----- names -----------------------------------------------------------------------------
def host_ranges(hosts: Iterable[str]) -> str:
    """SystemImager <node> text for `hosts`: runs of consecutive numbers of the same width
    and prefix become `node001-node009`; hyphens in names are escaped. Checked by expanding
    it again; a plain list when that would not give the same hosts."""
    hosts = sorted(set(hosts))
    items: list[str] = []
    run: list[tuple[str, str]] = []

    def flush() -> None:
        if not run:
            return
        first, last = "".join(run[0]), "".join(run[-1])
        items.append(first.replace("-", "\\-") if len(run) == 1 else
                     f"{first.replace('-', chr(92) + '-')}-{last.replace('-', chr(92) + '-')}")
        run.clear()

    for host in sorted(hosts, key=lambda h: (_NUMBERED.fullmatch(h) is None, h)):
        match = _NUMBERED.fullmatch(host)
        if match is None:
            flush()
            items.append(host.replace("-", "\\-"))
            continue
        prefix, digits = match.groups()
        if run and not (run[-1][0] == prefix and len(run[-1][1]) == len(digits)
                        and int(run[-1][1]) + 1 == int(digits)):
            flush()
        run.append((prefix, digits))
    flush()
    text = ",".join(items)
    if expand_range_list(text) != hosts:
        text = ",".join(h.replace("-", "\\-") for h in hosts)
    return text


def _free_name(base: str, taken: set[str]) -> str:
    name, number = base, 2
    while name in taken:
        name, number = f"{base}_{number}", number + 1
    taken.add(name)
    return name


@dataclass
class Layout:
    """The names of the converted site: groups (one per class), their overrides, the image."""

    image: str
    classes: list[str]  # group names, one per class
    overrides: list[str]  # the override of each class (its name unless that is taken)
    class_of: dict[str, int]  # host -> index into classes
    global_override: str

    @staticmethod
    def plan(image: str, hosts: list[str], node_classes: dict[str, str | None]) -> Layout:
        names = sorted({c or "" for c in node_classes.values()}, key=lambda c: (c == "", c))
        taken = {*hosts, image}  # overrides/<host> and overrides/<image> apply implicitly
        groups = [c or _free_name(UNCLASSIFIED, set(names)) for c in names]
        overrides = [_free_name(g, taken) for g in groups]
        index = {c: n for n, c in enumerate(names)}
        return Layout(image, groups, overrides, {h: index[node_classes[h] or ""] for h in hosts},
                      _free_name("all", taken))

    def cluster(self, hosts: list[str]) -> Cluster:
        groups = tuple(Group(g, None, self.image, (o,), tuple(
            h for h in hosts if self.class_of[h] == n))
            for n, (g, o) in enumerate(zip(self.classes, self.overrides, strict=True)))
        return Cluster("all", (self.global_override,), tuple(sorted(groups, key=lambda g: g.rank)),
                       f"{CONFIG_DIR}/cluster.xml")


def cluster_xml(cluster: Cluster, source: str) -> str:
    lines = ["<xml>", f"  <!-- written by 'onesuite convert to-systemimager' from {escape(source)}",
             "       one group per oneSIS class; overrides/<host> is applied to each node "
             "last -->",
             f"  <name>{escape(cluster.global_name)}</name>"]
    lines += [f"  <override>{escape(o)}</override>" for o in cluster.global_overrides]
    for group in cluster.groups:
        lines += ["  <group>", f"    <name>{escape(group.name)}</name>",
                  f"    <image>{escape(group.image or '')}</image>"]
        lines += [f"    <override>{escape(o)}</override>" for o in group.overrides]
        lines += [f"    <node>{escape(host_ranges(group.nodes))}</node>", "  </group>"]
    return "\n".join([*lines, "</xml>"]) + "\n"


# ----- splitting the roots into layers -----------------------------------------------------
IMAGE, CLASS, HOST = 0, 1, 2
LevelKey = tuple[int, int]  # (IMAGE, 0), (CLASS, class index), (HOST, node index)


@dataclass
class Conversion:
    """What a conversion produced, for the summary and the tests."""

    hosts: list[str]
    layout: Layout
    class_paths: Counter[str] = field(default_factory=Counter)  # override -> entries
    host_paths: Counter[str] = field(default_factory=Counter)  # host -> entries
    entries: int = 0
    bytes: int = 0


class _Splitter:
    def __init__(self, roots: list[Root], layout: Layout, out: Path, progress: Progress,
                 conversion: Conversion) -> None:
        self.roots = roots
        self.hosts = [r.entry.name for r in roots]
        self.layout = layout
        self.klass = [layout.class_of[h] for h in self.hosts]
        self.members = [[n for n, k in enumerate(self.klass) if k == c]
                        for c in range(len(layout.classes))]
        self.dirs = {(IMAGE, 0): out / IMAGES_DIR / layout.image}
        self.dirs.update(((CLASS, c), out / OVERRIDES_DIR / o)
                         for c, o in enumerate(layout.overrides))
        self.dirs.update(((HOST, n), out / OVERRIDES_DIR / h) for n, h in enumerate(self.hosts))
        self.compare = Comparer()
        self.writer = Writer(spill_dir=out.parent)
        self.progress = progress
        self.conversion = conversion
        # path -> the layers that have made that directory; only directories on the current
        # path of the walk are here (an entry goes when its metadata is set).
        self.made: dict[str, set[LevelKey]] = {}
        # Content hashes, for one directory's entries only (memory stays flat).
        self._digests: dict[tuple[int, int], bytes] = {}

    # ----- values of a path ---------------------------------------------------------------
    def key(self, n: int, item: Item) -> tuple[object, ...]:
        return self.compare.meta_key(self.roots[n], item)

    def digest(self, n: int, item: Item) -> bytes:
        found = self._digests.get(item.link_key)
        if found is None:
            sha = hashlib.sha256()
            for chunk in self.roots[n].chunks(item):
                sha.update(chunk)
            found = self._digests[item.link_key] = sha.digest()
        return found

    def value_ids(self, values: dict[int, Item]) -> dict[int, tuple[object, ...]]:
        """node -> an id that is equal exactly when two nodes show the same non-directory.
        Content is hashed only where the metadata agree and the backing files differ (a file
        every node shares, the common case, is never read)."""
        by_meta: dict[tuple[object, ...], list[int]] = {}
        for n, item in values.items():
            by_meta.setdefault(self.key(n, item), []).append(n)
        ids: dict[int, tuple[object, ...]] = {}
        for meta, nodes in by_meta.items():
            first = values[nodes[0]]
            hashed = first.is_reg and len({values[n].link_key for n in nodes}) > 1
            for n in nodes:
                content = self.digest(n, values[n]) if hashed else None
                ids[n] = (meta, content)
        return ids

    def same(self, a: tuple[int, Item], b: tuple[int, Item]) -> bool:
        (na, ia), (nb, ib) = a, b
        if self.key(na, ia) != self.key(nb, ib):
            return False
        if not ia.is_reg or ia.link_key == ib.link_key:
            return True
        return self.digest(na, ia) == self.digest(nb, ib)

    def choose(self, values: dict[int, Item], ids: dict[int, tuple[object, ...]],
               preferred: tuple[int, Item] | None) -> int:
        """The node whose value a shared layer gets: the value `preferred` (a variant file
        next to the path) shows if some node shows it, else the most common (ties: the
        first node's)."""
        ids = {n: ids[n] for n in values}
        if preferred is not None:
            for n in {i: n for n, i in ids.items()}.values():
                if self.same((n, values[n]), preferred):
                    return n
        best = Counter(ids.values()).most_common(1)[0][0]
        return next(n for n, i in ids.items() if i == best)

    def sibling(self, parents: dict[int, Item], name: str,
                variant: str) -> tuple[int, Item] | None:
        """The `name.variant` (or hidden `.name.variant`) non-directory next to the path in
        some node's root: what the image (variant 'default') or a class override prefers."""
        for n, parent in parents.items():
            for candidate in (f"{name}.{variant}", f".{name}.{variant}"):
                found = self.roots[n].child(parent, candidate)
                if found is not None and not found.is_dir:
                    return n, found
        return None

    # ----- writing ------------------------------------------------------------------------
    def ensure_dir(self, level: LevelKey, path: str) -> Path:
        """The layer's directory at `path`, made (with its parents) when missing; its metadata
        is set when the walk leaves it."""
        dest = self.dirs[level] / path if path else self.dirs[level]
        made = self.made.setdefault(path, set())
        if level not in made:
            if path:
                self.ensure_dir(level, path.rpartition("/")[0])
            dest.mkdir(parents=not path)
            made.add(level)
            self.count(level)
        return dest

    def count(self, level: LevelKey) -> None:
        if level[0] == CLASS:
            self.conversion.class_paths[self.layout.overrides[level[1]]] += 1
        elif level[0] == HOST:
            self.conversion.host_paths[self.hosts[level[1]]] += 1
        self.conversion.entries += 1

    def put(self, level: LevelKey, n: int, item: Item) -> None:
        parent, _, name = item.path.rpartition("/")
        dest = self.ensure_dir(level, parent) / name
        self.writer.entry(self.roots[n], item, dest)
        self.count(level)
        if item.is_reg:
            self.progress.add_bytes(item.attr.size)
            self.conversion.bytes += item.attr.size

    # ----- the walk -----------------------------------------------------------------------
    def run(self) -> None:
        tops = {n: r.top() for n, r in enumerate(self.roots)}
        for level in self.dirs:
            if level[0] != HOST:  # the image and every class override exist
                self.ensure_dir(level, "")
        self.progress.entry()  # the root directory
        self.directory("", tops, image=True, classes=[True] * len(self.members))

    def directory(self, path: str, items: dict[int, Item], *, image: bool,
                  classes: list[bool]) -> None:
        """Write directory `path` of the nodes that have it (`items`). `image`: every node
        has it, so the golden image has it; `classes[c]`: every member of class c has it, so
        class c's override may have it."""
        metas = {n: self.key(n, item) for n, item in items.items()}
        image_meta = Counter(metas.values()).most_common(1)[0][0] if image else None
        if image:
            self.ensure_dir((IMAGE, 0), path)
        class_meta: dict[int, tuple[object, ...]] = {}
        for c, full in enumerate(classes):
            if full and self.members[c]:
                class_meta[c] = Counter(metas[n] for n in self.members[c]).most_common(1)[0][0]
                if not image or class_meta[c] != image_meta:
                    self.ensure_dir((CLASS, c), path)  # what the class shares beyond the image
        for name, present in merged_children(self.roots, items):
            self.child(path, name, items, present, image=image, classes=classes)
        self.finish(path, items, metas, image_meta, class_meta)

    def child(self, parent: str, name: str, parents: dict[int, Item], present: dict[int, Item],
              *, image: bool, classes: list[bool]) -> None:
        """Write the entry `name` of directory `parent` of the nodes that have it (`present`;
        `parents`: the directory in every node that has it)."""
        path = f"{parent}/{name}" if parent else name
        self.progress.entry()
        dirs = {n: i for n, i in present.items() if i.is_dir}
        files = {n: i for n, i in present.items() if not i.is_dir}
        ids = self.value_ids(files)
        shown: dict[int, tuple[object, ...]] = {}  # node -> the value its layers give it
        if files and image and len(present) == len(self.roots):
            chosen = self.choose(files, ids, self.sibling(parents, name, "default"))
            self.put((IMAGE, 0), chosen, files[chosen])
            shown = dict.fromkeys(range(len(self.roots)), ids[chosen])
        for c, members in enumerate(self.members):
            mine = {n: files[n] for n in members if n in files}
            if not (mine and classes[c] and all(n in present for n in members)):
                continue  # an override cannot delete: only what every member has
            chosen = self.choose(mine, ids, self.sibling(parents, name,
                                                         self.layout.classes[c]))
            if shown.get(members[0]) != ids[chosen]:
                self.put((CLASS, c), chosen, files[chosen])
                shown.update(dict.fromkeys(members, ids[chosen]))
        for n, item in files.items():
            if shown.get(n) != ids[n]:
                self.put((HOST, n), n, item)
        self.writer.release()  # memory: only real hard links are kept
        self._digests.clear()
        if dirs:
            self.directory(path, dirs, image=image and len(dirs) == len(self.roots),
                           classes=[full and all(n in dirs for n in self.members[c])
                                    for c, full in enumerate(classes)])

    def finish(self, path: str, items: dict[int, Item], metas: dict[int, tuple[object, ...]],
               image_meta: tuple[object, ...] | None,
               class_meta: dict[int, tuple[object, ...]]) -> None:
        """Set the directory's metadata in every layer that has it, after its entries (writing
        them changed its time); give a node its own copy in its host override wherever its
        layers would leave the wrong mode, owner, time or attributes (rsync gives a directory
        the metadata of the last layer that has it)."""
        made = self.made.setdefault(path, set())
        for n in items:
            if (HOST, n) in made:
                continue
            layered = class_meta[self.klass[n]] if (CLASS, self.klass[n]) in made else \
                image_meta
            if layered != metas[n]:
                self.ensure_dir((HOST, n), path)
        for level in made:
            kind, index = level
            if kind == HOST:
                n = index
            else:
                wanted = image_meta if kind == IMAGE else class_meta[index]
                scope = items if kind == IMAGE else self.members[index]
                n = next(n for n in scope if metas[n] == wanted)
            self.writer.set_meta(self.roots[n], items[n],
                                 self.dirs[level] / path if path else self.dirs[level])
        del self.made[path]


def node_classes(tree: View, hosts: list[str], allow_unclassified: bool) -> dict[str, str | None]:
    """Each node's oneSIS class from the image's sysimage.conf."""
    classes: dict[str, str | None] = {}
    for host in hosts:
        onesis = tree.node_onesis(tree.entries["nodes"][host])
        classes[host] = onesis.rules.node_class if onesis is not None else None
    lost = [h for h, c in classes.items() if c is None]
    if lost and not allow_unclassified:
        shown = ", ".join(lost[:8]) + (" ..." if len(lost) > 8 else "")
        raise ConfigError(f"no NODECLASS line of the image's sysimage.conf matches "
                          f"{len(lost)} node(s): {shown}",
                          hint="fix the names in the node list, add NODECLASS lines, or pass "
                               f"--allow-unclassified to put them in a group "
                               f"'{UNCLASSIFIED}' (they get the .default variants)")
    return classes


def convert_to_systemimager(tree: View, layout: Layout, hosts: list[str], out: Path,
                            progress: Progress, source: str,
                            links: HardLinks | None = None) -> Conversion:
    """Write the SystemImager site for `hosts` into the (empty) directory `out`. `links`:
    which files have two names in a node's root (`measure` of one; they share the image)."""
    conversion = Conversion(hosts, layout)
    roots = [named_root(tree, h) for h in hosts]
    for root in roots:
        root.links = links or root.links
    splitter = _Splitter(roots, layout, out, progress, conversion)
    try:
        splitter.run()
    except ValueError as exc:  # a rule the node cannot follow ($CLASS without a class)
        raise ConfigError(f"the oneSIS rules cannot be applied: {exc}",
                          hint="give the node a class, or limit the rule to classes") from None
    finally:
        splitter.writer.close()
    # The global override: cluster.xml needs one; an empty one with the image's root
    # metadata changes nothing and keeps onesuite-fs from warning that it is missing.
    global_dir = out / OVERRIDES_DIR / layout.global_override
    global_dir.mkdir()
    top = (out / IMAGES_DIR / layout.image).lstat()
    os.chown(global_dir, top.st_uid, top.st_gid)
    os.chmod(global_dir, stat.S_IMODE(top.st_mode))
    for name, value in _xattrs(out / IMAGES_DIR / layout.image):
        os.setxattr(global_dir, name, value)
    os.utime(global_dir, ns=(top.st_atime_ns, top.st_mtime_ns))
    cluster = layout.cluster(hosts)
    config = out / CONFIG_DIR
    (config / "rsync_stubs").mkdir(parents=True)
    (config / "cluster.xml").write_text(cluster_xml(cluster, source))
    # The served roots date the /ram mount point with the topology's time: keep it.
    stable = tree.stable_ns
    os.utime(config / "cluster.xml", ns=(stable, stable))
    (config / "rsync_stubs" / f"40{layout.image}").write_text(
        f"[{layout.image}]\n\tpath=/{IMAGES_DIR}/{layout.image}\n\n")
    scripts = out / SCRIPTS_DIR
    scripts.mkdir(parents=True)
    (scripts / "cluster.txt").write_text(render_cluster_txt(cluster))
    return conversion


def _xattrs(path: Path) -> list[tuple[str, bytes]]:
    return [(name, os.getxattr(path, name)) for name in os.listxattr(path)]


def check_image_name(name: str) -> str:
    check_name("image", name)
    if name in RESERVED_MODULES or name.startswith("-"):
        raise ConfigError(f"{name!r} cannot be a SystemImager image name (reserved rsync "
                          "module, or a leading '-')", hint="pass --image NAME")
    return name

