"""The hard-link table of the writers: past its buffer it moves to a private SQLite file that
is never visible in the output directory, and tar, cpio and the convert writer keep every
link when most of the table is on disk."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import tarfile

import pytest
from sitetools import onesis_site

from onesuite_fs.core.onesis_config import OnesisSource
from onesuite_fs.core.view import View
from onesuite_fs.progress import Progress
from onesuite_fs.settings import Settings
from onesuite_fs.sources.systemimager import load_site
from onesuite_fs.transform.cpio import write_newc
from onesuite_fs.transform.link_table import LinkTable
from onesuite_fs.transform.materialize import Writer
from onesuite_fs.transform.tar import write_tar
from onesuite_fs.transform.walk import measure, named_root

FILES, NAMES = 7, 3  # seven files with three names each: 21 names, 7 first names


@pytest.fixture
def spilling(monkeypatch):
    """A two-entry buffer, and a count of the SQLite files opened."""
    monkeypatch.setattr(LinkTable, "BUFFER", 2)
    opened: list[int] = []
    real_open = LinkTable._open

    def counting_open(self):
        opened.append(1)
        return real_open(self)

    monkeypatch.setattr(LinkTable, "_open", counting_open)
    return opened


def test_spilled_entries_are_found_and_leave_no_file(tmp_path, spilling):
    table = LinkTable(tmp_path)
    keys = [(-1, 5), (2**64 - 1, 2**63 + 7), (0, 0), (64768, 12), (64768, 13)]
    values = [b"\xff/not-utf8", 7, b"a", 2**40, b""]
    for key, value in zip(keys, values, strict=True):
        assert table.get(key) is None
        table[key] = value
    assert spilling and len(table) == len(keys)
    assert os.listdir(tmp_path) == []  # open, unlinked: nothing to clean up, ever
    for key, value in zip(keys, values, strict=True):
        assert table.get(key) == value
    assert table.get((64768, 14)) is None
    table.close()
    assert os.listdir(tmp_path) == []


def test_a_small_table_never_touches_disk(tmp_path):
    with LinkTable(tmp_path) as table:
        table[(1, 2)] = b"x"
        assert table.get((1, 2)) == b"x" and table._db is None


def linked_root(tmp_path):
    site = onesis_site(tmp_path / "site")
    image = site / "var/lib/systemimager/images/img"
    (image / "usr/bin").mkdir(parents=True)
    for f in range(FILES):
        first = image / f"usr/bin/tool{f}-0"
        first.write_bytes(f"tool {f}\n".encode() * 50)
        for n in range(1, NAMES):
            os.link(first, image / f"usr/bin/tool{f}-{n}")
    view = View(load_site(Settings(root=site)), "autoinstall", OnesisSource(),
                bounded_caches=True)
    root = named_root(view, "n1")
    measure(root)
    return root


def assert_linked(dest):
    for f in range(FILES):
        names = [dest / f"usr/bin/tool{f}-{n}" for n in range(NAMES)]
        assert len({os.stat(p).st_ino for p in names}) == 1, names
        assert names[-1].read_bytes() == f"tool {f}\n".encode() * 50
    inodes = {os.stat(dest / f"usr/bin/tool{f}-0").st_ino for f in range(FILES)}
    assert len(inodes) == FILES


def test_tar_keeps_links_past_the_buffer(tmp_path, spilling):
    root = linked_root(tmp_path)
    stream = io.BytesIO()
    write_tar(root, stream, Progress("t", enabled=False), spill_dir=tmp_path)
    assert spilling
    stream.seek(0)
    with tarfile.open(fileobj=stream) as archive:
        members = {m.name: m for m in archive.getmembers() if "/tool" in m.name}
        archive.extractall(tmp_path / "x", numeric_owner=True)
    assert sum(m.isreg() for m in members.values()) == FILES
    assert sum(m.islnk() for m in members.values()) == FILES * (NAMES - 1)
    assert_linked(tmp_path / "x")


def test_cpio_keeps_links_past_the_buffer(tmp_path, spilling):
    root = linked_root(tmp_path)
    stream = io.BytesIO()
    write_newc(root, stream, Progress("t", enabled=False), spill_dir=tmp_path)
    assert spilling
    (tmp_path / "x").mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=stream.getvalue(), cwd=tmp_path / "x",
                   check=True)
    assert_linked(tmp_path / "x")


def test_the_convert_writer_keeps_links_past_the_buffer(tmp_path, spilling):
    root = linked_root(tmp_path)
    writer = Writer(spill_dir=tmp_path)
    try:
        writer.subtrees([(root, root.top(), tmp_path / "x")])
    finally:
        writer.close()
    assert spilling
    assert_linked(tmp_path / "x")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".onesuite-links")]


@pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"),
                    reason="mounting a tmpfs needs root")
def test_a_full_disk_is_an_out_of_space_error(tmp_path, spilling):
    """SQLite's own error would bypass the 'ran out of space' message and its cleanup."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(small)], check=True)
    table = LinkTable(small)
    try:
        with pytest.raises(OSError) as raised:
            for n in range(1000):
                table[(1, n)] = bytes(4096)
        assert raised.value.errno == errno.ENOSPC
    finally:
        table.close()  # its open file would keep the tmpfs busy
        subprocess.run(["umount", str(small)], check=True)
