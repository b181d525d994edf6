"""What a server serves, as one keyed fingerprint (issue 19, "Reloads on several servers"):
equal on two servers over rsync'd copies of one store with one key; different once a file
differs, or with another key; shown by `onesuite status` next to the generation."""

from __future__ import annotations

import json
import os
import time

from conftest import needs_root_fuse, run_onesuite
from hatools import rsync_copy

from onesuite_fs.core.inodes import Numbering
from onesuite_fs.core.onesis_config import OnesisSource
from onesuite_fs.core.view import View
from onesuite_fs.settings import Settings
from onesuite_fs.sources.systemimager import load_site

OVERRIDES = "var/lib/systemimager/overrides"


def served_fingerprint(root, numbering: Numbering) -> str:
    view = View(load_site(Settings(root=root)), "autoinstall", OnesisSource(),
                numbering=numbering)
    assert view.fingerprint is None  # not before everything is read
    view.prescan()
    assert view.fingerprint is not None
    return view.fingerprint


def test_copies_agree_and_any_difference_shows(example_site, tmp_path):
    copy = rsync_copy(example_site, tmp_path / "copy")
    key = Numbering.ephemeral()
    assert served_fingerprint(example_site, key) == served_fingerprint(copy, key)
    assert served_fingerprint(copy, Numbering.ephemeral()) != served_fingerprint(copy, key)
    motd = copy / OVERRIDES / "compute/etc/motd"
    if not motd.exists():
        motd = next(p for p in (copy / OVERRIDES).rglob("*") if p.is_file())
    st = os.stat(motd)
    os.utime(motd, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # one nanosecond later
    assert served_fingerprint(example_site, key) != served_fingerprint(copy, key)


@needs_root_fuse()
def test_status_shows_the_generation_and_the_fingerprint(example_site, tmp_path,
                                                         mount_site):
    key = tmp_path / "key"
    first = mount_site(example_site, "--handle-key", str(key), name="a")
    second = mount_site(rsync_copy(example_site, tmp_path / "copy"), "--handle-key", str(key),
                        name="b")

    def fingerprint(mount) -> str | None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = json.loads(run_onesuite("status", mount.mountpoint, "--json").stdout)
            if status["fingerprint"]:
                return status["fingerprint"]
            time.sleep(0.2)
        raise AssertionError("no fingerprint after 60 s")

    assert fingerprint(first) == fingerprint(second)
    text = run_onesuite("status", first.mountpoint).stdout
    assert f"store fingerprint {fingerprint(first)}" in text and "generation 1" in text
