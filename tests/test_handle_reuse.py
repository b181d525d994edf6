"""A removed persistent entry's handle never opens what reuses its inode number (issue 14,
section 1). Every node's writable paths live in one store on one server file system, which
gives a removed file's inode number to the next file made, whichever node makes it. The
numbers the mount issues for state entries derive from that inode number, so node n2 (root
on its own node) could create a file in its /var/log, keep its handle, remove it, and open
the next file node n1 made there, ssh host keys included, through that handle: 20 of 20
tries did. The handle is what an NFS server keeps and opens (name_to_handle_at,
open_by_handle_at), on the real FUSE mount.
"""

from __future__ import annotations

import errno
import os

import pytest
from conftest import needs_root_fuse, run_onesuite
from fhandle import name_to_handle, open_by_handle
from sitetools import onesis_site

pytestmark = [needs_root_fuse(), pytest.mark.mount]


def test_a_stale_handle_of_a_removed_entry_opens_nothing_another_node_made(fresh_ext4,
                                                                           tmp_path,
                                                                           mount_site):
    mount = mount_site(onesis_site(tmp_path / "site"), "--link-policy", "persistent",
                       "--persistent-dir", str(fresh_ext4 / "state"),
                       "--handle-key", str(tmp_path / "key"))
    n1, n2 = mount.node("n1") / "var/log", mount.node("n2") / "var/log"
    store = fresh_ext4 / "state/nodes"  # where the entries live on the server
    os.listdir(n1), os.listdir(n2)  # both nodes' /var/log made
    reused = 0
    root_fd = os.open(mount.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for round_ in range(20):
            for kind in ("file", "dir"):
                probe = n2 / f"probe-{kind}{round_}"
                if kind == "file":
                    probe.write_text("n2's own\n")
                else:
                    probe.mkdir()
                handle = name_to_handle(probe)
                number = os.stat(store / "n2/var/log" / probe.name).st_ino
                os.unlink(probe) if kind == "file" else os.rmdir(probe)
                secret = n1 / f"secret-{kind}{round_}"
                if kind == "file":
                    secret.write_text(f"n1's secret {round_}\n")
                else:
                    secret.mkdir()
                    (secret / "inside").write_text("n1's\n")
                if os.stat(store / "n1/var/log" / secret.name).st_ino != number:
                    continue  # the file system chose another inode this time
                reused += 1
                with pytest.raises(OSError) as refused:
                    fd = open_by_handle(root_fd, handle, os.O_RDONLY)
                    try:
                        leaked = os.read(fd, 100) if kind == "file" else os.listdir(fd)
                    finally:
                        os.close(fd)
                    pytest.fail(f"n2's handle of its removed {kind} opened n1's: {leaked!r}")
                assert refused.value.errno == errno.ESTALE
                # ... and n1's own handle of it works, also after the kernel forgot it
                own = open_by_handle(root_fd, name_to_handle(secret), os.O_RDONLY)
                os.close(own)
    finally:
        os.close(root_fd)
    assert reused >= 10, f"the store's file system reused an inode number {reused} times"


def test_a_removed_image_files_handle_opens_no_host_override_made_after(fresh_ext4, tmp_path,
                                                                       mount_site):
    """The admin removes a file from the image (an image update) and puts node n2's new host
    key in n2's override; n2 boots and reads it. Node n1 had a handle of the removed image
    file, as every client of that image may: it must be stale, not n2's key (it opened the
    key 5 of 5 times: a layer file's number came from its inode number; now it comes from
    the layer and the path, and the generation from the file's mtime, size and type)."""
    root = onesis_site(fresh_ext4 / "site")
    image_etc = root / "var/lib/systemimager/images/img/etc"
    override_etc = root / "var/lib/systemimager/overrides/n2/etc"
    mount = mount_site(root, "--handle-key", str(tmp_path / "key"), "--no-watch")
    reused = 0
    root_fd = os.open(mount.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for round_ in range(5):
            (image_etc / f"old{round_}").write_text("public\n")
            run_onesuite("reload", mount.mountpoint)
            handle = name_to_handle(mount.node("n1") / f"etc/old{round_}")
            number = os.stat(image_etc / f"old{round_}").st_ino
            os.unlink(image_etc / f"old{round_}")
            (override_etc / f"ssh_host_key{round_}").write_text(f"n2's key {round_}\n")
            run_onesuite("reload", mount.mountpoint)
            (mount.node("n2") / f"etc/ssh_host_key{round_}").read_text()  # n2 reads it
            if os.stat(override_etc / f"ssh_host_key{round_}").st_ino != number:
                continue
            reused += 1
            with pytest.raises(OSError) as refused:
                fd = open_by_handle(root_fd, handle, os.O_RDONLY)
                try:
                    leaked = os.read(fd, 100)
                finally:
                    os.close(fd)
                pytest.fail(f"n1's handle of a removed image file opened {leaked!r}")
            assert refused.value.errno == errno.ESTALE
    finally:
        os.close(root_fd)
    assert reused >= 3, f"the layer file system reused an inode number {reused} times"
