"""A fingerprint of what a generation serves, equal on every server that serves the same
thing: the same entries (nodes, groups, images) with the same layer stacks and slots, and in
every layer the same paths with the same file identities (type, size, mtime: what inode
numbers are made of, core/inodes.py). Two servers with equal fingerprints and one handle key
give every node the same NFS handles and the same bytes; ``onesuite status`` shows it so an
admin can compare servers (docs/nfs.md, "Several servers").

It is keyed with the site's handle key, so it tells nothing about the content to anyone
without it. It reads only listings the generation has already read (call it after
View.prescan, in a worker thread): it never touches the disk itself.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .entry import Entry
    from .inodes import Numbering
    from .layers import LayerStore


class Snapshot(Protocol):
    """What a fingerprint reads of a View (core/view.py has it)."""

    numbering: Numbering
    store: LayerStore
    entries: dict[str, dict[str, Entry]]


def fingerprint(view: Snapshot) -> str:
    """64 hex digits; equal fingerprints mean equal served content (up to a hash clash)."""
    digest = hashlib.blake2b(key=view.numbering.fingerprint_key, digest_size=16,
                             person=b"fingerprint")
    labels = [layer.label for layer in view.store.layers]
    for namespace in sorted(view.entries):
        for _name, entry in sorted(view.entries[namespace].items()):
            stack = "|".join(",".join(labels[i] for i in stage) for stage in entry.contribution)
            digest.update(f"E\0{entry.key}\0{entry.slot}\0{stack}\n".encode(
                "utf-8", "surrogateescape"))
    for layer_id in sorted(range(len(labels)), key=labels.__getitem__):
        digest.update(f"L\0{labels[layer_id]}\n".encode("utf-8", "surrogateescape"))
        lists = view.store.whiteouts.get(layer_id)
        for relpath, _line in sorted(lists.paths()) if lists is not None else ():
            digest.update(f"W\0{relpath}\n".encode("utf-8", "surrogateescape"))
        pending = [""]
        while pending:
            directory = pending.pop()
            listing = view.store.cached_listing(layer_id, directory)
            if listing is False:  # never read: the fingerprint would not be of what is served
                raise ValueError("fingerprint of a view that has not read every directory")
            for name, meta in sorted((listing or {}).items()):
                path = f"{directory}/{name}" if directory else name
                digest.update(b"%s\0%o\0%d\0%d\n" % (path.encode("utf-8", "surrogateescape"),
                                                      meta.mode, meta.size, meta.mtime_ns))
                if meta.is_dir:
                    pending.append(path)
    return digest.hexdigest()
