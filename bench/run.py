#!/usr/bin/env python3
"""onesuite-fs benchmarks: one command measures every family on this machine and writes a CSV
(bench/results/) and docs/benchmarks.md with a PNG plot. Needs root (mounts, drop_caches,
network namespaces). Results are measured, never asserted: tests only run --dry-run.

families (each figure is the median of --runs runs, min and max shown):
  walk     find + stat of every entry of one node's root, cold (fresh mount, caches dropped),
           warm (second walk) and third: onesuite-fs vs the root materialized on local disk
           (rsync, as SystemImager builds it) vs a read-only kernel overlayfs of the same layers
           vs the FUSE peers fuse-overlayfs and mergerfs stacking the same layers
  scale    for N = 10, 100, 1,000, 10,000 nodes: `onesuite mount` start time, daemon RSS
           after start, LOOKUP+GETATTR requests per second on 20 sampled nodes, and (largest
           N) RSS after walking 100 different nodes
  copying  time and disk to materialize N roots with rsync (N = 10, 100) vs mounting N
  reads    sequential read of a 100 MiB file, cold and warm, onesuite-fs vs local disk; the
           daemon's read counter shows whether the warm re-read came from the page cache
  storm    32 concurrent walkers, each reading a boot set (/etc, /usr/lib/systemd, shared
           libraries) of a different node, cold: reads/s, p50/p99 latency, errors; onesuite-fs
           vs one kernel overlayfs per node
  nfs      nfs-ganesha (NFSv4, in a network namespace): first and second full listing
           (nfs-ls -R) and the boot set read (libnfs), serving onesuite-fs (`onesuite serve`)
           vs serving the materialized root
  nfs_storm  boot storm over NFSv3: K = 8, 32, 128 clients at once, each replaying a recorded
           systemd boot (bench/data/boot-trace.json) from its own address to its own export:
           files/s, MB/s, p50/p99 time to finish, server CPU, errors; onesuite serve vs
           ganesha over K materialized roots vs ganesha over K kernel overlayfs mounts, and
           onesuite serve --workers 1 vs 2 at K=32 when the daemon has that option
  transform  `onesuite export` (tar, cpio, squashfs, raw) of one node, `convert to-onesis` of 4
           nodes and `convert to-systemimager` of that image back, for roots of 5,000, 50,000
           and 200,000 entries: wall time and the command's maximum RSS (memory must not grow
           with the root)

Sites come from tools/scalesite.py and are cached under /var/tmp/onesuite-bench (a 10,000-node
site takes about a second to generate; the debootstrap image is built once by
tools/golden_image.sh). --quick runs a reduced set in under 2 minutes and prints the headline
ratios as its last line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (  # noqa: E402
    copying,
    nfs,
    nfs_storm,
    reads,
    report,
    scale,
    storm,
    transform,
    walk,
)
from bench.common import REPO, Config, Recorder, machine  # noqa: E402

FAMILIES = {"walk": walk, "scale": scale, "copying": copying, "reads": reads, "storm": storm,
            "nfs": nfs, "nfs_storm": nfs_storm, "transform": transform}
RESULTS = REPO / "bench" / "results"


def make_config(args: argparse.Namespace) -> Config:
    families = tuple(args.only.split(",")) if args.only else (
        ("walk", "scale", "reads", "storm") if args.quick else tuple(FAMILIES))
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise SystemExit(f"bench: unknown families {', '.join(sorted(unknown))}")
    if args.quick:
        return Config(quick=True, runs=args.runs or 2, image=args.image,
                      scale_nodes=(10, 10000), copy_nodes=(10,), storm_walkers=8,
                      walk_nodes_for_rss=10, families=families, storm_clients=(8,))
    return Config(quick=False, runs=args.runs or 5, image=args.image,
                  scale_nodes=(10, 100, 1000, 10000), copy_nodes=(10, 100), storm_walkers=32,
                  walk_nodes_for_rss=100, families=families)


def earlier_rows(path: Path, measured: tuple[str, ...]) -> list[list[str]]:
    """The rows of an earlier CSV for the families not measured now: --only re-measures
    some families and keeps the others' results."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [row for row in rows if row[0] not in (*measured, "machine")]


def write_csv(path: Path, rec: Recorder, meta: dict[str, str],
              kept: list[list[str]] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".partial")
    with open(temp, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["family", "case", "metric", "run", "value", "extra"])
        writer.writerow(["machine", "", "", "", "", json.dumps(meta, sort_keys=True)])
        writer.writerows(kept or [])
        for s in rec.samples:
            writer.writerow([s.family, s.case, s.metric, s.run, f"{s.value:.6g}",
                             json.dumps(s.extra, sort_keys=True) if s.extra else ""])
    os.replace(temp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a reduced run (< 2 min): fewer runs and sizes, no copying/NFS")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (families, sizes, runs) and exit: no mount, no "
                             "root needed")
    parser.add_argument("--only", metavar="FAMILIES",
                        help="comma-separated families to run (default: all); the CSV keeps "
                             "the other families' earlier results")
    parser.add_argument("--runs", type=int, help="runs per figure (default 5; quick 2)")
    parser.add_argument("--image", choices=("debootstrap", "synthetic"),
                        default="debootstrap",
                        help="the golden image of every site (default debootstrap minbase)")
    parser.add_argument("--out", type=Path, help="the report (default docs/benchmarks.md; "
                                                 "--quick: none unless given)")
    parser.add_argument("--csv", type=Path, help="the CSV (default bench/results/"
                                                 "benchmarks.csv, quick.csv with --quick)")
    parser.add_argument("--report-only", action="store_true",
                        help="regenerate the report and plot from an existing CSV")
    args = parser.parse_args(argv)
    config = make_config(args)
    csv_path = args.csv or RESULTS / ("quick.csv" if args.quick else "benchmarks.csv")
    out = args.out or (None if args.quick else REPO / "docs" / "benchmarks.md")
    if args.dry_run:
        print(json.dumps({"config": vars(config), "csv": str(csv_path),
                          "report": str(out) if out else None}, default=str, indent=2))
        return 0
    if args.report_only:
        if out is None:
            parser.error("--report-only needs --out with --quick")
        report.write(csv_path, out)
        print(report.headline(report.load(csv_path)[1]))
        return 0
    if os.geteuid() != 0:
        parser.error("benchmarks need root (mounts, drop_caches, network namespaces)")
    rec = Recorder()
    kept = earlier_rows(csv_path, config.families) if args.only else []
    started = time.monotonic()
    try:
        for name in config.families:
            FAMILIES[name].run(config, rec)
    finally:  # what was measured is kept even when a later family fails
        meta = {**machine(), "runs": str(config.runs), "quick": str(config.quick),
                "image": config.image, "date": time.strftime("%Y-%m-%d %H:%M"),
                "wall_seconds": f"{time.monotonic() - started:.0f}"}
        write_csv(csv_path, rec, meta, kept)
    if out is not None:
        report.write(csv_path, out)
    print(f"bench: {len(rec.samples)} samples in {time.monotonic() - started:.0f} s -> "
          f"{csv_path}" + (f", {out}" if out else ""), file=sys.stderr)
    print(report.headline(report.load(csv_path)[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
