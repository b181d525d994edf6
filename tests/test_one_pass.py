"""Reading a view by path (InodeTree.root_node/children: export, convert) answers exactly what
reading it by inode number (the mount's way) answers, registers no inode, and stays right when
the bounded caches evict on every directory."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import sitegen
from sitetools import onesis_site
from treetools import inode_tree

from onesuite_fs.core import view as tree_module
from onesuite_fs.core.bounded import BoundedCache, entries_of
from onesuite_fs.core.onesis_config import OnesisSource
from onesuite_fs.core.view import View
from onesuite_fs.daemon.inode_tree import ORIGIN_XATTRS, InodeTree
from onesuite_fs.settings import Settings
from onesuite_fs.sources.systemimager import load_site
from onesuite_fs.transform.walk import Root, measure, merged_children, named_root


def by_inode(tree: InodeTree, ino: int, path: str = "") -> dict[str, tuple]:
    """path -> (attributes, content or link text, extended attributes) through the mount's
    interface: listdir, open, readlink, xattrs by inode number."""
    seen = {path: describe_ino(tree, ino)}
    for name, attr in tree.listdir(ino):
        child = f"{path}/{name}" if path else name
        if stat.S_ISDIR(attr.mode):
            seen.update(by_inode(tree, attr.ino, child))
        else:
            seen[child] = describe_ino(tree, attr.ino)
    return seen


def describe_ino(tree: InodeTree, ino: int) -> tuple:
    attr = tree.attr(ino)
    xattrs = {k: v for k, v in tree.xattrs(ino).items() if k not in ORIGIN_XATTRS}
    return attr, read_content(tree.open, tree.readlink, attr, ino), xattrs


def read_content(open_, readlink, attr, handle) -> bytes | None:
    if stat.S_ISLNK(attr.mode):
        return readlink(handle)
    if stat.S_ISREG(attr.mode):
        fd = open_(handle)
        try:
            return os.read(fd, attr.size + 1)
        finally:
            os.close(fd)
    return None


def by_path(root: Root) -> dict[str, tuple]:
    tree = root.view
    seen = {}
    for item in root.walk():
        content = read_content(tree.open_node, tree.readlink_node, item.attr, item.node)
        seen[item.path] = (item.attr, content, tree.node_xattrs(item.node))
    return seen


def assert_same_views(one_pass: View, served: InodeTree) -> None:
    for host, entry in served.entries["nodes"].items():
        expected = by_inode(served, served.entry_root_ino(entry))
        walked = by_path(named_root(one_pass, host))
        assert walked.keys() == expected.keys(), host
        for path, (attr, content, xattrs) in expected.items():
            got_attr, got_content, got_xattrs = walked[path]
            # The same numbers too: one-pass numbers are the mount's (no clash here). Not
            # the access time: the served tree's first listing of a directory changed it.
            assert got_attr._replace(atime_ns=0) == attr._replace(atime_ns=0), f"{host}:/{path}"
            assert got_content == content, f"{host}:/{path}"
            assert got_xattrs == xattrs, f"{host}:/{path}"


def trees(root):
    """(a one-pass view, a serving tree) of the same site, oneSIS rules on."""
    site = load_site(Settings(root=root))
    return (View(site, "autoinstall", OnesisSource(), bounded_caches=True),
            inode_tree(site, "autoinstall", OnesisSource()))


@pytest.mark.parametrize("seed", [1, 4])
def test_path_walk_equals_inode_walk_on_random_sites(tmp_path, seed):
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    one_pass, served = trees(spec.prefix)
    assert_same_views(one_pass, served)


def test_path_walk_equals_inode_walk_with_onesis_rules(tmp_path):
    one_pass, served = trees(onesis_site(tmp_path / "site"))
    assert_same_views(one_pass, served)


def test_path_walk_registers_no_inode(tmp_path):
    """Walking the View by path leaves the daemon's inode table above it untouched."""
    one_pass, _ = trees(onesis_site(tmp_path / "site"))
    table = InodeTree(one_pass)
    entries = sum(1 for host in one_pass.entries["nodes"]
                  for _ in named_root(one_pass, host).walk())
    assert entries > 100
    tables = (table._dirs, table._files, table._private, table._state)
    assert [len(t) for t in tables] == [0, 0, 0, 0]


def test_every_directory_evicted_still_gives_the_same_views(tmp_path, monkeypatch):
    monkeypatch.setattr(tree_module, "DEFAULT_ENTRY_LIMIT", 3)
    spec = sitegen.generate_random_site(tmp_path / "site", 2)
    one_pass, served = trees(spec.prefix)
    assert_same_views(one_pass, served)
    assert one_pass.resolver._dirs.weight <= 3 or len(one_pass.resolver._dirs) == 1


def test_an_unused_persistent_file_is_shown_as_the_mount_would_make_it(tmp_path):
    """LINKFILE without -d under the persistent policy, before any node used it: not made by
    an inspection, but listed and found as the empty file the mount makes on first use
    (issue 16, item 11: it was absent, while the mount showed it)."""
    root, state = onesis_site(tmp_path / "site"), tmp_path / "state"
    site = load_site(Settings(root=root))
    tree = inode_tree(site, "autoinstall", OnesisSource(policy="persistent"), state)
    ssh = tree.entry_root_ino(tree.entries["nodes"]["n1"])
    for part in ("etc", "ssh"):
        ssh = tree.lookup(ssh, part).ino
    names = ["ssh_config", "ssh_host_ed25519_key", "ssh_host_rsa_key"]
    assert [name for name, _ in tree.listdir(ssh)] == names
    key = tree.lookup(ssh, "ssh_host_rsa_key")
    assert (key.size, oct(key.mode)) == (0, oct(0o100644))
    assert tree.origin(key.ino).startswith("state:n1 /etc/ssh/ssh_host_rsa_key (persistent: "
                                           "LINKFILE /etc/ssh/ssh_host_*_key ")
    with open(tree.open(key.ino), "rb") as f:
        assert f.read() == b""
    root_n1 = named_root(tree.view, "n1")
    walked = root_n1.lookup("etc/ssh")
    assert walked is not None and [c.name for c in root_n1.children(walked)] == names
    assert root_n1.lookup("etc/ssh/ssh_host_rsa_key") is not None
    assert not state.exists()


def test_bounded_cache_keeps_recent_entries_within_its_limit():
    cache: BoundedCache = BoundedCache(entries_of, limit=10)
    cache["a"] = {str(i): i for i in range(4)}  # weight 5
    cache["b"] = {str(i): i for i in range(3)}  # weight 4
    assert cache.get("a") is not None  # a is now the most recent
    cache["c"] = {"x": 1}  # weight 2: b is the least recent and goes
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.weight == 7
    heavy = {str(i): i for i in range(50)}
    assert cache.setdefault("d", heavy) is heavy  # heavier than the limit: kept alone
    assert len(cache) == 1 and cache.get("d") is heavy
    assert cache.setdefault("d", {}) is heavy  # an existing value wins
    assert cache.get("missing", False) is False


def test_a_file_changed_after_it_was_listed_is_not_read_under_old_attributes(tmp_path):
    site = onesis_site(tmp_path / "site")
    one_pass, _ = trees(site)
    root = named_root(one_pass, "n1")
    item = root.lookup("etc/passwd")
    assert item is not None and item.is_reg
    (site / "var/lib/systemimager/images/img/etc/passwd").write_text("root:x:0:0::/:/bin/sh\n")
    with pytest.raises(OSError) as raised:
        root.open(item)
    assert raised.value.errno == errno.ESTALE and "/etc/passwd was changed" in str(raised.value)


def test_measure_tells_links_inside_the_root_from_links_outside_it(tmp_path):
    """An image kept with hard links (cp -al, one cache for several sites) has nlink > 1 on
    every file; a writer must remember first names only where another name is in the root."""
    site = onesis_site(tmp_path / "site")
    image = site / "var/lib/systemimager/images/img"
    (image / "usr/bin").mkdir(parents=True)
    (image / "usr/bin/gzip").write_text("gzip\n")
    os.link(image / "usr/bin/gzip", image / "usr/bin/gunzip")
    (tmp_path / "cache").mkdir()
    os.link(image / "etc/passwd", tmp_path / "cache/passwd")
    one_pass, _ = trees(site)
    root = named_root(one_pass, "n1")
    passwd = root.lookup("etc/passwd")
    assert passwd is not None and passwd.attr.nlink == 2
    assert root.links.may_recur(passwd)  # not measured yet: it might
    totals = measure(root)
    assert root.links is totals.links
    assert root.links.may_recur(root.lookup("usr/bin/gzip"))
    assert root.links.may_recur(root.lookup("usr/bin/gunzip"))
    assert not root.links.may_recur(passwd)
    assert not root.links.may_recur(root.lookup("etc"))


def test_merged_children_give_each_name_once_with_every_root_that_has_it(tmp_path):
    spec = sitegen.generate_random_site(tmp_path / "site", 3)
    one_pass, _ = trees(spec.prefix)
    roots = [named_root(one_pass, host) for host in sorted(one_pass.entries["nodes"])]
    assert len(roots) > 2
    pending = [{n: root.top() for n, root in enumerate(roots)}]
    directories = 0
    while pending:
        items = pending.pop()
        directories += 1
        expected: dict[str, dict[int, tuple]] = {}
        for n, item in items.items():
            for child in roots[n].children(item):
                expected.setdefault(child.name, {})[n] = (child.path, child.attr)
        merged = list(merged_children(roots, items))
        assert [name for name, _ in merged] == sorted(expected)
        for name, present in merged:
            assert list(present) == sorted(present)  # root order
            assert {n: (i.path, i.attr) for n, i in present.items()} == expected[name]
            below = {n: i for n, i in present.items() if i.is_dir}
            if below:
                pending.append(below)
    assert directories > 10


def test_a_lookup_beside_a_listed_entry_does_not_read_the_directory_again(tmp_path,
                                                                          monkeypatch):
    """Converts look up variant names (name.default) next to each entry while listing: with
    the caches evicting on every directory, the listing being read must still answer."""
    monkeypatch.setattr(tree_module, "DEFAULT_ENTRY_LIMIT", 3)
    spec = sitegen.generate_random_site(tmp_path / "site", 2)
    one_pass, _ = trees(spec.prefix)
    scans: list[tuple[int, str]] = []
    real_scan = one_pass.store._scan
    monkeypatch.setattr(one_pass.store, "_scan",
                        lambda layer, path: scans.append((layer, path)) or real_scan(layer, path))
    root = named_root(one_pass, sorted(one_pass.entries["nodes"])[0])
    top = root.top()
    names = [child.name for child in root.children(top)]
    listing = root.children(top)
    for name in names:
        child = next(listing)
        subtree = [child]
        while subtree:  # reading it evicts the top listing from the bounded caches
            subtree.extend(root.children(subtree.pop()))
        before = len(scans)
        found = root.child(top, name)
        assert found is not None and found.attr == child.attr
        root.child(top, name + ".onesuite-test-absent")
        assert len(scans) == before, f"/{name}: the top directory was read again"
    assert next(listing, None) is None
    assert len(scans) > len(names)  # the subtrees were read (and evicted the top)
