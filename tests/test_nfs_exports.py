"""onesuite exports: node addresses from every source, and the rendered export configuration."""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_onesuite
from sitetools import make_site

from onesuite_fs.core.errors import ConfigError
from onesuite_fs.nfs.addresses import node_addresses
from onesuite_fs.nfs.exports import (
    DEFAULT_ATTR_EXPIRATION,
    export_ids,
    kernel_fsid,
    plan_exports,
)
from onesuite_fs.settings import Settings, load_settings
from onesuite_fs.sources.systemimager import load_site

CLUSTER = """<xml><name>all</name><override>all</override>
<group><name>Compute</name><priority>20</priority><image>img</image>
  <node>node001-node010</node>
  <ip-range>10.0.0.1-10.0.0.10</ip-range><domain>c.example</domain></group>
<group><name>Other</name><image>img</image><node>other1,other2,other3</node></group>
</xml>"""


def site_at(tmp_path, cluster=CLUSTER):
    root = make_site(tmp_path / "site", cluster, images=("img",))
    return root, load_site(Settings(root=root))


def test_ip_range_pairs_sorted_hosts_with_numerically_sorted_addresses(tmp_path):
    _, site = site_at(tmp_path)
    book = node_addresses(site)
    # si_clusterconfig's add_hosts_entries: hosts sorted as strings, IPs with sort_ip.
    assert book.found["node002"].address == "10.0.0.2"
    assert book.found["node010"].address == "10.0.0.10"
    assert "<ip-range> of group Compute" in book.found["node001"].source
    assert book.missing == ("other1", "other2", "other3")


def test_ip_range_count_mismatch_is_refused_with_its_line(tmp_path):
    _, site = site_at(tmp_path, CLUSTER.replace("10.0.0.10<", "10.0.0.9<"))
    with pytest.raises(ConfigError) as err:
        node_addresses(site)
    assert "9 addresses for 10 nodes" in str(err.value)
    assert re.search(r"cluster\.xml:\d+", str(err.value))


def test_hosts_files_short_names_loopback_and_precedence(tmp_path):
    root, site = site_at(tmp_path)
    scripts = root / "var/lib/systemimager/scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    (scripts / "hosts").write_text(
        "127.0.1.1 other1   # the server's own loopback name: never a node address\n"
        "10.9.0.1\tother1.c.example other1\n"
        "10.9.0.5 node001  # cluster.xml's ip-range wins over this\n")
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/hosts").write_text("10.8.0.1 other1\n10.8.0.2 other2.c.example\n")
    book = node_addresses(site)
    assert book.found["other1"].address == "10.9.0.1"  # scripts/hosts before etc/hosts
    assert book.found["other1"].source.endswith("scripts/hosts:2")
    assert book.found["other2"].address == "10.8.0.2"  # matched by its short name
    assert book.found["node001"].address == "10.0.0.1"
    assert book.missing == ("other3",)
    # The config file wins over everything.
    config = tmp_path / "onesuite.toml"
    config.write_text('[nfs.addresses]\nnode001 = "10.7.0.1"\nother3 = "fd00::3"\n')
    settings = load_settings(config)
    book = node_addresses(site, settings.nfs_addresses, settings.config_file)
    assert book.found["node001"].address == "10.7.0.1"
    assert book.found["other3"].address == "fd00::3"
    assert book.missing == ()


def test_bad_configured_address_names_the_file(tmp_path):
    _, site = site_at(tmp_path)
    with pytest.raises(ConfigError, match="is not an IP address") as err:
        node_addresses(site, {"node001": "node-one"}, "/x/onesuite.toml")
    assert err.value.file == "/x/onesuite.toml"


def test_nfs_section_is_strict(tmp_path):
    config = tmp_path / "onesuite.toml"
    config.write_text("[nfs]\nbindd = '1.2.3.4'\n")
    with pytest.raises(ConfigError, match="unknown key 'bindd' in \\[nfs\\]"):
        load_settings(config)


def test_address_collision_is_refused_by_the_command(tmp_path):
    root, _ = site_at(tmp_path)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/hosts").write_text("10.0.0.3 other2\n")  # node003 has it from <ip-range>
    done = run_onesuite("exports", "--root", root, tmp_path / "mnt", check=False)
    assert done.returncode == 2, done.stderr
    assert "nodes share the address 10.0.0.3" in done.stderr
    assert "node003" in done.stderr and "other2" in done.stderr


def test_exports_json_ganesha_and_kernel_formats(tmp_path):
    root, _ = site_at(tmp_path)
    mnt = tmp_path / "mnt"
    done = run_onesuite("exports", "--root", root, "--json", mnt)
    data = json.loads(done.stdout)
    assert [e["node"] for e in data["exports"]] == [f"node{i:03d}" for i in range(1, 11)]
    assert {u["node"] for u in data["unexported"]} == {"other1", "other2", "other3"}
    assert "node other1 is not exported" in done.stderr
    text = data["config"]
    assert text.count("EXPORT {") == 10 and "other1" not in text.split("NOT exported")[-1]
    block = text[text.index(f'Path = "{mnt}/nodes/node002"'):].split("}\n", 2)
    assert "Clients = 10.0.0.2; Access_Type = RO" in "".join(block[:2])
    assert text.count("Access_Type = None;") == 10  # nobody else, never "*"
    assert text.count(f"Attr_Expiration_Time = {DEFAULT_ATTR_EXPIRATION};") == 10
    assert "Squash = No_Root_Squash;" in text
    ids = [e["export_id"] for e in data["exports"]]
    assert len(set(ids)) == 10 and all(1 <= i <= 65535 for i in ids)

    kernel = run_onesuite("exports", "--root", root, "--format", "exports", mnt).stdout
    lines = [line for line in kernel.splitlines() if not line.startswith("#")]
    assert len(lines) == 10
    path, options = lines[1].split(" ")
    assert path == f"{mnt}/nodes/node002"
    assert options == (f"10.0.0.2(ro,no_root_squash,no_subtree_check,sec=sys,"
                       f"fsid={kernel_fsid('node002')})")
    assert "# NOT exported: other1" in kernel


def test_export_identities_are_stable():
    names = [f"n{i}" for i in range(3000)]
    ids = export_ids(names)
    assert len(set(ids.values())) == 3000
    # A node that had its own hash slot keeps it when others are added or removed.
    more = export_ids([*names[:2000], *(f"m{i}" for i in range(500))])
    home = export_ids(["n7"])["n7"]
    if ids["n7"] == home and more["n7"] == home:
        assert ids["n7"] == more["n7"]
    kept = sum(ids[n] == more[n] for n in names[:2000])
    assert kept > 1900  # only collisions can move an id
    assert kernel_fsid("node001") == kernel_fsid("node001") != kernel_fsid("node002")


def test_plan_reports_names_that_cannot_be_written_unescaped(tmp_path):
    _, site = site_at(tmp_path, CLUSTER.replace("other1,", "o'q,"))
    book = node_addresses(site, {"o'q": "10.1.0.1"})
    plan = plan_exports(book, tmp_path)
    assert "o'q" not in [e.node for e in plan.exports]
    assert [n for n, _ in plan.unexported if n == "o'q"]


def test_attr_expiration_from_option_or_settings_and_bounded(tmp_path):
    root, _ = site_at(tmp_path)
    mnt = tmp_path / "mnt"
    done = run_onesuite("exports", "--root", root, "--attr-expiration", "0", mnt)
    assert done.stdout.count("Attr_Expiration_Time = 0;") == 10
    config = tmp_path / "onesuite.toml"
    config.write_text("[nfs]\nattr_expiration = 7\n")
    done = run_onesuite("exports", "--root", root, "--config", config, mnt)
    assert done.stdout.count("Attr_Expiration_Time = 7;") == 10
    assert "at most 8 s longer" in done.stdout  # the bound it states
    done = run_onesuite("exports", "--root", root, "--config", config, "--attr-expiration",
                        "1", mnt)
    assert done.stdout.count("Attr_Expiration_Time = 1;") == 10  # the option wins


@pytest.mark.parametrize("value", ["-1", "3601", "99999999999", "2.5", "2;Path=/"])
def test_attr_expiration_refuses_what_ganesha_must_not_read(tmp_path, value):
    root, _ = site_at(tmp_path)
    done = run_onesuite("exports", "--root", root, "--attr-expiration", value, tmp_path / "m",
                        check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "Attr_Expiration_Time" not in done.stdout


@pytest.mark.parametrize("toml", ["attr_expiration = -5", "attr_expiration = 4000",
                                  'attr_expiration = "2; FSAL { Name = MEM; }"',
                                  "attr_expiration = true"])
def test_attr_expiration_setting_refused_with_its_file(tmp_path, toml):
    root, _ = site_at(tmp_path)
    config = tmp_path / "onesuite.toml"
    config.write_text(f"[nfs]\n{toml}\n")
    done = run_onesuite("exports", "--root", root, "--config", config, tmp_path / "m",
                        check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(config) in done.stderr and "attr_expiration" in done.stderr
