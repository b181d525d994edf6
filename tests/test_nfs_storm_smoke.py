"""The NFS boot storm runs: K=4 libnfs clients, each from its own node's address to its own
export, against onesuite serve and against ganesha over materialized roots, all reading
every file of the boot set without an error. Nothing here measures or asserts speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_root_fuse
from nfstools import require, require_libnfs

pytestmark = [needs_root_fuse(), pytest.mark.mount, pytest.mark.nfs]

REPO = Path(__file__).resolve().parent.parent


def test_storm_of_four_nodes_reads_every_file_on_both_servers():
    require("ganesha.nfsd", "nsenter", "ip", "rsync", "fusermount3")
    require_libnfs()
    done = subprocess.run(
        [sys.executable, "-m", "bench.nfs_storm", "--clients", "4", "--runs", "1",
         "--servers", "onesuite,materialized", "--image", "synthetic"],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["server"]: row for row in json.loads(done.stdout)}
    assert set(rows) == {"onesuite", "materialized"}
    for server, row in rows.items():
        assert row["clients"] == 4 and row["files"] > 50, row
        assert row["errors"] == 0, (server, row["failures"])
        assert row["mb_per_s"] > 0 and row["server_cpu"] >= 0
    # Every client read the same boot set, so the same bytes from both servers.
    assert rows["onesuite"]["bytes"] == rows["materialized"]["bytes"]
