"""The NFS boot storm runs: K=4 clients, each from its own node's address to its own export over
NFSv3, replay the recorded systemd boot (bench/data/boot-trace.json) against onesuite serve,
ganesha over materialized roots and ganesha over kernel overlayfs mounts, every reply with the
status the recorded boot got. Nothing here measures or asserts speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_root_fuse
from nfstools import require

pytestmark = [needs_root_fuse(), pytest.mark.mount, pytest.mark.nfs]

REPO = Path(__file__).resolve().parent.parent
TRACE = REPO / "bench" / "data" / "boot-trace.json"


def test_recorded_boot_is_a_real_systemd_boot():
    trace = json.loads(TRACE.read_text())
    calls = trace["summary"]["by_procedure"]
    # The metadata traffic is there, not only reads, and the boot read systemd itself.
    for procedure in ("GETATTR", "LOOKUP", "ACCESS", "READLINK", "READ"):
        assert calls.get(procedure, 0) > 50, (procedure, calls)
    assert sum(calls.values()) == len(trace["ops"])
    read = {op[1] for op in trace["ops"] if op[0] == "READ"}
    assert "usr/lib/systemd/systemd" in read or "lib/systemd/systemd" in read, sorted(read)[:20]


def test_storm_of_four_nodes_replays_the_boot_on_every_server():
    require("ganesha.nfsd", "nsenter", "ip", "rsync", "fusermount3", "rpcbind", "unshare")
    done = subprocess.run(
        [sys.executable, "-m", "bench.nfs_storm", "--clients", "4", "--runs", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["server"]: row for row in json.loads(done.stdout)}
    assert set(rows) == {"onesuite", "materialized", "overlayfs"}
    for server, row in rows.items():
        assert row["clients"] == 4 and row["calls"] == 4 * len(json.loads(
            TRACE.read_text())["ops"]), row
        assert row["errors"] == 0, (server, row["failures"])
        assert row["files"] > 4 * 100 and row["mb_per_s"] > 0 and row["server_cpu"] >= 0
    # Every client replayed the same boot, so the same bytes from every server.
    assert rows["onesuite"]["bytes"] == rows["materialized"]["bytes"] == rows["overlayfs"][
        "bytes"]
