"""Diskless boot, for real: a QEMU (TCG) guest with Debian's kernel and an initramfs built here
mounts nodes/<host>/ over NFSv3 from `onesuite serve`, switch_roots into it and runs a program
from the node's root, which prints the node's own files to the serial console and powers off.

The node's root is a real golden image, `debootstrap --variant=minbase` from the configured
Debian mirror (tools/golden_image.sh, cached under /var/cache/onesuite-fs), with a global,
a group and a host override and a oneSIS LINKBACK over it. The kernel and busybox come from
tools/boot_kit.sh (cached too). QEMU runs in the server's network namespace: slirp's 10.0.2.2
is that namespace's loopback, so the node's address there is 127.0.0.1.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import needs_root_fuse
from nfstools import Netns, Serve, require

pytestmark = [needs_root_fuse(), pytest.mark.mount, pytest.mark.nfs, pytest.mark.qemu,
              pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
GUEST = Path(__file__).resolve().parent / "guest"
NODE, OTHER = "diskless01", "diskless02"
REPORT = "/usr/local/sbin/onesuite-report"
CLIENT_MODULES = ("virtio_pci", "virtio_net", "nfsv3", "nfsv4")
BOOT_TIMEOUT = 600  # TCG boots take ~15-60 s; a hang must still end the test


def cached(tool: str) -> Path:
    done = subprocess.run(["bash", str(REPO / "tools" / tool)], capture_output=True, text=True,
                          timeout=1800, check=False)
    assert done.returncode == 0, f"tools/{tool} failed:\n{done.stderr}"
    return Path(done.stdout.strip().splitlines()[-1])


def build_site(root: Path, golden: Path) -> Path:
    """cluster.xml with one group of two nodes, overrides as an admin would write them, and
    what mk-sysimage leaves for `LINKBACK /etc/motd CLASS`."""
    config = root / "etc/systemimager"
    config.mkdir(parents=True)
    (config / "cluster.xml").write_text(
        "<xml><name>all</name><override>all</override>\n"
        "<group><name>compute</name><image>debian</image><override>compute</override>\n"
        f"<node>{NODE}-{OTHER}</node></group></xml>\n")
    overrides = root / "var/lib/systemimager/overrides"
    files = {
        "all/usr/local/sbin/onesuite-report": (GUEST / "onesuite-report").read_text(),
        "all/etc/sysimage.conf": "NODECLASS_MAP diskless01 compute\n"
                                 "NODECLASS_MAP diskless02 io\n"
                                 "LINKBACK /etc/motd CLASS\n",
        "all/etc/motd.default": "motd: default\n",
        "all/etc/motd.compute": "motd: class compute\n",
        "compute/etc/onesuite-group": "group compute override\n",
        f"{NODE}/etc/hostname": f"{NODE}\n",
        f"{OTHER}/etc/hostname": f"{OTHER}\n",
    }
    for rel, text in files.items():
        path = overrides / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    os.symlink("/ram/etc/motd", overrides / "all/etc/motd")  # as mk-sysimage leaves it
    os.chmod(overrides / "all/usr/local/sbin/onesuite-report", 0o755)
    for directory in [root, *root.rglob("*")]:  # a layer's directory modes become the node's
        if directory.is_dir() and not directory.is_symlink():
            os.chmod(directory, 0o755)
    (root / "onesuite.toml").write_text(
        f'[images]\ndebian = "{golden}"\n\n'
        # slirp NATs the guest's reserved source port to an ordinary one on lo; a node on a
        # real network sends from a reserved port and needs no such setting.
        '[nfs]\nprivileged_ports = false\n\n'
        f'[nfs.addresses]\n{NODE} = "127.0.0.1"   # slirp: the guest comes from lo\n'
        f'{OTHER} = "10.255.0.2"\n')
    return root


def module_path(modules: Path, name: str) -> Path:
    for candidate in (f"{name}.ko", f"{name.replace('_', '-')}.ko"):
        found = list(modules.rglob(candidate))
        if found:
            return found[0]
    raise AssertionError(f"kernel module {name} not found under {modules}")


def build_initramfs(kit: Path, work: Path) -> Path:
    """busybox, the NFS client modules in dependency order (read from each module's .modinfo:
    the unpacked .deb has no modules.dep), and tests/guest/init as /init."""
    tree = work / "initramfs"
    for d in ("bin", "proc", "sys", "dev", "lib/modules", "newroot"):
        (tree / d).mkdir(parents=True)
    shutil.copy2(kit / "bin/busybox", tree / "bin/busybox")
    modules = next((kit / "lib/modules").iterdir())
    order: list[str] = []

    def add(name: str) -> None:
        if name in order:
            return
        path = module_path(modules, name)
        info = path.read_bytes().split(b"\0")
        for field in info:
            if field.startswith(b"depends="):
                for dep in filter(None, field[8:].decode().split(",")):
                    add(dep)
        shutil.copy2(path, tree / "lib/modules" / f"{name}.ko")
        order.append(name)

    for name in CLIENT_MODULES:
        add(name)
    (tree / "lib/modules/load-order").write_text(" ".join(order) + "\n")
    shutil.copy2(GUEST / "init", tree / "init")
    os.chmod(tree / "init", 0o755)
    listing = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree, input=listing,
                             capture_output=True, check=True).stdout
    initrd = work / "initrd.gz"
    initrd.write_bytes(gzip.compress(archive, compresslevel=1))
    return initrd


@pytest.fixture(scope="module")
def boot(tmp_path_factory):
    require("qemu-system-x86_64", "cpio", "debootstrap", "ganesha.nfsd", "rpcbind", "nsenter",
            "unshare")
    work = tmp_path_factory.mktemp("boot")
    golden, kit = cached("golden_image.sh"), cached("boot_kit.sh")
    site = build_site(work / "site", golden)
    initrd = build_initramfs(kit, work)
    kernel = next((kit / "boot").glob("vmlinuz-*"))
    mnt = work / "mnt"
    mnt.mkdir()
    ns = Netns("boot")
    server = Serve(ns, site, mnt, work / "state", "--config", str(site / "onesuite.toml"),
                   "--protocols", "3,4", private_run=True, rpcbind=True)
    console = work / "console.log"
    qemu = None
    try:
        server.start()
        append = (f"console=ttyS0 panic=-1 quiet onesuite.node={NODE} onesuite.nfs=3 "
                  f"onesuite.exec={REPORT}")
        started = time.monotonic()
        with open(console, "wb") as out:
            # -no-reboot: the guest's poweroff (or a panic) ends QEMU. TCG: KVM hangs here.
            qemu = subprocess.Popen(
                [*ns.prefix, "qemu-system-x86_64", "-accel", "tcg", "-m", "512",
                 "-nographic", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
                 "-append", append, "-netdev", "user,id=n0",
                 "-device", "virtio-net-pci,netdev=n0"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            try:
                status = qemu.wait(timeout=BOOT_TIMEOUT)
            except subprocess.TimeoutExpired:
                status = None
        seconds = time.monotonic() - started
        lines = console.read_bytes().decode(errors="replace").replace("\r", "").splitlines()
        print(f"diskless boot: {seconds:.1f} s from QEMU start to power-off")
        yield {"status": status, "seconds": seconds, "lines": lines, "console": console,
               "serve_stderr": server.stderr()}
    finally:
        if qemu is not None and qemu.poll() is None:
            qemu.kill()
            qemu.wait(timeout=30)
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
        else:
            server.cleanup()
        ns.delete()


def report(boot: dict, key: str) -> str:
    found = [line.split(" ", 1)[1] if " " in line else "" for line in boot["lines"]
             if line.startswith(f"{key} ") or line == key]
    assert found, (f"no {key} line on the guest console ({boot['console']}):\n"
                   + "\n".join(boot["lines"][-40:]))
    return found[-1]


def test_node_boots_from_its_served_root(boot):
    assert boot["status"] == 0, f"QEMU did not power off cleanly: {boot['status']}"
    assert "GUEST-RESULT FAIL" not in "\n".join(boot["lines"])
    mounted = report(boot, "GUEST-MOUNTED")
    assert mounted.startswith(f"10.0.2.2:/nodes/{NODE} /newroot nfs ") and " ro," in mounted
    assert report(boot, "REPORT-PID") == "1"  # the node's program runs as init
    assert report(boot, "REPORT-ROOT") == f"10.0.2.2:/nodes/{NODE} nfs"
    assert report(boot, "REPORT-OS").startswith("Debian GNU/Linux 12")  # the golden image


def test_node_sees_its_host_and_group_overrides(boot):
    assert report(boot, "REPORT-HOSTNAME") == NODE  # host override, set with its hostname(1)
    assert report(boot, "REPORT-GROUP-FILE") == "group compute override"


def test_node_sees_its_linkback_class_variant(boot):
    # LINKBACK /etc/motd CLASS in the node's sysimage.conf: its class is compute.
    assert report(boot, "REPORT-LINKBACK") == "motd: class compute"
