"""Helpers for the preview/explain/diff tests: run the CLI in-process and read its --json,
build the same Tree the CLI builds, and walk a mounted root the way an admin's tools would."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from onesuite_fs.cli import build_parser, main
from onesuite_fs.cli.common import build_view, load
from onesuite_fs.core.view import View

KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
         stat.S_IFIFO: "fifo", stat.S_IFCHR: "chr", stat.S_IFBLK: "blk", stat.S_IFSOCK: "sock"}


def onesuite_json(capsys, *args: str | os.PathLike[str]) -> tuple[int, dict[str, Any]]:
    """Run `onesuite ARGS --json` in this process: (exit status, parsed stdout)."""
    capsys.readouterr()
    status = main([*map(str, args), "--json"])
    return status, json.loads(capsys.readouterr().out)


def cli_tree(root: Path, *options: str) -> View:
    """The View `onesuite preview --root ROOT OPTIONS` builds."""
    args = build_parser().parse_args(["preview", "--root", str(root), *options, "x"])
    settings, site = load(args)
    return build_view(settings, site, one_pass=True)


def mounted_entries(root: Path) -> dict[str, dict[str, Any]]:
    """Every entry under a mounted view as preview --json describes one, symlinks not
    followed, origins from the trusted.onesuite.origin xattr (set on every file type)."""
    found: dict[str, dict[str, Any]] = {}
    pending = [("/", os.fspath(root))]
    while pending:
        key, path = pending.pop()
        st = os.lstat(path)
        kind = KINDS[stat.S_IFMT(st.st_mode)]
        found[key] = {
            "path": key, "type": kind, "mode": f"{stat.S_IMODE(st.st_mode):04o}",
            "uid": st.st_uid, "gid": st.st_gid, "size": st.st_size,
            "rdev": [os.major(st.st_rdev), os.minor(st.st_rdev)] if kind in ("chr", "blk")
            else None,
            "target": os.readlink(path) if kind == "symlink" else None,
            "origin": os.getxattr(path, "trusted.onesuite.origin",
                                  follow_symlinks=False).decode(),
        }
        if kind == "dir":
            with os.scandir(path) as children:
                pending += [(f"{key.rstrip('/')}/{c.name}", c.path) for c in children]
    return found


PREVIEW_KEYS = ("path", "type", "mode", "uid", "gid", "size", "rdev", "target", "origin")


def preview_entries(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["path"]: {k: e[k] for k in PREVIEW_KEYS} for e in document["entries"]}
