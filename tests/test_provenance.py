"""Provenance is a typed value: the mount's origin text, the --json fields and the terminal
column are its renderings. The origin text of every entry is byte for byte what the text
formatting that came before it produced (a copy of that formatting is kept here only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sitetools import onesis_site
from treetools import inode_tree

from onesuite_fs.core.entry import NAMESPACES
from onesuite_fs.core.onesis_config import OnesisSource
from onesuite_fs.core.onesis_view import Linked, Synthetic, Writable
from onesuite_fs.core.provenance import Kind, Provenance
from onesuite_fs.daemon.inode_tree import InodeTree
from onesuite_fs.settings import Settings
from onesuite_fs.sources.systemimager import load_site

ORDERS = ("autoinstall", "pushoverrides", "updateclient")


def old_origin(tree: InodeTree, ino: int, item: object) -> str:
    """InodeTree.origin as it formatted text before provenance was a value; `item` is the oneSIS
    item the entry was resolved from (its private origins were formatted from it)."""
    if tree._is_fixed_dir(ino):
        return "onesuite:namespace"
    # A persistent path not made yet (an inspection) has the origin the made one has.
    pending = getattr(tree._dirs.get(ino), "pending", None)
    private = tree._private.get(ino)
    if pending is not None or (private is not None and private.provenance.kind
                               is Kind.PERSISTENT):
        ref = tree._dirs.get(ino) or private
        rule = pending or item.rule if isinstance(item, Writable) else pending
        if rule is None:  # inside a copied directory: the rule of the directory above
            rule = next(r.pending for r in tree._dirs.values()
                        if r.pending is not None and ref.path.startswith(r.path + "/"))
        where = f"{rule.kind} {rule.pattern} {rule.file}:{rule.line}"
        return f"state:{ref.entry.name} /{ref.path} (persistent: {where})"
    if ino in tree._synthetic_dirs:
        return "onesis: mount point of the /ram tmpfs"
    if ino in tree._private:
        if isinstance(item, Linked):
            variant = item.variant
            source = f"{item.variant_parent}/{variant.name}" if item.variant_parent \
                else variant.name
            return (f"{tree.view.store.layer(variant.layer).label} /{source} "
                    f"(LINKBACK {item.rule}: {item.reason})")
        assert isinstance(item, Synthetic)
        return f"onesis: {item.reason}" + (f" ({item.rule})" if item.rule else "")
    state = tree._state.get(ino)
    if state is not None:
        rule = state.rule
        where = f"{rule.kind} {rule.pattern} {rule.file}:{rule.line}"
        return f"state:{state.entry.name} /{state.path} (persistent: {where})"
    ref = tree._dirs.get(ino)
    if ref is not None:
        return f"{tree.view.store.layer(ref.layer).label} /{ref.source}"
    file_ref = tree._files[ino]
    origin = f"{tree.view.store.layer(file_ref.layer).label} /{file_ref.path}"
    if file_ref.meta.nlink > 1:
        origin += f" (one of {file_ref.meta.nlink} hard links)"
    return origin


def every_origin(tree: InodeTree) -> list[tuple[str, str, str]]:
    """(mount path, origin, old origin) of every entry of every view, walked by inode."""
    found = []
    pending = [("", 1, None)]
    while pending:
        path, ino, item = pending.pop()
        found.append((path, tree.origin(ino), old_origin(tree, ino, item)))
        if not tree.is_dir(ino):
            continue
        ref = tree._dirs.get(ino)
        items = tree._dir_items(ref) if ref is not None and ino not in tree._synthetic_dirs \
            else {}
        for name, attr in tree.listdir(ino):
            pending.append((f"{path}/{name}", attr.ino, items.get(name)))
    return found


def trees(site: Path, state: Path) -> list[InodeTree]:
    loaded = load_site(Settings(root=site))
    made = []
    for order in ORDERS:
        made.append(inode_tree(loaded, order, OnesisSource()))
        # Persistent paths, seen before first use (an inspection) and made (the mount).
        made.append(inode_tree(loaded, order, OnesisSource(policy="persistent"), state))
        made.append(inode_tree(loaded, order, OnesisSource(policy="persistent"), state,
                         create_state=True))
    return made


@pytest.mark.parametrize("which", ["example", "onesis"])
def test_every_origin_text_is_the_one_before(which, example_site, tmp_path):
    site = example_site if which == "example" else onesis_site(tmp_path / "site")
    seen: set[str] = set()
    hard_links = False
    for tree in trees(Path(site), tmp_path / "state"):
        origins = every_origin(tree)
        wrong = [(path, new, old) for path, new, old in origins if new != old]
        assert not wrong, wrong[:5]
        seen.update(new.split(" ", 1)[0].split(":", 1)[0] for _, new, _ in origins)
        hard_links |= any(new.endswith(" hard links)") for _, new, _ in origins)
        assert len(origins) > 50
    # Every kind of origin was met (so the comparison covered each formatting).
    kinds = {"image", "override", "onesuite"}
    if which == "onesis":
        kinds |= {"onesis", "state"}
    assert kinds <= seen, seen
    assert hard_links or which == "onesis"  # the example site keeps hard links


def test_the_onesis_site_has_each_kind_of_entry(tmp_path):
    """The walk above meets every kind of provenance, LINKBACK'd files and directories
    included (else it would prove less than it says)."""
    made = trees(onesis_site(tmp_path / "site"), tmp_path / "state")[:3]  # one order
    values = [tree.provenance(ino) for tree in made for ino in _inodes(tree)]
    # (a directory on disk is diff's; a whiteout is no entry: preview's hidden rows)
    assert {v.kind for v in values} == set(Kind) - {Kind.DIRECTORY, Kind.WHITEOUT}
    assert any(v.rule and v.kind is Kind.LAYER and v.is_dir for v in values)
    assert any(v.rule and v.kind is Kind.LAYER and not v.is_dir for v in values)
    assert any(v.rule and v.kind is Kind.SYNTHETIC for v in values)
    assert any(v.rule is None and v.kind is Kind.SYNTHETIC for v in values)  # /ram


def _inodes(tree: InodeTree) -> list[int]:
    found, pending = [], [1]
    while pending:
        ino = pending.pop()
        found.append(ino)
        if tree.is_dir(ino):
            pending += [attr.ino for _, attr in tree.listdir(ino)]
    return found


def test_the_path_api_gives_the_same_provenance_as_the_mount(tmp_path):
    tree = trees(onesis_site(tmp_path / "site"), tmp_path / "state")[2]
    for namespace in NAMESPACES:
        for entry in tree.entries[namespace].values():
            by_ino = tree.entry_root_ino(entry)
            pending = [(tree.view.root_node(entry), by_ino)]
            while pending:
                node, ino = pending.pop()
                assert tree.view.node_provenance(node) == tree.provenance(ino), (entry.key, node)
                if node.is_dir:
                    numbers = dict(tree.listdir(ino))
                    pending += [(child, numbers[child.name].ino)
                                for child in tree.view.children(node)]


# --------------------------------------------------------------------------------------------
# The three renderings, one value of each kind (docs/semantics.md, docs/json.md)

RULE = "/srv/si/img/etc/sysimage.conf:7"


def plain(label: str) -> str:
    return label


def test_a_linkback_file_rendered_three_ways():
    value = Provenance.of_layer("override:n2", "etc/fstab.compute", is_dir=False, rule=RULE,
                                reason="CLASS variant fstab.compute")
    text = f"override:n2 /etc/fstab.compute (LINKBACK {RULE}: CLASS variant fstab.compute)"
    assert value.xattr_text() == text
    assert value.json_fields() == {"layer": "override:n2", "source": "/etc/fstab.compute",
                                   "rule": RULE, "origin": text}
    assert value.terminal("/etc/fstab", plain) == \
        "override:n2 /etc/fstab.compute  [sysimage.conf:7]"
    assert value.terminal("/etc/fstab", lambda s: f"<{s}>").startswith("<override:n2> ")


def test_a_linkback_directory_names_its_line_in_json_only():
    value = Provenance.of_layer("image:img", "etc/profile.d.compute", is_dir=True, rule=RULE,
                                reason="CLASS variant profile.d.compute")
    assert value.xattr_text() == "image:img /etc/profile.d.compute"
    assert value.json_fields()["rule"] == RULE
    assert value.terminal("/etc/profile.d", plain) == \
        "image:img /etc/profile.d.compute  [sysimage.conf:7]"


def test_a_plain_layer_entry_and_a_hard_link():
    value = Provenance.of_layer("image:img", "etc/hosts", is_dir=False)
    assert value.xattr_text() == "image:img /etc/hosts"
    assert value.terminal("/etc/hosts", plain) == "image:img"
    linked = Provenance.of_layer("image:img", "usr/bin/vi", is_dir=False, hard_links=2)
    assert linked.xattr_text() == "image:img /usr/bin/vi (one of 2 hard links)"
    assert linked.source == "/usr/bin/vi"


def test_synthetic_and_persistent_entries():
    link = Provenance.synthetic("LINKDIR (rc.preinit fills /ram)", RULE, is_dir=False)
    assert link.xattr_text() == f"onesis: LINKDIR (rc.preinit fills /ram) ({RULE})"
    assert link.json_fields() == {"layer": "onesis", "source": None, "rule": RULE,
                                  "origin": link.xattr_text()}
    assert link.terminal("/var/log", plain) == \
        "onesis: LINKDIR (rc.preinit fills /ram)  [sysimage.conf:7]"
    ram = Provenance.synthetic("mount point of the /ram tmpfs", "", is_dir=True)
    assert (ram.xattr_text(), ram.rule) == ("onesis: mount point of the /ram tmpfs", None)
    state = Provenance.persistent("n1", "var/log/boot.log", "LINKDIR", "/var/log", RULE)
    assert state.xattr_text() == \
        f"state:n1 /var/log/boot.log (persistent: LINKDIR /var/log {RULE})"
    assert state.terminal("/var/log/boot.log", plain) == "state:n1  [sysimage.conf:7]"
    on_disk = Provenance.on_disk("dir:/mnt/root", "/etc/fstab", is_dir=False)
    assert on_disk.xattr_text() == "dir:/mnt/root /etc/fstab"
    assert on_disk.json_fields()["rule"] is None
