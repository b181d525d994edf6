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
