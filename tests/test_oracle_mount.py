"""The definition of correct: for random SystemImager servers, every node's mounted root
equals, entry for entry, the root real rsync builds the way SystemImager does (tests/oracle.py,
independent of onesuite_fs), for all three override orders."""

from __future__ import annotations

import oracle
import pytest
import sitegen
from conftest import needs_root_fuse

pytestmark = [needs_root_fuse(), pytest.mark.mount]

SEEDS = range(12)
OURS = ("user.onesuite.", "trusted.onesuite.")  # provenance the mount adds


@pytest.mark.parametrize("seed", SEEDS)
def test_mounted_roots_equal_rsync_built_roots(seed, tmp_path, mount_site):
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    for order in oracle.ORDERS:
        mount = mount_site(spec.prefix, "--override-order", order, name=f"mnt-{order}")
        for host in spec.nodes():
            built = tmp_path / "oracle" / order / host
            oracle.build_root_with_rsync(spec, host, order, built)
            mounted = oracle.snapshot(mount.node(host), ignore_xattr_prefixes=OURS)
            differences = oracle.compare(oracle.snapshot(built), mounted)
            assert not differences, (
                f"seed {seed}, {order}, {host}:\n" + "\n".join(differences))
        mount.stop()


INSTALL_SEEDS = range(4)


@pytest.mark.parametrize("seed", INSTALL_SEEDS)
def test_install_fidelity_equals_what_systemimager_installs(seed, tmp_path, mount_site):
    """--fidelity install against rsync with SystemImager 4.3's own flags: no -X (no xattr
    survives), no -I for autoinstall's overrides (a file of the same size and mtime keeps the
    lower bytes under the override's mode and owner)."""
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    for order in oracle.ORDERS:
        mount = mount_site(spec.prefix, "--override-order", order, "--fidelity", "install",
                           name=f"mnt-{order}")
        for host in spec.nodes():
            built = tmp_path / "oracle" / order / host
            oracle.build_root_with_rsync(spec, host, order, built, "install")
            mounted = oracle.snapshot(mount.node(host), ignore_xattr_prefixes=OURS)
            differences = oracle.compare(oracle.snapshot(built), mounted)
            assert not differences, (
                f"seed {seed}, {order}, {host}:\n" + "\n".join(differences))
        mount.stop()


def test_the_generated_sites_exercise_quick_checks_and_xattrs(tmp_path):
    """The intent oracle (-I) and the install oracle (SystemImager's flags) build different
    roots for these sites: the comparisons above test both behaviours, not one."""
    differ = 0
    for seed in INSTALL_SEEDS:
        spec = sitegen.generate_random_site(tmp_path / f"s{seed}", seed)
        assert spec.quick_checks
        host = spec.nodes()[0]
        roots = {}
        for fidelity in oracle.FIDELITIES:
            oracle.build_root_with_rsync(spec, host, "autoinstall",
                                         tmp_path / f"{seed}-{fidelity}", fidelity)
            roots[fidelity] = oracle.snapshot(tmp_path / f"{seed}-{fidelity}")
        lines = oracle.compare(roots["intent"], roots["install"], limit=10_000)
        differ += any("sha256" in line for line in lines)
        assert any("xattrs" in line for line in lines), seed
    assert differ == len(INSTALL_SEEDS)


def test_the_generated_sites_exercise_type_conflicts(tmp_path):
    kinds = set()
    for seed in SEEDS:
        spec = sitegen.generate_random_site(tmp_path / f"s{seed}", seed)
        kinds |= {conflict.kind for conflict in spec.conflicts}
    assert len(kinds) >= 5, kinds  # the oracle test above is only as good as its inputs
