"""Live updates on a real mount: reload on demand and on change, atomic generations, precise
invalidation, a broken configuration keeping the old generation."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import needs_root_fuse, run_onesuite

pytestmark = [needs_root_fuse(), pytest.mark.mount]

OVERRIDES = "var/lib/systemimager/overrides"


def replace_file(path: Path, text: str) -> None:
    """How rsync and most tools update a file: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def inodes_of(root: Path) -> dict[str, int]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            found[os.path.relpath(full, root)] = os.lstat(full).st_ino
    return found


def status(mountpoint: Path) -> dict:
    return json.loads(run_onesuite("status", mountpoint, "--json").stdout)


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_reload_changes_exactly_what_changed(example_site, mount_site):
    mount = mount_site(example_site, "--no-watch")
    nodes = mount.mountpoint / "nodes"
    before = {n: inodes_of(nodes / n) for n in ("node001", "node002", "login01")}
    assert (nodes / "node001/etc/hostname").read_text() == "node001\n"
    replace_file(example_site / OVERRIDES / "node001/etc/hostname", "renamed001\n")
    done = run_onesuite("reload", mount.mountpoint, "--json")
    report = json.loads(done.stdout)["last_reload"]
    assert report["error"] is None and report["nodes_affected"] == ["node001"]
    # The rename also changed the override's etc/ (its mtime), which node001's /etc shows.
    assert report["paths_changed"] == ["nodes/node001/etc", "nodes/node001/etc/hostname"]
    assert (nodes / "node001/etc/hostname").read_text() == "renamed001\n"
    counters = status(mount.mountpoint)["counters"]
    untouched = {n: {p: os.lstat(nodes / n / p).st_ino for p in before[n]}
                 for n in ("node002", "login01")}
    # Their entries stayed in the kernel's cache: resolving every path again (no readdir)
    # asked the daemon for no lookup below the node roots (nodes/<host> itself is looked up
    # on every path walk, by design: docs/nfs.md, "Isolation").
    def below_roots(c: dict) -> int:
        return c["lookup"] - c.get("lookup_view_root", 0)
    assert below_roots(status(mount.mountpoint)["counters"]) == below_roots(counters)
    after = {**untouched, "node001": inodes_of(nodes / "node001")}
    assert after["node002"] == before["node002"] and after["login01"] == before["login01"]
    changed = {p for p in before["node001"] if before["node001"][p] != after["node001"][p]}
    assert changed == {"etc/hostname"}  # a new backing file: a new inode, nothing else moves


def test_open_files_keep_their_content_across_a_reload(example_site, mount_site):
    mount = mount_site(example_site, "--no-watch")
    motd = mount.node("login01") / "etc/motd"
    with open(motd) as held:
        replace_file(example_site / OVERRIDES / "login/etc/motd", "new login motd\n")
        run_onesuite("reload", mount.mountpoint)
        assert held.read().startswith("Welcome to a LOGIN node")
    assert motd.read_text() == "new login motd\n"


def test_a_broken_configuration_keeps_the_old_generation(example_site, mount_site):
    mount = mount_site(example_site, "--no-watch")
    cluster = example_site / "etc/systemimager/cluster.xml"
    good = cluster.read_text()
    cluster.write_text(good.replace("</xml>", ""))  # an editor saved half a file
    done = run_onesuite("reload", mount.mountpoint, check=False)
    assert done.returncode == 1 and "cluster.xml" in done.stdout and "malformed" in done.stdout
    assert status(mount.mountpoint)["generation"] == 1
    assert (mount.node("node001") / "etc/hostname").read_text() == "node001\n"
    cluster.write_text(good.replace("node001-node008", "node001-node009"))
    run_onesuite("reload", mount.mountpoint)
    assert status(mount.mountpoint)["generation"] == 2
    assert "node009" in os.listdir(mount.mountpoint / "nodes")


def test_changes_are_noticed_and_a_burst_reloads_once(example_site, mount_site):
    mount = mount_site(example_site, "--poll-interval", "30")
    override = example_site / OVERRIDES / "compute/etc/burst"
    override.mkdir()
    for number in range(1000):
        (override / f"file{number:04d}").write_text(f"{number}\n")
    wait_for(lambda: status(mount.mountpoint)["reloads"] >= 1)
    time.sleep(3)  # well past the quiet period: nothing else may follow
    assert status(mount.mountpoint)["reloads"] == 1
    assert len(os.listdir(mount.node("node003") / "etc/burst")) == 1000


def test_an_editor_rewriting_cluster_xml_in_place_settles_on_the_final_file(example_site,
                                                                            mount_site):
    mount = mount_site(example_site, "--poll-interval", "30")
    cluster = example_site / "etc/systemimager/cluster.xml"
    text = cluster.read_text().replace("node001-node008", "node001-node010")
    with open(cluster, "r+") as f:  # truncate, then write, as editors without rename do
        f.truncate(0)
        f.flush()
        time.sleep(0.3)
        f.write(text)
    wait_for(lambda: "node010" in os.listdir(mount.mountpoint / "nodes"))
    assert status(mount.mountpoint)["last_reload"]["error"] is None


def test_readers_never_see_a_mix(example_site, mount_site):
    """Readers walk several nodes while a writer flips overrides and cluster.xml between two
    states; every read is one state's content, and nothing fails."""
    mount = mount_site(example_site, "--poll-interval", "30")
    site_motd = example_site / OVERRIDES / "compute/etc/motd"
    site_motd.parent.mkdir(parents=True, exist_ok=True)
    cluster = example_site / "etc/systemimager/cluster.xml"
    xml = {"A": cluster.read_text(),
           "B": cluster.read_text().replace("<node>node007-node008</node>",
                                            "<node>node008</node>")}
    expected = {  # per node: the motd each state gives it
        "node003": {"compute A\n", "compute B\n"},
        "node007": {"Welcome to a GPU compute node (override gpu).\n", "compute A\n",
                    "compute B\n"},
        "node008": {"Welcome to a GPU compute node (override gpu).\n"},
        "login01": {"Welcome to a LOGIN node (override login).\nInteractive use only.\n"},
    }
    replace_file(site_motd, "compute A\n")
    run_onesuite("reload", mount.mountpoint)
    stop = threading.Event()
    problems: list[str] = []

    def reader(node: str) -> None:
        motd = mount.node(node) / "etc/motd"
        while not stop.is_set():
            try:
                text = motd.read_text()
            except OSError as exc:
                problems.append(f"{node}: {exc}")
                return
            if text not in expected[node]:
                problems.append(f"{node}: {text!r}")
                return

    readers = [threading.Thread(target=reader, args=(n,)) for n in expected]
    for thread in readers:
        thread.start()
    try:
        for flip in range(8):
            state = "AB"[flip % 2]
            replace_file(site_motd, f"compute {state}\n")
            replace_file(cluster, xml[state])
            time.sleep(0.4)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert not problems
    final = status(mount.mountpoint)
    assert final["failed_reloads"] == 0 and final["reloads"] >= 3  # switches happened mid-read


def test_an_override_renamed_away_and_back_while_nodes_read(example_site, mount_site):
    mount = mount_site(example_site, "--poll-interval", "30")
    compute = example_site / OVERRIDES / "compute"
    fstab = mount.node("node004") / "etc/fstab"
    assert "diskless compute" in fstab.read_text()
    compute.rename(compute.with_name("compute.moved"))
    # Reads go on meanwhile; they may fail for a moment, the daemon must not.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "golden image" not in _try_read(fstab):
        time.sleep(0.1)
    assert "golden image" in fstab.read_text()  # settled: no compute override any more
    compute.with_name("compute.moved").rename(compute)
    wait_for(lambda: "diskless compute" in _try_read(fstab))
    assert status(mount.mountpoint)["failed_reloads"] == 0


def _try_read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_a_half_copied_override_is_never_visible(example_site, mount_site):
    mount = mount_site(example_site, "--poll-interval", "30")
    wait_for(lambda: status(mount.mountpoint)["prescanned"])
    scripts = example_site / OVERRIDES / "compute/etc/sysconfig/network-scripts"
    seen: list[list[str]] = []
    stop = threading.Event()

    def reader() -> None:
        where = mount.node("node003") / "etc/sysconfig/network-scripts"
        while not stop.is_set():
            seen.append(sorted(n for n in os.listdir(where) if n.startswith("ifcfg-ib")))
            time.sleep(0.02)

    # The copy starts before anything lists that directory: only a generation that read
    # everything when it was built can still show it as it was.
    (scripts / "ifcfg-ib0").write_text("DEVICE=ib0\n")
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for number in range(1, 5):  # a slow copy: the burst ends only after the last file
            time.sleep(0.3)
            (scripts / f"ifcfg-ib{number}").write_text(f"DEVICE=ib{number}\n")
        wait_for(lambda: bool(seen) and len(seen[-1]) == 5)
    finally:
        stop.set()
        thread.join()
    complete = [f"ifcfg-ib{n}" for n in range(5)]
    assert all(listing in ([], complete) for listing in seen), "a half-copied override"
    assert seen[0] == [] and seen[-1] == complete


def test_a_directory_whose_names_change_reports_a_later_mtime(example_site, mount_site):
    """node001's /etc takes its attributes from an override; a name added to (or removed
    from) the image's /etc changes the listing only. An NFS server that caches listings
    (ganesha) re-reads one only when the directory's mtime moves, so it must move."""
    image_etc = example_site / "var/lib/systemimager/images/rocky9/etc"
    os.utime(image_etc, ns=(1_600_000_000 * 10**9,) * 2)  # told apart from the overrides'
    mount = mount_site(example_site, "--no-watch")
    etc = mount.mountpoint / "nodes/node001/etc"
    assert "added.conf" not in os.listdir(etc)  # listed: someone may hold this listing
    first = os.stat(etc)
    assert first.st_mtime_ns == os.stat(example_site / OVERRIDES / "node001/etc").st_mtime_ns
    (image_etc / "added.conf").write_text("new\n")
    run_onesuite("reload", mount.mountpoint)
    second = os.stat(etc)
    assert "added.conf" in os.listdir(etc)
    assert second.st_mtime_ns > first.st_mtime_ns and second.st_ctime_ns > first.st_ctime_ns
    assert second.st_ino == first.st_ino
    # Later reloads keep the date (a diff against it finds nothing new), and a removal
    # dates it again.
    run_onesuite("reload", mount.mountpoint)
    assert os.stat(etc).st_mtime_ns == second.st_mtime_ns
    (image_etc / "added.conf").unlink()
    report = json.loads(run_onesuite("reload", mount.mountpoint, "--json").stdout)
    assert report["last_reload"]["paths_changed"] == ["nodes/node001/etc/added.conf"]
    assert os.stat(etc).st_mtime_ns > second.st_mtime_ns
    # A file rewritten in place is another object (its number holds its mtime and size, so
    # that every server numbers it alike): the name now leads elsewhere, so it is dated too.
    third = os.stat(etc).st_mtime_ns
    with open(example_site / OVERRIDES / "all/etc/motd", "a") as f:
        f.write("more\n")
    run_onesuite("reload", mount.mountpoint)
    assert os.stat(etc).st_mtime_ns > third
    # Other nodes' /etc did not change names: untouched.
    assert os.stat(mount.mountpoint / "nodes/login01/etc").st_mtime_ns != third
