"""The site's handle key: made once, private, and refused when anyone else could read it
(whoever reads it can compute every node's NFS handles)."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from conftest import needs_root_fuse, run_onesuite

from onesuite_fs.core.errors import ConfigError
from onesuite_fs.core.inodes import Numbering
from onesuite_fs.daemon.handle_key import load_or_create_key


def test_made_on_first_use_private_and_stable(tmp_path):
    path = tmp_path / "keys" / "handle.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and load_or_create_key(path) == key
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    assert os.listdir(path.parent) == ["handle.key"]  # no temporary file left
    # Same key, same numbers (every server of a site); another key, other numbers.
    same, other = Numbering(key), Numbering.ephemeral()
    assert same.dir_ino(5, "etc") == Numbering(key).dir_ino(5, "etc")
    assert same.dir_ino(5, "etc") != other.dir_ino(5, "etc")
    assert same.backed_ino("image:x", "etc/passwd", b"1") != other.backed_ino("image:x",
                                                                             "etc/passwd", b"1")


def _make(path: str) -> bytes:
    return load_or_create_key(Path(path))


def test_servers_starting_at_once_agree_on_one_key(tmp_path):
    path = tmp_path / "handle.key"
    with ProcessPoolExecutor(4) as pool:
        keys = set(pool.map(_make, [str(path)] * 16))
    assert len(keys) == 1


@pytest.mark.parametrize("problem", ["group-readable", "symlink", "not hex", "short", "dir"])
def test_an_unsafe_or_broken_key_is_refused(tmp_path, problem):
    path = tmp_path / "handle.key"
    good = load_or_create_key(tmp_path / "good.key")
    if problem == "group-readable":
        path.write_text(good.hex() + "\n")
        path.chmod(0o640)
    elif problem == "symlink":
        path.symlink_to(tmp_path / "good.key")
    elif problem == "not hex":
        path.write_text("not a key at all, but long enough to look like one\n")
        path.chmod(0o600)
    elif problem == "short":
        path.write_text("abcd\n")
        path.chmod(0o600)
    else:
        path.mkdir()
    with pytest.raises(ConfigError) as err:
        load_or_create_key(path)
    assert str(path) in str(err.value)


@needs_root_fuse()
@pytest.mark.mount
def test_mount_refuses_a_readable_key_with_a_clear_error(example_site, tmp_path):
    key = tmp_path / "handle.key"
    key.write_text(os.urandom(32).hex() + "\n")
    key.chmod(0o644)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    done = run_onesuite("mount", "--root", example_site, "--handle-key", key, mountpoint,
                        check=False)
    assert done.returncode == 2, done.stderr
    assert f"{key}: the handle key has mode 0644" in done.stderr
    assert "Traceback" not in done.stderr and not os.path.ismount(mountpoint)

