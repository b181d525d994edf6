"""What a forged handle makes the daemon do must stay small (issue 14: recovery walks must be
bounded). A directory number is (slot, keyed hash of the path); the slot names the view.
For a number it never issued, the daemon walks that node's whole view, registering every
directory of it, and remembers only that the walk missed. Slots are 21 bits: an attacker
who sends one made-up number per slot (2 million cheap requests, most of them naming no
view) makes the daemon hold every directory of every node's view at once. Here one per
node, with the slots computed from the site's key (the attacker reaches the same by
enumerating them): 500 nodes of an image with 3,000 directories took the daemon from
32 MB to 525 MB and 11 s of CPU; a real image (30,000 directories) and 2,000 nodes is
some 40 GB, past which the kernel kills the daemon and every node loses its root. Now the
walk goes by path, registers only what it finds, and keeps a missed view's numbers (8 bytes a
directory), so the same 500 numbers must cost under 100 MiB.
"""

from __future__ import annotations

import os
import struct

import pytest
from conftest import needs_root_fuse
from fhandle import FileHandle, name_to_handle, open_by_handle
from test_hostile_inputs import base_site, cluster_xml

from onesuite_fs.core.inodes import DIR_TAG, PATH_BITS, Numbering
from onesuite_fs.daemon.handle_key import load_or_create_key

pytestmark = [needs_root_fuse(), pytest.mark.mount]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_made_up_directory_numbers_cost_little_memory(tmp_path, mount_site):
    root = base_site(tmp_path / "site", cluster_xml(nodes="n1-n500"))
    usr = root / "var/lib/systemimager/images/img/usr"
    for i in range(60):
        for j in range(50):
            (usr / f"d{i}/e{j}").mkdir(parents=True)
    key = tmp_path / "key"
    mount = mount_site(root, "--handle-key", str(key), "--no-watch")
    nodes = sorted(os.listdir(mount.mountpoint / "nodes"))
    numbering = Numbering(load_or_create_key(key))
    slots = numbering.assign_slots(
        [f"nodes/{n}" for n in nodes] + [f"groups/{g}" for g in
                                         os.listdir(mount.mountpoint / "groups")]
        + [f"images/{i}" for i in os.listdir(mount.mountpoint / "images")])
    template = name_to_handle(mount.node("n1") / "etc")
    before = rss_bytes(mount.pid)
    root_fd = os.open(mount.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for node in nodes:
            ino = DIR_TAG | (slots[f"nodes/{node}"] << PATH_BITS) | 12345  # no such path
            forged = FileHandle()
            forged.handle_bytes, forged.handle_type = 12, template.handle_type
            for index, byte in enumerate(struct.pack("<III", ino >> 32, ino & 0xFFFFFFFF, 1)):
                forged.f_handle[index] = byte
            with pytest.raises(OSError):
                os.close(open_by_handle(root_fd, forged))
    finally:
        os.close(root_fd)
    grown = rss_bytes(mount.pid) - before
    assert grown < 100 << 20, f"{len(nodes)} made-up numbers grew the daemon by {grown >> 20} MiB"
