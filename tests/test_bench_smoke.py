"""The benchmarks must not rot: their CLI plans a run, the scale generator writes a site that
onesuite reads, and the report renders targets. Nothing here measures or asserts speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import scalesite

from onesuite_fs.settings import Settings
from onesuite_fs.sources.systemimager import load_site

REPO = Path(__file__).resolve().parent.parent


def test_quick_dry_run_plans_every_quick_family():
    done = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--quick", "--dry-run"],
                          capture_output=True, text=True, timeout=120, check=True)
    plan = json.loads(done.stdout)
    assert plan["config"]["quick"] is True
    assert set(plan["config"]["families"]) <= {"walk", "scale", "copying", "reads", "storm",
                                               "nfs", "nfs_storm"}


def test_help_explains_every_family():
    done = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--help"],
                          capture_output=True, text=True, timeout=120, check=True)
    for family in ("walk", "scale", "copying", "reads", "storm", "nfs", "nfs_storm"):
        assert f"\n  {family} " in done.stdout


def test_scale_site_is_a_site_onesuite_reads(tmp_path):
    params = scalesite.ScaleParams(nodes=25, groups=3, host_share=0.2, density=5,
                                   image="synthetic", synthetic_entries=300, big_file_mib=1)
    spec = scalesite.generate_scale_site(tmp_path / "site", params, cache=tmp_path / "cache")
    site = load_site(Settings(root=tmp_path / "site"))
    assert sorted(site.nodes) == spec.nodes() == scalesite.hosts(25)
    overrides = {p.name for p in (tmp_path / "site/var/lib/systemimager/overrides").iterdir()}
    assert set(scalesite.host_override_nodes(params)) <= overrides
    assert len(scalesite.host_override_nodes(params)) == 5
    image = tmp_path / "site/var/lib/systemimager/images/bench"
    assert sum(1 for _ in image.rglob("*")) >= 299
    assert (tmp_path / "site/etc/hosts").read_text().count("\n") == 25


def test_report_states_each_target():
    sys.path.insert(0, str(REPO))
    from bench import report

    samples = {("walk", "onesuite warm", "seconds"): [0.3, 0.2], ("walk", "local warm",
                                                                  "seconds"): [0.1, 0.1]}
    rows = {name: verdict for name, _, verdict in report.targets(samples)}
    assert rows["warm walk ≤ 3× local disk"] == "met"
    assert rows["cold walk ≤ 3× local disk"] == "—"


def test_report_renders_the_storm_against_k():
    sys.path.insert(0, str(REPO))
    from bench import report

    samples = {}
    for server, rate in (("onesuite", 600.0), ("materialized", 1000.0), ("overlayfs", 900.0)):
        for k in (8, 32, 128):
            for metric, value in (("files_per_s", rate * (1 + k / 64)), ("p99_s", k / 10),
                                  ("errors", 0.0), ("MB_per_s", 50.0), ("p50_s", k / 20),
                                  ("server_cpu_s", 1.0)):
                samples[("nfs_storm", f"{server} K={k}", metric)] = [value, value * 1.1,
                                                                     value * 0.9]
    rows = {name: (shown, verdict) for name, shown, verdict in report.targets(samples)}
    name = ("NFS boot storm, K=128: files/s ≥ 0.5× ganesha over materialized roots, "
            "0 errors")
    assert rows[name] == ("0.60×, 0 errors", "met")
    table = report.storm_table(samples)
    assert len(table) == 2 + 9
    assert "| onesuite | 128 |" in table[4] and "0.60×" in table[4]
    # The plot itself needs matplotlib, a bench-only dependency (the `bench` extra): it is
    # drawn by bench/run.py, not here.


def test_synthetic_directories_stop_at_the_limit():
    """The transform family's claim is about the root's size: with a limit, a larger image
    gets more directories, not larger ones; without it the plan is what it always was."""
    from collections import Counter

    histogram = {8: 1.0}
    unlimited = scalesite.plan_synthetic_image(6000, histogram, 1)
    assert scalesite.plan_synthetic_image(6000, histogram, 1, 0) == unlimited
    per_dir = Counter(path.rpartition("/")[0] for path in unlimited if path)
    assert max(per_dir.values()) > 300
    limited = scalesite.plan_synthetic_image(6000, histogram, 1, 300)
    per_dir = Counter(path.rpartition("/")[0] for path in limited if path)
    skeleton = Counter(path.rpartition("/")[0] for path in scalesite.SKELETON)
    assert len(limited) >= 6000
    assert all(count <= 300 + skeleton[parent] + len(scalesite.TOP_LINKS)
               for parent, count in per_dir.items())
    assert sum(e.kind == "dir" for e in limited.values()) > 300
