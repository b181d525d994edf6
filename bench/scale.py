"""Scale: for N nodes (10 to 10,000), `onesuite mount` start time, the daemon's RSS after
start, the lookup+getattr rate on sampled nodes, and the RSS after walking 100 nodes.

The rate is the daemon's own count of LOOKUP and GETATTR requests (its stats xattr) over the
wall time of lstat-ing a fixed path set in each sampled node: every node's directories are
distinct kernel inodes, so each sampled node costs real requests, never the kernel's cache.
"""

from __future__ import annotations

import os
import time

from .common import Config, OnesuiteMount, Recorder, boot_set, find_stat, hosts, workdir

FAMILY = "scale"
SAMPLED_NODES = 20


def stat_paths(image_paths: list[str]) -> list[str]:
    """The boot set plus every directory on the way: what a booting node looks up."""
    paths: dict[str, None] = {}
    for rel in image_paths:
        parts = rel.split("/")
        for depth in range(1, len(parts) + 1):
            paths.setdefault("/".join(parts[:depth]), None)
    return list(paths)


def lookup_rate(mount: OnesuiteMount, nodes: list[str], paths: list[str]) -> tuple[float, int]:
    """(requests per second, requests) for lstat of `paths` in each of `nodes`."""
    before = mount.stats()
    start = time.perf_counter()
    for host in nodes:
        root = f"{mount.mountpoint}/nodes/{host}/"
        for rel in paths:
            os.lstat(root + rel)
    elapsed = time.perf_counter() - start
    after = mount.stats()
    ops = sum(after.get(k, 0) - before.get(k, 0) for k in ("lookup", "getattr"))
    return ops / elapsed, ops


def sampled(all_hosts: list[str], count: int) -> list[str]:
    step = max(1, len(all_hosts) // count)
    return all_hosts[::step][:count]


def run(config: Config, rec: Recorder) -> None:
    for nodes in config.scale_nodes:
        prefix, spec = config.site(nodes)
        paths = stat_paths(boot_set(spec.images["bench"]))
        names = hosts(nodes)
        sample = sampled(names, SAMPLED_NODES)
        walk_count = min(config.walk_nodes_for_rss, nodes)
        walk_rss = walk_count and nodes == max(config.scale_nodes)
        case = f"N={nodes}"
        with workdir("scale") as work:
            for number in range(config.runs):
                rec.say(f"scale: {case} run {number + 1}/{config.runs}")
                with OnesuiteMount(prefix, work / "mnt") as mount:
                    rec.add(FAMILY, case, "mount_seconds", mount.start_seconds, number)
                    rec.add(FAMILY, case, "rss_start_mib", mount.rss_mib(), number)
                    rate, ops = lookup_rate(mount, sample, paths)
                    rec.add(FAMILY, case, "lookup_getattr_per_s", rate, number, ops=ops,
                            nodes=len(sample))
                    if walk_rss:
                        # Different nodes, spread over the site: their shared directories
                        # are merged once, their own ones each time.
                        for host in sampled(names, walk_count):
                            find_stat(mount.mountpoint / "nodes" / host)
                        rec.add(FAMILY, case, f"rss_after_{walk_count}_walks_mib",
                                mount.rss_mib(), number)
