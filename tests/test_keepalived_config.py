"""`onesuite keepalived`: keepalived's configuration from [ha], every value checked before it
is written into a file keepalived runs scripts from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_onesuite

from onesuite_fs.core.errors import ConfigError
from onesuite_fs.nfs.keepalived import check_command, plan_ha, render_keepalived

NODES = [f"node{i:03d}" for i in range(1, 9)]
GOOD = {"interface": "eth0", "servers": ["srv1", "srv2", "srv3"], "router_id": 60,
        "floating": [{"address": "10.1.0.250/24", "nodes": "node001-node004"},
                     {"address": "10.1.0.251/24", "nodes": "node005-node007"}]}


def test_each_address_has_a_home_and_every_instance_tracks_the_check():
    plan = plan_ha(GOOD, NODES, "onesuite.toml")
    first, second = plan.floating
    assert (first.home, second.home) == ("srv1", "srv2")
    assert [plan.priority(first, s) for s in plan.servers] == [150, 100, 90]
    assert [plan.priority(second, s) for s in plan.servers] == [90, 150, 100]
    assert plan.address_of("node006") == "10.1.0.251" and plan.unassigned == ("node008",)
    text = render_keepalived(plan, "srv2", check_command(["/usr/bin/onesuite"],
                                                         Path("/var/lib/onesuite-fs/nfs")))
    assert 'script "/usr/bin/onesuite ha-check --nfs-state-dir /var/lib/onesuite-fs/nfs"' in text
    blocks = text.split("vrrp_instance ")[1:]
    assert len(blocks) == 2
    assert "virtual_router_id 60" in blocks[0] and "priority 100" in blocks[0]
    assert "virtual_router_id 61" in blocks[1] and "priority 150" in blocks[1]
    assert "10.1.0.251/24 dev eth0" in blocks[1]
    assert all("track_script {\n        onesuite_serves" in b and "state BACKUP" in b
               for b in blocks)
    # Losing an address resets the connections clients made to it on this server.
    for block, address in zip(blocks, ("10.1.0.250", "10.1.0.251"), strict=True):
        for event in ("backup", "fault", "stop"):
            assert f'notify_{event} "/bin/ss -K -t src {address}"' in block


@pytest.mark.parametrize(("change", "message"), [
    ({"interface": 'eth0"; }\nvrrp_script x {'}, "not a network interface name"),
    ({"interface": "a-very-long-interface-name"}, "not a network interface name"),
    ({"servers": ["srv1", 'srv2" }']}, "servers must be a list"),
    ({"servers": ["srv1", "srv1"]}, "twice"),
    ({"servers": []}, "servers must be a list"),
    ({"router_id": 255}, "router_id"),
    ({"router_id": True}, "router_id"),
    ({"advert_int": 0}, "advert_int"),
    ({"floating": []}, "no [[ha.floating]]"),
    ({"floating": [{"address": "10.1.0.250", "nodes": "node001"}]}, "prefix length"),
    ({"floating": [{"address": "10.1.0.250/24\n}", "nodes": "node001"}]}, "prefix length"),
    ({"floating": [{"address": "127.0.0.2/8", "nodes": "node001"}]}, "prefix length"),
    ({"floating": [{"address": "10.1.0.250/24", "nodes": "node001"},
                   {"address": "10.1.0.250/24", "nodes": "node002"}]}, "given twice"),
    ({"floating": [{"address": "10.1.0.250/24", "nodes": "node001-node002"},
                   {"address": "10.1.0.251/24", "nodes": "node002"}]}, "also under"),
    ({"floating": [{"address": "10.1.0.250/24", "nodes": "intruder"}]}, "not a node"),
    ({"floating": [{"address": "10.1.0.250/24", "nodes": "node1-node99999999"}]}, "nodes:"),
    ({"floating": [{"address": "10.1.0.250/24", "nodes": "node001", "x": 1}]}, "unknown key"),
    ({"priority": 3}, "unknown key"),
])
def test_hostile_or_careless_values_are_refused_naming_the_key(change, message):
    with pytest.raises(ConfigError) as refused:
        plan_ha({**GOOD, **change}, NODES, "onesuite.toml", max_nodes=1000)
    assert message in str(refused.value) and "onesuite.toml" in str(refused.value)
    assert refused.value.hint  # and what to do


def test_a_check_command_keepalived_would_split_wrongly_is_refused():
    with pytest.raises(ConfigError, match="script line"):
        check_command(["/opt/my tools/onesuite"], Path("/var/lib/onesuite-fs/nfs"))
    with pytest.raises(ConfigError, match="script line"):
        check_command(["/usr/bin/onesuite"], Path('/var/lib/x"; reboot; "'))
    plan = plan_ha(GOOD, NODES, None)
    with pytest.raises(ConfigError, match="not in \\[ha\\] servers"):
        render_keepalived(plan, "srv9", "/usr/bin/onesuite ha-check")


def test_cli_writes_the_configuration_or_says_what_is_missing(example_site, tmp_path):
    config = tmp_path / "onesuite.toml"
    config.write_text('[ha]\ninterface = "eth0"\nservers = ["a", "b"]\n'
                      '[[ha.floating]]\naddress = "10.252.0.100/24"\n'
                      'nodes = "node001-node004"\n')
    done = run_onesuite("keepalived", "--root", example_site, "--config", config,
                        "--server", "b", "--json", "--check-program", "/usr/bin/onesuite")
    answer = json.loads(done.stdout)
    assert answer["floating"][0]["priorities"] == {"a": 150, "b": 100}
    assert answer["floating"][0]["nodes"] == ["node001", "node002", "node003", "node004"]
    assert "priority 100" in answer["config"] and "node005" in answer["unassigned"]
    config.write_text("[nfs]\nport = 2049\n")
    missing = run_onesuite("keepalived", "--root", example_site, "--config", config,
                           "--server", "b", check=False)
    assert missing.returncode == 2 and "[ha] is missing" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_ha_check_says_why_a_server_that_does_not_serve_is_unhealthy(tmp_path):
    done = run_onesuite("ha-check", "--nfs-state-dir", tmp_path, check=False)
    assert done.returncode == 1 and "no onesuite serve runs" in done.stderr
    (tmp_path / "serving.json").write_text(json.dumps(
        {"serve_pid": 999999999, "ganesha_pid": 1, "fuse_pid": 1, "mountpoint": "/x"}))
    done = run_onesuite("ha-check", "--nfs-state-dir", tmp_path, "--json", check=False)
    assert done.returncode == 1 and "not running" in json.loads(done.stdout)["reason"]
    (tmp_path / "serving.json").write_text("{not json")
    done = run_onesuite("ha-check", "--nfs-state-dir", tmp_path, check=False)
    assert done.returncode == 1 and "unreadable" in done.stderr
