"""The service pieces on the host: units that systemd-analyze accepts, install-service,
the sd_notify protocol on a real socket, journald and logrotate-friendly logs, the default
configuration file, and the mount(8) helper's reading of fstab options (hostile ones
included). The units under a real systemd: test_service_systemd.py."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ONESUITE, REPO, _is_mounted, _pid_alive, needs_root_fuse, run_onesuite
from nfstools import require

from onesuite_fs.cli import common
from onesuite_fs.core.errors import ConfigError
from onesuite_fs.service import install, sd_notify
from onesuite_fs.service.mount_helper import HelperError, parse, translate_options


def wrapper(path: Path) -> Path:
    """An installed onesuite program running this checkout."""
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                    "from onesuite_fs.cli import main\nsys.exit(main())\n")
    path.chmod(0o755)
    return path


# --- units and install-service -------------------------------------------------------------

def test_installed_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    require("systemd-analyze")
    program = wrapper(tmp_path / "onesuite")
    done = run_onesuite("install-service", "--prefix", tmp_path / "root", "--program",
                        program, "--json", "--mountpoint", "/srv/onesuite")
    report = json.loads(done.stdout)
    assert report["units"] == {"onesuite-mount": "onesuite-mount@srv-onesuite.service",
                               "onesuite-serve": "onesuite-serve@srv-onesuite.service"}
    units = tmp_path / "root/etc/systemd/system"
    for template in install.UNITS:
        text = (units / template).read_text()
        assert f"ExecStart={program} " in text and f"ExecReload={program} reload %f" in text
        assert "@ONESUITE@" not in text
        # An instance, as systemctl would load it; verify warns on stderr (unknown keys,
        # bad values) without failing, so stderr must be empty too.
        instance = units / template.replace("@.", "@srv-onesuite.")
        verify = subprocess.run(["systemd-analyze", "verify", str(instance)],
                                capture_output=True, text=True, check=False)
        assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    helper = tmp_path / "root/sbin/mount.fuse.onesuite"
    assert helper.is_symlink() and os.readlink(helper) == str(program)
    assert (tmp_path / "root/etc/logrotate.d/onesuite").read_text().startswith("#")


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelled key is reported on stderr."""
    require("systemd-analyze")
    program = wrapper(tmp_path / "onesuite")
    unit = tmp_path / "onesuite-mount@.service"
    text = (REPO / "packaging/systemd/onesuite-mount@.service").read_text()
    unit.write_text(install.render(text, program).replace("KillMode=mixed", "KillMode=mixd"))
    verify = subprocess.run(["systemd-analyze", "verify",
                             str(tmp_path / "onesuite-mount@srv-x.service")],
                            capture_output=True, text=True, check=False)
    assert "kill mode" in verify.stderr and "mixd" in verify.stderr


def test_logrotate_accepts_the_snippet(tmp_path: Path) -> None:
    require("logrotate")
    done = subprocess.run(["logrotate", "--debug", "--state", str(tmp_path / "state"),
                           str(REPO / "packaging/logrotate/onesuite")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "error" not in done.stderr.lower(), done.stderr


def test_install_service_dry_run_writes_nothing(tmp_path: Path) -> None:
    program = wrapper(tmp_path / "onesuite")
    done = run_onesuite("install-service", "--dry-run", "--prefix", tmp_path / "root",
                        "--program", program)
    assert "would write" in done.stdout
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("name", ["on suite", "x%i", "x$HOME", "x;rm", "x\nExecStartPre=/bin/x",
                                  "a/../b"])
def test_install_service_refuses_a_program_path_a_unit_cannot_hold(tmp_path: Path,
                                                                    name: str) -> None:
    program = tmp_path / name
    with pytest.raises(ConfigError, match="cannot be written into a unit"):
        install.check_program(program)


def test_install_service_refuses_a_program_that_is_not_executable(tmp_path: Path) -> None:
    (tmp_path / "onesuite").write_text("not a program")
    done = run_onesuite("install-service", "--prefix", tmp_path / "root", "--program",
                        tmp_path / "onesuite", check=False)
    assert done.returncode == 2 and "is not an executable file" in done.stderr
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("path", ["/srv/onesuite", "/srv/one-suite", "/", "/srv//x/",
                                  "/srv/.hidden", "/srv/a b", "/srv/ü"])
def test_instance_names_are_systemd_escape_s(path: str) -> None:
    require("systemd-escape")
    expected = subprocess.run(["systemd-escape", "--path", path], capture_output=True,
                              text=True, check=True).stdout.strip()
    assert install.escape_path(path) == expected


# --- sd_notify ---------------------------------------------------------------------------

@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_one_datagram_and_keeps_the_socket_from_children(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool) -> None:
    name = f"@onesuite-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name[1:] if abstract else name)
        server.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        monkeypatch.setattr(sd_notify, "_socket_path", None)
        sd_notify.take_socket()
        assert "NOTIFY_SOCKET" not in os.environ  # a child never reports in our name
        assert sd_notify.notify("READY=1", "STATUS=two\nlines")
        assert server.recv(4096) == b"READY=1\nSTATUS=two lines"
    monkeypatch.setattr(sd_notify, "_socket_path", None)
    assert not sd_notify.notify("READY=1")  # outside a notify service: nothing, no error


def test_notify_to_a_vanished_socket_is_logged_not_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sd_notify, "_socket_path", str(tmp_path / "gone"))
    assert not sd_notify.notify("READY=1")


@needs_root_fuse()
@pytest.mark.mount
def test_foreground_mount_reports_ready_once_it_answers(example_site: Path,
                                                        tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(tmp_path / "notify"))
        server.settimeout(60)
        env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
        daemon = subprocess.Popen([*ONESUITE, "mount", "-f", "--no-watch", "--root",
                                   str(example_site), str(mountpoint)], env=env,
                                  stderr=subprocess.PIPE, text=True)
        try:
            message = server.recv(4096).decode()
            # When READY=1 arrives, the mount answers already.
            assert "node001" in os.listdir(mountpoint / "nodes")
            assert message.startswith("READY=1\nSTATUS=serving 10 node roots at ")
        finally:
            daemon.terminate()
            assert daemon.wait(30) == 0
    assert not _is_mounted(mountpoint)
    assert "-" not in daemon.stderr.read().split(" ")[0][:4]  # timestamped: not the journal


# --- logs ----------------------------------------------------------------------------------

LOG_ONE_WARNING = ("import logging, sys; sys.path.insert(0, sys.argv[1]); "
                   "from onesuite_fs.service import logs; logs.configure(False); "
                   "logging.getLogger('onesuite.test').warning('careful'); "
                   "logging.getLogger('onesuite.test').info('fine')")


@pytest.mark.parametrize("journal", [True, False])
def test_logs_under_journald_carry_priority_and_no_timestamp(tmp_path: Path,
                                                             journal: bool) -> None:
    log = tmp_path / "stderr"
    with open(log, "w") as stderr:
        st = os.fstat(stderr.fileno())
        stream = f"{st.st_dev}:{st.st_ino}" if journal else f"{st.st_dev}:{st.st_ino + 1}"
        subprocess.run([sys.executable, "-c", LOG_ONE_WARNING, str(REPO)], stderr=stderr,
                       env=dict(os.environ, JOURNAL_STREAM=stream), check=True)
    lines = log.read_text().splitlines()
    if journal:
        assert lines == ["<4>onesuite.test: careful", "<6>onesuite.test: fine"]
    else:  # JOURNAL_STREAM names another stream (a child's redirected stderr): a terminal
        assert lines[0].endswith("onesuite.test WARNING careful")
        assert lines[0][:4].isdigit()


@needs_root_fuse()
@pytest.mark.mount
def test_daemon_log_file_follows_logrotate(example_site: Path, tmp_path: Path) -> None:
    """Real logrotate with the shipped snippet's rules moves the file away and creates a new
    one: the daemon's next lines go to the new file, without a signal."""
    require("logrotate")
    mountpoint, log = tmp_path / "mnt", tmp_path / "onesuite.log"
    mountpoint.mkdir()
    snippet = (REPO / "packaging/logrotate/onesuite").read_text()
    rules = snippet[snippet.index("{"):snippet.index("}") + 1]
    (tmp_path / "logrotate.conf").write_text(f"{log} {rules}\n")
    run_onesuite("mount", "--no-watch", "--log-file", log, "--root", example_site, mountpoint)
    pid = int(os.getxattr(mountpoint, "user.onesuite.pid"))

    def reload_logged(path: Path) -> None:
        run_onesuite("reload", mountpoint)
        deadline = time.monotonic() + 10
        while not (path.exists() and "SIGHUP: reloading" in path.read_text()):
            assert time.monotonic() < deadline, f"no reload line in {path}"
            time.sleep(0.05)

    try:
        reload_logged(log)
        subprocess.run(["logrotate", "-f", "--state", str(tmp_path / "state"),
                        str(tmp_path / "logrotate.conf")], check=True, capture_output=True)
        assert log.stat().st_size == 0  # the new, empty file logrotate created
        assert "SIGHUP: reloading" in (tmp_path / "onesuite.log.1").read_text()
        reload_logged(log)
        assert (tmp_path / "onesuite.log.1").read_text().count("SIGHUP: reloading") == 1
    finally:
        run_onesuite("umount", mountpoint, check=False)
        deadline = time.monotonic() + 15
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


# --- the default configuration file ------------------------------------------------------

def _args(config: Path | None) -> argparse.Namespace:
    return argparse.Namespace(config=config)


def test_default_config_is_read_when_it_exists_and_optional(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = tmp_path / "etc/onesuite/onesuite.toml"
    monkeypatch.setattr(common, "DEFAULT_CONFIG", default)
    assert common.config_file(_args(None)) is None  # missing: not an error
    default.parent.mkdir(parents=True)
    default.write_text("[policy]\noverride_order = \"updateclient\"\n")
    assert common.config_file(_args(None)) == default
    explicit = tmp_path / "other.toml"
    assert common.config_file(_args(explicit)) == explicit  # --config wins


def test_default_config_applies_to_commands(tmp_path: Path, example_site: Path) -> None:
    """`onesuite nodes` with no --config reads the default file (here pointed at by a
    subprocess that patches the default path: this machine's /etc is left alone)."""
    config = tmp_path / "onesuite.toml"
    config.write_text(f'[paths]\nroot = "{example_site}"\n')
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
            "from onesuite_fs.cli import common, main; "
            "common.DEFAULT_CONFIG = Path(sys.argv[2]); sys.exit(main(['nodes', '--json']))")
    done = subprocess.run([sys.executable, "-c", code, str(REPO), str(config)],
                          capture_output=True, text=True, check=True)
    assert len(json.loads(done.stdout)["nodes"]) == 10
    config.write_text("[paths\n")  # a broken default file is an error, with its name
    done = subprocess.run([sys.executable, "-c", code, str(REPO), str(config)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and str(config) in done.stderr


# --- the mount(8) helper -----------------------------------------------------------------

def test_helper_turns_fstab_options_into_mount_options() -> None:
    call = parse(["onesuite", "/srv/onesuite", "-o",
                  "rw,defaults,nofail,_netdev,x-systemd.requires=a.service,root=/srv/si,"
                  "config=/etc/onesuite/site.toml,no_watch,link-policy=persistent,"
                  "allow_layers_outside=/a,allow_layers_outside=/b"])
    assert call.argv() == ["mount", "--root=/srv/si", "--config=/etc/onesuite/site.toml",
                           "--no-watch", "--link-policy=persistent",
                           "--allow-layers-outside=/a", "--allow-layers-outside=/b", "--",
                           "/srv/onesuite"]
    assert parse(["onesuite", "/srv/x", "-fnv", "-t", "fuse.onesuite"]).fake


@pytest.mark.parametrize(("args", "message"), [
    (["/etc/onesuite/onesuite.toml", "/srv/x"], "must be 'onesuite'"),
    (["onesuite", "srv/x"], "must be an absolute path"),
    (["onesuite", "/srv/x", "-o", "user"], "made by root only"),
    (["onesuite", "/srv/x", "-o", "users,noauto"], "made by root only"),
    (["onesuite", "/srv/x", "-o", "rooot=/x"], "unknown mount option 'rooot=/x'"),
    (["onesuite", "/srv/x", "-o", "root=srv/si"], "must be absolute"),
    (["onesuite", "/srv/x", "-o", "root="], "needs a value"),
    (["onesuite", "/srv/x", "-o", "root=/a,root=/b"], "given twice"),
    (["onesuite", "/srv/x", "-o", "no_watch=yes"], "takes no value"),
    (["onesuite", "/srv/x", "-o", "x" * 5000], "longer than"),
    (["onesuite", "/srv/x", "-t", "fuse.sshfs"], "not fuse.sshfs"),
    (["onesuite", "/srv/x", "-N", "/proc/1/ns/mnt"], "not supported"),
    (["onesuite", "/srv/x", "--exec=/bin/sh"], "unknown flag"),
    (["onesuite"], "usage"),
])
def test_helper_refuses_bad_lines_with_the_reason(args: list[str], message: str) -> None:
    with pytest.raises(HelperError, match=message):
        parse(args)


def test_helper_option_values_cannot_become_options(tmp_path: Path) -> None:
    """A value stays glued to its option ("--opt=value"): "override_order=
    --allow-dynamic-nodes" cannot turn shell commands on, argparse refuses the choice."""
    with pytest.raises(HelperError, match="must be absolute"):
        translate_options("root=--allow-dynamic-nodes")
    options = translate_options("override_order=--allow-dynamic-nodes")
    assert options == ["--override-order=--allow-dynamic-nodes"]
    done = run_onesuite("nodes", "--root", tmp_path, *options, check=False)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_helper_sloppy_ignores_unknown_options() -> None:
    assert translate_options("whatever,root=/r", sloppy=True) == ["--root=/r"]


@needs_root_fuse()
@pytest.mark.mount
def test_helper_mounts_when_called_as_mount_fuse_onesuite(example_site: Path,
                                                          tmp_path: Path) -> None:
    """The program under its helper name (the /sbin symlink mount(8) runs), on the host."""
    helper = tmp_path / "mount.fuse.onesuite"
    helper.symlink_to(wrapper(tmp_path / "onesuite"))
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    done = subprocess.run([str(helper), "onesuite", str(mountpoint), "-o",
                           f"defaults,root={example_site},no_watch"], capture_output=True,
                          text=True, timeout=60, check=False)
    try:
        assert done.returncode == 0, done.stderr
        assert "node001" in os.listdir(mountpoint / "nodes")
    finally:
        run_onesuite("umount", mountpoint, check=False)
    bad = subprocess.run([str(helper), "onesuite", str(mountpoint), "-o",
                          f"root={example_site / 'missing'}"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 32  # mount(8)'s "mount failure"
    assert "onesuite: error:" in bad.stderr
