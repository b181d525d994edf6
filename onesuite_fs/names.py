"""Validation of the names that become path components: nodes, groups, images, overrides."""

from __future__ import annotations

from .errors import ConfigError


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a single path component of a view, or None if it can."""
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "is a relative path component"
    if "/" in name:
        return "contains '/'"
    if "\0" in name:
        return "contains a NUL byte"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    return None


def check_name(kind: str, name: str, *, file: str | None = None, line: int | None = None) -> str:
    """Return name unchanged, or raise ConfigError saying which name is unusable and why."""
    problem = name_problem(name)
    if problem is not None:
        raise ConfigError(
            f"{kind} name {name!r} {problem}", file=file, line=line,
            hint=f"a {kind} name becomes a directory name; rename it in the configuration",
        )
    return name
