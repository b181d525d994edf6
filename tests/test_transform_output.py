"""Outputs appear under their name only when complete: a failure, including the disk filling
up half way, removes the partial output and leaves an existing one alone."""

from __future__ import annotations

import errno
import os

import pytest

from onesuite_fs.core.errors import ConfigError
from onesuite_fs.transform.output import atomic_output


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_running_out_of_space_half_way_keeps_nothing(tmp_path, code):
    out = tmp_path / "n1.tar"
    out.write_text("the previous export")
    with pytest.raises(ConfigError) as raised, atomic_output(out) as temp:
        temp.write_text("half of it")
        raise OSError(code, "No space left on device")
    assert "ran out of space writing" in str(raised.value) and "nothing was kept" in str(
        raised.value)
    assert [p.name for p in tmp_path.iterdir()] == ["n1.tar"]
    assert out.read_text() == "the previous export"


def test_other_failures_pass_through_and_clean_up(tmp_path):
    out = tmp_path / "tree"
    with pytest.raises(OSError) as raised, atomic_output(out, directory=True) as temp:
        (temp / "etc").mkdir()
        raise OSError(errno.EIO, "Input/output error")
    assert raised.value.errno == errno.EIO
    assert list(tmp_path.iterdir()) == []


def test_a_complete_output_replaces_the_old_one(tmp_path):
    out = tmp_path / "tree"
    out.mkdir()
    (out / "old").write_text("old")
    with atomic_output(out, directory=True) as temp:
        (temp / "new").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["tree"]


def test_a_file_output_is_its_owners_alone_from_the_start(tmp_path):
    """A node's root as one file holds its secrets: the partial file is 0600 before anything
    is written into it (even with umask 0), and so is the output when a writing tool made
    the file anew with its own mode."""
    out = tmp_path / "n1.tar"
    old_umask = os.umask(0)
    try:
        with atomic_output(out) as temp:
            assert os.stat(temp).st_mode & 0o7777 == 0o600
            os.unlink(temp)
            temp.write_text("a tool that made its own file")
            os.chmod(temp, 0o666)
    finally:
        os.umask(old_umask)
    assert os.stat(out).st_mode & 0o7777 == 0o600
    assert out.read_text() == "a tool that made its own file"


def test_a_planted_link_at_the_partial_name_is_not_followed(tmp_path):
    """Another user who guessed the partial name cannot make the export write elsewhere:
    a symlink there is removed, never written through."""
    out = tmp_path / "n1.tar"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    from onesuite_fs.transform.output import temporary_name
    os.symlink(victim, temporary_name(out))
    with atomic_output(out) as temp:
        temp.write_text("root")
    assert victim.read_text() == "keep" and out.read_text() == "root"


def test_what_a_writer_staged_beside_the_partial_output_goes_with_it(tmp_path):
    """A disk image stages the root in `PARTIAL.work`, an ISO in `PARTIAL.stage`: a failure
    (or a signal) at any point, even before the writer's own clean-up is armed, leaves
    neither; another output's files are not touched."""
    out = tmp_path / "n1.raw"
    other = tmp_path / ".n1.raw.keep"
    other.write_text("not ours")
    with pytest.raises(KeyboardInterrupt), atomic_output(out) as temp:
        work = temp.with_name(temp.name + ".work")
        (work / "root/etc").mkdir(parents=True, mode=0o700)
        (work / "root/etc/shadow").write_text("secret")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == [".n1.raw.keep"]
