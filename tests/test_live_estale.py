"""No ESTALE for a path that exists, unchanged, in both generations of a reload (issue 14,
section 7): the numbers a client holds (a directory fd, a working directory, an NFS server's
handles) are answered by every later generation that shows the same object."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import threading
from pathlib import Path

import pytest
from conftest import needs_root_fuse, run_onesuite

pytestmark = [needs_root_fuse(), pytest.mark.mount]

IMAGE = "var/lib/systemimager/images/rocky9"
DIRS = 400


def status(mountpoint: Path) -> dict:
    return json.loads(run_onesuite("status", mountpoint, "--json").stdout)


def many_directories(site: Path) -> list[str]:
    """DIRS directories, each with a subdirectory holding one file that never changes, in
    the image every node shows."""
    names = []
    for number in range(DIRS):
        directory = site / IMAGE / f"opt/many/d{number:04d}"
        (directory / "sub").mkdir(parents=True)
        (directory / "sub/f").write_text(f"file {number}\n")
        names.append(f"opt/many/d{number:04d}")
    return names


def generation(mountpoint: Path) -> int:
    return json.loads(os.getxattr(mountpoint, "user.onesuite.status"))["generation"]


def test_readers_of_unchanged_files_never_see_estale_while_reloads_run(example_site,
                                                                        mount_site):
    """Each reader takes a directory fd on a fresh directory's subdirectory (the first
    lookups there, racing the generation being built and diffed), waits for the next
    generation, then opens the unchanged file in it relative to the fd, and by its full
    path. Reloads run back to back. A bounded count of attempts; no timing.

    Before the fix, a directory first merged after the reload's diff had listed what was
    in use, but before the switch, had given out numbers the new generation did not know
    and refused as retired: ESTALE, which the kernel's one retry does not cure for a walk
    that starts at a directory fd (nor for an NFS server's handle)."""
    names = many_directories(example_site)
    mount = mount_site(example_site, "--no-watch")
    nodes = ["node001", "node002", "node003", "node005", "node007", "login01"]
    for name in names[: DIRS // 2]:  # directories in use: every diff has work to do
        os.listdir(mount.node("node004") / name)
    pairs = [(node, name) for node in nodes for name in names[DIRS // 2:]]
    random.Random(14).shuffle(pairs)
    readers, attempts = 4, 25
    problems: list[str] = []
    reads = [0]

    def reader(mine: list[tuple[str, str]]) -> None:
        for node, name in mine:
            directory = mount.node(node) / name / "sub"
            expected = f"file {int(name[-4:])}\n".encode()
            try:
                held = os.open(directory, os.O_PATH | os.O_DIRECTORY)
                try:
                    seen = generation(mount.mountpoint)
                    while generation(mount.mountpoint) == seen:
                        os.sched_yield()
                    fd = os.open("f", os.O_RDONLY, dir_fd=held)
                    try:
                        data = os.read(fd, 100)
                    finally:
                        os.close(fd)
                finally:
                    os.close(held)
                if data != expected or (directory / "f").read_bytes() != expected:
                    problems.append(f"{directory}/f: wrong content")
                reads[0] += 2
            except OSError as exc:
                problems.append(f"{directory}/f: {exc}")

    threads = [threading.Thread(target=reader, args=(pairs[i * attempts:(i + 1) * attempts],))
               for i in range(readers)]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            os.kill(mount.pid, signal.SIGHUP)
            run_onesuite("reload", mount.mountpoint)  # waits for one to finish
    finally:
        for thread in threads:
            thread.join()
    final = status(mount.mountpoint)
    assert final["failed_reloads"] == 0
    assert reads[0] == 2 * readers * attempts or problems
    assert not problems, f"{len(problems)} of {readers * attempts} failed: {problems[:5]}"


def test_a_generation_adopts_numbers_an_earlier_one_issued_only_for_the_same_object(
        example_site):
    """Pure: what `_run` does for a number the serving generation never issued."""
    from treetools import inode_tree

    from onesuite_fs.core.view import TreeError
    from onesuite_fs.daemon.inode_tree import InodeTree
    from onesuite_fs.settings import Settings
    from onesuite_fs.sources.systemimager import load_site

    def generation_of_site() -> InodeTree:
        return inode_tree(load_site(Settings(root=example_site)), "autoinstall")

    def walk(tree: InodeTree, path: str) -> int:
        ino = 1
        for part in path.split("/"):
            ino = tree.lookup(ino, part).ino
        return ino

    old = generation_of_site()
    sysconfig = walk(old, "nodes/node003/etc/sysconfig")
    fstab = walk(old, "nodes/node003/etc/fstab")
    hostname = walk(old, "nodes/node001/etc/hostname")
    override = example_site / "var/lib/systemimager/overrides/node001/etc/hostname"
    replacement = override.with_name(".hostname.new")
    replacement.write_text("renamed\n")
    os.rename(replacement, override)  # a new backing file: hostname's number is gone
    new = generation_of_site()
    for ino in (sysconfig, fstab, hostname):
        with pytest.raises(TreeError) as never_issued:
            new.attr(ino)
        assert never_issued.value.errno == errno.ESTALE
    assert new.adopt(old, sysconfig) and new.attr(sysconfig).generation == \
        old.attr(sysconfig).generation
    assert new.adopt(old, fstab) and new.attr(fstab) == old.attr(fstab)
    assert not new.adopt(old, hostname)
