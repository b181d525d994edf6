"""Isolation against forged NFS file handles: an attacker on node001 with a raw NFSv4.0
client (tests/rawnfs.py) sends handles of its own making under its own export, as issue 14
found them working. Real FUSE mount, real nfs-ganesha, network namespaces (see nfstools).

A ganesha v4 handle here is: version, flags, Export_Id (2 bytes, big-endian), the length of
the FSAL part, then FSAL_VFS's part (flags, fsid, handle type) ending in the FUSE handle:
nodeid (two host-endian 32-bit words, high first) and generation (one word). The test checks
that reading of the layout against the mount before it relies on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_root_fuse
from fhandle import name_to_handle
from nfstools import Netns, Serve, drop_caches, namespaces, nfs_ls, require, serving, veth
from sitetools import onesis_site

from onesuite_fs.core.inodes import Numbering
from onesuite_fs.daemon.handle_key import load_or_create_key

pytestmark = [needs_root_fuse(), pytest.mark.mount, pytest.mark.nfs]
RAWNFS = Path(__file__).resolve().parent / "rawnfs.py"
SERVER_A, SERVER_B = "10.251.1.1", "10.251.2.1"
OVERRIDES = "var/lib/systemimager/overrides"


@pytest.fixture(autouse=True)
def nfs_tools():
    require("ganesha.nfsd", "nsenter", "ip", "fusermount3")


def raw(ns: Netns, server: str, ops: list[list[object]], *, privileged: bool = True
        ) -> dict[str, object]:
    done = ns.run(sys.executable, str(RAWNFS), server,
                  json.dumps({"ops": ops, "privileged": privileged}), timeout=60)
    assert done.returncode == 0 and done.stdout, done.stderr
    return json.loads(done.stdout)


def fuse_part(handle: bytes) -> tuple[int, int]:
    high, low, generation = struct.unpack("<III", handle[-12:])
    return high << 32 | low, generation


def with_fuse_part(handle: bytes, ino: int, generation: int) -> str:
    return (handle[:-12] + struct.pack("<III", ino >> 32, ino & 0xFFFFFFFF, generation)).hex()


def refused(answer: dict[str, object]) -> bool:
    """Nothing read: the COMPOUND failed (ACCESS, STALE, ...) or the RPC was refused."""
    return "error" in answer or (answer["status"] != "OK" and not answer["names"]
                                 and not answer["data"])


@contextlib.contextmanager
def served_pair(tmp_path: Path, root: Path, nodes: tuple[str, str], *options: str,
                **serve_options: bool) -> Iterator[tuple[Serve, Netns, Netns]]:
    """`root` served (mount at tmp_path/mnt, handle key tmp_path/key) to nodes[0] from
    namespace a (10.251.1.2) and nodes[1] from namespace b (10.251.2.2)."""
    with namespaces("srv", "a", "b") as (srv, a, b):
        veth(srv, SERVER_A, a, "10.251.1.2")
        veth(srv, SERVER_B, b, "10.251.2.2")
        config = tmp_path / "onesuite.toml"
        config.write_text(f'[nfs.addresses]\n{nodes[0]} = "10.251.1.2"\n'
                          f'{nodes[1]} = "10.251.2.2"\n')
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        with serving(srv, root, mnt, tmp_path / "state", "--config", str(config),
                     "--handle-key", str(tmp_path / "key"), *options,
                     **serve_options) as server:
            yield server, a, b


def own_root(ns: Netns, server: str, node: str) -> bytes:
    answer = raw(ns, server, [["putrootfh"], ["lookup", "nodes"], ["lookup", node], ["getfh"]])
    assert answer["status"] == "OK", answer
    return bytes.fromhex(answer["handles"][0])  # type: ignore[index]


@pytest.fixture
def site_with_secrets(example_site: Path) -> Path:
    """node002's host override holds a secret, twice (hard links), as host keys are kept."""
    etc = example_site / OVERRIDES / "node002/etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "secret.key").write_text("node002 private key\n")
    os.link(etc / "secret.key", etc / "secret.key.bak")
    return example_site


def test_forged_handles_reach_nothing_outside_the_own_root(site_with_secrets, tmp_path):
    key_file, mnt = tmp_path / "key", tmp_path / "mnt"
    with served_pair(tmp_path, site_with_secrets, ("node001", "node002"), "--protocols", "4"
                     ) as (_server, a, b):
            view = mnt / "nodes"
            # The server's admin looks around first, so the kernel has every name on the
            # way to node002's files in its caches: a forged walk must not get them there.
            assert "secret.key" in os.listdir(view / "node002/etc")
            assert os.listdir(mnt / "groups/Compute") and os.listdir(mnt / "images/rocky9")
            mine = own_root(a, SERVER_A, "node001")
            # The layout as read above: the handle's tail is node001's root inode.
            assert fuse_part(mine)[0] == os.stat(view / "node001").st_ino
            legit = raw(a, SERVER_A, [["putfh", mine.hex()], ["lookup", "etc"],
                                      ["lookup", "hostname"], ["read", 0, 100]])
            assert legit["data"] == "node001\n", legit

            # 1. The FUSE mount's root (nodeid 1, generation 0) and the namespace
            # directories: no listing, no lookup below them.
            for ino, generation in ((1, 0), (2, 1), (3, 1), (4, 1)):
                forged = with_fuse_part(mine, ino, generation)
                assert refused(raw(a, SERVER_A, [["putfh", forged], ["readdir"]]))
                for path in (["nodes", "node002"], ["node002"], ["groups", "Compute"],
                             ["Compute"], ["images", "rocky9"], ["rocky9"]):
                    walk = [["putfh", forged], *(["lookup", p] for p in path), ["readdir"]]
                    assert refused(raw(a, SERVER_A, walk)), (ino, path)
            # ... nor through ".." of a handle naming the own root under another encoding.
            assert refused(raw(a, SERVER_A, [["putfh", mine.hex()], ["lookup", ".."],
                                             ["readdir"]]))

            # 2. Handles computed from names, as anyone can without the site's key: node002's
            # root, its host-override files (also the hard-linked one), group and image roots.
            site_key = Numbering(load_or_create_key(key_file))
            guess = Numbering.ephemeral()
            tree_keys = ([f"nodes/{n}" for n in os.listdir(view)]
                         + [f"groups/{g}" for g in os.listdir(mnt / "groups")]
                         + [f"images/{i}" for i in os.listdir(mnt / "images")])
            secret = site_with_secrets / OVERRIDES / "node002/etc/secret.key"
            st = os.stat(secret)
            for numbering, expected_ok in ((guess, False), (site_key, True)):
                slots = numbering.assign_slots(tree_keys)
                roots = {key: (numbering.dir_ino(slots[key], ""),
                               numbering.view_generation(key, ""))
                         for key in ("nodes/node002", "groups/Compute", "images/rocky9")}
                identity = Numbering.layer_file_identity(st.st_mtime_ns, st.st_size, st.st_mode)
                file_ino = numbering.backed_ino("override:node002", "etc/secret.key", identity)
                targets = {**roots,
                           "secret": (file_ino, numbering.file_generation(file_ino, identity))}
                if expected_ok:  # the derivation is the mount's: only the key is missing
                    assert roots["nodes/node002"][0] == os.stat(view / "node002").st_ino
                    shown = os.stat(view / "node002/etc/secret.key")
                    handle = name_to_handle(view / "node002/etc/secret.key")
                    assert fuse_part(bytes(handle.f_handle[:handle.handle_bytes])) == \
                        targets["secret"] == (shown.st_ino, targets["secret"][1])
                    # A hard link is a path of its own (numbers come from layer and path).
                    assert file_ino != os.stat(view / "node002/etc/secret.key.bak").st_ino
                    continue
                for name, (ino, generation) in targets.items():
                    forged = with_fuse_part(mine, ino, generation)
                    op = ["read", 0, 100] if name == "secret" else ["readdir"]
                    assert refused(raw(a, SERVER_A, [["putfh", forged], op])), name

            # 3. Another node's export id, or a handle from another export: refused by
            # the per-client export rules (ganesha checks the client against the Export_Id).
            theirs = own_root(b, SERVER_B, "node002")
            assert refused(raw(a, SERVER_A, [["putfh", theirs.hex()], ["readdir"]]))
            assert refused(raw(a, SERVER_A, [["putrootfh"], ["lookup", "nodes"],
                                             ["lookup", "node002"], ["readdir"]]))

            # 4. An unprivileged source port: even node001's own handle is refused.
            assert refused(raw(a, SERVER_A, [["putfh", mine.hex()], ["readdir"]],
                               privileged=False))

            # Handles of the own root keep working after the kernel forgot every inode:
            # reconnecting a directory stops at the node's root, never above it.
            etc = raw(a, SERVER_A, [["putfh", mine.hex()], ["lookup", "etc"], ["getfh"]])
            drop_caches()
            again = raw(a, SERVER_A, [["putfh", etc["handles"][0]], ["readdir"]])  # type: ignore[index]
            assert again["status"] == "OK" and "hostname" in again["names"], again
            # The server's own admin still sees everything.
            assert sorted(os.listdir(mnt)) == ["groups", "images", "nodes"]
            assert "node002" in os.listdir(view)
            log = (tmp_path / "state" / "onesuite.log").read_text()
            assert "refused an NFS server thread" in log


def test_unprivileged_ports_only_when_configured(example_site, tmp_path):
    with namespaces("srv", "a") as (srv, a):
        veth(srv, SERVER_A, a, "10.251.1.2")
        config = tmp_path / "onesuite.toml"
        config.write_text('[nfs]\nprivileged_ports = false\n'
                          '[nfs.addresses]\nnode001 = "10.251.1.2"\n')
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        with serving(srv, example_site, mnt, tmp_path / "state", "--config", str(config),
                     "--protocols", "4", "--handle-key", str(tmp_path / "key")):
            answer = raw(a, SERVER_A, [["putrootfh"], ["lookup", "nodes"], ["lookup", "node001"],
                                       ["lookup", "etc"], ["lookup", "hostname"],
                                       ["read", 0, 100]], privileged=False)
            assert answer.get("data") == "node001\n", answer


WRITER = Path(__file__).resolve().parent / "nfs_write.py"


@contextlib.contextmanager
def persistent_pair(tmp_path: Path, protocols: str, store: Path | None = None,
                    **serve_options: bool) -> Iterator[tuple[Serve, Netns, Netns]]:
    """The oneSIS test site served with persistent paths (kept in `store`) to n1
    (namespace a) and n2 (b)."""
    with served_pair(tmp_path, onesis_site(tmp_path / "site"), ("n1", "n2"),
                     "--link-policy", "persistent", "--persistent-dir",
                     str(store or tmp_path / "persistent"), "--protocols", protocols,
                     **serve_options) as served:
        yield served


@pytest.mark.parametrize("version", ["3", "4"])
def test_persistent_paths_are_writable_over_nfs_by_their_node_only(tmp_path, version):
    query = "?version=4" if version == "4" else ""
    with persistent_pair(tmp_path, "3,4", private_run=True, rpcbind=True) as (server, a, b):
            steps = [["write", "/var/log/boot.log", "booted\n"],
                     ["append", "/var/log/boot.log", "again\n"],
                     ["mkdir", "/var/log/sub"],
                     ["write", "/var/log/sub/x", "x\n"],
                     ["write", "/etc/adjtime", "1.5 0 0.0\n"],  # LINKFILE -d: a copy
                     ["read", "/var/log/boot.log"],
                     ["write", "/etc/motd", "defaced\n"],  # not a persistent path
                     ["write", "/etc/new-file", "x\n"],
                     ["mkdir", "/opt/new-dir"]]
            done = a.run(sys.executable, str(WRITER), f"nfs://{SERVER_A}/nodes/n1{query}",
                         json.dumps(steps), timeout=120)
            assert done.returncode == 0, done.stderr
            results = json.loads(done.stdout)
            assert results[:6] == ["ok"] * 5 + ["booted\nagain\n"], results
            assert all(r.startswith("ERR") for r in results[6:]), results
            n1 = server.view() / "nodes/n1"
            assert (n1 / "var/log/boot.log").read_text() == "booted\nagain\n"
            assert (n1 / "var/log/sub/x").read_text() == "x\n"
            assert (n1 / "etc/adjtime").read_text() == "1.5 0 0.0\n"
            assert (n1 / "etc/motd").read_text() == "motd: the image's own\n"
            assert not (n1 / "etc/new-file").exists()
            # n2 writes its own copy of the same paths; n1's is untouched.
            other = b.run(sys.executable, str(WRITER), f"nfs://{SERVER_B}/nodes/n2{query}",
                          json.dumps([["write", "/var/log/boot.log", "n2\n"]]), timeout=120)
            assert json.loads(other.stdout) == ["ok"], other.stdout + other.stderr
            assert (server.view() / "nodes/n2/var/log/boot.log").read_text() == "n2\n"
            assert (n1 / "var/log/boot.log").read_text() == "booted\nagain\n"
            # ... and n1's root from n2's address: refused (the export is n1's only).
            assert nfs_ls(b, f"nfs://{SERVER_B}/nodes/n1{query}").returncode != 0
            assert (n1 / "var/log/boot.log").read_text() == "booted\nagain\n"


def test_a_removed_persistent_files_handle_opens_nothing_another_node_makes(fresh_ext4,
                                                                           tmp_path):
    """n2 makes a file in its persistent /var/log, keeps its NFS handle, removes it; n1 then
    writes a file there and the store's file system gives it the freed inode. n2's handle
    must be stale: it opened n1's file before (the number and generation came from the
    inode number alone; tests/test_handle_reuse.py has the same on the bare mount)."""
    state = fresh_ext4 / "persistent"  # a file system that gives freed inodes out again
    with persistent_pair(tmp_path, "4", state) as (_server, a, b):
            reused = 0
            for round_ in range(40):
                if reused == 3:
                    break
                probe = f"probe{round_}"
                write = b.run(sys.executable, str(WRITER), f"nfs://{SERVER_B}/nodes/n2?version=4",
                              json.dumps([["write", f"/var/log/{probe}", "n2's own\n"]]))
                assert json.loads(write.stdout) == ["ok"], write.stdout + write.stderr
                held = raw(b, SERVER_B, [["putrootfh"], ["lookup", "nodes"], ["lookup", "n2"],
                                         ["lookup", "var"], ["lookup", "log"],
                                         ["lookup", probe], ["getfh"]])
                number = os.stat(state / "nodes/n2/var/log" / probe).st_ino
                gone = b.run(sys.executable, str(WRITER), f"nfs://{SERVER_B}/nodes/n2?version=4",
                             json.dumps([["unlink", f"/var/log/{probe}"]]))
                assert json.loads(gone.stdout) == ["ok"], gone.stdout + gone.stderr
                made = a.run(sys.executable, str(WRITER), f"nfs://{SERVER_A}/nodes/n1?version=4",
                             json.dumps([["write", f"/var/log/secret{round_}",
                                          f"n1's secret {round_}\n"]]))
                assert json.loads(made.stdout) == ["ok"], made.stdout + made.stderr
                if os.stat(state / f"nodes/n1/var/log/secret{round_}").st_ino != number:
                    continue
                reused += 1
                answer = raw(b, SERVER_B, [["putfh", held["handles"][0]],  # type: ignore[index]
                                           ["read", 0, 100]])
                assert refused(answer), answer
            assert reused == 3, f"the store reused an inode number {reused} times in 40"
