"""The override list comes from the autoinstall script each node runs (issue 16, item 6):
SystemImager 4.3's client picks HOSTNAME, its groups, its base host name, then the image name
(.sh before .master; initrd functions `choose_autoinstall_script`) and lays the OVERRIDES the
script sets (`si_mkautoinstallscript --script NAME --overrides A`: "NAME $GROUP_OVERRIDES
$HOSTNAME A"). The rsync oracle replays both on random sites (tests/oracle.py)."""

from __future__ import annotations

import os
import subprocess

import pytest
from sitetools import make_site

from onesuite_fs.core.stack import node_stages
from onesuite_fs.settings import Settings
from onesuite_fs.sources.scripts import base_hostname
from onesuite_fs.sources.systemimager import load_site

XML = ("<xml><name>all</name><override>all</override>"
       "<group><name>Login</name><priority>1</priority><image>img</image><override>lg</override>"
       "<node>login1,n1</node></group>"
       "<group><name>compute</name><image>img</image><override>cp</override>"
       "<node>n1-n3</node></group></xml>")
LINE = '[ -z $OVERRIDES ] && OVERRIDES="{} $GROUP_OVERRIDES $HOSTNAME{}"\n'


def scripted_site(root):
    make_site(root, XML, images=("img",), overrides=("all", "lg", "cp", "Login", "extra"))
    scripts = root / "var/lib/systemimager/scripts"
    scripts.mkdir(parents=True)
    (scripts / "img.master").write_text("#!/bin/sh\n" + LINE.format("img", ""))
    (scripts / "Login.master").write_text(LINE.format("Login", " extra"))
    (scripts / "compute.sh").write_text("# hand-written, no OVERRIDES line\n")
    os.symlink("Login.master", scripts / "n3.sh")
    return root


def layers(site, host):
    return [(e.layer.name, e.role) for stage in node_stages(site, host, "autoinstall")
            for e in stage][1:]


def test_each_node_lays_the_overrides_of_the_script_it_runs(tmp_path):
    site = load_site(Settings(root=scripted_site(tmp_path)))
    warnings = list(site.warnings)
    # login1: no host script, group Login first: Login.master, --overrides last (over the host).
    assert layers(site, "login1") == [("Login", "script override"), ("all", "global"),
                                      ("lg", "group Login"), ("login1", "host"),
                                      ("extra", "script --overrides")]
    # n3: its own n3.sh (a link to Login.master) although not in Login.
    assert layers(site, "n3")[0] == ("Login", "script override")
    # n2: compute.sh comes first but sets no OVERRIDES: warned, the image-named rule.
    assert layers(site, "n2")[0] == ("img", "script override")
    assert any("compute.sh: no OVERRIDES" in w for w in warnings), warnings


def test_a_script_outside_the_scripts_directory_or_naming_no_override_is_not_used(tmp_path):
    root = scripted_site(tmp_path)
    scripts = root / "var/lib/systemimager/scripts"
    outside = tmp_path / "elsewhere.master"
    outside.write_text(LINE.format("Login", ""))
    os.symlink(outside, scripts / "n2.sh")
    (scripts / "login1.sh").write_text(LINE.format("../etc", ""))
    site = load_site(Settings(root=root))
    assert layers(site, "n2")[0] == ("img", "script override")
    assert layers(site, "login1")[0] == ("img", "script override")
    assert any("outside" in w for w in site.warnings)
    assert any("'../etc'" in w for w in site.warnings)


@pytest.mark.parametrize("host", ["compute99", "node001", "n1.cluster", "login", "a1b2",
                                  "x.y9", "9node", "rack4node12"])
def test_base_hostname_is_what_the_clients_sed_gives(host):
    done = subprocess.run(["sed", "s/[.0-9].*$//"], input=host + "\n", capture_output=True,
                          text=True, check=True)
    assert base_hostname(host) == done.stdout.strip()


def test_what_an_install_writes_after_the_image_pass_is_listed(tmp_path):
    """Issue 16, item 9: IMAGE_LAST_SYNCED_TO (template line 317) and the fstab the node's
    script carries (si_mkautoinstallscript's `cat <<'EOF' > /a/etc/fstab` block) are shown
    by `onesuite nodes`, with where they come from."""
    import json

    from conftest import run_onesuite

    root = scripted_site(tmp_path)
    script = root / "var/lib/systemimager/scripts/Login.master"
    script.write_text(script.read_text() + "cat <<'EOF' > /a/etc/fstab\n"
                      "/dev/sda1\t/\text4\tdefaults\t1\t1\nproc\t/proc\tproc\tdefaults\nEOF\n")
    document = json.loads(run_onesuite("nodes", "--root", root, "--json").stdout)
    rows = {row["name"]: row for row in document["nodes"]}
    written = {w["path"]: w for w in rows["login1"]["written_after_image_pass"]}
    assert written["/etc/systemimager/IMAGE_LAST_SYNCED_TO"]["content"] == "img\n"
    assert written["/etc/fstab"]["content"].startswith("/dev/sda1\t/\text4")
    assert written["/etc/fstab"]["from"] == f"{script}:2 (cat <<'EOF' > /a/etc/fstab)"
    assert rows["login1"]["script"] == str(script)
    n2 = {w["path"] for w in rows["n2"]["written_after_image_pass"]}
    assert n2 == {"/etc/systemimager/IMAGE_LAST_SYNCED_TO"}  # compute.sh carries no fstab
