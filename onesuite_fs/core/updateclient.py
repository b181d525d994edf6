"""What si_updateclient leaves out of every pass (``--override-order updateclient``).

si_updateclient (SystemImager 4.3) updates an installed node: ``rsync -av --delete`` of the
image, then ``rsync -aIv`` of each override, every pass with the same exclusions
(``sbin/si_updateclient`` lines 521-586 at v4.3.0): ``lost+found/``, ``/dev/`` on a node with
udev or devtmpfs (every current distribution: assumed), and each line of the node's own
``/etc/systemimager/updateclient.local.exclude`` that starts with the updated directory,
``/`` (line 541: ``m|^\\s*$directory|``). An excluded path is neither copied nor deleted: the
node keeps what it had, which is what autoinstall laid. So a node's (or group's) root under
this order is the updateclient merge, except that an excluded path shows the autoinstall
view's entry (or nothing, when the installed node has none), with everything below it.

Pure: parsing the list and matching paths. The View asks `Excludes.excluded` per entry.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any

EXCLUDE_FILE = "etc/systemimager/updateclient.local.exclude"
MAX_EXCLUDE_BYTES = 1 << 20  # a list past this is not a list an admin wrote
AUTOMATIC = ("lost+found/", "/dev/")  # si_updateclient lines 526 and 531


@dataclass(frozen=True)
class ExcludeRule:
    """One rsync exclude pattern (rsync(1), "INCLUDE/EXCLUDE PATTERN RULES")."""

    text: str
    where: str  # "FILE:LINE", or "si_updateclient (automatic)"
    regex: re.Pattern[str]
    anchored: bool  # starts with '/': matched against the whole path from the root
    has_slash: bool  # else matched against the last component only
    dir_only: bool  # a trailing '/': directories only

    def matches(self, path: str, is_dir: bool) -> bool:
        """`path`: relative to the root, no leading '/'."""
        if self.dir_only and not is_dir:
            return False
        if self.anchored:
            return self.regex.fullmatch(path) is not None
        if not self.has_slash:
            return self.regex.fullmatch(path.rpartition("/")[2]) is not None
        parts = path.split("/")  # matched against the end of the path, at a boundary
        return any(self.regex.fullmatch("/".join(parts[n:])) for n in range(len(parts)))


def _translate(pattern: str) -> str:
    """rsync's wildcards as a regex: `*` stops at '/', `**` does not, `?` one non-'/'
    character, `[...]` a class."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "^", "]") else i + 1)
            if end < 0:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1:end]
                if body[:1] == "!":
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
                continue
        elif char == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def rule(text: str, where: str) -> ExcludeRule:
    anchored = text.startswith("/")
    body = text.lstrip("/") if anchored else text
    dir_only = body.endswith("/")
    body = body.rstrip("/")
    return ExcludeRule(text, where, re.compile(_translate(body), re.DOTALL), anchored,
                       "/" in body or "**" in body, dir_only)


@dataclass(frozen=True)
class Excludes:
    """A node's exclusions: the automatic ones, then its file's."""

    rules: tuple[ExcludeRule, ...]
    source: str  # where the file was read: "override:n1 /etc/systemimager/..."

    def excluded(self, path: str, is_dir: bool) -> ExcludeRule | None:
        return next((r for r in self.rules if r.matches(path, is_dir)), None)


def parse_exclude_list(text: str, source: str) -> Excludes:
    """The rules si_updateclient passes to rsync: only lines that start with '/' (comments,
    blank lines and relative patterns are not used); the shell splits the command line on
    white space, so a line is cut at its first blank."""
    rules = [rule(text, "si_updateclient (automatic)") for text in AUTOMATIC]
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("/") and line.split()[0] != "/":
            rules.append(rule(line.split()[0], f"{source}:{number}"))
    return Excludes(tuple(rules), source)


@dataclass(frozen=True)
class Installed:
    """What an updateclient view keeps from the installed node: the autoinstall stack (its
    stages, for explain; its contribution, to merge) and the exclusions."""

    stages: Any  # stack.Stages
    contribution: tuple[tuple[int, ...], ...]
    excludes: Excludes


def read_exclude_list(store: Any, resolver: Any, contribution: tuple[tuple[int, ...], ...]
                      ) -> tuple[str, str] | None:
    """(the file's text, where it was read) from the installed root, or None when it has
    none (si_updateclient then stops: "Couldn't open ... for reading!", line 540)."""
    found = resolver.resolve_path(contribution, EXCLUDE_FILE)
    if found is None or found.contribution is not None or found.meta.size > MAX_EXCLUDE_BYTES:
        return None
    if not stat.S_ISREG(found.meta.mode):
        return None
    with os.fdopen(store.open_file(found.layer, EXCLUDE_FILE), "rb") as f:
        text = f.read(MAX_EXCLUDE_BYTES).decode("utf-8", "surrogateescape")
    return text, f"{store.layer(found.layer).label} /{EXCLUDE_FILE}"


def installed_view(tree: Any, stages: Any, contribution: tuple[tuple[int, ...], ...]
                   ) -> Installed | None:
    """The installed stack and the exclusions its root lists; None without a list."""
    if not contribution:
        return None
    found = read_exclude_list(tree.store, tree.resolver, contribution)
    if found is None:
        return None
    return Installed(stages, contribution, parse_exclude_list(*found))


def installed_children(tree: Any, installed: Installed, path: str) -> dict[str, Any]:
    """The installed root's merged directory at `path` (relative), or {} when it has none."""
    resolver = tree.resolver
    if not path:
        top = tree.store.metadata_layer(installed.contribution)
        return resolver.merged_dir("", installed.contribution, top,
                                   tree.store.root_meta(top)).children
    found = resolver.resolve_path(installed.contribution, path)
    if found is None or found.contribution is None:
        return {}
    return resolver.merged_dir(path, found.contribution, found.layer, found.meta).children


def keep_excluded(tree: Any, installed: Installed, path: str,
                  children: dict[str, Any]) -> dict[str, Any]:
    """A directory of the updateclient merge, with every excluded entry replaced by the
    installed node's (or removed, when it has none): rsync neither copies nor deletes an
    excluded path. Shared unchanged when nothing in it is excluded."""
    excludes = installed.excludes

    def excluded(name: str, child: Any) -> bool:
        full = f"{path}/{name}" if path else name
        return excludes.excluded(full, child.contribution is not None) is not None

    dropped = [name for name, child in children.items() if excluded(name, child)]
    kept = {name: child for name, child in installed_children(tree, installed, path).items()
            if excluded(name, child)}
    if not dropped and not kept:
        return children
    result = {name: child for name, child in children.items() if name not in dropped}
    result.update(kept)
    return result


def excluding_rule(excludes: Excludes, path: str, is_dir: bool | None) -> ExcludeRule | None:
    """The rule that keeps `path` (relative) as installed: its own, or a directory's above
    it. `is_dir` None: either type (what the path is not known)."""
    parts = path.split("/")
    for depth in range(1, len(parts)):
        found = excludes.excluded("/".join(parts[:depth]), True)
        if found is not None:
            return found
    if is_dir is None:
        return excludes.excluded(path, True) or excludes.excluded(path, False)
    return excludes.excluded(path, is_dir)
