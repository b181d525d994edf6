"""onesuite export --format iso of a root that cannot boot: refused before anything is
written. The ISO booted for real, four ways (BIOS and UEFI, CD and USB stick), is in
test_boot_media.py."""

from __future__ import annotations

import pytest
from boottools import boot_kit, tiny_site
from conftest import run_onesuite
from transformtools import require

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


def test_iso_of_a_root_without_kernel_is_refused(tmp_path):
    require("xorriso")
    site = tiny_site(tmp_path / "site", boot_kit(), kernel=False)
    done = run_onesuite("export", "--root", site, "n1", "--format", "iso", tmp_path / "n1.iso",
                        check=False)
    assert done.returncode == 2 and "carries no kernel" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


@pytest.mark.parametrize("fmt, option, what", [("iso", "--kernel", "kernel"),
                                               ("raw", "--kernel", "kernel"),
                                               ("raw", "--initrd", "initrd")])
def test_a_named_kernel_or_initrd_that_the_root_lacks_is_refused(tmp_path, fmt, option, what):
    """`--kernel`/`--initrd` name a file in the node's root: a path the root does not have
    (or that is a directory) is refused with the path, before anything is written."""
    require("xorriso")
    site = tiny_site(tmp_path / "site", boot_kit(), kernel=True)
    for wanted in ("/boot/nosuch", "/boot"):
        done = run_onesuite("export", "--root", site, "n1", "--format", fmt, option, wanted,
                            tmp_path / f"n1.{fmt}", check=False)
        assert done.returncode == 2, done.stderr
        assert f"n1's root has no {what} file at {wanted}" in done.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
