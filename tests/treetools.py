"""Building the daemon's tree (an InodeTree over a View) in tests that ask by inode number."""

from __future__ import annotations

from pathlib import Path

from onesuite_fs.core.model import Site
from onesuite_fs.core.onesis_config import OnesisSource
from onesuite_fs.core.view import View
from onesuite_fs.daemon.inode_tree import InodeTree


def inode_tree(site: Site, order: str, onesis: OnesisSource | None = None,
               state_dir: Path | None = None, *, create_state: bool = False,
               bounded_caches: bool = False) -> InodeTree:
    """What a mount serves (`create_state`: a serving mount, which makes persistent paths)."""
    view = View(site, order, onesis, state_dir, bounded_caches=bounded_caches)
    return InodeTree(view, create_state=create_state)
