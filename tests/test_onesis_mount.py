"""oneSIS rules on a real mount: both RAM/LINK policies, node-private persistent paths, and
nothing lost when the daemon is killed in the middle of writes."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import time

import pytest
from conftest import needs_root_fuse, run_onesuite
from sitetools import onesis_site

pytestmark = [needs_root_fuse(), pytest.mark.mount]

RECORD = 64
WRITER = f"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for i in range(10**6):
    record = (b"%08d " % i).ljust({RECORD} - 1, b"x") + b"\\n"
    try:
        assert os.write(fd, record) == {RECORD}
    except OSError as exc:
        print("stopped", exc.errno, flush=True)
        break
    print(i, flush=True)
"""


def test_ram_policy_on_a_mount(tmp_path, mount_site):
    node = mount_site(onesis_site(tmp_path / "site")).node("n3")
    assert (node / "etc/fstab").read_text() == "fstab: class compute\n"
    assert os.readlink(node / "var/log") == "/ram/var/log"
    assert os.path.isdir(node / "ram")
    assert "smartd" in os.listdir(node / "etc/init.d")
    assert "sysimage.conf:7: CLASS variant fstab.compute" in os.getxattr(
        node / "etc/fstab", "user.onesuite.origin").decode()
    with pytest.raises(OSError) as err:
        (node / "etc/motd").write_text("x")
    assert err.value.errno == errno.EROFS


def test_persistent_policy(tmp_path, mount_site):
    root, state = onesis_site(tmp_path / "site"), tmp_path / "state"
    mount = mount_site(root, "--link-policy", "persistent", "--persistent-dir", str(state))
    n1, n2 = mount.node("n1"), mount.node("n2")
    assert os.listdir(n1 / "var/log") == []  # LINKDIR without -d starts empty
    (n1 / "var/log/boot.log").write_text("booted\n")
    with open(n1 / "var/log/boot.log", "a") as log:
        log.write("again\n")
    (n1 / "var/log/sub").mkdir()
    os.rename(n1 / "var/log/boot.log", n1 / "var/log/sub/boot.log")
    os.symlink("sub/boot.log", n1 / "var/log/latest")
    assert (n1 / "etc/adjtime").read_text() == "0.0 0 0.0\n"  # LINKFILE -d: a copy
    (n1 / "etc/adjtime").write_text("1.5 0 0.0\n")
    assert (n1 / "var/lib/nfs/statd/state").read_text() == "statd\n"  # RAMDIR -d: a copy
    assert stat.S_IMODE(os.stat(n1 / "etc/resolv.conf").st_mode) == 0o600  # -m 0600
    hosts = os.stat(n1 / "etc/hosts")  # RAMFILE /etc/{hosts,hostname} -d -u chrony -g 996
    assert (hosts.st_uid, hosts.st_gid) == (998, 996)
    assert (n1 / "etc/hostname").read_text() == "golden\n"
    (n1 / "etc/hostname").write_text("n1\n")
    assert os.listdir(n2 / "var/log") == []  # never visible to other nodes
    assert (n2 / "etc/adjtime").read_text() == "0.0 0 0.0\n"
    with pytest.raises(OSError) as err:
        (n1 / "etc/motd").write_text("x")  # everything else stays read-only
    assert err.value.errno == errno.EROFS
    origin = os.getxattr(n1 / "var/log/sub/boot.log", "user.onesuite.origin").decode()
    assert origin.startswith("state:n1 /var/log/sub/boot.log (persistent: LINKDIR /var/log ")

    mount.stop()  # a daemon restart keeps everything
    mount.start()
    assert (n1 / "var/log/sub/boot.log").read_text() == "booted\nagain\n"
    assert os.readlink(n1 / "var/log/latest") == "sub/boot.log"
    assert (n1 / "etc/adjtime").read_text() == "1.5 0 0.0\n"
    assert (n1 / "etc/hostname").read_text() == "n1\n"
    assert (n2 / "etc/hostname").read_text() == "golden\n"
    assert os.listdir(n2 / "var/log") == []
    os.unlink(n1 / "var/log/latest")
    os.unlink(n1 / "var/log/sub/boot.log")
    os.rmdir(n1 / "var/log/sub")
    assert os.listdir(n1 / "var/log") == []


def test_persistent_writes_survive_a_daemon_crash(tmp_path, mount_site):
    root, state = onesis_site(tmp_path / "site"), tmp_path / "state"
    mount = mount_site(root, "--link-policy", "persistent", "--persistent-dir", str(state))
    target = mount.node("n1") / "var/log/records.log"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)],
                              stdout=subprocess.PIPE, text=True)
    acknowledged = -1
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            if line.startswith("stopped"):
                break
            acknowledged = int(line)
            if acknowledged == 300:
                os.kill(mount.pid, 9)  # in the middle of the writes
    finally:
        writer.kill()
        writer.wait()
    assert acknowledged >= 300
    mount.stop()
    mount.start()
    data = target.read_bytes()
    assert len(data) % RECORD == 0, "a torn record"
    records = [data[i:i + RECORD] for i in range(0, len(data), RECORD)]
    assert len(records) >= acknowledged + 1, "an acknowledged write was lost"
    for number, record in enumerate(records):
        assert record.startswith(b"%08d " % number) and record.endswith(b"x\n")


def test_nodes_json_shows_class_properties_and_rules(tmp_path):
    root = onesis_site(tmp_path / "site")
    done = run_onesuite("nodes", "--root", root, "--json")
    nodes = {n["name"]: n for n in json.loads(done.stdout)["nodes"]}
    n3 = nodes["n3"]["onesis"]
    assert n3["class"] == "compute.gpu" and n3["properties"] == ["ib"]
    assert n3["services"] == {"smartd": True}
    assert {lb["path"] for lb in n3["linkbacks"]} >= {"/etc/fstab", "/etc/motd"}
    assert nodes["n1"]["groups"] == ["compute"]  # SystemImager groups still pick overrides
    assert "DISKMOUNT has no effect on a served root" in done.stderr


def test_a_bad_sysimage_conf_stops_the_mount(tmp_path):
    root = onesis_site(tmp_path / "site")
    conf = root / "var/lib/systemimager/images/img/etc/sysimage.conf"
    conf.write_text("NODECLASS_REGEXP n(\\d+ compute\n")
    (tmp_path / "mnt").mkdir()
    done = run_onesuite("mount", "--root", root, tmp_path / "mnt", check=False)
    assert done.returncode == 2 and f"{conf}:1" in done.stderr
    assert not os.path.ismount(tmp_path / "mnt")
    time.sleep(0)  # nothing to wait for: no daemon was started
