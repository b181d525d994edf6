"""The daemon never dies from a bad edit or a failing handler, and restarts in place after a
crash (issue 14, sections 3 and 7), on real mounts, with edits saved the way an admin would.

Whether the parsers refuse an input when it is loaded (file:line) or a rule fails when a path
is first used, the contract is the same: the generation being served keeps serving, the
failure is reported (log, `onesuite status`, `onesuite reload`'s exit status), a request that
cannot be answered gets EIO, and every other node keeps its root.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Mount, _is_mounted, _pid_alive, needs_root_fuse, run_onesuite

pytestmark = [needs_root_fuse(), pytest.mark.mount]

CLUSTER = "etc/systemimager/cluster.xml"
SYSIMAGE = "var/lib/systemimager/images/rocky9/etc/sysimage.conf"


def status(mountpoint: Path) -> dict:
    return json.loads(run_onesuite("status", mountpoint, "--json").stdout)


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def save(path: Path, text: str) -> None:
    """An editor saving in place (truncate and write): inotify sees it, nothing else."""
    with open(path, "w") as f:
        f.write(text)


def read_every_node(mount: Mount, nodes: list[str] | None = None) -> dict[str, str]:
    if nodes is None:
        nodes = sorted(os.listdir(mount.mountpoint / "nodes"))
    return {n: (mount.node(n) / "etc/hostname").read_text() for n in nodes}


def assert_serving(mount: Mount, before: dict[str, str]) -> None:
    """The daemon is alive and every node it served before serves the same."""
    assert mount.pid is not None and _pid_alive(mount.pid)
    assert _is_mounted(mount.mountpoint)
    assert read_every_node(mount, list(before)) == before


def assert_reload_fails_and_is_reported(mount: Mount, generation: int) -> str:
    """The last reload failed, the old generation serves, status and reload say why."""
    report = status(mount.mountpoint)
    assert report["generation"] == generation
    assert report["failed_reloads"] >= 1
    error = report["last_reload"]["error"]
    assert error
    text = run_onesuite("status", mount.mountpoint).stdout
    assert "last reload FAILED" in text and error.splitlines()[0] in text
    done = run_onesuite("reload", mount.mountpoint, check=False)
    assert done.returncode == 1
    assert "reload failed" in done.stderr and error.splitlines()[0] in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert status(mount.mountpoint)["generation"] == generation
    return error


def huge_priority(xml: str) -> str:
    return xml.replace("<priority>10</priority>", f"<priority>{'9' * 5000}</priority>", 1)


def unknown_encoding(xml: str) -> str:
    return '<?xml version="1.0" encoding="x-no-such-encoding"?>\n' + xml


@pytest.mark.parametrize("edit", [huge_priority, unknown_encoding])
def test_a_bad_cluster_xml_saved_during_a_mount_keeps_the_old_generation(
        example_site, mount_site, edit):
    mount = mount_site(example_site, "--poll-interval", "30")
    before = read_every_node(mount)
    cluster = example_site / CLUSTER
    save(cluster, edit(cluster.read_text()))
    wait_for(lambda: status(mount.mountpoint)["failed_reloads"] >= 1)  # inotify alone
    assert_serving(mount, before)
    assert_reload_fails_and_is_reported(mount, generation=1)
    assert "reload failed" in mount.log.read_text()


def test_a_cluster_txt_host_with_a_space_saved_during_a_mount(example_site, mount_site):
    """Refused by the reload (old generation serves, reported), or, if the parsers let it
    through, that one node's requests fail and nothing else does."""
    (example_site / CLUSTER).unlink()
    cluster_txt = example_site / "var/lib/systemimager/scripts/cluster.txt"
    cluster_txt.parent.mkdir(exist_ok=True)
    good = "".join(f"{host}:compute:rocky9:compute\n" for host in ("node001", "node002"))
    cluster_txt.write_text(good)
    mount = mount_site(example_site, "--poll-interval", "30")
    before = read_every_node(mount)
    save(cluster_txt, good + "node 2:compute:rocky9:compute\n")
    wait_for(lambda: (lambda s: s["reloads"] + s["failed_reloads"])(
        status(mount.mountpoint)) >= 1)
    if status(mount.mountpoint)["failed_reloads"]:
        assert_serving(mount, before)
        assert_reload_fails_and_is_reported(mount, generation=1)
        return
    try:  # accepted: whatever that node's root does, it fails alone
        os.listdir(mount.node("node 2") / "etc")
    except OSError as exc:
        assert exc.errno in (errno.EIO, errno.ENOENT)
    assert_serving(mount, before)


@pytest.mark.parametrize("owner", ["nosuchuser", "4294967296"])
def test_a_bad_owner_in_a_rule_saved_during_a_mount_keeps_the_old_generation(
        example_site, mount_site, tmp_path, owner):
    """A RAMFILE owner only a first use of the path checks: the reload's diff uses it on the
    nodes whose /etc is in use, so the reload fails; nothing dies."""
    mount = mount_site(example_site, "--poll-interval", "30", "--link-policy", "persistent",
                       "--persistent-dir", tmp_path / "state")
    before = read_every_node(mount)  # every node's /etc in use
    conf = example_site / SYSIMAGE
    save(conf, conf.read_text() + f"RAMFILE /etc/motd -d -u {owner}\n")
    wait_for(lambda: status(mount.mountpoint)["failed_reloads"] >= 1)
    assert_serving(mount, before)
    assert_reload_fails_and_is_reported(mount, generation=1)


@pytest.mark.parametrize("owner", ["nosuchuser", "4294967296"])
def test_a_bad_owner_found_at_first_listing_fails_that_request_only(
        example_site, mount_site, tmp_path, owner):
    """Mounted with the bad rule: refused at mount time with the file, or, if it mounts,
    the listing that uses the rule gets EIO and every other path and node is served."""
    conf = example_site / SYSIMAGE
    conf.write_text(conf.read_text() + f"RAMFILE /etc/motd -d -u {owner}\n")
    options = ("--no-watch", "--link-policy", "persistent", "--persistent-dir",
               tmp_path / "state")
    try:
        mount = mount_site(example_site, *options)
    except AssertionError as refused:  # the parsers found it at mount time: that holds too
        assert "sysimage.conf" in str(refused) and "Traceback" not in str(refused)
        assert not _is_mounted(tmp_path / "mnt")
        return
    with pytest.raises(OSError) as failed:
        os.listdir(mount.node("node001") / "etc")
    assert failed.value.errno == errno.EIO
    assert mount.pid is not None and _pid_alive(mount.pid)
    # Paths the rule does not touch, in every node, and the image (which has no rules).
    assert (mount.node("node002") / "etc/hostname").read_text() == "golden\n"
    assert "diskless compute" in (mount.node("node004") / "etc/fstab").read_text()
    assert (mount.node("login01") / "etc/chrony.conf").read_text()
    assert os.listdir(mount.node("login01") / "etc/ssh")
    assert (mount.mountpoint / "images/rocky9/etc/hostname").read_text() == "golden\n"
    failures = status(mount.mountpoint)["handler_errors"]
    assert failures["count"] >= 1
    last = failures["recent"][-1]
    assert last["path"] == "/nodes/node001/etc"
    assert owner in last["error"] or last["error"].startswith("OverflowError")
    assert "/nodes/node001/etc" in run_onesuite("status", mount.mountpoint).stdout
    assert "/nodes/node001/etc" in mount.log.read_text()


def test_an_exception_in_a_handler_answers_eio_and_the_daemon_goes_on(
        example_site, mount_site, monkeypatch):
    """The test hook raises in a worker thread of the lookup handler, as a bug would."""
    monkeypatch.setenv("ONESUITE_TEST_FAIL", "lookup:motd")
    mount = mount_site(example_site, "--no-watch")
    monkeypatch.delenv("ONESUITE_TEST_FAIL")
    for _ in range(3):  # again and again: answered every time, logged, counted
        with pytest.raises(OSError) as failed:
            (mount.node("node001") / "etc/motd").read_text()
        assert failed.value.errno == errno.EIO
    assert (mount.node("node001") / "etc/hostname").read_text() == "node001\n"
    assert "diskless compute" in (mount.node("node004") / "etc/fstab").read_text()
    assert len(os.listdir(mount.node("login01") / "etc")) > 10
    report = status(mount.mountpoint)
    assert report["handler_errors"]["count"] >= 1
    assert report["handler_errors"]["recent"][-1]["path"] == "/nodes/node001/etc/motd"
    log = mount.log.read_text()
    assert "lookup /nodes/node001/etc/motd failed" in log and "injected failure" in log
    assert _pid_alive(mount.pid)


def test_a_daemon_killed_with_sigkill_is_remounted_in_place(example_site, mount_site):
    mount = mount_site(example_site, "--no-watch")
    assert (mount.node("node001") / "etc/hostname").read_text() == "node001\n"
    # A live mount is refused, naming its daemon.
    refused = run_onesuite("mount", "--root", example_site, mount.mountpoint, check=False)
    assert refused.returncode != 0
    assert "already a mount point" in refused.stderr and str(mount.pid) in refused.stderr
    assert "Traceback" not in refused.stderr
    os.kill(mount.pid, signal.SIGKILL)
    wait_for(lambda: not _pid_alive(mount.pid))
    with pytest.raises(OSError) as dead:  # statfs is never answered from a cache
        os.statvfs(mount.mountpoint)
    # ECONNABORTED when the request was queued while the connection went down
    assert dead.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    mount.pid = None
    mount.start()  # `onesuite mount` on the same mount point, as a service manager would
    assert (mount.node("node001") / "etc/hostname").read_text() == "node001\n"
    assert status(mount.mountpoint)["generation"] == 1
    with open("/proc/self/mountinfo") as table:  # the dead mount is gone, not stacked under
        assert sum(f" {mount.mountpoint} " in line for line in table) == 1


def test_a_dead_mount_of_another_filesystem_is_not_touched(tmp_path, example_site):
    """Only a onesuite mount is cleared: another dead FUSE mount is refused with a hint."""
    mountpoint = tmp_path / "other"
    mountpoint.mkdir()
    script = tmp_path / "otherfs.py"
    script.write_text(
        "import sys, pyfuse3, trio\n"
        "class Ops(pyfuse3.Operations):\n"
        "    pass\n"
        "pyfuse3.init(Ops(), sys.argv[1], {'fsname=other', 'subtype=otherfs'})\n"
        "print('ready', flush=True)\n"
        "trio.run(pyfuse3.main)\n")
    import sys

    daemon = subprocess.Popen([sys.executable, str(script), str(mountpoint)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None and daemon.stdout.readline().strip() == "ready"
        daemon.kill()
        daemon.wait()
        refused = run_onesuite("mount", "--root", example_site, mountpoint, check=False)
        assert refused.returncode != 0
        assert "fuse.otherfs" in refused.stderr and "not onesuite" in refused.stderr
        assert _is_mounted(mountpoint)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True,
                       check=False)
    assert not _is_mounted(mountpoint)


# ----- the same contract, in-process (pure code: no mount) ---------------------------------

@pytest.mark.parametrize("failure", [ValueError("5000 digits"), LookupError("x-encoding"),
                                     MemoryError(), OverflowError("uid"), RecursionError(),
                                     KeyError("node"), RuntimeError("anything")])
def test_any_exception_while_building_a_generation_is_a_failed_reload(example_site, failure):
    from treetools import inode_tree

    from onesuite_fs.daemon.inode_tree import InodeTree
    from onesuite_fs.daemon.live import Generations
    from onesuite_fs.settings import Settings
    from onesuite_fs.sources.systemimager import load_site

    def rebuild() -> InodeTree:
        raise failure

    generations = Generations(inode_tree(load_site(Settings(root=example_site)), "autoinstall"),
                              rebuild)
    new, changes, report = generations.build_next()
    assert new is None and changes is None
    assert report.error and report.error.startswith(type(failure).__name__)
    generations.failed(report)
    assert generations.status()["failed_reloads"] == 1
    assert generations.status()["last_reload"]["error"] == report.error


def test_the_guard_wraps_every_handler_and_answers_eio(example_site):
    import pyfuse3
    import trio
    from treetools import inode_tree

    from onesuite_fs.daemon.fuse_ops import OnesuiteOperations
    from onesuite_fs.settings import Settings
    from onesuite_fs.sources.systemimager import load_site

    tree = inode_tree(load_site(Settings(root=example_site)), "autoinstall")
    ops = OnesuiteOperations(tree, 300)

    def broken(*_args: object) -> None:
        raise RecursionError("deep")

    tree.listdir = broken  # type: ignore[method-assign]
    tree.lookup = broken  # type: ignore[method-assign]

    async def main() -> None:
        with pytest.raises(pyfuse3.FUSEError) as failed:
            await ops.opendir(pyfuse3.ROOT_INODE, None)
        assert failed.value.errno == errno.EIO
        with pytest.raises(pyfuse3.FUSEError) as failed:
            await ops.lookup(pyfuse3.ROOT_INODE, b"nodes", None)
        assert failed.value.errno == errno.EIO
        await ops.forget([(12345, 1)])  # no reply expected: never raises
        statfs = await ops.statfs(None)  # untouched handlers answer as before
        assert statfs.f_bsize > 0

    trio.run(main)
    assert ops.failures.count == 2
    assert [f["operation"] for f in ops.failures.recent] == ["opendir", "lookup"]
    assert ops.failures.recent[-1]["path"] == "/nodes"


def test_a_failing_watch_is_started_again_after_a_reload(monkeypatch, tmp_path):
    import trio

    from onesuite_fs.daemon import watch

    calls: list[str] = []
    scope = trio.CancelScope(deadline=float("inf"))

    async def failing_then_quiet(paths, reload, **_options):
        calls.append("watch")
        if len(calls) == 1:
            raise PermissionError(13, "Permission denied", str(paths[0]))
        scope.cancel()  # watching again: done
        await trio.sleep_forever()

    async def reload() -> None:
        calls.append("reload")

    monkeypatch.setattr(watch, "watch_site", failing_then_quiet)

    async def main() -> None:
        scope.deadline = trio.current_time() + 30  # a bound, should the restart not come
        with scope:
            await watch.keep_watching([tmp_path], reload, restart_after=0.01)

    trio.run(main)
    assert calls == ["watch", "reload", "watch"]


def test_a_failing_background_task_is_logged_not_raised(caplog):
    import trio

    from onesuite_fs.daemon.mount import _logged

    async def prescan() -> None:
        raise OSError(5, "Input/output error")

    trio.run(_logged, prescan, "reading the whole site")
    assert "reading the whole site failed" in caplog.text
