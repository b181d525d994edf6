"""Through NFS (nfs-ganesha over the mount): after a reload a client reads the new content,
never the new bytes cut at the old size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import needs_root_fuse, run_onesuite
from nfstools import namespaces, require, require_libnfs, serving

pytestmark = [needs_root_fuse(), pytest.mark.mount, pytest.mark.nfs]

ADDRESS = "127.0.1.3"  # node001's, inside the test's own namespace


@pytest.fixture(autouse=True)
def nfs_tools():
    require("ganesha.nfsd", "nfs-cat", "nsenter", "ip", "fusermount3")
    require_libnfs()


def test_a_client_reads_the_new_content_after_a_reload(example_site, tmp_path):
    config = tmp_path / "onesuite.toml"
    config.write_text(f'[nfs.addresses]\nnode001 = "{ADDRESS}"\n')
    motd = example_site / "var/lib/systemimager/overrides/all/etc/motd"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with namespaces("lo") as (ns,):
        ns.local_source(ADDRESS)  # the client connects from node001's address
        with serving(ns, example_site, mnt, tmp_path / "state", "--config", str(config),
                     "--protocols", "4", "--no-watch"):
            check_reads_after_reloads(ns, mnt, motd)


def check_reads_after_reloads(ns, mnt: Path, motd: Path) -> None:
    url = f"nfs://{ADDRESS}/nodes/node001/etc/motd?version=4"

    def nfs_cat() -> str:
        done = ns.run("nfs-cat", url, timeout=60)
        if done.returncode != 0 and "NFS4ERR_STALE" in done.stderr:
            # ganesha's cached name still points at the replaced file, whose handle is stale
            # now; it forgets it and the next lookup finds the new file. The Linux client
            # retries such a lookup by itself (LOOKUP_REVAL); libnfs does not, so we do.
            done = ns.run("nfs-cat", url, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert nfs_cat() == motd.read_text()
    # Rewritten in place and longer (same inode): the size must follow the bytes.
    longer = "A much longer message of the day, written in place by an editor.\n" * 3
    with open(motd, "r+") as f:
        f.write(longer)
    run_onesuite("reload", mnt)
    assert nfs_cat() == longer
    # Replaced by rename (a new inode), shorter this time.
    replacement = Path(str(motd) + ".new")
    replacement.write_text("short\n")
    os.rename(replacement, motd)
    run_onesuite("reload", mnt)
    assert nfs_cat() == "short\n"
