"""Where a layer root may be: inside its directory, or in a place the admin allowed.

A layer root (an image or an override directory) is *inside* when it lies below its
directory (the images or overrides directory) and its real path is that same path: no ``..``
and no symlink between the trusted base and the root. The trusted base is ``--root`` for
everything the server's own files name (stubs, systemimager.conf, the standard directories),
or the directory onesuite's own configuration names explicitly (``[paths]``, ``[images]``).
Anything else is *elsewhere*, served only when its real path is in one of the directories
listed in ``allow_layers_outside`` (docs/configuration.md), and shown with that real path.

The real path found here is what layers.py opens and checks again on every open, so a root
swapped for a symlink after the load is never followed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError

ALLOW_HINT = ("or, if layers are kept there on purpose, list the directory that holds them "
              "in allow_layers_outside ([paths] of onesuite.toml) or --allow-layers-outside")


@dataclass(frozen=True)
class Placement:
    """Where a layer root really is, and which allowed directory lets it be elsewhere."""

    real: Path
    allowed_by: Path | None = None  # None: inside its directory


def has_dotdot(server_path: str) -> bool:
    return ".." in server_path.split("/")


def is_within(path: Path, directory: Path, *, strictly: bool = False) -> bool:
    """Lexical containment of normalized absolute paths."""
    if path == directory:
        return not strictly
    return path.is_relative_to(directory)


def _real(path: Path) -> Path | None:
    try:
        return Path(os.path.realpath(path, strict=True))
    except OSError:
        return None


class LayerPlaces:
    """Decides, at load, whether each layer root may be served, and from which real path."""

    def __init__(self, prefix: Path, explicit: tuple[Path, ...], allowed: tuple[Path, ...],
                 allowed_source: str | None) -> None:
        self.prefix = Path(os.path.normpath(prefix))
        # Directories onesuite's own configuration names: trusted as written.
        self.explicit = tuple(Path(os.path.normpath(p)) for p in explicit)
        self.allowed = tuple((entry, real_allowed(entry, allowed_source)) for entry in allowed)
        self._reals: dict[Path, Path | None] = {}
        self._homes: dict[Path, tuple[Path, Path, bool]] = {}  # home -> (normal, real, inside)

    def _real_cached(self, path: Path) -> Path | None:
        if path not in self._reals:
            self._reals[path] = _real(path)
        return self._reals[path]

    def base_of(self, home: Path) -> Path:
        """The trusted directory `home` is judged from (the deepest explicit one)."""
        for explicit in sorted(self.explicit, key=lambda p: len(p.parts), reverse=True):
            if is_within(home, explicit):
                return explicit
        return self.prefix

    def expected_real(self, path: Path, home: Path) -> Path | None:
        """The real path `path` has when nothing between its base and it is a symlink."""
        base = self.base_of(home)
        real_base = self._real_cached(base)
        if real_base is None or not is_within(path, base):
            return None
        return real_base / path.relative_to(base)

    def allowed_for(self, real: Path) -> Path | None:
        for entry, real_entry in self.allowed:
            if is_within(real, real_entry):
                return entry
        return None

    def place(self, path: Path, home: Path, what: str, *, file: str | None = None,
              line: int | None = None, fix: str = "") -> Placement | None:
        """Where the layer root `path` (below `home`) really is; None when it does not
        exist; ConfigError when it is elsewhere and not allowed."""
        path = Path(os.path.normpath(path))
        real = _real(path)
        if real is None:
            return None
        inside = (is_within(path, home, strictly=True)
                  and self.expected_real(path, home) == real)
        if inside or self.links_inside(path, home, real):
            return Placement(real)
        allowed_by = self.allowed_for(real)
        if allowed_by is not None:
            return Placement(real, allowed_by)
        if os.path.islink(path):
            why = f"is a symlink to {real}: a layer root must be a directory, not a link"
        elif real != path:
            why = (f"really is {real} (a symlink on the way): a layer is served only from "
                   f"its own directory {home}")
        else:
            why = f"is outside the directory {home}"
        raise ConfigError(f"{what} at {path} {why}", file=file, line=line,
                          hint=f"{fix or 'make it a directory inside ' + str(home)}, {ALLOW_HINT}")

    def links_inside(self, path: Path, home: Path, real: Path) -> bool:
        """Whether `path` is a symlink (or a chain of them) whose real path `real` is a
        directory strictly inside `home`, itself inside its base: rsyncd serves such a
        module or override as that directory (overrides/n2 -> n1 delivers n1's files), and
        nothing outside the layers is reached. `real` is what realpath found; layers.py
        opens it with O_NOFOLLOW, so a link swapped after the load is never followed."""
        if not os.path.islink(path) or not is_within(path, home, strictly=True):
            return False
        real_home = self._real_cached(Path(os.path.normpath(home)))
        if real_home is None or self.expected_real(home, home) != real_home:
            return False
        return is_within(real, real_home, strictly=True) and os.path.isdir(real)

    def _home(self, home: Path) -> tuple[Path, Path, bool]:
        verdict = self._homes.get(home)
        if verdict is None:
            normal = Path(os.path.normpath(home))
            real_home = self._real_cached(normal)
            assert real_home is not None  # the caller listed it
            verdict = self._homes[home] = (normal, real_home,
                                           self.expected_real(normal, normal) == real_home)
        return verdict

    def home_is_inside(self, home: Path) -> bool:
        """Whether the children of `home` that are no symlinks are inside (no symlink on
        the way to `home`): then they need no check of their own."""
        return self._home(home)[2]

    def place_child(self, home: Path, name: str, what: str) -> Placement:
        """A directory entry of `home` that is not a symlink: one realpath per home, not one
        per entry (10,000 host overrides)."""
        home, real_home, home_inside = self._home(home)
        real = real_home / name
        if home_inside:
            return Placement(real)
        allowed_by = self.allowed_for(real)
        if allowed_by is not None:
            return Placement(real, allowed_by)
        raise ConfigError(f"{what} at {home / name} really is {real} (a symlink on the way): a "
                          f"layer is served only from its own directory", file=str(home),
                          hint=f"replace the symlinked directory by the directory itself, "
                               f"{ALLOW_HINT}")


def real_allowed(entry: Path, source: str | None) -> Path:
    """An allow_layers_outside entry: an existing directory, not / (that would allow
    everything, the server's /etc included)."""
    if not entry.is_absolute():
        raise ConfigError(f"allow_layers_outside entry {str(entry)!r} is not absolute",
                          file=source, hint="name the directory by its absolute path")
    real = _real(entry)
    if real is None or not real.is_dir():
        raise ConfigError(f"allow_layers_outside entry {entry} is not a directory",
                          file=source, hint="name an existing directory that holds layers")
    if real == Path("/"):
        raise ConfigError(f"allow_layers_outside entry {entry} is the whole filesystem",
                          file=source,
                          hint="list only the directories that hold images or overrides, "
                               "e.g. /data/images")
    return real
