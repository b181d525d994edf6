"""Through NFS (nfs-ganesha over the mount, caching attributes): after a reload, and once the
stated bound has passed, a client reads every changed file whole and new (never new bytes cut
at an old size) and lists every changed directory as it is now: a file grown in place, one
replaced by rename, one added to a lower layer under a directory whose attributes come from a
higher one, one removed. The caches are warm first, so a stale answer would come from them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import needs_root_fuse
from nfstools import namespaces, require, require_libnfs, serving

from onesuite_fs.daemon.mount import reload
from onesuite_fs.nfs.exports import DEFAULT_ATTR_EXPIRATION

pytestmark = [needs_root_fuse(), pytest.mark.mount, pytest.mark.nfs]

ADDRESS = "127.0.1.3"  # node001's, inside the test's own namespace
# What docs/nfs.md states: ganesha keeps attributes Attr_Expiration_Time seconds by its
# whole-second clock, so an answer fetched just before the reload lasts up to 1 s more.
BOUND = DEFAULT_ATTR_EXPIRATION + 1


@pytest.fixture(autouse=True)
def nfs_tools():
    require("ganesha.nfsd", "nfs-cat", "nfs-ls", "nsenter", "ip", "fusermount3")
    require_libnfs()


@pytest.mark.parametrize("version", ["4", "3"])
def test_a_client_sees_each_change_within_the_bound(example_site, tmp_path, version):
    config = tmp_path / "onesuite.toml"
    config.write_text(f'[nfs.addresses]\nnode001 = "{ADDRESS}"\n')
    site = example_site / "var/lib/systemimager"
    image_etc = site / "images/rocky9/etc"
    (image_etc / "doomed.conf").write_text("removed from the image after the first reads\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    v3 = {"private_run": True, "rpcbind": True} if version == "3" else {}
    with namespaces("lo") as (ns,):
        ns.local_source(ADDRESS)  # the client connects from node001's address
        with serving(ns, example_site, mnt, tmp_path / "state", "--config", str(config),
                     "--protocols", "3,4" if version == "3" else "4", "--no-watch",
                     **v3) as server:
            client = Client(ns, version)
            check_changes(client, site, server.view())


class Client:
    def __init__(self, ns, version: str) -> None:
        self.ns, self.version = ns, version

    def url(self, path: str) -> str:
        return f"nfs://{ADDRESS}/nodes/node001/{path}?version={self.version}"

    def cat(self, path: str) -> str:
        done = self.ns.run("nfs-cat", self.url(path), timeout=60)
        if done.returncode != 0 and "STALE" in done.stderr:
            # A replaced file's old handle is stale; ganesha forgets it and the next lookup
            # finds the new file. The Linux client retries such a lookup by itself
            # (LOOKUP_REVAL); libnfs does not, so we do.
            done = self.ns.run("nfs-cat", self.url(path), timeout=60)
        assert done.returncode == 0, f"nfs-cat {path}: {done.stderr}"
        return done.stdout

    def names(self, path: str) -> set[str]:
        done = self.ns.run("nfs-ls", self.url(path), timeout=60)
        assert done.returncode == 0, f"nfs-ls {path}: {done.stderr}"
        return {line.split()[-1] for line in done.stdout.splitlines() if line.strip()}


def check_changes(client: Client, site: Path, view: Path) -> None:
    grown = site / "overrides/all/etc/motd"  # node001's /etc/motd
    # Replaced, added and removed in the image: node001's /etc takes its attributes (and
    # mtime) from an override's /etc, which none of this touches.
    replaced = site / "images/rocky9/etc/os-release"
    added = site / "images/rocky9/etc/added.conf"
    removed = site / "images/rocky9/etc/doomed.conf"
    etc_mtime = (view / "nodes/node001/etc").stat().st_mtime_ns
    assert etc_mtime != (site / "images/rocky9/etc").stat().st_mtime_ns
    # Warm every cache on the way: ganesha's attributes and entries, the client's nothing.
    before = client.names("etc")
    assert {"motd", "os-release", "doomed.conf"} <= before and "added.conf" not in before
    for path in ("etc/motd", "etc/os-release", "etc/doomed.conf"):
        assert client.cat(path) == (view / "nodes/node001" / path).read_text()

    longer = "A much longer message of the day, written in place by an editor.\n" * 3
    with open(grown, "r+") as f:  # the same inode, more bytes
        f.write(longer)
    new_name = replaced.with_name("os-release.new")
    new_name.write_text("NAME=replaced\n")
    os.rename(new_name, replaced)
    added.write_text("added to the image\n")
    removed.unlink()
    report = reload(view)  # what `onesuite reload` does; the view may be in another mount ns
    assert report["last_reload"]["error"] is None

    time.sleep(BOUND + 0.1)  # the stated bound (not a measurement: nothing is timed)
    # The listing first: a stale handle met by a read below makes ganesha drop the names it
    # cached of the directory, which would hide a listing that never refreshes.
    after = client.names("etc")
    assert "added.conf" in after and "doomed.conf" not in after
    assert client.cat("etc/motd") == longer
    assert client.cat("etc/os-release") == "NAME=replaced\n"
    assert client.cat("etc/added.conf") == "added to the image\n"
    gone = client.ns.run("nfs-cat", client.url("etc/doomed.conf"), timeout=60)
    assert gone.returncode != 0, gone.stdout
