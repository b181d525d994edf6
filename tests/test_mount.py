"""Real FUSE mounts of the bundled example site through the real CLI."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
from conftest import needs_root_fuse, run_onesuite
from fhandle import drop_caches, name_to_handle, open_by_handle

pytestmark = [needs_root_fuse(), pytest.mark.mount]

ORIGIN = "user.onesuite.origin"
TRUSTED_ORIGIN = "trusted.onesuite.origin"  # the kernel allows user.* on files and dirs only


def walk(root: Path) -> dict[str, os.stat_result]:
    found = {"/": os.lstat(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            found["/" + os.path.relpath(full, root)] = os.lstat(full)
    return found


def test_namespaces_and_per_node_content(example_site, mount_site):
    mnt = mount_site(example_site).mountpoint
    assert sorted(os.listdir(mnt)) == ["groups", "images", "nodes"]
    assert sorted(os.listdir(mnt / "groups")) == ["Compute", "GPU", "Login"]
    assert os.listdir(mnt / "images") == ["rocky9"]
    assert len(os.listdir(mnt / "nodes")) == 10
    assert (mnt / "nodes/node001/etc/hostname").read_text() == "node001\n"
    assert (mnt / "nodes/node002/etc/hostname").read_text() == "golden\n"
    assert "LOGIN" in (mnt / "nodes/login01/etc/motd").read_text()
    assert "GPU" in (mnt / "nodes/node007/etc/motd").read_text()  # GPU (15) beats Compute (20)
    assert (mnt / "groups/Compute/etc/hostname").read_text() == "golden\n"
    assert "compute" in (mnt / "groups/Compute/etc/fstab").read_text()
    assert "golden image" in (mnt / "images/rocky9/etc/fstab").read_text()
    # The example's sysimage.conf: /etc/issue by class, compute.gpu falling back to compute.
    assert "login node" in (mnt / "nodes/login01/etc/issue").read_text()
    assert "compute node" in (mnt / "nodes/node007/etc/issue").read_text()
    assert not (mnt / "groups/Login/etc/issue").exists()  # groups have no oneSIS rules


def test_every_file_type_owner_mode_and_link(example_site, mount_site):
    node = mount_site(example_site).node("node001")
    passwd = os.lstat(node / "usr/bin/passwd")
    assert stat.S_IMODE(passwd.st_mode) == 0o4755 and passwd.st_uid == 0
    assert stat.S_IMODE(os.lstat(node / "tmp").st_mode) == 0o1777
    assert stat.S_ISFIFO(os.lstat(node / "run/initctl").st_mode)
    chrony = os.lstat(node / "etc/chrony.conf")
    assert (chrony.st_uid, chrony.st_gid, stat.S_IMODE(chrony.st_mode)) == (0, 996, 0o640)
    # Symlinks are returned as they are, never followed on the server.
    assert os.readlink(node / "etc/mtab") == "/proc/self/mounts"
    assert os.readlink(node / "bin") == "usr/bin"
    assert os.readlink(node / "usr/lib64/os-release") == "../../etc/os-release"
    # Hard links inside the image: one inode per path (numbers come from the layer and the
    # path, the same on every server: docs/nfs.md), with the backing file's link count.
    vi, view = os.lstat(node / "usr/bin/vi"), os.lstat(node / "usr/bin/view")
    assert vi.st_ino != view.st_ino and vi.st_nlink == view.st_nlink == 2
    assert (node / "usr/bin/vi").read_bytes() == (node / "usr/bin/view").read_bytes()
    assert os.lstat(node / "etc/ssh").st_gid == 0  # compute nodes do not get login's ssh dir
    ssh = os.lstat(mount_site_login(node) / "etc/ssh")
    assert (stat.S_IMODE(ssh.st_mode), ssh.st_gid) == (0o750, 74)  # the override's dir wins


def mount_site_login(node: Path) -> Path:
    return node.parent / "login01"


def test_xattrs_pass_through_and_origin_on_every_entry(example_site, mount_site):
    mnt = mount_site(example_site).mountpoint
    node = mnt / "nodes/node001"
    chronyd = node / "usr/sbin/chronyd"
    assert os.getxattr(chronyd, "security.capability") == bytes.fromhex(
        "0100000200040002000000000000000000000000")
    assert os.getxattr(node / "usr/bin/passwd", "user.example.note") == b"setuid"
    assert os.getxattr(node / "etc/hostname", ORIGIN) == b"override:node001 /etc/hostname"
    assert os.getxattr(node / "etc/fstab", ORIGIN) == b"override:compute /etc/fstab"
    assert os.getxattr(node / "etc", ORIGIN) == b"override:node001 /etc"
    assert os.getxattr(node / "usr", ORIGIN) == b"image:rocky9 /usr"
    assert os.getxattr(node / "bin", TRUSTED_ORIGIN, follow_symlinks=False) == (
        b"image:rocky9 /bin")
    for path, st in walk(node).items():
        name = ORIGIN if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) else TRUSTED_ORIGIN
        value = os.getxattr(str(node) + path, name, follow_symlinks=False).decode()
        assert value == os.getxattr(str(node) + path, TRUSTED_ORIGIN,
                                    follow_symlinks=False).decode()
        layer, where = value.split(" ", 1)
        assert layer.split(":")[0] in ("image", "override") and where.startswith("/")
    with pytest.raises(OSError) as err:
        os.getxattr(node / "etc/hostname", "user.nonexistent")
    assert err.value.errno == errno.ENODATA


def test_read_only_everywhere(example_site, mount_site):
    node = mount_site(example_site).node("node001")
    attempts = {
        "open for writing": lambda: os.open(node / "etc/hostname", os.O_WRONLY),
        "open for appending": lambda: os.open(node / "etc/hostname", os.O_RDWR | os.O_APPEND),
        "open with O_TRUNC": lambda: os.open(node / "etc/hostname", os.O_RDONLY | os.O_TRUNC),
        "create": lambda: os.open(node / "etc/new", os.O_WRONLY | os.O_CREAT, 0o644),
        "mkdir": lambda: os.mkdir(node / "newdir"),
        "rmdir": lambda: os.rmdir(node / "opt"),
        "unlink": lambda: os.unlink(node / "etc/motd"),
        "rename": lambda: os.rename(node / "etc/motd", node / "etc/motd2"),
        "symlink": lambda: os.symlink("x", node / "etc/link"),
        "hard link": lambda: os.link(node / "etc/motd", node / "etc/motd3"),
        "chmod": lambda: os.chmod(node / "etc/motd", 0o600),
        "chown": lambda: os.chown(node / "etc/motd", 1, 1),
        "truncate": lambda: os.truncate(node / "etc/motd", 0),
        "utime": lambda: os.utime(node / "etc/motd", (0, 0)),
        "mkfifo": lambda: os.mkfifo(node / "etc/fifo"),
        "setxattr": lambda: os.setxattr(node / "etc/motd", "user.x", b"1"),
        "removexattr": lambda: os.removexattr(node / "usr/bin/passwd", "user.example.note"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(OSError) as err:
            attempt()
        assert err.value.errno == errno.EROFS, what
    assert (node / "etc/motd").read_text().startswith("Welcome")


def test_statfs_answers(example_site, mount_site):
    mnt = mount_site(example_site).mountpoint
    fs = os.statvfs(mnt / "nodes/node001")
    assert fs.f_bsize > 0 and fs.f_blocks > 0


def test_same_backing_file_same_inode_in_every_view(example_site, mount_site):
    mnt = mount_site(example_site).mountpoint
    inos = {os.lstat(mnt / view / "usr/bin/passwd").st_ino
            for view in ("nodes/node001", "nodes/login01", "groups/Compute", "images/rocky9")}
    assert len(inos) == 1
    # Directories are per view: the kernel allows a directory one parent.
    dirs = {os.lstat(mnt / "nodes" / n / "usr/bin").st_ino for n in ("node001", "node002")}
    assert len(dirs) == 2


def test_inode_numbers_identical_after_remount(example_site, mount_site):
    mount = mount_site(example_site)
    before = {p: (s.st_ino, s.st_mode) for p, s in walk(mount.mountpoint).items()}
    mount.stop()
    mount.start()
    after = {p: (s.st_ino, s.st_mode) for p, s in walk(mount.mountpoint).items()}
    assert before == after


def test_file_handles_survive_eviction_and_daemon_restart(example_site, mount_site):
    mount = mount_site(example_site)
    node = mount.node("node001")
    targets = {"file": node / "etc/chrony.conf", "dir": node / "etc/sysconfig/network-scripts",
               "image file": node / "usr/bin/passwd"}
    handles = {what: name_to_handle(path) for what, path in targets.items()}
    content = (node / "etc/chrony.conf").read_bytes()
    sysconfig_ino = os.stat(node / "etc/sysconfig").st_ino

    def check() -> None:
        mount_fd = os.open(mount.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for what, handle in handles.items():
                flags = os.O_RDONLY | (os.O_DIRECTORY if what == "dir" else 0)
                fd = open_by_handle(mount_fd, handle, flags)
                try:
                    if what == "dir":
                        assert "ifcfg-eth0" in os.listdir(fd)
                        assert os.stat("..", dir_fd=fd).st_ino == sysconfig_ino
                    elif what == "file":
                        assert os.pread(fd, 4096, 0) == content
                    else:
                        assert os.fstat(fd).st_mode & stat.S_ISUID
                finally:
                    os.close(fd)
        finally:
            os.close(mount_fd)

    drop_caches()  # the kernel forgets the inodes: it must LOOKUP(ino, ".") them again
    check()
    mount.stop()  # a new daemon has never issued these numbers
    mount.start()
    check()
    stats = json.loads(os.getxattr(mount.mountpoint, "user.onesuite.stats"))
    assert stats.get("recover", 0) >= 1 and "stale" not in stats
    # The kernel reconnected the decoded directory to its parents with LOOKUP(ino, "..").
    assert stats.get("lookup_dot", 0) >= 1 and stats.get("lookup_dotdot", 0) >= 1


def test_umount_waits_for_the_daemon(example_site, mount_site):
    mount = mount_site(example_site)
    pid = mount.pid
    run_onesuite("umount", mount.mountpoint)
    assert not os.path.ismount(mount.mountpoint)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_bad_configuration_never_leaves_a_half_built_mount(example_site, tmp_path):
    (example_site / "etc/systemimager/cluster.xml").write_text("<xml>\n<name>all</name>\n<grou")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    done = run_onesuite("mount", "--root", example_site, mountpoint, check=False)
    assert done.returncode == 2
    assert "cluster.xml:3:" in done.stderr and "malformed XML" in done.stderr
    assert not os.path.ismount(mountpoint)


def test_mount_refuses_a_missing_mountpoint(example_site, tmp_path):
    done = run_onesuite("mount", "--root", example_site, tmp_path / "nope", check=False)
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_nodes_json(example_site):
    data = json.loads(run_onesuite("nodes", "--root", example_site, "--json").stdout)
    node001 = next(n for n in data["nodes"] if n["name"] == "node001")
    assert node001["groups"] == ["Compute"] and node001["image"] == "rocky9"
    assert [layer["name"] for layer in node001["layers"]] == [
        "rocky9", "rocky9", "all", "compute-tuning", "compute", "node001"]
    node007 = next(n for n in data["nodes"] if n["name"] == "node007")
    assert node007["groups"] == ["GPU", "Compute"]


def test_nothing_resolves_outside_the_layers(tmp_path, mount_site):
    from sitetools import make_site

    root = make_site(tmp_path / "site", "<xml><name>all</name><override>all</override><group>"
                     "<name>G</name><image>img</image><node>n1</node></group></xml>",
                     images=("img",), overrides=("all",))
    image = root / "var/lib/systemimager/images/img"
    os.symlink("/etc", image / "server-etc")
    os.symlink("../../../../../../..", image / "up")
    os.symlink("/usr", image / "usr")
    override = root / "var/lib/systemimager/overrides/all"
    (override / "usr").mkdir()
    (override / "usr/only-this").write_text("x")
    (override / "etc").mkdir()
    os.symlink("/", override / "etc/rootlink")
    node = mount_site(root).node("n1")
    assert os.readlink(node / "server-etc") == "/etc"
    assert os.readlink(node / "up") == "../../../../../../.."
    assert os.readlink(node / "etc/rootlink") == "/"
    # rsync replaces a symlink by the override's directory; nothing of the server's /usr.
    assert os.listdir(node / "usr") == ["only-this"]
    assert sorted(os.listdir(node / "etc")) == ["image", "rootlink"]
