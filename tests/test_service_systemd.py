"""The units, the fstab helper and `onesuite install-service` under a real systemd: a
container (systemd-nspawn) boots Debian's systemd over the host's /usr, onesuite is installed
into it the way an admin would, and the services are driven with systemctl.

What it shows: start returns only once the mount answers (Type=notify), the node roots are
there, `systemctl reload` applies an edit (and reports a refused one while the old generation
keeps serving), a kill -9 of the daemon is followed by systemd's restart and a mount that
answers again, stop unmounts; an fstab line mounts with `mount -a` and through systemd's
fstab generator; serve is ready only once nfs-ganesha serves. About 15 s.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, needs_root_fuse
from nfstools import require
from nspawn import Container

pytestmark = [needs_root_fuse(), pytest.mark.mount, pytest.mark.slow]

PROGRAM = "/opt/onesuite/bin/onesuite"
UNIT = "onesuite-mount@srv-onesuite.service"
MOUNTPOINT = "/srv/onesuite"
# CapabilityBoundingSet of onesuite-mount@.service: CHOWN 0, DAC_OVERRIDE 1,
# DAC_READ_SEARCH 2, FOWNER 3, FSETID 4, SYS_ADMIN 21 (linux/capability.h).
MOUNT_CAPABILITIES = (0, 1, 2, 3, 4, 21)


def _venv() -> Path:
    return Path(sys.prefix).resolve()


@dataclass
class Booted:
    box: Container
    site: Path  # the image server, read-write inside the container at the same path


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    require("systemd-nspawn", "nsenter")
    import example_site

    work = tmp_path_factory.mktemp("systemd")
    site = example_site.build(work / "site")
    read_only = tuple(dict.fromkeys([REPO, _venv()]))
    box = Container(work, read_only=read_only, read_write=(site,))
    # The onesuite program an admin would have installed: this checkout's code.
    program = box.root / PROGRAM.lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                       "from onesuite_fs.cli import main\nsys.exit(main())\n")
    program.chmod(0o755)
    try:
        box.boot()
        etc = box.root / "etc"
        (etc / "onesuite").mkdir(exist_ok=True)
        (etc / "onesuite/onesuite.toml").write_text(
            f'[paths]\nroot = "{site}"\n\n[nfs]\nprotocols = "4"\n')
        # No watching: only a reload may apply an edit, so the test sees the reload do it.
        (etc / "default/onesuite").write_text('ONESUITE_MOUNT_OPTIONS="--no-watch"\n'
                                             'ONESUITE_SERVE_OPTIONS="--no-watch"\n')
        installed = json.loads(box.run(PROGRAM, "install-service", "--json",
                                       "--mountpoint", MOUNTPOINT).stdout)
        assert installed["units"]["onesuite-mount"] == UNIT
        box.run("systemctl", "daemon-reload")
        yield Booted(box, site)
    finally:
        box.stop()


def show(box: Container, unit: str, prop: str) -> str:
    return box.run("systemctl", "show", "-p", prop, "--value", unit).stdout.strip()


def start(box: Container, unit: str) -> None:
    """systemctl start, and on failure the unit's journal in the message."""
    done = box.run("systemctl", "start", unit, check=False, timeout=180)
    if done.returncode != 0:
        journal = box.run("journalctl", "-u", unit, "--no-pager", check=False).stdout
        raise AssertionError(f"systemctl start {unit} failed:\n{done.stderr}\n{journal}")


def mounts(box: Container, where: str) -> int:
    """How many mounts the container has at `where` (its own mount table)."""
    table = box.run("cat", "/proc/self/mountinfo").stdout.splitlines()
    return sum(1 for line in table if line.split(" ")[4] == where)


def wait_until(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_mount_unit_start_reload_crash_restart_stop(booted: Booted) -> None:
    box, site = booted.box, booted.site
    box.run("mkdir", "-p", MOUNTPOINT)
    # Type=notify: start returns once READY=1 came, i.e. once the mount answered.
    start(box, UNIT)
    assert show(box, UNIT, "ActiveState") == "active"
    assert "serving 10 node roots" in show(box, UNIT, "StatusText")
    nodes = box.run("ls", f"{MOUNTPOINT}/nodes").stdout.split()
    assert nodes == ["login01", "login02", *(f"node{n:03d}" for n in range(1, 9))]
    # The hardening is in force, and FUSE works under it.
    status = box.run("cat", f"/proc/{show(box, UNIT, 'MainPID')}/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    assert int(fields["CapBnd"], 16) == sum(1 << bit for bit in MOUNT_CAPABILITIES)
    # journald: our lines carry no timestamp of their own, and warnings their priority.
    journal = box.run("journalctl", "-u", UNIT, "-o", "cat", "--no-pager").stdout
    assert f"onesuite.mount: mounted {MOUNTPOINT}" in journal.splitlines()

    # systemctl reload = onesuite reload: an edit appears, only after it (no watching).
    added = site / "var/lib/systemimager/overrides/all/etc/added-by-test"
    added.write_text("after reload\n")
    seen = f"{MOUNTPOINT}/nodes/node003/etc/added-by-test"
    assert box.run("cat", seen, check=False).returncode != 0
    box.run("systemctl", "reload", UNIT)
    assert box.run("cat", seen).stdout == "after reload\n"
    status = json.loads(box.run(PROGRAM, "status", "--json", MOUNTPOINT).stdout)
    assert status["generation"] == 2
    # A refused configuration: reload fails, the unit stays active, the old roots serve.
    cluster = site / "etc/systemimager/cluster.xml"
    good = cluster.read_text()
    cluster.write_text(good.replace("</xml>", "<group><name>broken"))
    assert box.run("systemctl", "reload", UNIT, check=False).returncode != 0
    assert show(box, UNIT, "ActiveState") == "active"
    assert box.run("cat", seen).stdout == "after reload\n"
    cluster.write_text(good)

    # kill -9: the mount is dead; systemd restarts the daemon, which clears it and mounts.
    first = show(box, UNIT, "MainPID")
    box.run("kill", "-9", first)
    wait_until(lambda: show(box, UNIT, "NRestarts") == "1"
               and show(box, UNIT, "ActiveState") == "active", "the restart")
    assert show(box, UNIT, "MainPID") not in ("0", first)
    assert box.run("cat", seen).stdout == "after reload\n"
    assert mounts(box, MOUNTPOINT) == 1  # the dead mount was cleared, not stacked over

    # stop: unmounted, the daemon gone.
    second = show(box, UNIT, "MainPID")
    box.run("systemctl", "stop", UNIT)
    assert show(box, UNIT, "ActiveState") == "inactive"
    assert mounts(box, MOUNTPOINT) == 0
    assert box.run("test", "-d", f"/proc/{second}", check=False).returncode != 0


def test_refused_configuration_fails_the_unit_without_restarts(booted: Booted) -> None:
    box = booted.box
    unit = "onesuite-mount@srv-refused.service"
    config = box.root / "etc/onesuite/onesuite.toml"
    good = config.read_text()
    box.run("mkdir", "-p", "/srv/refused")
    config.write_text(good + "[no_such_section]\n")
    try:
        done = box.run("systemctl", "start", unit, check=False)
        assert done.returncode != 0
        wait_until(lambda: show(box, unit, "ActiveState") == "failed", "the unit to fail")
        assert show(box, unit, "NRestarts") == "0"  # exit 2: RestartPreventExitStatus
        journal = box.run("journalctl", "-u", unit, "-o", "cat", "--no-pager").stdout
        assert "unknown section [no_such_section]" in journal
        assert mounts(box, "/srv/refused") == 0
    finally:
        config.write_text(good)
        box.run("systemctl", "reset-failed", unit, check=False)


def test_fstab_line_mounts_with_mount_a_and_systemd(booted: Booted) -> None:
    box = booted.box
    line = "onesuite  /srv/fstab  fuse.onesuite  defaults,no_watch,x-onesuite-test  0 0\n"
    box.run("mkdir", "-p", "/srv/fstab")
    box.run("sh", "-c", f"printf '%s' '{line}' > /tmp/fstab.test")
    # mount -a from a separate fstab (-T): mount(8) finds /sbin/mount.fuse.onesuite.
    box.run("mount", "-a", "-T", "/tmp/fstab.test")
    try:
        assert "node001" in box.run("ls", "/srv/fstab/nodes").stdout.split()
        box.run("mount", "-a", "-T", "/tmp/fstab.test")  # already mounted: nothing to do
        assert mounts(box, "/srv/fstab") == 1
        pid = box.run("getfattr", "--only-values", "-n", "user.onesuite.pid",
                      "/srv/fstab").stdout.strip()
        assert pid.isdigit()
    finally:
        box.run("umount", "/srv/fstab", check=False)
    assert mounts(box, "/srv/fstab") == 0
    wait_until(lambda: box.run("test", "-d", f"/proc/{pid}", check=False).returncode != 0,
               "the fstab daemon to exit")

    # The same line in the container's /etc/fstab: systemd's generator makes a .mount unit.
    (box.root / "etc/fstab").write_text(line)
    box.run("systemctl", "daemon-reload")
    start(box, "srv-fstab.mount")
    try:
        assert show(box, "srv-fstab.mount", "ActiveState") == "active"
        assert "node008" in box.run("ls", "/srv/fstab/nodes").stdout.split()
    finally:
        box.run("systemctl", "stop", "srv-fstab.mount", check=False)
    assert mounts(box, "/srv/fstab") == 0


def test_fstab_line_with_a_bad_option_fails_with_its_name(booted: Booted) -> None:
    box = booted.box
    box.run("mkdir", "-p", "/srv/bad")
    box.run("sh", "-c", "printf 'onesuite /srv/bad fuse.onesuite defaults,rooot=/x 0 0\\n'"
                        " > /tmp/fstab.bad")
    done = box.run("mount", "-a", "-T", "/tmp/fstab.bad", check=False)
    assert done.returncode != 0
    assert "unknown mount option 'rooot=/x'" in done.stderr
    assert mounts(box, "/srv/bad") == 0


def test_serve_unit_is_ready_once_ganesha_serves(booted: Booted) -> None:
    require("ganesha.nfsd")
    box = booted.box
    unit = "onesuite-serve@srv-served.service"
    box.run("mkdir", "-p", "/srv/served")
    start(box, unit)
    try:
        assert show(box, unit, "ActiveState") == "active"
        ganesha = box.run("pgrep", "-x", "ganesha.nfsd").stdout.split()
        assert len(ganesha) == 1
        assert "serving 10 node roots from /srv/served over NFS" in show(box, unit,
                                                                          "StatusText")
        assert "node002" in box.run("ls", "/srv/served/nodes").stdout.split()
        # systemctl reload reaches the FUSE daemon that serve started.
        box.run("systemctl", "reload", unit)
        status = json.loads(box.run(PROGRAM, "status", "--json", "/srv/served").stdout)
        assert status["generation"] == 2
    finally:
        box.run("systemctl", "stop", unit, check=False, timeout=180)
    assert show(box, unit, "ActiveState") == "inactive"
    assert mounts(box, "/srv/served") == 0
    assert box.run("pgrep", "-x", "ganesha.nfsd", check=False).returncode != 0
