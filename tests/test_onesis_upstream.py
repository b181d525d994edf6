"""oneSIS rules as the oneSIS manual and its Perl read them, where onesuite once differed
(issue 16, the independent audit): a NODECLASS_RANGE matches digits by value (node36), globs
never match a leading dot (POSIX glob, node42), and LINKDIR/LINKFILE keep the original as
NAME.default beside the /ram link (node28, node74). Each on a real mount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import needs_root_fuse, run_onesuite
from sitetools import make_site

from onesuite_fs.core.onesis_view import glob_matches

CONF = """\
NODECLASS_RANGE node[1-128] big
LINKBACK /etc/motd CLASS
LINKFILE /etc/ssh/*
LINKFILE /etc/*/conf
LINKFILE /etc/adjtime -d
LINKDIR /var/log
RAMFILE /etc/resolv.conf -d
RAMDIR /var/lib/nfs -d
SERVICE smartd -c big
"""

FILES = {
    "etc/sysimage.conf": CONF,
    "etc/motd": "motd: the image's own\n",
    "etc/motd.big": "motd: class big\n",
    "etc/ssh/ssh_host_key": "key\n",
    "etc/ssh/.keep": "dot file\n",
    "etc/app/conf": "app conf\n",
    "etc/.hidden/conf": "hidden conf\n",
    "etc/adjtime": "0.0 0 0.0\n",
    "etc/resolv.conf": "nameserver 10.0.0.1\n",
    "var/log/messages": "image log\n",
    "var/lib/nfs/state": "statd\n",
    "etc/init.d/smartd": "#!/bin/sh\n",
    "etc/systemd/system/multi-user.target.wants/smartd.service": "[Unit]\n",
    "etc/systemd/system/.old.wants/smartd.service": "[Unit]\n",
}


def site(root: Path) -> Path:
    make_site(root, "<xml><name>all</name><override>all</override><group><name>G</name>"
              "<image>img</image><node>node007,n1</node></group></xml>", images=("img",))
    image = root / "var/lib/systemimager/images/img"
    for path, text in FILES.items():
        (image / path).parent.mkdir(parents=True, exist_ok=True)
        (image / path).write_text(text)
    return root


@pytest.mark.parametrize("name, pattern, matches", [
    ("key", "*", True), (".keep", "*", False), (".keep", "?keep", False),
    (".keep", "[.]keep", False), (".keep", ".*", True), (".keep", ".keep", True),
    ("a.default", "*", True),
])
def test_globs_never_match_a_leading_dot(name, pattern, matches):
    assert glob_matches(name, pattern) is matches


@needs_root_fuse()
@pytest.mark.mount
def test_mount_reads_rules_as_the_manual_does(tmp_path, mount_site):
    root = site(tmp_path / "site")
    mount = mount_site(root, "--no-watch")
    node = mount.node("node007")
    # node36: node007 has digits within [1-128], so it is of class big.
    assert (node / "etc/motd").read_text() == "motd: class big\n"
    # node42 (glob): '*' leaves dot files and dot directories alone.
    assert os.readlink(node / "etc/ssh/ssh_host_key") == "/ram/etc/ssh/ssh_host_key"
    assert not os.path.islink(node / "etc/ssh/.keep")
    assert os.readlink(node / "etc/app/conf") == "/ram/etc/app/conf"
    assert (node / "etc/.hidden/conf").read_text() == "hidden conf\n"
    # node28/node74: the original beside the /ram link, as NAME.default (what -d copies).
    assert os.readlink(node / "etc/adjtime") == "/ram/etc/adjtime"
    assert (node / "etc/adjtime.default").read_text() == "0.0 0 0.0\n"
    assert os.readlink(node / "var/log") == "/ram/var/log"
    assert (node / "var/log.default/messages").read_text() == "image log\n"
    assert (node / "etc/ssh/ssh_host_key.default").read_text() == "key\n"
    assert "etc/ssh/.keep.default" not in os.listdir(node / "etc/ssh")
    # RAM* paths are no links in the image: nothing moved.
    assert (node / "etc/resolv.conf").read_text() == "nameserver 10.0.0.1\n"
    assert not (node / "etc/resolv.conf.default").exists()
    assert not (node / "var/lib/nfs.default").exists()
    # SERVICE: off on n1 (not of class big): its script and wants link go; a '*.wants'
    # glob does not reach the dot directory .old.wants.
    n1 = mount.node("n1")
    assert os.listdir(n1 / "etc/init.d") == [] and os.listdir(node / "etc/init.d") == ["smartd"]
    assert os.listdir(n1 / "etc/systemd/system/multi-user.target.wants") == []
    assert os.listdir(n1 / "etc/systemd/system/.old.wants") == ["smartd.service"]
    origin = os.getxattr(node / "etc/adjtime.default", "user.onesuite.origin").decode()
    assert "sysimage.conf:5" in origin
    explained = run_onesuite("explain", "--root", root, "node:node007", "/var/log.default")
    assert "image:img" in explained.stdout


@needs_root_fuse()
@pytest.mark.mount
def test_exact_range_numbers_stay_selectable(tmp_path, mount_site):
    root = site(tmp_path / "site")
    config = tmp_path / "onesuite.toml"
    config.write_text(f'[paths]\nroot = "{root}"\n[onesis]\nrange_numbers = "exact"\n')
    mount = mount_site(root, "--no-watch", "--config", str(config))
    assert (mount.node("node007") / "etc/motd").read_text() == "motd: the image's own\n"
    config.write_text(f'[paths]\nroot = "{root}"\n[onesis]\nrange_numbers = "loose"\n')
    done = run_onesuite("nodes", "--config", config, check=False)
    assert done.returncode == 2 and f"{config}: [onesis] range_numbers 'loose'" in done.stderr
