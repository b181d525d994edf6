"""What upstream SystemImager does where onesuite once differed (issue 16, the independent
audit): the global-named group, Perl's truth of <priority>, rsync stub and systemimager.conf
syntax, symlinked layers inside their directory, the [overrides]/[scripts] modules, and an
autoinstall script's IMAGENAME. Upstream's outputs are recorded in tests/data/upstream (see
its README); every case the served root depends on is also checked on a real mount."""

from __future__ import annotations

import os

import pytest
from conftest import needs_root_fuse
from sitetools import DATA, make_site

from onesuite_fs.core.model import MAXINT
from onesuite_fs.settings import Settings
from onesuite_fs.sources.cluster_txt import render_cluster_txt
from onesuite_fs.sources.cluster_xml import parse_cluster_xml
from onesuite_fs.sources.systemimager import load_site

UPSTREAM = DATA / "upstream"


@pytest.mark.parametrize("case", ["global-group", "priority-zeros"])
def test_cluster_txt_is_what_si_clusterconfig_wrote(case):
    cluster = parse_cluster_xml(UPSTREAM / f"{case}.xml")
    expected = (UPSTREAM / f"{case}.si_clusterconfig.txt").read_text()
    assert render_cluster_txt(cluster) == expected


def test_the_global_named_group_holds_every_node_at_its_own_rank():
    cluster = parse_cluster_xml(UPSTREAM / "global-group.xml")
    # Compute (priority 5) first; then, with no priority, 'all' before 'Login' by name.
    assert [g.name for g in cluster.groups_of("n01")] == ["Compute", "all"]
    assert [g.name for g in cluster.groups_of("login1")] == ["all", "Login"]


def test_priority_zero_is_maxint_only_when_written_exactly_0(tmp_path):
    path = tmp_path / "cluster.xml"
    path.write_text("""<xml><name>all</name><override>all</override>
      <group><name>Zero</name><priority>0</priority><node>n</node></group>
      <group><name>Spaced</name><priority> 0 </priority><node>n</node></group>
      <group><name>Two</name><priority>000</priority><node>n</node></group>
      <group><name>One</name><priority>1</priority><node>n</node></group></xml>""")
    cluster = parse_cluster_xml(path)
    assert [g.name for g in cluster.groups_of("n")] == ["Spaced", "Two", "One", "Zero"]
    assert [g.rank[0] for g in cluster.groups_of("n")] == [0, 0, 1, MAXINT]


GLOBAL_GROUP_SITE = (UPSTREAM / "global-group.xml").read_text()


@needs_root_fuse()
@pytest.mark.mount
def test_mount_serves_the_global_group_and_perl_priorities(tmp_path, mount_site):
    # login1's first group with an image is 'all' (image base), as upstream installs it;
    # every node gets the 'all' group's override 'common'.
    root = make_site(tmp_path / "site", GLOBAL_GROUP_SITE, images=("base", "cimg", "limg"),
                     overrides=("common", "compute"))
    site = load_site(Settings(root=root))
    assert site.nodes["login1"].image == "base" and site.nodes["n01"].image == "cimg"
    mount = mount_site(root, "--no-watch")
    assert (mount.node("login1") / "etc/image").read_text() == "base"
    assert (mount.node("login1") / "from-common").read_text() == "common"
    assert (mount.node("n02") / "etc/image").read_text() == "cimg"
    assert (mount.node("n02") / "from-common").read_text() == "common"
    # <priority>00</priority> outranks priority 1: n1 installs ia.
    zeros = make_site(tmp_path / "zeros-site", (UPSTREAM / "priority-zeros.xml").read_text(),
                      images=("ia", "ib", "ic"), overrides=("oa", "ob", "oc"))
    other = mount_site(zeros, "--no-watch", name="zeros-mnt")
    assert (other.node("n1") / "etc/image").read_text() == "ia"
    assert sorted(os.listdir(other.node("n1"))) == ["etc", "from-oa", "from-ob", "from-oc"]


# rsyncd.conf(5): names case-insensitive, white space around '=' and in the name irrelevant,
# the value keeps its inner spaces; a '#' or ';' line is a comment; '\' continues a line.
STUB_SPELLINGS = [
    "[img]\n\tpath=/srv/my images/img\n",
    "[img]\n  PATH = /srv/my images/img   \n",
    "[img]\nPa Th\t=\t/srv/my images/img\n",
    "# a comment\n; another\n[img]\n  path = /srv/my \\\nimages/img\n",
]


@pytest.mark.parametrize("stub", STUB_SPELLINGS)
def test_rsync_stub_path_read_as_rsyncd_reads_it(stub):
    from onesuite_fs.sources.server_conf import rsyncd_module_paths
    [(module, (value, _line))] = rsyncd_module_paths(stub).items()
    assert (module, value) == ("img", "/srv/my images/img")


def test_rsync_stub_comment_and_global_path_are_not_a_module():
    from onesuite_fs.sources.server_conf import rsyncd_module_paths
    text = "path = /global\n[img]\n# path = /commented\n\tpath = /srv/img\n[other]\n"
    assert rsyncd_module_paths(text) == {"img": ("/srv/img", 4)}


# AppConfig (SystemImager 4.3 lib/SystemImager/Config.pm:25-39): case-insensitive names,
# '=' optional, '#' comments unless escaped.
@pytest.mark.parametrize("line", [
    "DEFAULT_IMAGE_DIR = /srv/si images",
    "default_image_dir=/srv/si images",
    "Default_Image_Dir   /srv/si images   # where images live",
    "  DEFAULT_IMAGE_DIR\t/srv/si images",
])
def test_systemimager_conf_read_as_appconfig_reads_it(line):
    from onesuite_fs.sources.server_conf import appconfig_values
    assert appconfig_values(f"# conf\n{line}\n")["DEFAULT_IMAGE_DIR"] == ("/srv/si images", 2)


def test_systemimager_conf_escaped_hash_is_kept():
    from onesuite_fs.sources.server_conf import appconfig_values
    assert appconfig_values("rsync_stub_dir /srv/a\\#b # note\n")["RSYNC_STUB_DIR"][0] == \
        "/srv/a#b"


@needs_root_fuse()
@pytest.mark.mount
def test_mount_follows_stub_and_conf_spellings(tmp_path, mount_site):
    # An rsync stub "PATH = /srv/si images/img" and a lower-case, '='-less
    # systemimager.conf key: upstream serves from there, so does the mount.
    root = make_site(tmp_path / "site", MINIMAL_XML, stubs=False)
    image = root / "srv/si images/img"
    (image / "etc").mkdir(parents=True)
    (image / "etc/image").write_text("spaced")
    stubs = root / "srv/stubs"
    stubs.mkdir(parents=True)
    (stubs / "40img").write_text("[img]\n   PATH = /srv/si images/img  \n")
    (root / "etc/systemimager/systemimager.conf").write_text(
        "default_image_dir /srv/si images\nRsync_Stub_Dir=/srv/stubs\n")
    site = load_site(Settings(root=root))
    assert site.images["img"].path == image and site.layout.rsync_stubs_dir == stubs
    mount = mount_site(root, "--no-watch")
    assert (mount.node("n1") / "etc/image").read_text() == "spaced"


MINIMAL_XML = """<xml><name>all</name><override>all</override>
<group><name>G</name><image>img</image><node>n1</node></group></xml>"""


LINKS_XML = """<xml><name>all</name><override>all</override>
<group><name>G</name><image>img</image><node>n1-n6</node></group>
<group><name>A</name><priority>1</priority><image>alias</image><node>a1</node></group>
<group><name>E</name><priority>1</priority><image>escape</image><node>e1</node></group>
</xml>"""


def links_site(tmp_path):
    """Host overrides n1..n6 and images img/alias/escape, with symlinks inside and out."""
    root = make_site(tmp_path / "site", LINKS_XML, images=("img",), overrides=("n1",))
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "shadow").write_text("root:$6$server-secret\n")
    overrides = root / "var/lib/systemimager/overrides"
    os.symlink("n1", overrides / "n2")  # inside: rsyncd delivers n1's files
    os.symlink("n2", overrides / "n3")  # a chain that stays inside
    os.symlink(secret, overrides / "n4")  # out, absolute
    os.symlink("../..", overrides / "n5")  # out, climbing
    os.symlink(secret, overrides / "hop")
    os.symlink("hop", overrides / "n6")  # a chain that leaves
    images = root / "var/lib/systemimager/images"
    os.symlink("img", images / "alias")  # a module whose path= is a symlink inside
    os.symlink(secret, images / "escape")
    stubs = root / "etc/systemimager/rsync_stubs"
    (stubs / "40alias").write_text("[alias]\n\tpath=/var/lib/systemimager/images/alias\n")
    (stubs / "40escape").write_text("[escape]\n\tpath=/var/lib/systemimager/images/escape\n")
    return root, secret


def test_symlinked_layers_inside_are_followed_outside_break_only_their_nodes(tmp_path):
    root, _secret = links_site(tmp_path)
    site = load_site(Settings(root=root))
    assert sorted(site.nodes) == ["a1", "n1", "n2", "n3"]
    assert sorted(site.broken) == ["e1", "n4", "n5", "n6"]
    overrides = root / "var/lib/systemimager/overrides"
    real_n1 = overrides.resolve() / "n1"
    assert site.override_real("n2") == (real_n1, None) == site.override_real("n3")
    assert site.images["alias"].real == (root / "var/lib/systemimager/images/img").resolve()
    assert "is a symlink to" in site.broken["n4"].message
    assert "node n4 uses it" in site.broken["n4"].message
    assert "image 'escape'" in site.broken["e1"].message
    assert site.broken["e1"].line == 2  # the stub's path= line


@needs_root_fuse()
@pytest.mark.mount
def test_mount_follows_links_inside_and_never_a_link_swapped_later(tmp_path, mount_site):
    import errno
    root, secret = links_site(tmp_path)
    (root / "var/lib/systemimager/overrides/n1/sub").mkdir()
    (root / "var/lib/systemimager/overrides/n1/sub/unread").write_text("n1")
    mount = mount_site(root, "--no-watch")
    assert sorted(os.listdir(mount.mountpoint / "nodes")) == ["a1", "n1", "n2", "n3"]
    assert (mount.node("n2") / "from-n1").read_text() == "n1"
    assert (mount.node("n3") / "from-n1").read_text() == "n1"
    assert (mount.node("a1") / "etc/image").read_text() == "img"
    for view in ("nodes/n1", "nodes/n2", "groups/G", "images/img"):
        assert not (mount.mountpoint / view / "shadow").exists()
    # After the load: n2 pointed at the secret; the mount keeps n1's directory (its real
    # path), and when n1 itself becomes a link to the secret, nothing is followed.
    overrides = root / "var/lib/systemimager/overrides"
    (overrides / "n2").unlink()
    os.symlink(secret, overrides / "n2")
    assert sorted(os.listdir(mount.node("n2"))) == ["etc", "from-n1", "sub"]
    (overrides / "n1").rename(tmp_path / "old-n1")
    os.symlink(secret, overrides / "n1")
    with pytest.raises(OSError) as err:
        (mount.node("n2") / "sub/unread").read_text()  # first opened now: checked on open
    assert err.value.errno == errno.EIO
    assert "not followed" in (tmp_path / "mnt.log").read_text()
    assert not (mount.node("n1") / "shadow").exists()


@needs_root_fuse()
@pytest.mark.mount
def test_overrides_and_scripts_come_from_their_rsync_modules(tmp_path, mount_site):
    # systemimager.conf names one overrides directory, the [overrides] module serves
    # another: clients fetch ::overrides/NAME/, so the module's path= wins; the same for
    # [scripts] (the master script's OVERRIDES, cluster.txt).
    root = make_site(tmp_path / "site", MINIMAL_XML, images=("img",), overrides=("all",))
    served = root / "srv/si/overrides"
    (served / "all").mkdir(parents=True)
    (served / "all/from-module").write_text("module")
    scripts = root / "srv/si/scripts"
    scripts.mkdir(parents=True)
    (scripts / "img.master").write_text('#!/bin/sh\nOVERRIDES="extra $GROUP_OVERRIDES"\n')
    (served / "extra").mkdir()
    (served / "extra/from-script").write_text("script")
    (root / "etc/systemimager/systemimager.conf").write_text(
        "DEFAULT_OVERRIDE_DIR = /var/lib/systemimager/overrides\n")
    (root / "etc/systemimager/rsync_stubs/10header").write_text(
        "uid = root\n[overrides]\n  path = /srv/si/overrides\n[scripts]\npath=/srv/si/scripts\n")
    site = load_site(Settings(root=root))
    assert site.layout.overrides_dir == served and site.layout.scripts_dir == scripts
    mount = mount_site(root, "--no-watch")
    assert sorted(os.listdir(mount.node("n1"))) == ["etc", "from-module", "from-script"]


@pytest.mark.parametrize("path", ["/srv/../../etc", "/", "/../.."])
def test_an_overrides_module_may_not_leave_the_tree(tmp_path, path):
    from onesuite_fs.core.errors import ConfigError
    root = make_site(tmp_path / "site", MINIMAL_XML, images=("img",))
    stub = root / "etc/systemimager/rsync_stubs/10header"
    stub.write_text(f"[overrides]\npath = {path}\n")
    with pytest.raises(ConfigError) as err:
        load_site(Settings(root=root))
    assert err.value.file == str(stub) and err.value.line == 2
    assert "leaves the server's tree" in err.value.message


NO_IMAGE_XML = """<xml><name>all</name><override>all</override>
<group><name>G</name><image>img</image><node>n1</node></group>
<group><name>bare</name><node>b1-b3</node></group></xml>"""


@needs_root_fuse()
@pytest.mark.mount
def test_a_node_without_a_group_image_installs_its_scripts_imagename(tmp_path, mount_site):
    # b1 runs bare.master (its group's script), which si_mkautoinstallscript wrote for image
    # other: `[ -z $IMAGENAME ] && IMAGENAME=other` (4.3 Server.pm:1991-1993).
    root = make_site(tmp_path / "site", NO_IMAGE_XML, images=("img", "other"))
    scripts = root / "var/lib/systemimager/scripts"
    scripts.mkdir(parents=True)
    (scripts / "bare.master").write_text(
        "#!/bin/sh\n[ -z $IMAGENAME ] && IMAGENAME=other\nOVERRIDES=\"$GROUP_OVERRIDES\"\n")
    (scripts / "b2.sh").write_text("#!/bin/sh\nIMAGENAME=gone\n")
    (scripts / "b3.sh").write_text("#!/bin/sh\nIMAGENAME=$(hostname)\n")
    site = load_site(Settings(root=root))
    assert site.nodes["b1"].image == "other"
    assert "image 'gone' does not exist" in site.broken["b2"].message
    assert site.broken["b2"].file == str(scripts / "b2.sh") and site.broken["b2"].line == 2
    assert "has no image" in site.broken["b3"].message  # not a name: never run or guessed
    mount = mount_site(root, "--no-watch")
    assert (mount.node("b1") / "etc/image").read_text() == "other"
    assert sorted(os.listdir(mount.mountpoint / "nodes")) == ["b1", "n1"]
