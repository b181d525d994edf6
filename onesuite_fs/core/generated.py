"""The files a SystemImager 4.3 install writes itself, as a layer of a node's stack
(``--fidelity install``; docs/semantics.md, "What autoinstall writes after the image pass").

autoinstall writes ``/etc/systemimager/IMAGE_LAST_SYNCED_TO`` and ``/etc/fstab`` right after
the image pass and before the overrides (``etc/autoinstallscript.template`` lines 316-321 at
v4.3.0), so they are one stage between the image and the first override: an override of the
same path replaces them (its rsync always copies: the written file has the install's time).
si_pushoverrides pushes onto that installed root. si_updateclient writes IMAGE_LAST_SYNCED_TO
once more after every pass (``sbin/si_updateclient`` lines 620-628): a last stage, over the
overrides.

Each file is a layer of its own with no directory on disk (layers.Generated): its label
names what wrote it and a digest of the image, the path and the bytes, so its file is numbered
like any layer file (inodes.py: label, path, mtime, size, type), the same on every server with
the same key, shared by every node writing the same bytes, and new when they change. Pure:
the files come from the Site (sources/install_writes.py).
"""

from __future__ import annotations

import hashlib

from .layers import Generated, Layer
from .model import WrittenFile
from .stack import StackEntry, Stages

KIND = "generated"
UPDATECLIENT_WRITE = ("sbin/si_updateclient:623", "print FILE $image (after every pass)")
SYNCED_TO = "etc/systemimager/IMAGE_LAST_SYNCED_TO"


def generated_layer(tool: str, base: Layer, files: tuple[WrittenFile, ...]) -> Layer:
    """The layer of `files` written by `tool` onto `base`: named by a digest of the paths
    and bytes (and of where they were written onto)."""
    digest = hashlib.sha256(base.label.encode())
    for written in sorted(files, key=lambda f: f.path):
        digest.update(b"\0%s\0%d\0" % (written.path.encode("utf-8", "surrogateescape"),
                                       len(written.content)))
        digest.update(written.content)
    return Layer(KIND, f"{tool}@{digest.hexdigest()[:12]}", base.path, base.real,
                 base.allowed_by, generated=Generated(base, files))


def with_install_writes(stages: Stages, files: tuple[WrittenFile, ...], *,
                        updateclient: bool = False) -> Stages:
    """`stages` (a node's stack) with what its install writes: one stage after the image
    stage, a layer per file (so every node writing the same bytes onto the same image shares
    that file's layer, and its inode); with `updateclient`, IMAGE_LAST_SYNCED_TO (once more)
    as the last stage instead. Unchanged when the stack has no image."""
    if not files or not stages or stages[0][0].role != "image":
        return stages
    base = stages[0][0].layer
    if updateclient:
        synced = tuple(WrittenFile(f.path, f.content, f.mtime_ns, *UPDATECLIENT_WRITE)
                       for f in files if f.path == SYNCED_TO)
        if not synced:
            return stages
        return (*stages, (StackEntry(generated_layer("updateclient", base, synced),
                                     "written by si_updateclient after its passes", True),))
    stage = tuple(StackEntry(generated_layer("autoinstall", base, (written,)),
                             "written by autoinstall after the image pass", True)
                  for written in files)
    return (stages[0], stage, *stages[1:])
