"""Shared fixtures: the example site, and real mounts through the real CLI, always torn
down by unmounting and waiting for the daemon's PID, even when a test fails."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onesuite_fs.daemon.process import pid_alive

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "tests"))

ONESUITE = [sys.executable, "-m", "onesuite_fs.cli"]


def needs_root_fuse() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        os.geteuid() != 0 and not os.environ.get("CI"),
        reason="FUSE mounts need root (/dev/fuse is 0600)")


def run_onesuite(*args: str | os.PathLike[str], check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*ONESUITE, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"onesuite {' '.join(map(str, args))} failed "
                             f"({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def _is_mounted(mountpoint: Path) -> bool:
    target = f" {os.path.realpath(mountpoint)} "
    with open("/proc/mounts") as mounts:
        return any(target in line for line in mounts)


_pid_alive = pid_alive  # the daemon's own check (onesuite_fs/process.py)


class Mount:
    """A running `onesuite mount` daemon; `stop()` unmounts and waits for it."""

    def __init__(self, root: Path, mountpoint: Path, log: Path, extra: tuple[str, ...]) -> None:
        self.root, self.mountpoint, self.log, self.extra = root, mountpoint, log, extra
        self.pid: int | None = None

    def start(self) -> Mount:
        run_onesuite("mount", "--root", self.root, "--log", self.log, *self.extra,
                     self.mountpoint)
        assert _is_mounted(self.mountpoint)
        self.pid = int(os.getxattr(self.mountpoint, "user.onesuite.pid"))
        return self

    def stop(self) -> None:
        unmounted = _is_mounted(self.mountpoint) and subprocess.run(
            ["fusermount3", "-u", str(self.mountpoint)], capture_output=True, check=False)
        if unmounted and unmounted.returncode != 0:  # busy: detach it rather than leak it
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True,
                           check=False)
        if self.pid is not None:
            deadline = time.monotonic() + 15
            while _pid_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(self.pid):
                os.kill(self.pid, 9)
            self.pid = None

    def node(self, host: str) -> Path:
        return self.mountpoint / "nodes" / host


@pytest.fixture
def mount_site(tmp_path: Path) -> Iterator:
    """mount_site(root, *options) -> a started Mount, stopped at teardown."""
    mounts: list[Mount] = []

    def start(root: Path, *options: str, name: str = "mnt") -> Mount:
        mountpoint = tmp_path / name
        mountpoint.mkdir(exist_ok=True)
        mount = Mount(root, mountpoint, tmp_path / f"{name}.log", options)
        mounts.append(mount)
        return mount.start()

    yield start
    for mount in reversed(mounts):
        mount.stop()


@pytest.fixture
def example_site(tmp_path: Path) -> Path:
    import example_site

    return example_site.build(tmp_path / "site")


@pytest.fixture
def fresh_ext4(tmp_path: Path) -> Iterator[Path]:
    """A directory on a new 64 MiB ext4 (one block group, 256-byte inodes), where
    the inode number of a removed file is the next one given out. Tests of what happens on
    inode reuse need that; a busy shared file system reuses numbers only now and then.
    Request it before mount_site, so it is unmounted after the mounts that use it."""
    image, mountpoint = tmp_path / "ext4.img", tmp_path / "ext4"
    mountpoint.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "256", "-N", "4096", "-E",
                    "lazy_itable_init=0", str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True,
                   capture_output=True)
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
