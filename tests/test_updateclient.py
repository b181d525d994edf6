"""--override-order updateclient keeps what si_updateclient excludes (issue 16, item 7):
every pass of si_updateclient (4.3, sbin/si_updateclient lines 521-586) excludes
lost+found/, /dev/ and each line of the node's own updateclient.local.exclude that starts
with '/', so an excluded path keeps the installed (autoinstall) entry, e.g. /etc/hostname
the host override's value. (The rsync oracle, tests/test_oracle_mount.py, replays
si_updateclient's passes with real rsync on random sites whose images carry such a list.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_onesuite
from sitetools import make_site

from onesuite_fs.core.updateclient import excluding_rule, parse_exclude_list

EXCLUDE = "etc/systemimager/updateclient.local.exclude"


def site(root: Path, exclude_list: str | None) -> Path:
    make_site(root, "<xml><name>all</name><override>all</override><group><name>g</name>"
                    "<image>img</image><node>n1,n2</node></group></xml>", images=("img",),
              overrides=("all", "n1"))
    image = root / "var/lib/systemimager/images/img"
    (image / "etc/hostname").write_text("golden\n")
    (image / "var/log").mkdir(parents=True)
    (image / "var/log/messages").write_text("image log\n")
    if exclude_list is not None:
        (image / EXCLUDE).parent.mkdir(parents=True)
        (image / EXCLUDE).write_text(exclude_list)
    host = root / "var/lib/systemimager/overrides/n1"
    (host / "etc").mkdir(parents=True)
    (host / "etc/hostname").write_text("n1\n")
    (host / "etc/only-host").write_text("deleted by the image pass's --delete\n")
    (host / "var/log").mkdir(parents=True)
    (host / "var/log/messages").write_text("n1's log\n")
    return root


def preview(root: Path, host: str, path: str) -> dict[str, dict]:
    done = run_onesuite("preview", "--root", root, "--override-order", "updateclient", host,
                        path, "--json")
    return {e["path"]: e for e in json.loads(done.stdout)["entries"]}


def test_excluded_paths_keep_the_installed_entries(tmp_path):
    root = site(tmp_path, "# comment\n/etc/hostname\n/var/log/*\n  /etc/indented\n")
    n1 = preview(root, "n1", "/")
    assert n1["/etc/hostname"]["layer"] == "override:n1"  # the host override, as installed
    assert n1["/var/log/messages"]["layer"] == "override:n1"
    assert "/etc/only-host" not in n1  # not excluded: --delete removed it
    assert n1["/etc/image"]["layer"] == "image:img"
    n2 = preview(root, "n2", "/")
    assert n2["/etc/hostname"]["layer"] == "image:img"
    done = run_onesuite("explain", "--root", root, "--override-order", "updateclient", "n1",
                        "/etc/hostname", "--json")
    document = json.loads(done.stdout)
    assert document["updateclient"]["excluded_by"] == "/etc/hostname"
    assert document["updateclient"]["line"].endswith(f"/{EXCLUDE}:2")
    assert document["winner"]["layer"] == "override:n1"
    assert document["entry"]["origin"] == "override:n1 /etc/hostname"


def test_without_the_list_si_updateclient_stops_and_the_node_is_as_installed(tmp_path):
    root = site(tmp_path, None)
    done = run_onesuite("preview", "--root", root, "--override-order", "updateclient", "n1",
                        "/etc", "--json")
    entries = {e["path"]: e for e in json.loads(done.stdout)["entries"]}
    assert entries["/etc/only-host"]["layer"] == "override:n1"
    assert "si_updateclient stops there" in done.stderr


@pytest.mark.parametrize("pattern, path, is_dir, excluded", [
    ("/proc/*", "proc/cpuinfo", False, True),
    ("/proc/*", "proc", True, False),
    ("/proc/*", "proc/sys/kernel", False, True),  # below an excluded directory
    ("/home/*", "home/alice/.bashrc", False, True),
    ("/dev/", "dev/null", False, True),  # automatic (udev)
    ("/x", "lost+found", True, True),  # automatic, at any depth
    ("/x", "usr/lost+found", False, False),  # a file: lost+found/ is for directories
    ("/etc/sysconfig/network-scripts/ifcfg-*", "etc/sysconfig/network-scripts/ifcfg-eth0",
     False, True),
    ("/etc/lvm/.cache", "etc/lvm/.cache", False, True),
    ("/etc/lvm/.cache", "etc/lvm/.cachex", False, False),
    ("/var/**/core", "var/a/b/core", False, True),
    ("/etc/fstab", "etc/fstab.default", False, False),
])
def test_rsync_exclude_patterns(pattern, path, is_dir, excluded):
    excludes = parse_exclude_list(f"{pattern}\n", "list")
    assert (excluding_rule(excludes, path, is_dir) is not None) == excluded


def test_only_lines_starting_with_a_slash_are_used():
    excludes = parse_exclude_list("# /etc/x\n*/.journal\n  /etc/y\n/etc/z trailing\n", "l")
    assert [r.text for r in excludes.rules] == ["lost+found/", "/dev/", "/etc/z"]
