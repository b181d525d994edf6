"""cluster.xml, cluster.txt and the rest of a SystemImager server's configuration."""

from __future__ import annotations

import pytest
from sitetools import DATA, make_site, shipped_site

from onesuite_fs.core.errors import ConfigError
from onesuite_fs.core.model import MAXINT
from onesuite_fs.settings import Settings
from onesuite_fs.sources.cluster_txt import parse_cluster_txt, render_cluster_txt
from onesuite_fs.sources.cluster_xml import parse_cluster_xml
from onesuite_fs.sources.systemimager import load_site

MINIMAL = """<xml><name>all</name><override>all</override>
<group><name>G</name><image>img</image><node>n1</node></group></xml>"""


def parse(tmp_path, text, **kwargs):
    path = tmp_path / "cluster.xml"
    path.write_text(text)
    return parse_cluster_xml(path, **kwargs)


def test_shipped_example_groups_in_sort_group_order(tmp_path):
    cluster = parse_cluster_xml(DATA / "cluster-shipped.xml")
    assert [g.name for g in cluster.groups] == ["Login", "Storage", "Local"]
    assert [g.rank[0] for g in cluster.groups] == [10, 20, MAXINT]
    assert cluster.global_name == "all" and cluster.global_overrides == ("all",)
    assert cluster.master == "master1"
    login = cluster.groups[0]
    assert login.overrides == ("SuSE10_frontend", "SuSE10")
    assert [g.name for g in cluster.groups_of("node001")] == ["Login", "Storage"]
    assert len(cluster.hosts()) == 19


def test_cluster_txt_rendered_like_si_clusterconfig():
    cluster = parse_cluster_xml(DATA / "cluster-shipped.xml")
    assert render_cluster_txt(cluster) == (DATA / "cluster-shipped.txt").read_text()


def test_cluster_txt_parses_to_the_same_topology():
    from_xml = parse_cluster_xml(DATA / "cluster-shipped.xml")
    from_txt = parse_cluster_txt(DATA / "cluster-shipped.txt")
    assert from_txt.global_overrides == from_xml.global_overrides
    for a, b in zip(from_xml.groups, from_txt.groups, strict=True):
        assert (a.name, a.image, a.overrides, a.nodes) == (b.name, b.image, b.overrides, b.nodes)


def test_ties_broken_by_name_case_insensitively_and_zero_means_last(tmp_path):
    cluster = parse(tmp_path, """<xml><name>all</name><override>all</override>
      <group><name>beta</name><priority>0</priority><node>n</node></group>
      <group><name>Zeta</name><priority>5</priority><node>n</node></group>
      <group><name>alpha</name><priority>5</priority><node>n</node></group>
      <group><name>Gamma</name><node>n</node></group></xml>""")
    assert [g.name for g in cluster.groups] == ["alpha", "Zeta", "beta", "Gamma"]


def test_malformed_xml_reports_file_line_and_column(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, "<xml>\n  <name>all</name>\n  <group><name>x</group>\n</xml>\n")
    assert err.value.file.endswith("cluster.xml")
    assert (err.value.line, err.value.column) == (3, 19)
    assert "mismatched tag" in str(err.value)


def test_entities_are_refused_not_expanded(tmp_path):
    bomb = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><xml><name>&b;</name></xml>')
    with pytest.raises(ConfigError, match="DOCTYPE"):
        parse(tmp_path, bomb)


@pytest.mark.parametrize("text, message, line", [
    ("<xml><override>all</override></xml>", "has no <name>", 1),
    ("<xml><name>all</name></xml>", "no top-level <override>", 1),
    ("<xml><name>all</name><override>all</override>\n<group><name>g</name>\n"
     "<priority>high</priority></group></xml>", "not a number", 3),
    ("<xml><name>all</name><override>all</override>\n<group><name>g</name>\n"
     "<base_image>x</base_image></group></xml>", "deprecated", 3),
    ("<xml><name>all</name><override>all</override>\n<group><name>a/b</name></group></xml>",
     "group name 'a/b' contains '/'", 2),
    ("<xml><name>all</name><override>all</override>\n<group><name>g</name>\n"
     "<node>ok1,..</node></group></xml>", "node name '..'", 3),
    ("<xml><name>all</name><override>../etc</override></xml>", "contains '/'", 1),
    ("<xml><name>all</name><override>all</override>\n<group><name>g</name></group>\n"
     "<group><name>g</name></group></xml>", "defined twice", 3),
])
def test_bad_cluster_xml(tmp_path, text, message, line):
    with pytest.raises(ConfigError, match=message) as err:
        parse(tmp_path, text, strict=True)
    assert err.value.line == line


def test_control_characters_in_names_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="control character"):
        parse(tmp_path, "<xml><name>all</name><override>all</override><group><name>a\tb"
                        "</name></group></xml>")


def test_dynamic_nodes_run_only_when_allowed(tmp_path):
    text = MINIMAL.replace("<node>n1</node>", "<node>n1</node><dynamic_node>echo n5-n6"
                                              "</dynamic_node>")
    warnings: list[str] = []
    cluster = parse(tmp_path, text, warn=warnings.append)
    assert cluster.hosts() == ["n1"] and "--allow-dynamic-nodes" in warnings[0]
    seen = []
    cluster = parse(tmp_path, text, dynamic_nodes=lambda cmd: seen.append(cmd) or "n5-n6\n")
    assert cluster.hosts() == ["n1", "n5", "n6"] and seen == ["echo n5-n6"]


def test_site_images_from_rsync_stubs_under_root(tmp_path):
    make_site(tmp_path, MINIMAL, images=("img",), stubs=False)
    stub_dir = tmp_path / "etc/systemimager/rsync_stubs"
    (stub_dir / "40img").write_text("[img]\n\tpath=/srv/elsewhere/img\n\n")
    (stub_dir / "40img~").write_text("[img]\n\tpath=/wrong\n\n")  # editor backup: ignored
    (tmp_path / "srv/elsewhere/img").mkdir(parents=True)
    # Outside the images directory: refused unless that place is allowed (test_layer_roots);
    # only its nodes are not served (issue 16 item 4), --strict refuses the site.
    assert "outside the directory" in load_site(Settings(root=tmp_path)).broken["n1"].message
    with pytest.raises(ConfigError, match="outside the directory"):
        load_site(Settings(root=tmp_path, strict=True))
    site = load_site(Settings(root=tmp_path, allow_layers_outside=(tmp_path / "srv",)))
    assert site.images["img"].path == tmp_path / "srv/elsewhere/img"
    assert site.images["img"].allowed_by == tmp_path / "srv"
    assert site.nodes["n1"].image == "img"


def test_image_chosen_by_group_priority(tmp_path):
    site = load_site(shipped_site(tmp_path))
    assert site.nodes["node001"].image == "SuSE10"
    assert site.nodes["node001"].groups == ("Login", "Storage")
    assert site.nodes["node1300"].image == "RHEL4"


def test_missing_image_names_the_node_that_asked(tmp_path):
    make_site(tmp_path, MINIMAL.replace("<node>n1</node>", "<node>n1-n3</node>"))
    with pytest.raises(ConfigError, match=r"image 'img' does not exist; node n1 \(group G\).*"
                                          r"and 2 more broken"):
        load_site(Settings(root=tmp_path, strict=True))


def test_node_without_any_image(tmp_path):
    make_site(tmp_path, MINIMAL.replace("<image>img</image>", ""))
    with pytest.raises(ConfigError, match="node 'n1' has no image"):
        load_site(Settings(root=tmp_path, strict=True))


def test_cluster_txt_serves_when_cluster_xml_is_absent(tmp_path):
    make_site(tmp_path, None, images=("SuSE10", "RHEL4", "Local"))
    scripts = tmp_path / "var/lib/systemimager/scripts"
    scripts.mkdir(parents=True)
    (scripts / "cluster.txt").write_text((DATA / "cluster-shipped.txt").read_text())
    site = load_site(Settings(root=tmp_path))
    assert site.nodes["node001"].groups == ("Login", "Storage")
    assert site.nodes["node001"].image == "SuSE10"


def test_no_topology_at_all(tmp_path):
    make_site(tmp_path, None)
    with pytest.raises(ConfigError, match="no cluster topology"):
        load_site(Settings(root=tmp_path))


def test_bad_cluster_txt_line(tmp_path):
    path = tmp_path / "cluster.txt"
    path.write_text("# global_override=:all:\nnode1:G:img\n")
    with pytest.raises(ConfigError, match="4 ':'-separated fields") as err:
        parse_cluster_txt(path)
    assert err.value.line == 2
