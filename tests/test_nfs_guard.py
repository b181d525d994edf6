"""The mount's own defence against NFS server threads walking above the node roots, shown
with the kernel calls an NFS server makes (open_by_handle_at, then *at() lookups relative to
the handle), from a process the daemon takes for one: a copy of the Python interpreter named
ganesha.nfsd. This covers what ganesha's own attribute checks hide in the end-to-end test
(test_nfs_isolation.py): names the kernel has cached must not let a thread through."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import needs_root_fuse

from onesuite_fs.daemon.requesters import NfsServerThreads

pytestmark = [needs_root_fuse(), pytest.mark.mount]
TESTS = Path(__file__).resolve().parent

# Runs as "ganesha.nfsd": the main thread (configuration) and a worker (serving clients) each
# try the same walks from the mount root's handle; prints what each could do.
FAKE_SERVER = """
import json, os, sys, threading
sys.path.insert(0, sys.argv[1])
from fhandle import name_to_handle, open_by_handle
mnt = sys.argv[2]
root = name_to_handle(mnt)  # nodeid 1, generation 0: what a forged handle names
mount_fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)

def attempts():
    done = {}
    def attempt(name, call):
        try:
            call()
            done[name] = "ok"
        except OSError as exc:
            done[name] = exc.errno
    fd = open_by_handle(mount_fd, root, os.O_PATH)
    attempt("stat nodes", lambda: os.stat("nodes", dir_fd=fd))
    attempt("stat node002", lambda: os.stat("nodes/node002", dir_fd=fd))
    attempt("read hostname", lambda: os.open("nodes/node002/etc/hostname", os.O_RDONLY,
                                             dir_fd=fd))
    attempt("list root", lambda: os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd))
    attempt("list groups", lambda: os.open("groups/Compute", os.O_RDONLY | os.O_DIRECTORY,
                                           dir_fd=fd))
    return done

result = {"main": attempts()}
worker = threading.Thread(target=lambda: result.__setitem__("worker", attempts()))
worker.start()
worker.join()
print(json.dumps(result))
"""


def test_an_nfs_server_thread_cannot_walk_above_the_node_roots(example_site, mount_site,
                                                               tmp_path):
    mount = mount_site(example_site)
    mnt = mount.mountpoint
    # The admin's walk fills the kernel's caches with every name on the way.
    assert (mnt / "nodes/node002/etc/hostname").read_text() == "golden\n"
    assert os.listdir(mnt / "groups/Compute")
    fake = tmp_path / "ganesha.nfsd"
    shutil.copy(os.path.realpath(sys.executable), fake)
    done = subprocess.run([str(fake), "-c", FAKE_SERVER, str(TESTS), str(mnt)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # The main thread (ganesha reads its exports there) is answered like anyone.
    assert set(result["main"].values()) == {"ok"}, result
    # A worker thread gets nothing above the node roots, cached names or not.
    assert result["worker"]["stat node002"] != "ok", result
    assert result["worker"]["read hostname"] != "ok", result
    assert result["worker"]["list root"] != "ok", result
    assert result["worker"]["list groups"] != "ok", result
    # ... and the admin still does.
    assert (mnt / "nodes/node002/etc/hostname").read_text() == "golden\n"
    assert "refused an NFS server thread" in mount.log.read_text()


def _in_a_worker(check):
    """check(tid) evaluated in a live worker thread of this process."""
    seen: list[bool] = []
    worker = threading.Thread(target=lambda: seen.append(check(threading.get_native_id())))
    worker.start()
    worker.join()
    return seen[0]


def test_nfs_server_threads_are_told_apart():
    threads = NfsServerThreads()
    assert not threads.serves_clients(os.getpid())  # a main thread of another program
    assert not _in_a_worker(threads.serves_clients)  # a worker, but not an NFS server's
    this_program = NfsServerThreads(executables=[Path(os.path.realpath(sys.executable)).name])
    assert _in_a_worker(this_program.serves_clients)
    assert not this_program.serves_clients(os.getpid())  # its main thread: configuration
    assert not threads.serves_clients(0) and not threads.serves_clients(2**22 + 12345)
    kthreadd = 2  # a kernel thread, not named like nfsd
    assert not threads.serves_clients(kthreadd)
    assert NfsServerThreads(kernel_threads=["kthreadd"]).serves_clients(kthreadd)


def test_a_forged_persistent_number_walks_only_the_writable_paths(tmp_path, monkeypatch):
    """LOOKUP(ino, ".") of a made-up persistent entry: the daemon looks for it only on the
    way to each node's writable paths, once per generation, never through whole roots."""
    from sitetools import onesis_site
    from treetools import inode_tree

    from onesuite_fs.core.inodes import STATE_TAG
    from onesuite_fs.core.onesis_config import OnesisSource
    from onesuite_fs.settings import Settings
    from onesuite_fs.sources.systemimager import load_site

    root = onesis_site(tmp_path / "site")
    tree = inode_tree(load_site(Settings(root=root)), "autoinstall",
                OnesisSource(policy="persistent"), tmp_path / "state", create_state=True)
    listed: list[int] = []
    real_listdir = tree.listdir
    monkeypatch.setattr(tree, "listdir", lambda ino: listed.append(ino) or real_listdir(ino))
    assert not tree.recover(STATE_TAG | 12345)
    first = len(listed)
    nodes = len(tree.entries["nodes"])
    # Per node: /, var, var/log, var/lib, var/lib/nfs and below, etc, etc/ssh (the ways to
    # its LINKDIR/RAMDIR/RAMFILE/LINKFILE paths), not the other 15 directories of its root.
    full = sum(1 for _ in (root / "var/lib/systemimager/images/img").rglob("*")
               if _.is_dir()) + 1
    assert nodes <= first <= 8 * nodes < full * nodes, (first, full)
    assert not tree.recover(STATE_TAG | 67890)  # walked: no second walk
    assert len(listed) == first
    # ... and a real persistent entry is found by a restarted daemon (a new tree).
    n1 = tree.entry_root_ino(tree.entries["nodes"]["n1"])
    log_dir = tree.lookup(tree.lookup(n1, "var").ino, "log").ino
    fd, made = tree.create(log_dir, "boot.log", 0o644, os.O_WRONLY, 0, 0)
    os.close(fd)
    restarted = inode_tree(load_site(Settings(root=root)), "autoinstall",
                     OnesisSource(policy="persistent"), tmp_path / "state", create_state=True)
    assert restarted.recover(made.ino) and restarted.attr(made.ino).ino == made.ino
