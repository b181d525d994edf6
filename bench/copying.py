"""Against copying: the time and disk to materialize N roots the SystemImager way (rsync the
image, then each override, as si_getimage/autoinstall lay them), against mounting N nodes.

Roots are built one after the other on this machine's disk, with the image already in the page
cache: copying at its best (a real install also pulls every root over the network). The
mount's extra disk is nothing: it reads the server's tree in place.
"""

from __future__ import annotations

import shutil

from .common import Config, OnesuiteMount, Recorder, disk_kib, hosts, materialize, timed, workdir

FAMILY = "copying"
SOURCE_NODES = 1000  # roots are taken from this site, skipping node 1 (it holds a 100 MiB file)


def run(config: Config, rec: Recorder) -> None:
    _, source = config.site(max(SOURCE_NODES, max(config.copy_nodes) + 1))
    for nodes in config.copy_nodes:
        prefix, _ = config.site(nodes)
        chosen = hosts(SOURCE_NODES)[1:nodes + 1]
        case = f"N={nodes}"
        with workdir("copying") as work:
            for number in range(config.runs):
                rec.say(f"copying: {case} run {number + 1}/{config.runs}")
                roots = work / "roots"
                seconds = timed(lambda r=roots, c=chosen: [materialize(source, h, r / h)
                                                           for h in c])
                rec.add(FAMILY, f"rsync {case}", "seconds", seconds, number)
                rec.add(FAMILY, f"rsync {case}", "disk_mib", disk_kib(roots) / 1024, number)
                shutil.rmtree(roots)
                with OnesuiteMount(prefix, work / "mnt") as mount:
                    rec.add(FAMILY, f"onesuite {case}", "seconds", mount.start_seconds, number)
                    rec.add(FAMILY, f"onesuite {case}", "disk_mib", 0.0, number)
                    rec.add(FAMILY, f"onesuite {case}", "rss_mib", mount.rss_mib(), number)
