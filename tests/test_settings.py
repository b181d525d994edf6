"""onesuite.toml: every path and policy named explicitly; strict about what it accepts."""

from __future__ import annotations

import pytest
from sitetools import make_site

from onesuite_fs.core.errors import ConfigError
from onesuite_fs.core.stack import node_stages
from onesuite_fs.settings import Settings, load_settings
from onesuite_fs.sources.systemimager import load_site

CLUSTER = ("<xml><name>all</name><override>all</override><group><name>G</name>"
           "<image>img</image><node>n1</node></group></xml>")


def test_every_path_and_policy_from_the_file(tmp_path):
    # A site laid out nothing like SystemImager's defaults.
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/topology.xml").write_text(CLUSTER)
    (tmp_path / "store/img/etc").mkdir(parents=True)
    (tmp_path / "ovr/all").mkdir(parents=True)
    (tmp_path / "ovr/n1").mkdir(parents=True)
    config = tmp_path / "conf/onesuite.toml"
    config.write_text("""
[paths]
root = "../empty"
cluster_xml = "topology.xml"
overrides_dir = "../ovr"
scripts_dir = "../scripts"
[images]
img = "../store/img"
[policy]
override_order = "updateclient"
allow_dynamic_nodes = false
[mount]
cache_timeout = 30
""")
    settings = load_settings(config)
    assert settings.override_order == "updateclient" and settings.cache_timeout == 30
    site = load_site(settings)
    assert site.images["img"].path == tmp_path / "store/img"
    assert site.layout.overrides_dir == tmp_path / "ovr"
    names = [e.layer.name for stage in node_stages(site, "n1", settings.override_order)
             for e in stage]
    assert names == ["img", "all"]  # updateclient: no host override


def test_command_line_wins_over_the_file(tmp_path):
    config = tmp_path / "onesuite.toml"
    config.write_text('[policy]\noverride_order = "pushoverrides"\n')
    settings = load_settings(config).with_options(override_order="autoinstall", root=None)
    assert settings.override_order == "autoinstall" and settings.root == Settings().root


@pytest.mark.parametrize("text, message", [
    ("[polcy]\nx = 1\n", "unknown section \\[polcy\\]"),
    ("[policy]\noverride_ordr = 'x'\n", "unknown key 'override_ordr'"),
    ("[policy]\nallow_dynamic_nodes = 'yes'\n", "wrong type"),
    ("[policy]\noverride_order = 'sideways'\n", "unknown override order"),
    ("[onesis]\nlink_policy = 'disk'\n", "unknown link policy"),
    ("[mount]\ncache_timeout = true\n", "wrong type"),
    ("[paths\n", "invalid TOML"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, text, message):
    config = tmp_path / "onesuite.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(config)
    assert err.value.file == str(config)


def test_systemimager_conf_directories_are_taken_under_root(tmp_path):
    make_site(tmp_path, CLUSTER)
    (tmp_path / "etc/systemimager/systemimager.conf").write_text(
        "# moved images\nDEFAULT_IMAGE_DIR = /srv/images\n")
    (tmp_path / "srv/images/img/etc").mkdir(parents=True)
    site = load_site(Settings(root=tmp_path))
    assert site.images["img"].path == tmp_path / "srv/images/img"
