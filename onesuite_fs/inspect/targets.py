"""What `onesuite preview/explain/diff` are asked about: `node:n1`, `group:Login`,
`image:rhel9` (or a bare name), a plain directory (`dir:/path`, diff only), and paths."""

from __future__ import annotations

import difflib
import posixpath
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..core.view import Entry, View

NAMESPACE_OF_KIND = {"node": "nodes", "group": "groups", "image": "images"}
BARE_ORDER = ("node", "group", "image")  # a bare name is looked for in this order


@dataclass(frozen=True)
class Target:
    """A resolved view: a tree entry, or (kind "dir") a directory on disk."""

    kind: str  # node, group, image or dir
    name: str
    entry: Entry | None = None
    directory: Path | None = None

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.name}"


def resolve_target(tree: View, spec: str, *, allow_dir: bool = False) -> Target:
    """`kind:name` or a bare name (a node, else a group, else an image). Raises ConfigError
    naming close matches when nothing has that name."""
    kind, sep, name = spec.partition(":")
    if not sep or (kind not in NAMESPACE_OF_KIND and kind != "dir"):
        kind, name = "", spec
    if kind == "dir":
        if not allow_dir:
            raise ConfigError(f"{spec}: a directory can only be compared (onesuite diff)")
        path = Path(name)
        if not path.is_dir():
            raise ConfigError(f"{spec}: not a directory")
        return Target("dir", str(path), directory=path)
    for candidate in [kind] if kind else BARE_ORDER:
        entry = tree.entries[NAMESPACE_OF_KIND[candidate]].get(name)
        if entry is not None:
            return Target(candidate, name, entry)
    raise _unknown(tree, kind, name)


def _unknown(tree: View, kind: str, name: str) -> ConfigError:
    what = kind or "node, group or image"
    broken = tree.site.broken.get(name)
    if kind in ("", "node") and broken is not None:
        return ConfigError(f"node {name!r} is not served: {broken.message}", file=broken.file,
                           line=broken.line, hint=broken.hint)
    if kind in ("", "group") and any(g.name == name for g in tree.site.cluster.groups):
        return ConfigError(f"group {name!r} has nothing to show",
                           hint="it names no image and none of its override directories "
                                "exists")
    known = [f"{k}:{n}" for k in ([kind] if kind else BARE_ORDER)
             for n in tree.entries[NAMESPACE_OF_KIND[k]]]
    # Match on the bare names too, so "node01" finds "node:node001".
    by_name = {entry.partition(":")[2]: entry for entry in known}
    close = close_matches(name, list(by_name))
    hint = (f"close matches: {', '.join(by_name[c] for c in close)}" if close
            else "'onesuite nodes' lists the nodes, their groups and images")
    return ConfigError(f"no {what} named {name!r}", hint=hint)


def close_matches(word: str, names: list[str], n: int = 5) -> list[str]:
    """difflib's close matches, equally close ones in name order (stable messages)."""
    found = difflib.get_close_matches(word, names, n=n, cutoff=0.5)
    return sorted(found, key=lambda c: (-difflib.SequenceMatcher(None, word, c).ratio(), c))


def normalize_path(path: str) -> str:
    """An absolute path inside a root, "/" for the root itself. Lexical only: `..` never
    climbs out of the root and symlinks are never followed (they are data here)."""
    normal = posixpath.normpath("/" + path.strip())
    return "/" + normal.lstrip("/")


def path_parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part]
