"""A change plan and rollback (issue 17 item 5) on a real mount: `plan` says what a reload
would change, per node with the layer responsible, and switches nothing; `rollback` returns
atomically to the previous generation's configuration and pins it, so the watcher does not
apply the bad edit again; `status` shows the history."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import needs_root_fuse, run_onesuite

CLUSTER_XML = "etc/systemimager/cluster.xml"
OVERRIDES = "var/lib/systemimager/overrides"
GPU_MOTD = "Welcome to a GPU compute node (override gpu)."
ALL_MOTD = "Welcome to the example cluster (override all)."


def status(mountpoint: Path) -> dict:
    return json.loads(run_onesuite("status", mountpoint, "--json").stdout)


def motd(mount, host: str) -> str:  # noqa: ANN001
    return (mount.node(host) / "etc/motd").read_text().splitlines()[0]


def move_node006_to_gpu(site: Path) -> None:
    """The edit a plan should show: node006 joins the GPU group (a new override)."""
    xml = site / CLUSTER_XML
    text = xml.read_text()
    assert "<node>node007-node008</node>" in text
    tmp = xml.with_name("cluster.xml.tmp")
    tmp.write_text(text.replace("<node>node007-node008</node>", "<node>node006-node008</node>"))
    os.rename(tmp, xml)


def wait_for(predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@needs_root_fuse()
@pytest.mark.mount
def test_plan_shows_each_nodes_changes_with_their_layers_and_switches_nothing(
        example_site, mount_site):
    mount = mount_site(example_site, "--no-watch")
    assert motd(mount, "node006") == ALL_MOTD
    move_node006_to_gpu(example_site)
    (example_site / OVERRIDES / "compute/etc/motd.new").write_text("new\n")
    (example_site / OVERRIDES / "node001/etc/gone").write_text("x\n")
    plan = json.loads(run_onesuite("plan", "--json", mount.mountpoint).stdout)
    assert plan["generation"] == 1 and plan["nodes_reconfigured"] == ["node006"]
    assert plan["configuration"]["before"] != plan["configuration"]["after"]
    groups = {tuple(g["nodes"]): g for g in plan["groups"]}
    compute = groups[("node002", "node003", "node004", "node005", "node007", "node008")]
    assert compute["changes"] == [{"path": "etc/motd.new", "status": "added", "fields": [],
                                   "before": None, "after": "override:compute /etc/motd.new",
                                   "below": 0}]
    node001 = groups[("node001",)]
    assert [c["path"] for c in node001["changes"]] == ["etc/gone", "etc/motd.new"]
    node006 = {c["path"]: c for c in groups[("node006",)]["changes"]}
    assert node006["etc/motd"]["status"] == "changed"
    assert set(node006["etc/motd"]["fields"]) == {"content", "layer"}
    assert (node006["etc/motd"]["before"], node006["etc/motd"]["after"]) == (
        "override:all /etc/motd", "override:gpu /etc/motd")
    assert node006["etc/modprobe.d"]["status"] == "added" and node006["etc/modprobe.d"]["below"]
    assert plan["nodes_unchanged"] == 2  # login01, login02
    assert {layer["layer"] for layer in plan["layers_changed"]} == {"override:compute",
                                                                    "override:node001"}
    # Nothing switched: the mount serves generation 1 as before.
    assert status(mount.mountpoint)["generation"] == 1
    assert motd(mount, "node006") == ALL_MOTD
    assert not (mount.node("node002") / "etc/motd.new").exists()
    text = run_onesuite("plan", mount.mountpoint).stdout
    assert "node006 (1 node(s))" in text
    assert "~ /etc/motd  content,layer  override:all /etc/motd -> override:gpu /etc/motd" in text
    assert "+ /etc/motd.new  override:compute /etc/motd.new" in text


@needs_root_fuse()
@pytest.mark.mount
def test_plan_output_is_bounded_with_counts(example_site, mount_site):
    mount = mount_site(example_site, "--no-watch")
    many = example_site / OVERRIDES / "login/etc/many"
    many.mkdir()
    for n in range(450):
        (many / f"f{n:03d}").write_text("x\n")
    (example_site / OVERRIDES / "login/etc/one").write_text("x\n")
    plan = json.loads(run_onesuite("plan", "--json", mount.mountpoint).stdout)
    (group,) = plan["groups"]
    # The new directory is one change with what is below it counted, not 450 rows.
    assert group["changes"][0] == {"path": "etc/many", "status": "added", "fields": [],
                                   "before": None, "after": "override:login /etc/many",
                                   "below": 450}
    for n in range(300):
        (example_site / OVERRIDES / f"login/etc/single{n:03d}").write_text("x\n")
    plan = json.loads(run_onesuite("plan", "--json", mount.mountpoint).stdout)
    (group,) = plan["groups"]
    assert len(group["changes"]) == 200 and group["more"] == 302 - 200
    assert plan["paths"]["added"] == 2 * 302  # two login nodes
    text = run_onesuite("plan", mount.mountpoint).stdout
    assert "... and 282 more path(s)" in text
    assert len(text.splitlines()) < 40


@needs_root_fuse()
@pytest.mark.mount
def test_rollback_returns_to_the_previous_configuration_and_pins_it(example_site, mount_site):
    mount = mount_site(example_site, "--poll-interval", "3600")
    failed = run_onesuite("rollback", mount.mountpoint, check=False)
    assert failed.returncode == 1
    assert "no earlier generation is kept to roll back to" in failed.stderr
    assert "Traceback" not in failed.stderr
    move_node006_to_gpu(example_site)  # the bad edit; the watcher applies it
    wait_for(lambda: motd(mount, "node006") == GPU_MOTD)
    done = json.loads(run_onesuite("rollback", "--json", mount.mountpoint).stdout)
    assert done["report"]["error"] is None and done["report"]["nodes_affected"] == ["node006"]
    assert motd(mount, "node006") == ALL_MOTD  # at once: the switch is done when it returns
    after = status(mount.mountpoint)
    assert [(r["generation"], r["trigger"], r["configuration_of"]) for r in after["history"]] \
        == [(1, "mount", 1), (2, "watch", 2), (3, "rollback", 1)]
    digests = [r["config_digest"] for r in after["history"]]
    assert digests[0] == digests[2] != digests[1] and all(digests)
    assert after["pinned"]["configuration_of"] == 1
    # A layer change is still followed, from the pinned configuration: the edit of
    # cluster.xml (still on disk) is not applied again behind the admin's back.
    (example_site / OVERRIDES / "compute/etc/motd.new").write_text("new\n")
    wait_for(lambda: (mount.node("node006") / "etc/motd.new").exists())
    assert motd(mount, "node006") == ALL_MOTD
    later = status(mount.mountpoint)
    assert later["history"][-1]["trigger"] == "watch"
    assert later["history"][-1]["configuration_of"] == 1 and later["pinned"]
    text = run_onesuite("status", mount.mountpoint).stdout
    assert "pinned since" in text and "rollback  config" in text
    # An explicit reload reads the configuration from disk again and unpins.
    run_onesuite("reload", mount.mountpoint)
    assert motd(mount, "node006") == GPU_MOTD
    assert status(mount.mountpoint)["pinned"] is None
    # Rolling back again returns to generation 4's configuration (the pinned one, 1's).
    run_onesuite("rollback", mount.mountpoint)
    assert motd(mount, "node006") == ALL_MOTD
    again = run_onesuite("rollback", mount.mountpoint, check=False)
    assert again.returncode == 1 and "no earlier generation" in again.stderr


@needs_root_fuse()
@pytest.mark.mount
def test_commands_need_root_and_a_mount(example_site, tmp_path):
    from conftest import Mount

    # A mount point another user can reach (pytest's directories are private).
    reachable = Path(tempfile.mkdtemp(prefix="onesuite-plan-"))
    reachable.chmod(0o755)
    (reachable / "mnt").mkdir()
    mount = Mount(example_site, reachable / "mnt", tmp_path / "mnt.log", ("--no-watch",))
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    try:
        mount.start()
        for command in (["plan"], ["rollback"], ["status", "--writes"]):
            done = subprocess.run([*nobody, sys.executable, "-m", "onesuite_fs.cli", *command,
                                   str(mount.mountpoint)], capture_output=True, text=True,
                                  check=False, env={**os.environ, "PYTHONPATH": os.getcwd()})
            assert done.returncode == 2, done.stderr
            assert "not allowed" in done.stderr and "run it as root" in done.stderr
        assert status(mount.mountpoint)["generation"] == 1
    finally:
        mount.stop()
        shutil.rmtree(reachable)
    plain = tmp_path / "plain"
    plain.mkdir()
    done = run_onesuite("plan", plain, check=False)
    assert done.returncode == 2 and "not a running onesuite mount" in done.stderr


def test_a_plan_is_refused_while_a_reload_runs(example_site):
    import trio
    from treetools import inode_tree

    from onesuite_fs.daemon.commands import Commands
    from onesuite_fs.daemon.live import Generations
    from onesuite_fs.daemon.requests import Requests
    from onesuite_fs.settings import Settings
    from onesuite_fs.sources.systemimager import load_site

    def tree():  # noqa: ANN202
        return inode_tree(load_site(Settings(root=example_site)), "autoinstall",
                          create_state=True)

    requests = Requests(Generations(tree(), tree))
    commands = Commands(requests)

    async def main() -> None:
        async with requests._reloading:  # a reload running
            answer = await commands._answer("plan")
        assert answer["busy"] and "a reload or rollback is running" in answer["error"]
        answer = await commands._answer("plan")  # and once it is done
        assert "error" not in answer and answer["nodes_changed"] == 0
        report = (await commands._answer("rollback"))["report"]
        assert "no earlier generation" in report["error"]

    trio.run(main)


@pytest.mark.parametrize("edit", ["layer", "restack", "rules", "rules-and-layer", "variant"])
def test_the_narrowed_plan_equals_a_whole_walk_of_every_node(example_site, edit):
    """plan() looks only where a change can be; a lockstep walk of every node's two whole
    roots must find exactly the same changes."""
    from treetools import inode_tree

    from onesuite_fs.core.onesis_config import OnesisSource
    from onesuite_fs.core.walk import Root
    from onesuite_fs.inspect.plan import _walk_both, plan
    from onesuite_fs.settings import Settings
    from onesuite_fs.sources.systemimager import load_site

    def tree():  # noqa: ANN202
        built = inode_tree(load_site(Settings(root=example_site)), "autoinstall",
                           OnesisSource())
        built.prescan()
        return built

    image = example_site / "var/lib/systemimager/images/rocky9"
    (example_site / OVERRIDES / "node003/etc").mkdir(parents=True)
    (example_site / OVERRIDES / "node003/etc/id").write_text("3\n")
    before = tree()
    if edit in ("layer", "rules-and-layer"):
        (example_site / OVERRIDES / "compute/etc/motd.new").write_text("new\n")
        (image / "etc/hosts").write_text("changed\n")
    if edit == "restack":
        move_node006_to_gpu(example_site)
    if edit in ("rules", "rules-and-layer"):
        conf = image / "etc/sysimage.conf"
        conf.write_text(conf.read_text() + "\nLINKDIR /var/log\nRAMFILE /etc/hosts -d\n")
    if edit == "variant":  # a LINKBACK's new variant: the LINKBACK path changes
        (example_site / OVERRIDES / "compute/etc/issue.compute").write_text("new issue\n")
    after = tree()
    planned = plan(before.view, after.view, paths_shown=10_000)
    by_node: dict[str, set] = {}
    for group in planned["groups"]:
        for node in group["nodes"]:
            by_node[node] = {(c["path"], c["status"], tuple(c["fields"]), c["below"])
                             for c in group["changes"]}
    for name, entry in before.entries["nodes"].items():
        walked = {(c.path, c.status, c.fields, c.below) for c in _walk_both(
            Root(before.view, entry), Root(after.view, after.entries["nodes"][name]))}
        assert by_node.get(name, set()) == walked, name
    assert planned["nodes_changed"] > 0
