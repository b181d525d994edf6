"""Writes the nodes were refused (issue 17 item 4): counted per node and path on a real mount,
bounded whatever a node does, shown safely, each with the sysimage.conf line that would make
it writable (or why none is proposed)."""

from __future__ import annotations

import base64
import errno
import json
import os
from pathlib import Path

import pytest
from conftest import needs_root_fuse, run_onesuite

from onesuite_fs.daemon import write_attempts
from onesuite_fs.daemon.control import ControlError, ReplyStore, parse_request
from onesuite_fs.daemon.write_attempts import WriteAttempts
from onesuite_fs.inspect.writable_rules import escape


def refused(action) -> None:  # noqa: ANN001
    with pytest.raises(OSError) as failed:
        action()
    assert failed.value.errno == errno.EROFS, failed.value


def opened(path: Path, mode: str) -> None:
    with open(path, mode):
        pass


def writes(mountpoint: Path) -> dict:
    return json.loads(run_onesuite("status", "--writes", "--json", mountpoint).stdout)


def rows(report: dict) -> dict[tuple[str, str], dict]:
    return {(node["node"], row["path"]): row for node in report["nodes"]
            for row in node["paths"]}


@needs_root_fuse()
@pytest.mark.mount
def test_refused_writes_are_counted_per_node_and_path_with_a_proposal(example_site,
                                                                      mount_site):
    mount = mount_site(example_site, "--no-watch")
    n1, n2, n3 = (mount.node(h) for h in ("node001", "node002", "node003"))
    refused(lambda: opened(n1 / "etc/hostname", "w"))  # a host override's file: truncate
    refused(lambda: opened(n1 / "etc/hostname", "w"))
    refused(lambda: opened(n1 / "etc/newfile", "x"))  # create in /etc
    refused(lambda: os.mkdir(n2 / "var/lib/app"))  # mkdir in /var/lib
    refused(lambda: os.chmod(n3 / "etc/motd", 0o600))  # a shared file only node003 used
    refused(lambda: os.setxattr(n3 / "var", "user.x", b"1"))
    refused(lambda: os.unlink(n2 / "etc/issue"))
    os.stat(mount.node("node004") / "etc/chrony.conf")  # two nodes look one image file up:
    os.stat(mount.node("node005") / "etc/chrony.conf")  # one inode, so no node is known
    refused(lambda: os.utime(mount.node("node005") / "etc/chrony.conf"))
    refused(lambda: os.symlink("x", mount.mountpoint / "groups/Compute/etc/l"))  # no node
    report = writes(mount.mountpoint)
    found = rows(report)
    assert report["total"] == 9 and report["outside_nodes"] == 1
    shared = found[("*", "etc/chrony.conf")]
    assert shared["operations"] == {"utimes": 1} and shared["line"] is None
    hostname = found[("node001", "etc/hostname")]
    assert hostname["count"] == 2 and hostname["operations"] == {"truncate": 2}
    assert hostname["first"] <= hostname["last"]
    assert hostname["line"] == "LINKFILE /etc/hostname -d"  # ram policy: LINK; content: -d
    assert "link policy ram" in hostname["why"]
    # A file created in /etc needs /etc writable, but LINKBACK /etc/issue is below it: a
    # directory rule would hide the variant, so nothing is proposed and the reason says so.
    newfile = found[("node001", "etc/newfile")]
    assert newfile["operations"] == {"create": 1} and newfile["line"] is None
    assert "LINKBACK /etc/issue" in newfile["why"]
    assert found[("node002", "var/lib/app")]["line"] == "LINKDIR /var/lib -d"
    assert found[("node003", "etc/motd")]["operations"] == {"chmod": 1}
    assert found[("node003", "etc/motd")]["line"] == "LINKFILE /etc/motd -d"
    assert found[("node003", "var")]["line"] == "LINKDIR /var -d"
    issue = found[("node002", "etc/issue")]  # unlink in /etc, decided by nothing above
    assert issue["line"] is None and "LINKBACK" in issue["why"]
    proposed = {p["line"]: p for p in report["proposed"]}
    assert proposed["LINKDIR /var/lib -d"]["covered_by"] == "/var"
    assert proposed["LINKDIR /var -d"]["nodes"] == ["node003"]
    text = run_onesuite("status", "--writes", mount.mountpoint).stdout
    assert "LINKFILE /etc/hostname -d" in text and "truncate x2" in text
    assert "no line proposed: LINKBACK /etc/issue" in text


@needs_root_fuse()
@pytest.mark.mount
def test_a_node_hammering_distinct_names_stays_within_the_caps(example_site, mount_site):
    mount = mount_site(example_site, "--no-watch")
    tmp = mount.node("node001") / "tmp"
    hostile = ["line\nbreak", "\x1b[31mred", "back\\slash", "tab\there"]
    for name in hostile:
        refused(lambda n=name: opened(tmp / n, "x"))
    refused(lambda: os.open(os.fsencode(tmp) + b"/\xff\xfe-not-utf8",
                            os.O_CREAT | os.O_WRONLY, 0o644))
    rss_before = _rss(mount.pid)
    attempts = 100_000
    for n in range(attempts):
        try:
            os.close(os.open(f"{tmp}/f{n:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
        except OSError as exc:
            assert exc.errno == errno.EROFS
    report = writes(mount.mountpoint)
    node = next(n for n in report["nodes"] if n["node"] == "node001")
    cap = report["limits"]["paths_per_node"]
    assert cap == write_attempts.MAX_PATHS_PER_NODE
    assert len(node["paths"]) == cap  # the first ones tried are kept
    assert node["other"] == attempts + len(hostile) + 1 - cap
    assert report["total"] == attempts + len(hostile) + 1
    # 100,000 distinct names cost the daemon no memory past the caps (the lookups of the
    # names, negative entries, are not kept either).
    assert _rss(mount.pid) - rss_before < 16 << 20
    kept = {base64.b64decode(r["path_b64"]): r for r in node["paths"]}
    assert kept[b"tmp/line\nbreak"]["path"] == "tmp/line\\nbreak"
    assert kept[b"tmp/\x1b[31mred"]["path"] == "tmp/\\x1b[31mred"
    assert kept[b"tmp/back\\slash"]["path"] == "tmp/back\\\\slash"
    assert kept[b"tmp/\xff\xfe-not-utf8"]["path"] == "tmp/\\xff\\xfe-not-utf8"
    text = run_onesuite("status", "--writes", mount.mountpoint).stdout
    assert "\x1b" not in text and "\t" not in text
    assert all(line.startswith(("  ", "writes", "node", "sysimage", "")) for line in
               text.splitlines())
    assert "/tmp/line\\nbreak" in text


def _rss(pid: int | None) -> int:
    assert pid is not None
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# ----- the counters and the control channel, in-process ------------------------------------

def test_counters_cap_paths_and_nodes_and_merge_by_summing(monkeypatch):
    monkeypatch.setattr(write_attempts, "MAX_PATHS_PER_NODE", 3)
    monkeypatch.setattr(write_attempts, "MAX_NODES", 2)
    a = WriteAttempts()
    for n in range(5):
        a.record("n1", f"p{n}", "create", 10.0 + n)
    a.record("n2", "p0", "write", 1.0)
    a.record("n3", "p0", "write", 1.0)  # a third node: past the node cap
    a.record(None, "groups/x", "mkdir", 1.0)
    a.record("n1", "x" * 5000, "create", 1.0)  # long: kept as its first bytes, or "other"
    data = a.to_json()
    assert list(data["nodes"]["n1"]["paths"]) == ["p0", "p1", "p2"]
    assert data["nodes"]["n1"]["other"] == 3
    assert data["other_nodes"] == 1 and data["outside_nodes"] == 1 and data["total"] == 9
    b = WriteAttempts.from_json(json.loads(json.dumps(data)))
    b.record("n1", "p0", "unlink", 20.0)
    b.merge(a)
    merged = b.to_json()
    p0 = merged["nodes"]["n1"]["paths"]["p0"]
    assert p0["count"] == 3 and p0["operations"] == {"create": 2, "unlink": 1}
    assert (p0["first"], p0["last"]) == (10.0, 20.0)
    assert merged["total"] == 19 and merged["nodes"]["n1"]["other"] == 6
    long = WriteAttempts()
    long.record("n", "é" * 3000, "create", 1.0)
    (kept,) = long.to_json()["nodes"]["n"]["paths"]
    assert kept.endswith("...") and len(kept.encode()) <= write_attempts.MAX_PATH_BYTES + 3


def test_escape_shows_every_byte_safely():
    name = os.fsdecode(b"a\nb\tc\x1b[0m\\d\x7f\xff\xc3\xa9")
    assert escape(name) == "a\\nb\\tc\\x1b[0m\\\\d\\x7f\\xffé"
    assert escape("\u202eevil\u2028") == "\\u202eevil\\u2028"  # bidi override, separator


@pytest.mark.parametrize("value", [
    b"", b"x" * 2000, b"\xff", b"[]", b'{"id": "0", "command": "plan"}',
    b'{"id": "' + b"a" * 32 + b'", "command": "rm -rf"}',
    b'{"id": "' + b"A" * 32 + b'", "command": "plan"}',
    b'{"id": "' + b"a" * 32 + b'", "command": "plan", "x": 1}',
    b'{"id": ["a"], "command": "plan"}'])
def test_malformed_control_requests_are_refused(value):
    with pytest.raises(ControlError) as refused_request:
        parse_request(value)
    assert refused_request.value.errno == errno.EINVAL


def test_replies_are_paged_bounded_and_expire():
    store = ReplyStore()
    store.start("a" * 32, 0.0)
    assert json.loads(store.read("a" * 32, 1.0)) == {"state": "running", "progress": {}}
    assert store.read("a" * 32 + ".0", 1.0) is None
    store.finish("a" * 32, {"x": "y" * 150_000})
    header = json.loads(store.read("a" * 32, 1.0))
    assert header["state"] == "done" and header["pages"] == 3
    data = b"".join(store.read(f"{'a' * 32}.{n}", 1.0) for n in range(3))
    assert json.loads(data)["x"] == "y" * 150_000
    assert store.read("a" * 32 + ".3", 1.0) is None
    assert store.read("a" * 32 + ".-1", 1.0) is None
    with pytest.raises(ControlError):
        store.start("a" * 32, 2.0)  # an id is used once
    for n in range(4):
        store.start(f"{n:032x}", 2.0)
    with pytest.raises(ControlError) as busy:
        store.start("f" * 32, 2.0)
    assert busy.value.errno == errno.EBUSY
    assert store.read("a" * 32, 10_000.0) is None  # expired


# ----- through NFS (nfs-ganesha, a libnfs client in its own network namespace) --------------

@needs_root_fuse()
@pytest.mark.mount
@pytest.mark.nfs
def test_writes_refused_over_nfs_are_counted_for_the_writing_node(example_site, tmp_path):
    import sys

    from nfstools import namespaces, require, require_libnfs, serving, veth

    require("ganesha.nfsd", "nsenter", "ip", "fusermount3")
    require_libnfs()
    writer = Path(__file__).resolve().parent / "nfs_write.py"
    with namespaces("srv", "a") as (srv, a):
        veth(srv, "10.251.1.1", a, "10.251.1.2")
        config = tmp_path / "onesuite.toml"
        config.write_text(
                          '[nfs.addresses]\nnode004 = "10.251.1.2"\n')
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        with serving(srv, example_site, mnt, tmp_path / "state", "--config", str(config),
                     "--protocols", "4", "--handle-key", str(tmp_path / "key"),
                     "--count-writes"):
            steps = [["write", "/etc/motd", "defaced\n"], ["write", "/var/log/new.log", "x\n"],
                     ["mkdir", "/opt/new-dir"], ["unlink", "/etc/hosts"]]
            done = a.run(sys.executable, str(writer), "nfs://10.251.1.1/nodes/node004?version=4",
                         json.dumps(steps), timeout=120)
            assert done.returncode == 0, done.stderr
            assert all(r.startswith("ERR") for r in json.loads(done.stdout)), done.stdout
            report = writes(mnt)
    found = rows(report)
    assert {path for node, path in found if node == "node004"} >= {
        "var/log/new.log", "opt/new-dir", "etc/hosts"}, found
    assert found[("node004", "var/log/new.log")]["line"] == "LINKDIR /var/log"  # empty: no -d
    assert found[("node004", "opt/new-dir")]["operations"] == {"mkdir": 1}
    # ganesha opens the image's motd by handle: one inode for every node, and only node004
    # looked it up, so it is node004's write.
    assert found[("node004", "etc/motd")]["line"] == "LINKFILE /etc/motd -d"
    assert report["outside_nodes"] == 0
