"""Making a node's persistent path the first time the node uses it (``persistent`` policy,
domain.md B.2.2): empty, or a copy of the merged tree's entry with ``-d``; mode and owner from
``-m``/``-u``/``-g``, else mirrored. Only a serving daemon writes; the View shows an unmade path
as what it would start from."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

from ..core.entry import Entry
from ..core.onesis_view import Writable
from ..core.resolve import Child
from ..core.state import DIR_MODE, FILE_MODE, NodeAttrs, NodeState, write_node_attrs
from ..core.view import View

_COPY_CHUNK = 1 << 20
log = logging.getLogger("onesuite.state")


def make_persistent_path(view: View, entry: Entry, state: NodeState, path: str,
                         item: Writable) -> None:
    """Built in the staging area, which is emptied whatever happens: a failed copy (a full
    disk) leaves nothing behind, and the next use tries again. Raises OSError (logged)."""
    try:
        with state.staging() as staging:
            built = staging / "entry"
            _build(view, entry, item, built)
            state.make_parents(path)
            state.publish(built, path)
    except OSError as exc:
        log.error("node %s: cannot make persistent path /%s (%s %s, %s:%s): %s",
                  entry.name, path, item.rule.kind, item.rule.pattern, item.rule.file,
                  item.rule.line, exc.strerror or exc)
        raise


def _build(view: View, entry: Entry, item: Writable, built: Path) -> None:
    """What the node's rule makes (the decisions are the core's, so preview shows the same:
    OnesisSource.copies_base and writable_attrs), built at `built`."""
    assert view.onesis is not None
    base = item.base
    is_dir = item.rule.kind in ("RAMDIR", "LINKDIR")
    base_path = f"{item.base_parent}/{base.name}" if base and item.base_parent else (
        base.name if base else "")
    copies = view.onesis.copies_base(item)
    if is_dir:
        if copies:
            assert base is not None
            _copy_dir(view, base, base_path, built)
        else:
            os.mkdir(built, DIR_MODE)
    elif copies:
        assert base is not None
        _copy_file(view, base.layer, base_path, built)
    else:
        os.close(os.open(built, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    write_node_attrs(built, view.onesis.writable_attrs(view, entry, item))


def _copy_file(view: View, layer: int, path: str, dest: Path) -> None:
    with os.fdopen(view.store.open_file(layer, path), "rb") as src:
        out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        with os.fdopen(out_fd, "wb") as out:
            shutil.copyfileobj(src, out, _COPY_CHUNK)


def _copy_dir(view: View, base: Child, base_path: str, dest: Path) -> None:
    """Copy a merged directory (all its layers) to dest. Stored 0700/0600 and the daemon's;
    each entry's mode, owner and device number are node attributes, and a device node, FIFO
    or socket is an empty stand-in (state.py)."""
    assert base.contribution is not None
    mdir = view.resolver.merged_dir(base_path, base.contribution, base.layer, base.meta)
    os.mkdir(dest, DIR_MODE)
    for name in mdir.names:
        child = mdir.children[name]
        source = f"{base_path}/{name}" if base_path else name
        target = dest / name
        mode = child.meta.mode
        if child.contribution is not None:
            _copy_dir(view, child, source, target)
        elif stat.S_ISREG(mode):
            _copy_file(view, child.layer, source, target)
        elif stat.S_ISLNK(mode):
            os.symlink(view.store.readlink(child.layer, source), target)
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        write_node_attrs(target, NodeAttrs.of(child.meta))
        os.utime(target, ns=(child.meta.atime_ns, child.meta.mtime_ns), follow_symlinks=False)
