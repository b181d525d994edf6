"""Several servers, one store (issue 19): two independent `onesuite serve` instances, each over
its own rsync'd copy of the site, give a node the same NFS file handles, so a client carries
on when the server address moves from one to the other. Real FUSE mounts, real nfs-ganesha,
network namespaces on one bridged segment; the raw NFSv4 client sends handles as they are."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from conftest import needs_root_fuse, run_onesuite
from hatools import Lan, rsync_copy
from nfstools import Netns, Serve, drop_caches, namespaces, require
from test_nfs_isolation import raw, refused, with_fuse_part
from test_nfs_serve import take_device_number

from onesuite_fs.core.inodes import Numbering
from onesuite_fs.daemon.handle_key import load_or_create_key

pytestmark = [needs_root_fuse(), pytest.mark.mount, pytest.mark.nfs]
SERVERS = {"a": "10.252.0.1", "b": "10.252.0.2"}
NODE001, NODE002 = "10.252.0.10", "10.252.0.11"
OVERRIDES = "var/lib/systemimager/overrides"
# Paths of node001's root whose handles are compared: directories, a host-override file, an
# image file, both names of a hard link, a symlink.
PATHS = ["", "etc", "etc/hostname", "etc/motd", "usr/bin", "usr/bin/vi", "usr/bin/view", "bin"]


@pytest.fixture(autouse=True)
def nfs_tools():
    require("ganesha.nfsd", "nsenter", "ip", "fusermount3", "rsync")


@pytest.fixture
def secret_site(example_site: Path) -> Path:
    etc = example_site / OVERRIDES / "node002/etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "secret.key").write_text("node002 private key\n")
    return example_site


@contextmanager
def two_servers(tmp_path: Path, site: Path
                ) -> Iterator[tuple[dict[str, Serve], Netns, Netns]]:
    """Servers a and b, each serving its own rsync'd copy of `site` with the site's one handle
    key (copied, as an admin distributes it), and node001's and node002's namespaces, on one
    segment."""
    config = tmp_path / "onesuite.toml"
    config.write_text(f'[nfs.addresses]\nnode001 = "{NODE001}"\nnode002 = "{NODE002}"\n')
    load_or_create_key(tmp_path / "key")
    with namespaces("lan", "a", "b", "c", "d") as (switch, ns_a, ns_b, client, other), \
            ExitStack() as stack:
        lan = Lan(switch)
        lan.plug(client, NODE001)
        lan.plug(other, NODE002)
        servers = {}
        for name, ns in (("a", ns_a), ("b", ns_b)):
            lan.plug(ns, SERVERS[name])
            copy = rsync_copy(site, tmp_path / f"site-{name}")
            key = tmp_path / f"key-{name}"
            key.write_bytes((tmp_path / "key").read_bytes())
            key.chmod(0o600)
            mnt = tmp_path / f"mnt-{name}"
            mnt.mkdir()
            server = Serve(ns, copy, mnt, tmp_path / f"state-{name}", "--config", str(config),
                           "--protocols", "4", "--handle-key", str(key))
            stack.callback(_stop, server)
            server.start()
            servers[name] = server
        yield servers, client, other


def _stop(server: Serve) -> None:
    if server.proc is not None and server.proc.poll() is None:
        server.stop()
    else:
        server.cleanup()


def handles(client: Netns, server: str) -> dict[str, bytes]:
    """The handle of every path of PATHS, looked up from the pseudo root on `server`."""
    found = {}
    for path in PATHS:
        walk = [["putrootfh"], ["lookup", "nodes"], ["lookup", "node001"],
                *(["lookup", part] for part in path.split("/") if part), ["getfh"]]
        answer = raw(client, server, walk)
        assert answer["status"] == "OK", (server, path, answer)
        found[path] = bytes.fromhex(answer["handles"][0])  # type: ignore[index]
    return found


def read(client: Netns, server: str, handle: bytes) -> dict[str, object]:
    return raw(client, server, [["putfh", handle.hex()], ["read", 0, 4096]])


def test_two_servers_over_rsynced_copies_give_the_same_handles(secret_site, tmp_path):
    with two_servers(tmp_path, secret_site) as (servers, client, other):
        a, b = servers["a"], servers["b"]
        # Two copies, two mounts: every backing (st_dev, st_ino) and FUSE st_dev differs.
        assert os.stat(a.mountpoint).st_dev != os.stat(b.mountpoint).st_dev
        image_vi = "var/lib/systemimager/images/rocky9/usr/bin/vi"
        assert os.stat(a.root / image_vi).st_ino != os.stat(b.root / image_vi).st_ino
        from_a, from_b = handles(client, SERVERS["a"]), handles(client, SERVERS["b"])
        assert from_a == from_b  # byte for byte
        assert from_a["usr/bin/vi"] != from_a["usr/bin/view"]  # a hard link: a path of its own

        # A handle from server a reads the same bytes on server b, also once b's kernel has
        # forgotten every inode (b's daemon finds a number it never issued).
        for path in ("etc/hostname", "etc/motd", "usr/bin/vi"):
            on_a = read(client, SERVERS["a"], from_a[path])
            assert on_a["status"] == "OK" and on_a["data"], (path, on_a)
            drop_caches()
            assert read(client, SERVERS["b"], from_a[path])["data"] == on_a["data"], path
        listing = raw(client, SERVERS["b"], [["putfh", from_a["etc"].hex()], ["readdir"]])
        assert "hostname" in listing["names"], listing  # type: ignore[operator]

        # Forged handles are refused on both: node002's root and its host key computed as
        # the mount does, but without the site's key, put into node001's handle.
        mine = from_a[""]
        secret = a.root / OVERRIDES / "node002/etc/secret.key"
        st = os.stat(secret)
        site_key = Numbering(load_or_create_key(tmp_path / "key"))
        view = a.mountpoint / "nodes"
        keys = ([f"nodes/{n}" for n in sorted(os.listdir(view))]
                + [f"groups/{g}" for g in os.listdir(a.mountpoint / "groups")]
                + [f"images/{i}" for i in os.listdir(a.mountpoint / "images")])
        for numbering in (site_key, Numbering.ephemeral()):
            slots = numbering.assign_slots(keys)
            identity = Numbering.layer_file_identity(st.st_mtime_ns, st.st_size, st.st_mode)
            file_ino = numbering.backed_ino("override:node002", "etc/secret.key", identity)
            targets = {"root": (numbering.dir_ino(slots["nodes/node002"], ""),
                                numbering.view_generation("nodes/node002", "")),
                       "secret": (file_ino, numbering.file_generation(file_ino, identity))}
            if numbering is site_key:  # the derivation is the mount's: only the key is missing
                assert targets["root"][0] == os.stat(view / "node002").st_ino
                assert os.stat(b.mountpoint / "nodes/node002/etc/secret.key").st_ino \
                    == file_ino == os.stat(view / "node002/etc/secret.key").st_ino
                continue
            for name, (ino, generation) in targets.items():
                forged = bytes.fromhex(with_fuse_part(mine, ino, generation))
                op = ["read", 0, 100] if name == "secret" else ["readdir"]
                for server in SERVERS.values():
                    answer = raw(client, server, [["putfh", forged.hex()], op])
                    assert refused(answer), (name, server, answer)
        # node002's own handle, from either server, is refused to node001 on both.
        theirs = raw(other, SERVERS["b"], [["putrootfh"], ["lookup", "nodes"],
                                           ["lookup", "node002"], ["getfh"]])
        assert theirs["status"] == "OK", theirs
        for server in SERVERS.values():
            answer = raw(client, server, [["putfh", theirs["handles"][0]], ["readdir"]])  # type: ignore[index]
            assert refused(answer), (server, answer)
            assert raw(other, server, [["putfh", theirs["handles"][0]],  # type: ignore[index]
                                       ["readdir"]])["status"] == "OK"

        # A restart of b, with another mount taking the device number its FUSE mount had:
        # the same handles, and a's handles still read there (no device-number pinning).
        old_dev = os.stat(b.mountpoint).st_dev
        assert b.stop() == 0, b.stderr()
        takers = take_device_number(tmp_path, f"{os.major(old_dev)}:{os.minor(old_dev)}")
        try:
            b.start()
            assert os.stat(b.mountpoint).st_dev != old_dev
            drop_caches()
            assert handles(client, SERVERS["b"]) == from_a
            hostname = read(client, SERVERS["b"], from_a["etc/hostname"])
            assert hostname["data"] == "node001\n", hostname
        finally:
            for taker in takers:
                subprocess.run(["umount", str(taker)], check=False)

        # The file replaced at a path on both copies (an image update, rsync'd): a new
        # number, so the old handle is stale on both servers, never the new file's bytes
        # (while a server still holds the old file open it may serve the old bytes).
        for server in servers.values():
            origin = os.getxattr(server.mountpoint / "nodes/node001/etc/motd",
                                 "user.onesuite.origin").decode()
            kind, _, rest = origin.partition(":")
            layer, _, path = rest.partition(" /")
            top = "images" if kind == "image" else "overrides"
            motd = server.root / "var/lib/systemimager" / top / layer / path
            replacement = motd.with_name("motd.new")
            replacement.write_text("a new motd, same path\n")
            os.utime(replacement, ns=(1_800_000_000 * 10**9,) * 2)
            replacement.replace(motd)
            run_onesuite("reload", server.mountpoint)
        old_motd = read(client, SERVERS["a"], from_a["etc/motd"])  # (ganesha's open fd)
        for server in servers.values():  # a restart: nothing holds the old file any more
            assert server.stop() == 0, server.stderr()
            server.start()
        drop_caches()
        new = handles(client, SERVERS["a"])
        assert new == handles(client, SERVERS["b"])
        assert new["etc/motd"] != from_a["etc/motd"]
        assert {k: v for k, v in new.items() if k != "etc/motd"} == {
            k: v for k, v in from_a.items() if k != "etc/motd"}
        for server in SERVERS.values():
            assert read(client, server, new["etc/motd"])["data"] == "a new motd, same path\n"
            stale = read(client, server, from_a["etc/motd"])
            assert refused(stale), (server, stale, old_motd)
