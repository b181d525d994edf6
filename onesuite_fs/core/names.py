"""Validation of the names that become path components: nodes, groups, images, overrides."""

from __future__ import annotations

from .errors import ConfigError

NAME_MAX = 255  # bytes in one path component (Linux NAME_MAX)


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
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        # No server file system takes it as one component: the persistent store names a
        # directory after each node (its first write failed, ENAMETOOLONG), as do exports.
        return f"is longer than {NAME_MAX} bytes"
    return None


def check_name(kind: str, name: str, *, file: str | None = None, line: int | None = None) -> str:
    """Return name unchanged, or raise ConfigError saying which name is unusable and why."""
    problem = name_problem(name)
    if problem is not None:
        shown = repr(name) if len(name) <= 60 else f"{name[:60]!r}... ({len(name):,} chars)"
        raise ConfigError(
            f"{kind} name {shown} {problem}", file=file, line=line,
            hint=f"a {kind} name becomes a directory name; rename it in the configuration",
        )
    return name
