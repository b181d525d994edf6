"""oneSIS rules resolved in the pure core (InodeTree, no FUSE): LINKBACK kinds, hidden variants,
subclass fallback, node over class, properties over classes, SERVICE, RAM/LINK paths."""

from __future__ import annotations

import stat

import pytest
from sitetools import onesis_site
from treetools import inode_tree

from onesuite_fs.core.errors import ConfigError
from onesuite_fs.core.onesis_config import OnesisSource
from onesuite_fs.daemon.inode_tree import InodeTree
from onesuite_fs.settings import Settings
from onesuite_fs.sources.systemimager import load_site


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> InodeTree:
    root = onesis_site(tmp_path_factory.mktemp("onesis") / "site")
    return inode_tree(load_site(Settings(root=root)), "autoinstall", OnesisSource())


def resolve(tree: InodeTree, path: str):
    ino = 1
    attr = None
    for part in path.split("/"):
        attr = tree.lookup(ino, part)
        ino = attr.ino
    return attr


def read(tree: InodeTree, path: str) -> str:
    fd = tree.open(resolve(tree, path).ino)
    with open(fd, "rb", closefd=True) as f:
        return f.read().decode()


def names(tree: InodeTree, path: str) -> list[str]:
    return [name for name, _ in tree.listdir(resolve(tree, path).ino)]


def origin(tree: InodeTree, path: str) -> str:
    return tree.origin(resolve(tree, path).ino)


@pytest.mark.parametrize("node, text", [
    ("n1", "fstab: node n1"),  # NODE line limited to n1, after the CLASS line: node wins
    ("n2", "fstab: class compute, from n2's host override"),  # variants come from the layers
    ("n3", "fstab: class compute"),  # compute.gpu has no variant: its parent class's
    ("login1", "fstab: default"),  # no login variant: .default
])
def test_class_and_node_linkbacks(tree, node, text):
    assert read(tree, f"nodes/{node}/etc/fstab") == text + "\n"


def test_origin_names_the_variant_and_the_rule(tree):
    value = origin(tree, "nodes/n1/etc/fstab")
    assert value.startswith("image:img /etc/fstab.n1 (LINKBACK ")
    assert value.endswith("sysimage.conf:8: NODE variant fstab.n1)")
    assert "sysimage.conf:7: CLASS variant fstab.compute" in origin(tree, "nodes/n3/etc/fstab")


@pytest.mark.parametrize("node, text", [
    ("n1", "motd: the image's own"),  # no property: the image's file is the default
    ("n2", "motd: property fc"),
    ("n3", "motd: property ib"),
])
def test_property_linkbacks(tree, node, text):
    assert read(tree, f"nodes/{node}/etc/motd") == text + "\n"


@pytest.mark.parametrize("node, text", [
    ("n1", "mom: class compute"), ("n2", "mom: property fc"),
    # n3 has property ib but no mom.conf.ib: the PROPERTY line decides and falls to default;
    # there is neither .default nor an image file, so the path dangles as on oneSIS.
])
def test_properties_trump_classes_by_order(tree, node, text):
    assert read(tree, f"nodes/{node}/etc/mom.conf") == text + "\n"


def test_a_linkback_with_nothing_to_show_dangles_like_onesis(tree):
    attr = resolve(tree, "nodes/n3/etc/mom.conf")
    assert stat.S_ISLNK(attr.mode)
    assert tree.readlink(attr.ino) == b"/etc/mom.conf.default"
    assert tree.readlink(resolve(tree, "nodes/n1/etc/nothing").ino) == b"/etc/nothing.default"


def test_hidden_variants(tree):
    scripts = "etc/sysconfig/network-scripts"
    assert read(tree, f"nodes/n1/{scripts}/ifcfg-eth0") == "DEVICE=eth0 # compute\n"
    assert read(tree, f"nodes/login1/{scripts}/ifcfg-eth0") == "DEVICE=eth0 # default\n"
    # The variants stay hidden from ifcfg-* globs; the linked-back name is visible.
    visible = [n for n in names(tree, f"nodes/n1/{scripts}") if not n.startswith(".")]
    assert visible == ["ifcfg-eth0", "ifcfg-lo"]


def test_directory_variants(tree):
    assert names(tree, "nodes/n1/etc/profile.d") == ["compute.sh"]
    assert names(tree, "nodes/login1/etc/profile.d") == ["image.sh"]
    assert read(tree, "nodes/n2/etc/profile.d/compute.sh") == "# compute's profile.d\n"


def test_explicit_and_forced_targets(tree):
    assert read(tree, "nodes/n1/etc/app.conf") == "app: compute\n"  # /opt/conf/$CLASS/app.conf
    assert tree.readlink(resolve(tree, "nodes/n3/etc/app.conf").ino) == b"/etc/app.conf.default"
    assert tree.readlink(resolve(tree, "nodes/n2/etc/forced").ino) == b"/mnt/nowhere/n2"


def test_services_exist_only_where_enabled(tree):
    assert "smartd" in names(tree, "nodes/n3/etc/init.d")
    assert names(tree, "nodes/n3/etc/rc3.d") == ["S40smartd", "S50other"]
    assert names(tree, "nodes/n3/etc/systemd/system/multi-user.target.wants") == [
        "smartd.service"]
    for node in ("n1", "n2", "login1"):
        assert "smartd" not in names(tree, f"nodes/{node}/etc/init.d")
        assert names(tree, f"nodes/{node}/etc/rc3.d") == ["S50other"]
        assert names(tree, f"nodes/{node}/etc/systemd/system/multi-user.target.wants") == []


def test_ram_policy_links_into_ram(tree):
    log = resolve(tree, "nodes/n1/var/log")
    assert stat.S_ISLNK(log.mode) and tree.readlink(log.ino) == b"/ram/var/log"
    assert tree.readlink(resolve(tree, "nodes/n1/etc/adjtime").ino) == b"/ram/etc/adjtime"
    # RAMDIR/RAMFILE only make entries in /ram at boot: the image path is unchanged.
    assert read(tree, "nodes/n1/etc/resolv.conf") == "nameserver 10.0.0.1\n"
    assert "ram" in names(tree, "nodes/n1")
    assert stat.S_ISDIR(resolve(tree, "nodes/n1/ram").mode)


def test_glob_patterns(tree):
    for key in ("ssh_host_rsa_key", "ssh_host_ed25519_key"):
        link = resolve(tree, f"nodes/n1/etc/ssh/{key}")
        assert tree.readlink(link.ino) == f"/ram/etc/ssh/{key}".encode()
    assert read(tree, "nodes/n1/etc/ssh/ssh_config") == "Host *\n"  # not matched


def test_groups_and_images_have_no_onesis_rules(tree):
    assert read(tree, "groups/compute/etc/fstab") == "fstab: the image's own\n"
    assert "ram" not in names(tree, "images/img")


def test_bad_sysimage_conf_names_file_and_line(tmp_path):
    root = onesis_site(tmp_path / "site")
    conf = root / "var/lib/systemimager/images/img/etc/sysimage.conf"
    text = conf.read_text() + "LINKBACK /etc/x CLASS -q\n"
    conf.write_text(text)
    with pytest.raises(ConfigError, match="no flag -q") as err:
        inode_tree(load_site(Settings(root=root)), "autoinstall", OnesisSource())
    assert err.value.file == str(conf) and err.value.line == len(text.splitlines())


def test_an_override_can_carry_its_own_sysimage_conf(tmp_path):
    root = onesis_site(tmp_path / "site")
    override = root / "var/lib/systemimager/overrides/n2/etc/sysimage.conf"
    override.write_text("NODECLASS_REGEXP n\\d+ special\nLINKBACK /etc/fstab CLASS\n")
    tree = inode_tree(load_site(Settings(root=root)), "autoinstall", OnesisSource())
    assert read(tree, "nodes/n2/etc/fstab") == "fstab: default\n"  # class special: no variant
    assert read(tree, "nodes/n1/etc/fstab") == "fstab: node n1\n"


def test_one_config_file_for_every_node(tmp_path):
    root = onesis_site(tmp_path / "site")
    conf = tmp_path / "sysimage.conf"
    conf.write_text("NODECLASS_RANGE n[1-3] compute\nINCLUDE more.conf\n")
    (tmp_path / "more.conf").write_text("LINKBACK /etc/motd NODE\n")
    tree = inode_tree(load_site(Settings(root=root)), "autoinstall", OnesisSource(conf))
    assert read(tree, "nodes/n1/etc/fstab") == "fstab: the image's own\n"  # no LINKBACK here
    assert read(tree, "nodes/n1/etc/motd") == "motd: the image's own\n"


def test_a_path_showing_another_variant_gets_a_new_generation(tmp_path):
    root = onesis_site(tmp_path / "site")
    before = inode_tree(load_site(Settings(root=root)), "autoinstall", OnesisSource())
    conf = root / "var/lib/systemimager/images/img/etc/sysimage.conf"
    conf.write_text(conf.read_text().replace("PROPERTY: fc -n n2", "PROPERTY: fc -n n1,n2"))
    after = inode_tree(load_site(Settings(root=root)), "autoinstall", OnesisSource())
    old, new = resolve(before, "nodes/n1/etc/motd"), resolve(after, "nodes/n1/etc/motd")
    assert read(after, "nodes/n1/etc/motd") == "motd: property fc\n"
    # Same path, same number; another object behind it: old NFS handles must go stale.
    assert old.ino == new.ino and old.generation != new.generation
    same_old, same_new = resolve(before, "nodes/n1/etc/fstab"), resolve(after, "nodes/n1/etc/fstab")
    assert (same_old.ino, same_old.generation) == (same_new.ino, same_new.generation)


def test_looking_at_a_persistent_path_does_not_make_it(tmp_path):
    root, state = onesis_site(tmp_path / "site"), tmp_path / "state"
    tree = inode_tree(load_site(Settings(root=root)), "autoinstall",
                OnesisSource(policy="persistent"), state)
    assert names(tree, "nodes/n1/var/log") == []  # LINKDIR without -d: would start empty
    assert read(tree, "nodes/n1/etc/adjtime") == "0.0 0 0.0\n"  # -d: a copy of this
    assert not state.exists()  # an inspection never writes


def test_a_class_target_on_a_node_of_no_class_falls_back(tmp_path):
    root = onesis_site(tmp_path / "site")
    conf = root / "var/lib/systemimager/images/img/etc/sysimage.conf"
    conf.write_text("NODECLASS_MAP n1 compute\nLINKBACK /etc/app.conf /opt/conf/$CLASS/app.conf\n")
    tree = inode_tree(load_site(Settings(root=root)), "autoinstall", OnesisSource())
    assert read(tree, "nodes/n1/etc/app.conf") == "app: compute\n"
    # n2 has no class: no target to try; no .default and no own file: dangling, no crash.
    assert tree.readlink(resolve(tree, "nodes/n2/etc/app.conf").ino) == b"/etc/app.conf.default"
