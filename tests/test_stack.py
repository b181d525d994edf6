"""Layer stacks per override order (domain.md A.2.2-A.2.5, D.2, D.5)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sitetools import shipped_site

from onesuite_fs.core.model import Cluster, Group, Image, Node, Site, SiteLayout
from onesuite_fs.core.stack import group_stages, node_stages
from onesuite_fs.sources.systemimager import load_site


def names(stages):
    return [[entry.layer.name for entry in stage] for stage in stages]


def test_node001_worked_example_autoinstall(tmp_path):
    # domain.md A.2.3: OVERRIDES = "SuSE10 all Storage SuSE10 SuSE10_frontend node001",
    # applied in that order after the image; not de-duplicated.
    site = load_site(shipped_site(tmp_path))
    stages = node_stages(site, "node001", "autoinstall")
    assert names(stages) == [["SuSE10"], ["SuSE10"], ["all"], ["Storage"], ["SuSE10"],
                             ["SuSE10_frontend"], ["node001"]]
    assert [stage[0].role for stage in stages] == [
        "image", "script override", "global", "group Storage", "group Login", "group Login",
        "host"]
    assert stages[0][0].layer.kind == "image"


def test_node001_updateclient_has_no_host_and_no_script_override(tmp_path):
    site = load_site(shipped_site(tmp_path))
    assert names(node_stages(site, "node001", "updateclient")) == [
        ["SuSE10"], ["all"], ["Storage"], ["SuSE10"], ["SuSE10_frontend"]]


def test_node001_pushoverrides_is_one_multi_source_stage_first_wins(tmp_path):
    """si_pushoverrides pushes onto an installed node (issue 16, item 8): the autoinstall
    stack, then one multi-source rsync."""
    site = load_site(shipped_site(tmp_path))
    assert names(node_stages(site, "node001", "pushoverrides")) == [
        *names(node_stages(site, "node001", "autoinstall")),
        ["node001", "SuSE10_frontend", "SuSE10", "Storage", "all"]]


def test_missing_override_directories_are_listed_but_not_present(tmp_path):
    site = load_site(shipped_site(tmp_path))
    stages = node_stages(site, "node002", "autoinstall")
    host = stages[-1][0]
    assert host.layer.name == "node002" and not host.present
    assert all(e.present for stage in stages[:-1] for e in stage)


def test_group_view_has_no_host_override(tmp_path):
    site = load_site(shipped_site(tmp_path))
    login = site.cluster.groups[0]
    assert names(group_stages(site, login, "autoinstall")) == [
        ["SuSE10"], ["SuSE10"], ["all"], ["SuSE10"], ["SuSE10_frontend"]]


# For the overrides every order includes, all three agree on precedence (D.5):
# host > groups by priority (first <override> first) > global (first <override> first).
group_names = st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=5, unique=True)


@settings(max_examples=60, deadline=None)
@given(groups=st.lists(st.tuples(st.integers(0, 4), group_names), min_size=1, max_size=4),
       global_overrides=st.lists(st.sampled_from(["g1", "g2", "g3"]), min_size=1, max_size=3,
                                 unique=True))
def test_orders_agree_on_precedence(tmp_path_factory, groups, global_overrides):
    root = tmp_path_factory.mktemp("site")
    layout = SiteLayout(root, root, root / "c.xml", root, root, root, root)
    cluster_groups = tuple(
        Group(name=f"G{i}", priority=prio, image="img" if i == 0 else None,
              overrides=tuple(f"o{i}{n}" for n in overrides), nodes=("n1",))
        for i, (prio, overrides) in enumerate(groups))
    cluster = Cluster("all", tuple(global_overrides),
                      tuple(sorted(cluster_groups, key=lambda g: g.rank)), "c.xml")
    node = Node("n1", tuple(g.name for g in cluster.groups), "img")
    site = Site(layout, cluster, {"img": Image("img", root, "test")}, {"n1": node})

    def precedence_sequential(order):
        # Last applied wins: most important first = reversed application order.
        return [s[0].layer.name for s in reversed(node_stages(site, "n1", order)[1:])]

    push = [e.layer.name for e in node_stages(site, "n1", "pushoverrides")[-1]]
    auto = precedence_sequential("autoinstall")
    update = precedence_sequential("updateclient")
    assert auto == ["n1", *update, "img"]  # host on top, the script override at the bottom
    assert push == ["n1", *update]
