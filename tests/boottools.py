"""A tiny bootable site for the export boot tests: Debian's kernel and a static busybox from
tools/boot_kit.sh (cached), a /sbin/init that prints what the test checks to the serial
console and powers off, the initrd a disk-booted root needs, and QEMU booting an image with
the serial console captured, a hard timeout and the guest killed by PID."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GUEST = Path(__file__).resolve().parent / "guest"
OVMF = ("/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd")
BOOT_TIMEOUT = 180  # a TCG boot of these images takes seconds; a hang must still end the test
# The node's own /sbin/init: which host it is (the host override), what its root is, that it
# runs as PID 1, the kernel arguments the bootloader passed.
INIT = """#!/bin/sh
/bin/busybox mount -t proc proc /proc 2>/dev/null
echo "NODE-HOSTNAME $(/bin/busybox cat /etc/hostname)"
echo "NODE-ROOT $(/bin/busybox awk '$2 == "/" {print $1, $3}' /proc/mounts | /bin/busybox tail -1)"
echo "NODE-PID $$"
echo "NODE-CMDLINE $(/bin/busybox cat /proc/cmdline)"
echo o > /proc/sysrq-trigger
/bin/busybox sleep 30
"""
DISK_MODULES = ("virtio_pci", "virtio_blk")


def boot_kit() -> Path:
    done = subprocess.run(["bash", str(REPO / "tools/boot_kit.sh")], capture_output=True,
                          text=True, timeout=1800, check=False)
    assert done.returncode == 0, f"tools/boot_kit.sh failed:\n{done.stderr}"
    return Path(done.stdout.strip().splitlines()[-1])


def module_path(modules: Path, name: str) -> Path:
    for candidate in (f"{name}.ko", f"{name.replace('_', '-')}.ko"):
        found = list(modules.rglob(candidate))
        if found:
            return found[0]
    raise AssertionError(f"kernel module {name} not found under {modules}")


def disk_initrd(kit: Path, work: Path) -> bytes:
    """A gzip'd cpio initramfs: busybox, virtio-blk and its dependencies in load order (from
    each module's .modinfo), tests/guest/disk-init as /init."""
    tree = work / "disk-initrd"
    for d in ("bin", "proc", "sys", "dev", "lib/modules"):
        (tree / d).mkdir(parents=True)
    shutil.copy2(kit / "bin/busybox", tree / "bin/busybox")
    modules = next((kit / "lib/modules").iterdir())
    order: list[str] = []

    def add(name: str) -> None:
        if name in order:
            return
        path = module_path(modules, name)
        for field in path.read_bytes().split(b"\0"):
            if field.startswith(b"depends="):
                for dep in filter(None, field[8:].decode().split(",")):
                    add(dep)
        shutil.copy2(path, tree / "lib/modules" / f"{name}.ko")
        order.append(name)

    for name in DISK_MODULES:
        add(name)
    (tree / "lib/modules/load-order").write_text(" ".join(order) + "\n")
    shutil.copy2(GUEST / "disk-init", tree / "init")
    os.chmod(tree / "init", 0o755)
    listing = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree, input=listing,
                             capture_output=True, check=True).stdout
    shutil.rmtree(tree)
    return gzip.compress(archive, compresslevel=1)


def tiny_site(root: Path, kit: Path, *, kernel: bool, initrd: bool = False) -> Path:
    """A SystemImager site: image 'tiny' (busybox, /sbin/init, the kit's kernel in /boot
    when `kernel`, with /boot/initrd.img-<version> for a disk boot when `initrd`), nodes
    n1 and n2 whose host overrides hold /etc/hostname."""
    image = root / "var/lib/systemimager/images/tiny"
    for directory in ("bin", "boot", "sbin", "etc", "proc", "sys", "dev"):
        (image / directory).mkdir(parents=True)
    shutil.copy2(kit / "bin/busybox", image / "bin/busybox")
    os.symlink("busybox", image / "bin/sh")
    if kernel:
        vmlinuz = next((kit / "boot").glob("vmlinuz-*"))
        shutil.copy2(vmlinuz, image / "boot")
        if initrd:
            version = vmlinuz.name.removeprefix("vmlinuz-")
            (image / f"boot/initrd.img-{version}").write_bytes(disk_initrd(kit, root.parent))
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


def ovmf() -> str | None:
    return next((path for path in OVMF if os.path.isfile(path)), None)


def boot(argv: list[str], console: Path) -> tuple[int, list[str]]:
    """Run a QEMU (TCG) guest until it powers off: its exit status and serial console lines.
    Killed by PID at BOOT_TIMEOUT or if the test is interrupted."""
    with open(console, "wb") as out:
        guest = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
             *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            status = guest.wait(timeout=BOOT_TIMEOUT)
        except subprocess.TimeoutExpired:
            status = -1
        finally:
            if guest.poll() is None:
                guest.kill()
                guest.wait()
    text = console.read_bytes().decode(errors="replace").replace("\r", "")
    return status, text.splitlines()


def report(lines: list[str], prefix: str) -> dict[str, str]:
    """The guest's `PREFIX-KEY value` lines as {KEY: value} (the last of each)."""
    found: dict[str, str] = {}
    for line in lines:
        start = line.find(prefix + "-")
        if start >= 0 and " " in line[start:]:
            key, value = line[start + len(prefix) + 1:].split(" ", 1)
            found[key] = value.strip()
    return found
