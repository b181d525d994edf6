"""onesuite convert to-systemimager: the round trip through real mounts, and bad input.

For a oneSIS image, every node's root as onesuite-fs serves it from the image (served as a
one-image site listing the nodes) must equal, entry for entry (oracle.compare), the root
onesuite-fs serves it from the converted SystemImager site: with the oneSIS rules (the
image's sysimage.conf is still there, and applying the rules again changes nothing), without
them (--no-onesis), and in the pushoverrides order. The images are the hand-written
`onesis_site` fixture and oneSIS images that `convert to-onesis` made from random sites.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import oracle
import pytest
import sitegen
from conftest import ONESUITE, needs_root_fuse, run_onesuite
from sitetools import onesis_site
from transformtools import OURS, serving_site, start_interruptible

from onesuite_fs.sources.cluster_xml import parse_cluster_xml
from onesuite_fs.sources.hostrange import expand_range_list
from onesuite_fs.transform.to_systemimager import host_ranges, read_nodes_file


def convert(image_dir: Path, hosts: list[str], out: Path, *extra: str):
    nodes = out.parent / f"{out.name}.nodes"
    nodes.write_text("# the nodes\n" + "\n".join(hosts) + "\n")
    return run_onesuite("convert", "to-systemimager", image_dir, "--nodes", nodes, out, *extra,
                        "--no-progress", check=False)


def round_trip(tmp_path: Path, mount_site, image_dir: Path, hosts: list[str]) -> None:
    out = tmp_path / "si"
    done = convert(image_dir, hosts, out)
    assert done.returncode == 0, done.stderr
    served = serving_site(tmp_path / "served", "img", image_dir, hosts)
    # Entries no layer has (the /ram mount point) carry the topology's time; the conversion
    # takes the oneSIS image's, its sysimage.conf's.
    conf_ns = (image_dir / "etc/sysimage.conf").stat().st_mtime_ns
    os.utime(served / "etc/systemimager/cluster.xml", ns=(conf_ns, conf_ns))
    original = mount_site(served, "--config", str(served / "onesuite.toml"), name="mnt-onesis")
    converted = {"default": mount_site(out, name="mnt-si"),
                 "no-onesis": mount_site(out, "--no-onesis", name="mnt-plain"),
                 "pushoverrides": mount_site(out, "--override-order", "pushoverrides",
                                             name="mnt-push")}
    for host in hosts:
        want = oracle.snapshot(original.node(host), ignore_xattr_prefixes=OURS)
        for how, mount in converted.items():
            got = oracle.snapshot(mount.node(host), ignore_xattr_prefixes=OURS)
            differences = oracle.compare(want, got)
            assert not differences, f"{how}, {host}:\n" + "\n".join(differences)


@needs_root_fuse()
@pytest.mark.mount
@pytest.mark.parametrize("hosts", [["login1", "n1", "n2", "n3"], ["n1", "n3"]])
def test_round_trip_onesis_fixture(tmp_path, mount_site, hosts):
    site = onesis_site(tmp_path / "site")
    round_trip(tmp_path, mount_site, site / "var/lib/systemimager/images/img", hosts)


@needs_root_fuse()
@pytest.mark.mount
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_round_trip_from_random_sites(seed, tmp_path, mount_site):
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    image = Counter(spec.image_of(h) for h in spec.nodes()).most_common(1)[0][0]
    hosts = sorted(h for h in spec.nodes() if spec.image_of(h) == image)
    onesis = tmp_path / "img"
    run_onesuite("convert", "to-onesis", "--root", spec.prefix, "--image", image, onesis)
    round_trip(tmp_path, mount_site, onesis, hosts)


# ----- the layers and names --------------------------------------------------------------
def test_layers_hold_what_is_shared(tmp_path):
    site = onesis_site(tmp_path / "site")
    out = tmp_path / "si"
    done = convert(site / "var/lib/systemimager/images/img", ["login1", "n1", "n2", "n3"], out)
    assert done.returncode == 0, done.stderr
    image = out / "var/lib/systemimager/images/img"
    overrides = out / "var/lib/systemimager/overrides"
    # The image has the .default variant's value where nodes differ.
    assert (image / "etc/fstab").read_text() == "fstab: default\n"
    # The class override has what its members share beyond the image; n1's own fstab is in
    # its host override; n3 (class compute.gpu) needs no host override.
    assert (overrides / "compute/etc/fstab").read_text() == "fstab: class compute\n"
    assert (overrides / "n1/etc/fstab").read_text() == "fstab: node n1\n"
    assert not (overrides / "n3").exists()
    # A path only some nodes have is never in the image (overrides cannot delete).
    assert not (image / "etc/init.d/smartd").exists()
    assert (overrides / "compute.gpu/etc/init.d/smartd").is_file()
    # RAM/LINK paths are the links into /ram the served roots show.
    assert os.readlink(image / "var/log") == "/ram/var/log"
    cluster = parse_cluster_xml(out / "etc/systemimager/cluster.xml")
    assert [(g.name, g.overrides, g.nodes) for g in cluster.groups] == [
        ("compute", ("compute",), ("n1", "n2")), ("compute.gpu", ("compute.gpu",), ("n3",)),
        ("login", ("login",), ("login1",))]
    assert cluster.global_overrides == ("all",)
    assert (out / "var/lib/systemimager/scripts/cluster.txt").read_text().count(":img:") == 4
    assert "wrote the SystemImager site" in done.stdout


def test_host_ranges_round_trip():
    cases = [["n1", "n2", "n3"], ["node001", "node002", "node010"], ["a-1", "a-2", "b"],
             ["rack1-n01", "rack1-n02", "x.y"], ["n1.dom", "n2.dom"], ["node9", "node10"]]
    for hosts in cases:
        assert expand_range_list(host_ranges(hosts)) == sorted(hosts), hosts
    assert host_ranges(["node001", "node002", "node003", "login"]) == "node001-node003,login"


def test_nodes_file(tmp_path):
    nodes = tmp_path / "nodes"
    nodes.write_text("# rack 1\nnode001-node003  # three\nlogin1, node003\n\n")
    assert read_nodes_file(nodes) == ["login1", "node001", "node002", "node003"]


# ----- bad input: clear errors, nothing written --------------------------------------------
def test_refusals(tmp_path):
    site = onesis_site(tmp_path / "site")
    image = site / "var/lib/systemimager/images/img"
    out = tmp_path / "si"
    out.mkdir()
    (out / "keep").write_text("x")
    done = convert(image, ["n1"], out)
    assert done.returncode == 2 and "not empty" in done.stderr
    assert [p.name for p in out.iterdir()] == ["keep"]
    done = convert(image, ["n1", "nosuchnode"], tmp_path / "si2")
    assert done.returncode == 2 and "nosuchnode" in done.stderr
    assert "--allow-unclassified" in done.stderr
    assert not (tmp_path / "si2").exists()
    done = convert(tmp_path / "site", ["n1"], tmp_path / "si3")
    assert done.returncode == 2 and "not a oneSIS image" in done.stderr
    (tmp_path / "empty").write_text("# nobody\n")
    done = run_onesuite("convert", "to-systemimager", image, "--nodes", tmp_path / "empty",
                        tmp_path / "si4", check=False)
    assert done.returncode == 2 and "names no node" in done.stderr
    assert not any(p.name.startswith(".si") for p in tmp_path.iterdir())


def test_force_and_unclassified(tmp_path):
    site = onesis_site(tmp_path / "site")
    image = site / "var/lib/systemimager/images/img"
    # A node of no class: its LINKBACK to /opt/conf/$CLASS/... falls back to .default.
    done = convert(image, ["n1", "other"], tmp_path / "unclassified", "--allow-unclassified")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "si"
    out.mkdir()
    (out / "old").write_text("x")
    done = convert(image, ["n1", "other"], out, "--force", "--allow-unclassified")
    assert done.returncode == 0, done.stderr
    assert not (out / "old").exists()
    cluster = parse_cluster_xml(out / "etc/systemimager/cluster.xml")
    assert {g.name: g.nodes for g in cluster.groups} == {"compute": ("n1",),
                                                          "unclassified": ("other",)}


def test_not_enough_space(tmp_path):
    """A file system too small for one node's root: refused before anything is written."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    site = onesis_site(tmp_path / "site")
    image = site / "var/lib/systemimager/images/img"
    small = tmp_path / "small"
    small.mkdir()
    assert os.system(f"mount -t tmpfs -o size=16k tmpfs {small}") == 0
    try:
        done = convert(image, ["n1", "n2"], small / "si")
        assert done.returncode == 2 and "not enough space" in done.stderr
        assert list(small.iterdir()) == [small / "si.nodes"]
    finally:
        os.system(f"umount {small}")


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_run_leaves_nothing_that_looks_finished(tmp_path, how):
    """Ctrl-C or kill removes the partial tree; even SIGKILL leaves only the hidden partial
    name."""
    site = onesis_site(tmp_path / "site")
    image = site / "var/lib/systemimager/images/img"
    with open(image / "big", "wb") as big:
        big.truncate(2 << 30)  # sparse in the image; copying it takes a while
    (tmp_path / "nodes").write_text("n1-n3\n")
    out = tmp_path / "si"
    proc = start_interruptible([*ONESUITE, "convert", "to-systemimager", str(image),
                                "--nodes", str(tmp_path / "nodes"), str(out)])
    try:
        while proc.poll() is None and not (out.parent / f".si.onesuite-partial.{proc.pid}"
                                           / "var/lib/systemimager/images/img/big").exists():
            time.sleep(0.01)
        assert proc.poll() is None, "the conversion finished before it could be interrupted"
        proc.send_signal(how)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not out.exists()
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".si")]
    assert left == ([] if how != signal.SIGKILL else [f".si.onesuite-partial.{proc.pid}"])
    assert proc.returncode == (128 + how if how != signal.SIGKILL else -how)
