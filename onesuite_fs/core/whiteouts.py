"""Whiteouts: an override that hides paths of the layers below it, for its nodes only
(opt-in, `--whiteouts`; docs/semantics.md, "Whiteouts").

SystemImager has no deletion (domain.md A.2.4), so this is off by default and the roots stay
exactly SystemImager's. With it on, an override directory `DIR` may have a list file beside
it, `DIR.whiteouts` (`overrides/node001.whiteouts` next to `overrides/node001/`): one
absolute path of the node's root per line; `#` at the start of a line or after a blank
starts a comment; blank lines are ignored. Each path
is hidden, with everything below it, from every layer applied before that override (and,
in pushoverrides' one multi-source copy, from the sources after it). The override itself,
and any layer applied after it, may lay the path again: a list entry plus the same
directory in the override is an opaque directory.

The list lives beside the tree, not in it, so SystemImager's own tools (rsync of
`overrides/NAME/` by autoinstall, si_updateclient, si_pushoverrides) never copy it onto a
node; an installed node keeps the files, as it always did.

This module is pure: parsing (bounded, every problem with file:line) and the lookups the
merge (resolve.py) asks for.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .names import NAME_MAX

SUFFIX = ".whiteouts"
MAX_LIST_BYTES = 4 * 1024 * 1024  # a list of 100,000 deep paths fits; a log file does not
MAX_LINES = 100_000
MAX_PATH_BYTES = 4096  # PATH_MAX
LAYER_KINDS = ("override", "overlay")  # an image is the lowest layer: nothing to hide
_COMMENT = re.compile(r"(?:^|\s)#")  # '#' at the start or after a blank starts a comment


def list_path(layer_path: Path, kind: str = "override") -> Path:
    """Where a layer's list is: beside its directory, named like it plus `.whiteouts`; for
    a Warewulf overlay whose files are in `NAME/rootfs/`, `NAME/whiteouts` beside rootfs
    (Warewulf builds an overlay's image from rootfs only)."""
    if kind == "overlay" and layer_path.name == "rootfs":
        return layer_path.parent / "whiteouts"
    return layer_path.with_name(layer_path.name + SUFFIX)


@dataclass
class Whiteouts:
    """One layer's parsed list."""

    file: str
    # directory (relative, "" = root) -> name hidden there -> line number
    hidden: dict[str, dict[str, int]] = field(default_factory=dict)
    # directory -> names of its subdirectories below which this layer hides something
    passes: dict[str, set[str]] = field(default_factory=dict)

    def add(self, relpath: str, line: int) -> None:
        parent, _, name = relpath.rpartition("/")
        self.hidden.setdefault(parent, {}).setdefault(name, line)
        while parent:
            above, _, below = parent.rpartition("/")
            self.passes.setdefault(above, set()).add(below)
            parent = above

    def paths(self) -> list[tuple[str, int]]:
        """(relative path, line) of every entry, in line order."""
        found = [(f"{d}/{n}" if d else n, line)
                 for d, names in self.hidden.items() for n, line in names.items()]
        return sorted(found, key=lambda item: item[1])

    def line_of(self, relpath: str) -> int | None:
        parent, _, name = relpath.rpartition("/")
        return self.hidden.get(parent, {}).get(name)

    def where(self, relpath: str) -> str:
        return f"{self.file}:{self.line_of(relpath)}"


def _problem(path: str) -> str | None:
    if not path.startswith("/"):
        return "is not absolute (write it as the node sees it, e.g. /etc/motd)"
    body = path[1:].removesuffix("/")
    if not body:
        return "is the root directory itself, which cannot be hidden"
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    for part in body.split("/"):
        if part in ("", ".", ".."):
            return "has an empty, '.' or '..' component (a list names paths, nothing relative)"
        if any(ord(c) < 32 or ord(c) == 127 for c in part):
            return "has a control character"
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            return f"has a component longer than {NAME_MAX} bytes"
    return None


def parse(data: bytes, file: str) -> Whiteouts:
    """A list file's content; any bad line refuses the whole list (file:line)."""
    if len(data) > MAX_LIST_BYTES:
        raise ConfigError(f"whiteout list is {len(data):,} bytes, more than "
                          f"{MAX_LIST_BYTES:,}", file=file,
                          hint="hide a directory instead of every file in it")
    if b"\0" in data:
        raise ConfigError("whiteout list contains a NUL byte (not a text file)", file=file,
                          line=data[:data.index(b"\0")].count(b"\n") + 1)
    result = Whiteouts(file)
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    if len(lines) > MAX_LINES + 1:
        raise ConfigError(f"whiteout list has more than {MAX_LINES:,} lines", file=file,
                          line=MAX_LINES + 1, hint="hide a directory instead of every file")
    for number, raw in enumerate(lines, 1):
        text = _COMMENT.split(raw, maxsplit=1)[0].strip()
        if not text:
            continue
        problem = _problem(text)
        if problem is not None:
            shown = text if len(text) <= 80 else text[:80] + "..."
            raise ConfigError(f"whiteout {shown!r} {problem}", file=file, line=number,
                              hint="one absolute path per line; '#' starts a comment")
        result.add(text[1:].removesuffix("/"), number)
    return result


def read(layer_path: Path, kind: str = "override") -> Whiteouts | None:
    """The layer's list, or None when it has none. The list must be a regular file, opened
    without following a symlink (it is input like the layers: never followed elsewhere)."""
    path = list_path(layer_path, kind)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError("whiteout list is a symlink; not followed", file=str(path),
                              hint="make it a plain file beside the override") from None
        raise ConfigError(f"cannot read whiteout list: {exc.strerror}", file=str(path)) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            return None  # another override named NAME.whiteouts, not a list
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("whiteout list is not a regular file", file=str(path))
        chunks, total = [], 0
        while total <= MAX_LIST_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    return parse(b"".join(chunks), str(path))


class Catalog:
    """Every layer's list of one store, by layer id (LayerStore.whiteouts)."""

    def __init__(self) -> None:
        self.by_layer: dict[int, Whiteouts] = {}
        self._covered: dict[str, None] = {}  # every listed path, any layer

    def __bool__(self) -> bool:
        return bool(self.by_layer)

    def set(self, layer: int, found: Whiteouts) -> None:
        self.by_layer[layer] = found
        for relpath, _line in found.paths():
            self._covered[relpath] = None

    def get(self, layer: int) -> Whiteouts | None:
        return self.by_layer.get(layer)

    def covers(self, relpath: str) -> bool:
        """Whether some list of the site names `relpath` or a directory above it: such a
        layer file is numbered apart (View.number), so that a handle a node held before a
        whiteout hid the file is stale afterwards."""
        if not self._covered:
            return False
        at = len(relpath)
        while at > 0:
            if relpath[:at] in self._covered:
                return True
            at = relpath.rfind("/", 0, at)
        return False
