"""The persistent store on the server is no way in (issue 14, section 5): what a RAMDIR -d
copy or a node's own chmod/mknod puts there carries no setuid bit and is no device node on
the server, every level is 0700 and root's, a local user (`nobody`) finds nothing to use even
when an administrator opens the directories, and what a full disk or a kill -9 interrupts
leaves nothing behind."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import needs_root_fuse, run_onesuite
from sitetools import onesis_site

from onesuite_fs.core.state import META_XATTR, TMP_NAME, NodeAttrs

pytestmark = [needs_root_fuse(), pytest.mark.mount]

AS_NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--"]
PERSISTENT = ("--link-policy", "persistent", "--persistent-dir")


def as_nobody(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AS_NOBODY, *map(str, command)], capture_output=True, text=True,
                          timeout=30, check=False)


def dangerous_site(root: Path) -> Path:
    """The test site, its image's /var/lib/nfs (RAMDIR -d) holding what a real image holds:
    a setuid-root binary, a setgid directory, block and character devices, a FIFO, a socket
    and a world-writable file."""
    onesis_site(root)
    nfs = root / "var/lib/systemimager/images/img/var/lib/nfs"
    shutil.copy("/usr/bin/id", nfs / "id")
    os.chmod(nfs / "id", 0o4755)
    (nfs / "shared").write_text("anyone may write\n")
    os.chmod(nfs / "shared", 0o777)
    (nfs / "sgid").mkdir()
    os.chmod(nfs / "sgid", 0o2775)
    os.mknod(nfs / "sda", stat.S_IFBLK | 0o660, os.makedev(8, 0))
    os.mknod(nfs / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(nfs / "fifo", 0o600)
    os.mknod(nfs / "sock", stat.S_IFSOCK | 0o755)
    for name, mode in (("sda", 0o660), ("null", 0o666)):
        os.chmod(nfs / name, mode)  # past the umask
    return root


@pytest.fixture
def open_base():
    """A directory a local user can traverse (pytest's tmp_path is root's alone, which would
    hide the store's own permissions)."""
    base = Path(tempfile.mkdtemp(prefix="onesuite-store-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def staged_bytes(staging: Path) -> int:
    """Bytes in a staging area that a running copy is filling and removing meanwhile."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(staging):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
    return total


def special_or_setid(top: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID) or stat.S_IFMT(st.st_mode) in (
                    stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
                found.append(f"{dirpath}/{name} {stat.filemode(st.st_mode)}")
    return found


def test_nothing_in_the_store_gives_a_local_user_rights(tmp_path, mount_site, open_base):
    state = open_base / "state"
    state.mkdir(mode=0o755)  # an administrator made it, with the usual umask
    mount = mount_site(dangerous_site(tmp_path / "site"), *PERSISTENT, str(state))
    node_nfs = mount.node("n1") / "var/lib/nfs"

    # The node still sees its image's entries as they were (RAMDIR -d copied them).
    shown = {name: os.lstat(node_nfs / name) for name in os.listdir(node_nfs)}
    assert stat.filemode(shown["id"].st_mode) == "-rwsr-xr-x" and shown["id"].st_uid == 0
    assert stat.filemode(shown["sgid"].st_mode) == "drwxrwsr-x"
    assert stat.S_ISBLK(shown["sda"].st_mode) and shown["sda"].st_rdev == os.makedev(8, 0)
    assert stat.S_ISCHR(shown["null"].st_mode) and shown["null"].st_rdev == os.makedev(1, 3)
    assert stat.filemode(shown["null"].st_mode) == "crw-rw-rw-"
    assert stat.S_ISFIFO(shown["fifo"].st_mode) and stat.S_ISSOCK(shown["sock"].st_mode)
    assert stat.S_IMODE(shown["shared"].st_mode) == 0o777
    assert (node_nfs / "id").read_bytes() == Path("/usr/bin/id").read_bytes()

    # What the node makes and changes itself is kept the same way.
    log = mount.node("n1") / "var/log"
    (log / "su").write_bytes(b"#!/bin/sh\n")
    os.chown(log / "su", 0, 0)  # before chmod: a chown clears the setuid bit, as on a disk
    os.chmod(log / "su", 0o4711)
    os.mknod(log / "sdb", stat.S_IFBLK | 0o600, os.makedev(8, 16))
    os.mknod(log / "tty", stat.S_IFCHR | 0o620, os.makedev(4, 1))
    os.chmod(log / "tty", 0o620)  # past the umask
    os.mkfifo(log / "pipe", 0o644)
    os.mkdir(log / "group")
    os.chown(log / "group", 0, 5)
    os.chmod(log / "group", 0o2770)
    with open(log / "made", "x") as made:  # create(), then chown and chmod by fd
        os.fchown(made.fileno(), 1000, 1000)
        os.fchmod(made.fileno(), 0o2755)
    os.symlink("su", log / "link")
    os.lchown(log / "link", 7, 8)

    def node_view() -> dict[str, tuple[str, int, int, int]]:
        return {name: (stat.filemode(st.st_mode), st.st_uid, st.st_gid, st.st_rdev)
                for name in os.listdir(log) for st in [os.lstat(log / name)]}

    expected = {"su": ("-rws--x--x", 0, 0, 0), "sdb": ("brw-------", 0, 0, os.makedev(8, 16)),
                "tty": ("crw--w----", 0, 0, os.makedev(4, 1)), "pipe": ("prw-r--r--", 0, 0, 0),
                "group": ("drwxrws---", 0, 5, 0), "made": ("-rwxr-sr-x", 1000, 1000, 0),
                "link": ("lrwxrwxrwx", 7, 8, 0)}
    assert node_view() == expected
    assert "trusted.onesuite.node" not in os.listxattr(log / "su")  # bookkeeping stays hidden
    mount.stop()
    mount.start()
    assert node_view() == expected  # the metadata is as durable as the entries
    assert stat.filemode(os.lstat(node_nfs / "id").st_mode) == "-rwsr-xr-x"

    # On the server: nothing special, setuid or open to others, every level the daemon's.
    assert special_or_setid(state) == []
    for dirpath, dirnames, filenames in os.walk(state):
        for name in [""] + dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(st.st_mode):
                continue
            wanted = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            assert (stat.S_IMODE(st.st_mode), st.st_uid) == (wanted, 0), (dirpath, name)
    raw = os.lstat(state / "nodes/n1/var/lib/nfs/sda")
    assert stat.S_ISREG(raw.st_mode) and raw.st_size == 0
    assert NodeAttrs.decode(os.getxattr(state / "nodes/n1/var/lib/nfs/sda", META_XATTR)) == \
        NodeAttrs(stat.S_IFBLK | 0o660, 0, 0, os.makedev(8, 0))

    # nobody on the server cannot enter the store...
    for directory in (state, state / "nodes", state / "nodes/n1/var/lib/nfs"):
        listed = as_nobody("ls", directory)
        assert listed.returncode != 0 and "Permission denied" in listed.stderr
    # ...and when an administrator opens it up, finds nothing to use there.
    subprocess.run(["chmod", "-R", "go+rX", str(state)], check=True)
    found = as_nobody("find", state, "-perm", "/6000", "-o", "-type", "b", "-o", "-type", "c",
                      "-o", "-type", "p", "-o", "-type", "s")
    assert found.returncode == 0 and found.stdout == "", found
    ran = as_nobody(state / "nodes/n1/var/lib/nfs/id", "-u")
    assert ran.stdout.strip() != "0"  # not setuid, and not even executable
    wrote = as_nobody("sh", "-c", f"echo x >> {state / 'nodes/n1/var/lib/nfs/shared'}")
    assert wrote.returncode != 0


def test_kernel_rules_on_setuid_bits_hold_on_the_metadata(tmp_path, mount_site):
    """A write by a process without CAP_FSETID clears setuid, as on a disk: the kernel sends
    it as an attribute change, and the metadata follows."""
    mount = mount_site(onesis_site(tmp_path / "site"), *PERSISTENT, str(tmp_path / "state"))
    target = mount.node("n1") / "var/log/tool"
    target.write_text("v1\n")
    os.chmod(target, 0o4777)
    subprocess.run(["setpriv", "--bounding-set", "-fsetid", "--inh-caps", "-fsetid", "--",
                    "sh", "-c", f"echo v2 >> {target}"], check=True, timeout=30)
    assert stat.filemode(os.stat(target).st_mode) == "-rwxrwxrwx"
    assert target.read_text() == "v1\nv2\n"


def test_a_version_1_store_is_converted_at_mount_start(tmp_path, mount_site):
    """A store an earlier onesuite made holds real setuid files and device nodes: the next
    mount turns them into metadata, and the node sees no difference."""
    state = tmp_path / "state"
    legacy = state / "nodes/n1/var/log"
    legacy.mkdir(parents=True, mode=0o755)
    os.chmod(state / "nodes/n1", 0o755)
    (legacy / "su").write_text("#!/bin/sh\n")
    os.chmod(legacy / "su", 0o4755)
    os.mknod(legacy / "sda", stat.S_IFBLK | 0o640, os.makedev(8, 0))
    os.chown(legacy / "sda", 0, 6)
    os.makedirs(state / f"nodes/n1/{TMP_NAME}/half-copy")  # what a crash left
    mount = mount_site(onesis_site(tmp_path / "site"), *PERSISTENT, str(state))
    log = mount.node("n1") / "var/log"
    su, sda = os.lstat(log / "su"), os.lstat(log / "sda")
    assert stat.filemode(su.st_mode) == "-rwsr-xr-x" and (log / "su").read_text() == "#!/bin/sh\n"
    assert stat.filemode(sda.st_mode) == "brw-r-----" and sda.st_rdev == os.makedev(8, 0)
    assert sda.st_gid == 6
    assert special_or_setid(state) == []
    assert stat.S_IMODE(os.stat(state / "nodes/n1").st_mode) == 0o700
    assert os.listdir(state / f"nodes/n1/{TMP_NAME}") == []
    assert (state / "store-version").read_text() == "2\n"


def test_a_full_disk_during_a_copy_leaves_nothing_behind(tmp_path, mount_site):
    site = onesis_site(tmp_path / "site")
    image = site / "var/lib/systemimager/images/img"
    (image / "var/lib/nfs/big").write_bytes(os.urandom(600 << 10))
    (image / "var/lib/rpm").write_text("not persistent\n")
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)], check=True)
    mount = None
    try:
        filler = state / "filler"
        filler.write_bytes(bytes(600 << 10))  # the store is mostly full already
        mount = mount_site(site, *PERSISTENT, str(state))
        var_lib = mount.node("n1") / "var/lib"
        for _attempt in range(2):  # the failure is the same every time: nothing piles up
            with pytest.raises(OSError) as raised:
                os.listdir(var_lib)
            assert raised.value.errno == errno.ENOSPC
            with pytest.raises(OSError) as raised:
                os.stat(var_lib / "nfs")
            assert raised.value.errno == errno.ENOSPC  # the path that cannot be made...
            assert (var_lib / "rpm").read_text() == "not persistent\n"  # ...and only it
            assert os.listdir(state / f"nodes/n1/{TMP_NAME}") == []
            assert not (state / "nodes/n1/var/lib/nfs").exists()
            assert shutil.disk_usage(state).used < (700 << 10)
        assert "node n1: cannot make persistent path /var/lib/nfs (RAMDIR /var/lib/nfs" in \
            mount.log.read_text()
        filler.unlink()  # space freed: the same directory lists, without a remount
        assert "nfs" in os.listdir(var_lib)
        assert len((var_lib / "nfs/big").read_bytes()) == 600 << 10
    finally:
        if mount is not None:
            mount.stop()
        subprocess.run(["umount", str(state)], check=True)


def test_kill_during_a_copy_leaves_nothing_after_the_remount(tmp_path, mount_site):
    site = onesis_site(tmp_path / "site")
    big = site / "var/lib/systemimager/images/img/var/lib/nfs/big"
    with open(big, "wb") as f:
        f.truncate(300 << 20)  # sparse: quick to read, 300 MiB to write
    state = tmp_path / "state"
    mount = mount_site(site, *PERSISTENT, str(state))
    staging = state / "nodes/n1" / TMP_NAME
    killed_mid_copy = 0
    for _attempt in range(8):
        lister = subprocess.Popen(["ls", str(mount.node("n1") / "var/lib")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            staged = 0
            while time.monotonic() < deadline and lister.poll() is None:
                staged = staged_bytes(staging)
                if staged > 0:
                    os.kill(mount.pid, signal.SIGKILL)
                    break
        finally:
            lister.wait(timeout=30)
        if staged > 0:
            killed_mid_copy += 1
            assert staged_bytes(staging) > 0  # the crash left a partial copy...
            mount.stop()
            mount.start()  # ...which the next mount start removes
            assert os.listdir(staging) == []
        else:  # the copy won the race: start over from an unused path
            mount.stop()
            shutil.rmtree(state / "nodes/n1/var/lib/nfs")
            mount.start()
        if killed_mid_copy == 3:
            break
    assert killed_mid_copy == 3, "a copy won every race: make the file bigger"
    assert os.path.getsize(mount.node("n1") / "var/lib/nfs/big") == 300 << 20
    assert os.listdir(staging) == []


def test_a_long_copy_does_not_stop_other_nodes(tmp_path, mount_site):
    """Making a persistent path copies in a worker thread: the other nodes are served
    meanwhile (the handler loop is one thread)."""
    site = onesis_site(tmp_path / "site")
    with open(site / "var/lib/systemimager/images/img/var/lib/nfs/big", "wb") as f:
        f.truncate(300 << 20)
    state = tmp_path / "state"
    mount = mount_site(site, *PERSISTENT, str(state))
    staging = state / "nodes/n1" / TMP_NAME
    lister = subprocess.Popen(["ls", str(mount.node("n1") / "var/lib")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not staged_bytes(staging):
            time.sleep(0.001)
        assert (mount.node("n2") / "etc/hostname").read_text() == "golden\n"
        assert "fstab" in os.listdir(mount.node("n3") / "etc")
        assert staged_bytes(staging) > 0, "other nodes were answered only after the copy"
    finally:
        lister.wait(timeout=60)
    assert lister.returncode == 0


def test_node_attrs_refuse_damaged_values():
    attrs = NodeAttrs(stat.S_IFCHR | 0o4620, 4294967295, 0, os.makedev(4, 1))
    assert NodeAttrs.decode(attrs.encode()) == attrs
    for raw in (b"", b"644 0 0", b"644 0 0 0 0", b"9z 0 0 0", b"644 -1 0 0", b"644 0 0 x",
                b"1000000 0 0 0", b"644 4294967296 0 0", b"644 0 0 " + b"9" * 30,
                b"644 0 0 \xff"):
        assert NodeAttrs.decode(raw) is None, raw


def test_an_unusable_store_stops_the_mount_with_a_clear_error(tmp_path):
    site = onesis_site(tmp_path / "site")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory\n")
    (tmp_path / "mnt").mkdir()
    done = run_onesuite("mount", "--root", site, *PERSISTENT, blocked / "state",
                        tmp_path / "mnt", check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "cannot prepare the persistent store" in done.stderr
    assert str(blocked / "state") in done.stderr
    assert os.listdir(tmp_path / "mnt") == []  # nothing mounted


def test_a_second_daemon_never_empties_the_staging_of_the_serving_one(tmp_path, mount_site):
    """The careless admin runs `onesuite serve` (or `mount` elsewhere) again with the same
    store while a daemon serves from it. Both used to remove the staging areas of the
    serving daemon's copies at their start, even when refused a moment later (busy mount
    point): a copy in progress lost its files (published with files missing if the copy
    ended meanwhile). Now the store is locked for the serving daemon's life: the second
    command is refused before it touches anything, and a restart in place still works."""
    site = onesis_site(tmp_path / "site")
    state = tmp_path / "state"
    mount = mount_site(site, *PERSISTENT, str(state))
    assert (mount.node("n1") / "etc/hostname").read_text()  # the store is in use
    in_progress = state / "nodes/n1" / TMP_NAME / "copy-in-progress"
    in_progress.mkdir(parents=True)
    (in_progress / "part").write_bytes(b"x" * 8192)  # what a running -d copy looks like
    second = tmp_path / "mnt2"
    second.mkdir()
    for command in (("serve", "--protocols", "4", "--nfs-state-dir", tmp_path / "nfs",
                     "--root", site, *PERSISTENT, state, mount.mountpoint),
                    ("mount", "--root", site, *PERSISTENT, state, second)):
        done = run_onesuite(*command, check=False)
        assert done.returncode != 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert (in_progress / "part").read_bytes() == b"x" * 8192, command[0]
    assert "in use by another onesuite daemon" in done.stderr
    assert not os.path.ismount(second)
    # kill -9 frees the store with the daemon: the restart in place goes ahead.
    os.kill(mount.pid, signal.SIGKILL)
    mount.start()
    assert (mount.node("n1") / "etc/hostname").read_text()
    assert not in_progress.exists()  # a crash's leftover is removed by the next start
