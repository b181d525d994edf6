"""onesuite export --format iso, booted for real: a QEMU (TCG) guest boots the ISO from its
CD-ROM drive into the node's root (the kernel the image carries, the whole root as its
initramfs) and runs the root's own /sbin/init, which prints node-specific files to the serial
console and powers off. The image is small on purpose: Debian's kernel and a static busybox
from tools/boot_kit.sh (cached), a host override giving the node its hostname."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_onesuite
from transformtools import require

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
BOOT_TIMEOUT = 300  # a TCG boot of this ISO takes seconds; a hang must still end the test
INIT = """#!/bin/sh
/bin/busybox mount -t proc proc /proc
echo "ISO-HOSTNAME $(/bin/busybox cat /etc/hostname)"
echo "ISO-ROOT $(/bin/busybox awk '$2 == "/" {print $3}' /proc/mounts)"
echo "ISO-PID $$"
echo o > /proc/sysrq-trigger
/bin/busybox sleep 30
"""


def boot_kit() -> Path:
    done = subprocess.run(["bash", str(REPO / "tools/boot_kit.sh")], capture_output=True,
                          text=True, timeout=1800, check=False)
    assert done.returncode == 0, f"tools/boot_kit.sh failed:\n{done.stderr}"
    return Path(done.stdout.strip().splitlines()[-1])


def tiny_site(root: Path, kit: Path, *, kernel: bool) -> Path:
    image = root / "var/lib/systemimager/images/tiny"
    for directory in ("bin", "boot", "sbin", "etc", "proc", "sys", "dev"):
        (image / directory).mkdir(parents=True)
    shutil.copy2(kit / "bin/busybox", image / "bin/busybox")
    os.symlink("busybox", image / "bin/sh")
    if kernel:
        shutil.copy2(next((kit / "boot").glob("vmlinuz-*")), image / "boot")
    (image / "sbin/init").write_text(INIT)
    os.chmod(image / "sbin/init", 0o755)
    for host in ("n1", "n2"):
        (root / f"var/lib/systemimager/overrides/{host}/etc").mkdir(parents=True)
        (root / f"var/lib/systemimager/overrides/{host}/etc/hostname").write_text(f"{host}\n")
    config = root / "etc/systemimager"
    (config / "rsync_stubs").mkdir(parents=True)
    (config / "cluster.xml").write_text(
        "<xml><name>all</name><override>all</override><group><name>g</name>"
        "<image>tiny</image><node>n1-n2</node></group></xml>\n")
    (config / "rsync_stubs/40tiny").write_text(
        "[tiny]\n\tpath=/var/lib/systemimager/images/tiny\n\n")
    return root


def test_iso_boots_to_the_nodes_root(tmp_path):
    require("xorriso", "qemu-system-x86_64")
    site = tiny_site(tmp_path / "site", boot_kit(), kernel=True)
    iso = tmp_path / "n2.iso"
    run_onesuite("export", "--root", site, "n2", "--format", "iso",
                 "--append", "console=ttyS0 panic=-1", iso)
    console = tmp_path / "console.log"
    with open(console, "wb") as out:
        status = subprocess.run(
            ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
             "-cdrom", str(iso)], stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, timeout=BOOT_TIMEOUT, check=False).returncode
    lines = console.read_bytes().decode(errors="replace").replace("\r", "").splitlines()
    report = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines
              if line.startswith("ISO-") and " " in line}
    assert status == 0, "\n".join(lines[-30:])
    assert report.get("ISO-HOSTNAME") == "n2", "\n".join(lines[-30:])  # the host override
    assert report.get("ISO-PID") == "1"  # the root's own /sbin/init runs as init
    assert report.get("ISO-ROOT") == "rootfs"  # from RAM: the initramfs is the root


def test_iso_of_a_root_without_kernel_is_refused(tmp_path):
    require("xorriso")
    site = tiny_site(tmp_path / "site", boot_kit(), kernel=False)
    done = run_onesuite("export", "--root", site, "n1", "--format", "iso", tmp_path / "n1.iso",
                        check=False)
    assert done.returncode == 2 and "carries no kernel" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
