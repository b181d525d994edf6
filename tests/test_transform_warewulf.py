"""onesuite convert to-warewulf / from-warewulf: round trips through real mounts. Every
node's root as onesuite-fs serves it from the original site equals, entry for entry
(oracle.compare), its root served from the converted one: Warewulf -> SystemImager (the
templates rendered into files), random SystemImager sites -> Warewulf, and back again."""

from __future__ import annotations

from collections import Counter

import oracle
import pytest
import sitegen
from conftest import needs_root_fuse, run_onesuite
from transformtools import OURS
from warewulftools import make_warewulf_site, write, write_config

pytestmark = [needs_root_fuse(), pytest.mark.mount]


def assert_same_roots(original, converted, hosts: list[str]) -> None:
    for host in hosts:
        want = oracle.snapshot(original.node(host), ignore_xattr_prefixes=OURS)
        got = oracle.snapshot(converted.node(host), ignore_xattr_prefixes=OURS)
        differences = oracle.compare(want, got)
        assert not differences, f"{host}:\n" + "\n".join(differences)


def test_warewulf_to_systemimager_and_back(tmp_path, mount_site):
    root = make_warewulf_site(tmp_path / "ww")
    config = write_config(root, tmp_path / "cache")
    hosts = ["n1", "n2", "n3"]
    si = tmp_path / "si"
    run_onesuite("convert", "from-warewulf", "--config", config, si, "--no-progress")
    original = mount_site(tmp_path, "--config", str(config), name="mnt-ww")
    converted = mount_site(si, name="mnt-si")
    assert_same_roots(original, converted, hosts)
    assert (converted.node("n2") / "etc/motd").read_text() == "site motd for n2\n"
    back = tmp_path / "ww-again"
    run_onesuite("convert", "to-warewulf", "--root", si, back, "--no-progress")
    nodes_conf = (back / "etc/warewulf/nodes.conf").read_text()
    assert "nodeprofiles:\n  default:\n    image name: rocky9\n" in nodes_conf
    again = mount_site(tmp_path, "--config", str(write_config(back, tmp_path / "cache2")),
                       name="mnt-ww-again")
    assert_same_roots(original, again, hosts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_systemimager_sites_to_warewulf(seed, tmp_path, mount_site):
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    image = Counter(spec.image_of(h) for h in spec.nodes()).most_common(1)[0][0]
    hosts = sorted(h for h in spec.nodes() if spec.image_of(h) == image)
    out = tmp_path / "ww"
    done = run_onesuite("convert", "to-warewulf", "--root", spec.prefix, "--image", image,
                        out, "--no-progress")
    assert f"for {len(hosts)} nodes" in done.stdout
    original = mount_site(spec.prefix, name="mnt-si")
    converted = mount_site(tmp_path, "--config", str(write_config(out, tmp_path / "cache")),
                           name="mnt-ww")
    assert_same_roots(original, converted, hosts)


def test_a_ww_file_in_a_layer_is_refused(tmp_path):
    root = make_warewulf_site(tmp_path / "ww")
    write(root / "var/lib/warewulf/overlays/site-motd/rootfs/etc/keep.ww.ww", "{{ .Id }}")
    config = write_config(root, tmp_path / "cache")
    si = tmp_path / "si"
    run_onesuite("convert", "from-warewulf", "--config", config, si, "--no-progress")
    done = run_onesuite("convert", "to-warewulf", "--root", si, tmp_path / "back",
                        "--no-progress", check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "renders every file ending in .ww" in done.stderr
    assert not (tmp_path / "back").exists()


def test_from_warewulf_needs_a_warewulf_site(tmp_path):
    done = run_onesuite("convert", "from-warewulf", "--root", tmp_path, tmp_path / "out",
                        check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--warewulf-root" in done.stderr
