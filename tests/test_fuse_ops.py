"""The pyfuse3 adapter called directly, without a kernel (s3ql-style): dot lookups, numbers
issued by an earlier daemon, negative entries, EROFS."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import pyfuse3
import pytest
import trio
from treetools import inode_tree

from onesuite_fs.daemon.fuse_ops import OnesuiteOperations
from onesuite_fs.settings import Settings
from onesuite_fs.sources.systemimager import load_site


def operations(site_root) -> OnesuiteOperations:
    return OnesuiteOperations(inode_tree(load_site(Settings(root=site_root)), "autoinstall"), 300)


async def lookup_path(ops: OnesuiteOperations, path: str) -> pyfuse3.EntryAttributes:
    ino = pyfuse3.ROOT_INODE
    attr = None
    for part in path.split("/"):
        attr = await ops.lookup(ino, part.encode())
        ino = attr.st_ino
    assert attr is not None
    return attr


def test_dot_and_dotdot_lookups(example_site):
    ops = operations(example_site)

    async def main() -> None:
        etc = await lookup_path(ops, "nodes/node001/etc")
        scripts = await lookup_path(ops, "nodes/node001/etc/sysconfig/network-scripts")
        sysconfig = await lookup_path(ops, "nodes/node001/etc/sysconfig")
        assert (await ops.lookup(scripts.st_ino, b"..")).st_ino == sysconfig.st_ino
        assert (await ops.lookup(sysconfig.st_ino, b"..")).st_ino == etc.st_ino
        assert (await ops.lookup(etc.st_ino, b".")).st_ino == etc.st_ino
        node_root = await lookup_path(ops, "nodes/node001")
        nodes = await lookup_path(ops, "nodes")
        assert (await ops.lookup(node_root.st_ino, b"..")).st_ino == nodes.st_ino
        assert (await ops.lookup(nodes.st_ino, b"..")).st_ino == pyfuse3.ROOT_INODE
        assert (await ops.lookup(pyfuse3.ROOT_INODE, b"..")).st_ino == pyfuse3.ROOT_INODE

    trio.run(main)


def test_numbers_from_an_earlier_daemon_resolve_without_a_prior_lookup(example_site):
    earlier, restarted = operations(example_site), operations(example_site)

    async def main() -> None:
        deep = await lookup_path(earlier, "nodes/login01/etc/ssh")
        passwd = await lookup_path(earlier, "nodes/login01/usr/bin/passwd")
        # The restarted daemon was never asked for these paths.
        again = await restarted.lookup(deep.st_ino, b".")
        assert (again.st_ino, again.generation, again.st_mode) == (
            deep.st_ino, deep.generation, deep.st_mode)
        parent = await restarted.lookup(deep.st_ino, b"..")
        assert parent.st_ino == (await lookup_path(earlier, "nodes/login01/etc")).st_ino
        assert (await restarted.getattr(passwd.st_ino)).st_size == passwd.st_size
        fd = (await restarted.open(passwd.st_ino, 0, None)).fh
        assert (await restarted.read(fd, 0, 4096)).startswith(b"#!/bin/sh")
        await restarted.release(fd)

    trio.run(main)


def test_unknown_numbers_are_stale_not_another_file(example_site):
    ops = operations(example_site)

    async def main() -> None:
        for ino in (5 << 40, (1 << 62) | 12345, (1 << 61) | 999):
            with pytest.raises(pyfuse3.FUSEError) as err:
                await ops.getattr(ino)
            assert err.value.errno == errno.ESTALE

    trio.run(main)


def test_missing_names_become_cached_negative_entries(example_site):
    ops = operations(example_site)

    async def main() -> None:
        etc = await lookup_path(ops, "nodes/node001/etc")
        negative = await ops.lookup(etc.st_ino, b"no-such-file")
        assert negative.st_ino == 0 and negative.entry_timeout == 300

    trio.run(main)


def test_writes_are_refused_with_erofs(example_site):
    ops = operations(example_site)
    ctx = SimpleNamespace(uid=0, gid=0, pid=1, umask=0o022)

    async def main() -> None:
        hostname = await lookup_path(ops, "nodes/node001/etc/hostname")
        etc = await lookup_path(ops, "nodes/node001/etc")
        fields = SimpleNamespace(update_size=True, update_mode=False, update_uid=False,
                                 update_gid=False, update_atime=False, update_mtime=False)
        calls = {
            "open": lambda: ops.open(hostname.st_ino, os.O_WRONLY, ctx),
            "create": lambda: ops.create(etc.st_ino, b"new", 0o644, os.O_WRONLY, ctx),
            "mkdir": lambda: ops.mkdir(etc.st_ino, b"x", 0o755, ctx),
            "truncate": lambda: ops.setattr(hostname.st_ino, hostname, fields, None, ctx),
            "unlink": lambda: ops.unlink(etc.st_ino, b"hostname", ctx),
            "rename": lambda: ops.rename(etc.st_ino, b"hostname", etc.st_ino, b"x", 0, ctx),
            "setxattr": lambda: ops.setxattr(hostname.st_ino, b"user.x", b"1", ctx),
        }
        for what, call in calls.items():
            with pytest.raises(pyfuse3.FUSEError) as err:
                await call()
            assert err.value.errno == errno.EROFS, what

    trio.run(main)
