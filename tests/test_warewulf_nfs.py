"""A Warewulf node's root over NFS (issue 18): the bundled example's Warewulf site served by
`onesuite serve` (real FUSE mount, real nfs-ganesha), each node's root exported to the
address of its primary network device in nodes.conf and read from that address with libnfs
and a raw NFSv4.0 client (tests/rawnfs.py) in a network namespace: every entry equals the
mount, the rendered overlay files byte for byte equal what preview and the View read, and
one node's address reaches nothing of another node's root, as for SystemImager nodes
(test_nfs_isolation.py)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_root_fuse
from inspecttools import cli_tree, onesuite_json
from nfstools import Netns, drop_caches, nfs_ls, require, require_libnfs, serving, walk
from test_nfs_isolation import fuse_part, raw, refused, with_fuse_part

from onesuite_fs.core.inodes import Numbering
from onesuite_fs.daemon.handle_key import load_or_create_key

pytestmark = [needs_root_fuse(), pytest.mark.mount, pytest.mark.nfs]

# The example's nodes.conf: ww001 and ww002 on their primary device "default".
ADDRESSES = {"ww001": "10.2.0.1", "ww002": "10.2.0.2"}
# What the example's templates render for each node (the overlays hostname, issue, hosts,
# ifcfg), read over NFS: the layer each comes from must be a rendered one.
RENDERED = ("etc/hostname", "etc/issue", "etc/hosts",
            "etc/sysconfig/network-scripts/ifcfg-default")


@pytest.fixture(autouse=True)
def nfs_tools():
    require("ganesha.nfsd", "nsenter", "ip", "fusermount3", "nfs-ls")
    require_libnfs()


class Namespace(Netns):
    """A network namespace named fid4-... (this test's own prefix), lo up."""

    def __init__(self, tag: str) -> None:  # noqa: D107 (Netns's, with another name)
        self.name = f"fid4-{os.getpid() % 100000}-{tag}"[:15]
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.ip("link", "set", "lo", "up")


@contextlib.contextmanager
def warewulf_served(site: Path, tmp_path: Path) -> Iterator[tuple[Namespace, Path]]:
    """The example's Warewulf site served in a namespace where each node's address is a
    local source: a connection to it comes from it, as from the node."""
    ns = Namespace("ww")
    try:
        for address in ADDRESSES.values():
            ns.local_source(address)
        config = tmp_path / "onesuite.toml"
        config.write_text(f'[warewulf]\nrender_cache = "{tmp_path / "cache"}"\n')
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        with serving(ns, site, mnt, tmp_path / "state", "--warewulf-root", str(site),
                     "--config", str(config), "--handle-key", str(tmp_path / "key"),
                     "--protocols", "4") as server:
            assert server.status["exports"] == len(ADDRESSES), server.status
            yield ns, mnt
    finally:
        ns.delete()


def test_a_warewulf_node_reads_its_root_over_nfs_and_nothing_else(example_site, tmp_path,
                                                                  capsys):
    site = example_site
    with warewulf_served(site, tmp_path) as (ns, mnt):
        tree = cli_tree(site, "--warewulf-root", str(site), "--config",
                        str(tmp_path / "onesuite.toml"))
        for attempt in ("warm", "after drop_caches"):
            for node, address in ADDRESSES.items():
                over_nfs = walk(ns, f"nfs://{address}/nodes/{node}?version=4")
                assert over_nfs == walk(None, mnt / "nodes" / node), (node, attempt)
                # The rendered files, byte for byte as the View reads them by path (what
                # preview, export and diff read), and named rendered by preview.
                status, document = onesuite_json(
                    capsys, "preview", "--warewulf-root", str(site), "--config",
                    str(tmp_path / "onesuite.toml"), node, "/etc")
                assert status == 0
                layers = {e["path"]: e["layer"] for e in document["entries"]}
                entry = tree.entries["nodes"][node]
                for path in RENDERED:
                    found = tree.node_at(entry, path)
                    assert found is not None, (node, path)
                    with os.fdopen(tree.open_node(found), "rb") as f:
                        expected = f.read()
                    assert over_nfs[f"/{path}"][6] == hashlib.md5(expected).hexdigest(), path
                    assert over_nfs[f"/{path}"][3] == len(expected)
                    assert layers[f"/{path}"].startswith("rendered:"), (node, path)
                hostname = raw(ns, address, [["putrootfh"], ["lookup", "nodes"],
                                             ["lookup", node], ["lookup", "etc"],
                                             ["lookup", "hostname"], ["read", 0, 100]])
                assert hostname["data"] == f"{node}\n", hostname
            drop_caches()  # the FUSE inodes go: ganesha's handles now need LOOKUP(ino, ".")

        # Isolation: from ww001's address, nothing of ww002's root, of groups/ or images/.
        for url in ("nodes/ww002", "groups/default", "images/rocky9"):
            done = nfs_ls(ns, f"nfs://{ADDRESSES['ww001']}/{url}?version=4")
            assert done.returncode != 0, (url, done.stdout)
        answer = raw(ns, ADDRESSES["ww001"], [["putrootfh"], ["lookup", "nodes"],
                                               ["readdir"]])
        assert answer["names"] == ["ww001"], answer
        # ... nor with handles of ww002's root: its own (ww002's export: the export rules),
        # or its inode under ww001's export numbered without the site's key (a handle is a
        # capability: test_nfs_isolation.py). The key's numbering is the mount's.
        def root_handle(node: str) -> bytes:
            answer = raw(ns, ADDRESSES[node], [["putrootfh"], ["lookup", "nodes"],
                                                ["lookup", node], ["getfh"]])
            return bytes.fromhex(answer["handles"][0])  # type: ignore[index]

        mine, theirs = root_handle("ww001"), root_handle("ww002")
        assert fuse_part(mine)[0] == os.stat(mnt / "nodes/ww001").st_ino
        keys = [f"nodes/{n}" for n in os.listdir(mnt / "nodes")]
        keys += [f"groups/{g}" for g in os.listdir(mnt / "groups")]
        keys += [f"images/{i}" for i in os.listdir(mnt / "images")]
        def root_number(numbering: Numbering) -> tuple[int, int]:
            slot = numbering.assign_slots(keys)["nodes/ww002"]
            return numbering.dir_ino(slot, ""), numbering.view_generation("nodes/ww002", "")

        # The site's key gives the mount's numbers (so the guess below is a fair one).
        assert fuse_part(theirs) == root_number(Numbering(load_or_create_key(tmp_path / "key")))
        guessed = with_fuse_part(mine, *root_number(Numbering.ephemeral()))
        for handle in (theirs.hex(), guessed):
            for ops in ([["readdir"]], [["lookup", "etc"], ["lookup", "hostname"],
                                        ["read", 0, 100]]):
                assert refused(raw(ns, ADDRESSES["ww001"], [["putfh", handle], *ops])), ops
        # ww002 itself reads its own root with its handle.
        own = raw(ns, ADDRESSES["ww002"], [["putfh", theirs.hex()], ["lookup", "etc"],
                                            ["lookup", "hostname"], ["read", 0, 100]])
        assert own["data"] == "ww002\n", own
