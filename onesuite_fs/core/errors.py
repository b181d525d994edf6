"""Errors that carry where a bad input is and what the admin can do about it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ConfigError(Exception):
    """A configuration the tool cannot use: which file, where, what is wrong, what to do.

    `line` and `column` are 1-based and optional; `hint` says how to fix it.
    """

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    hint: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def location(self) -> str:
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        text = self.message
        if self.file is not None or self.line is not None:
            text = f"{self.location()}: {text}"
        if self.hint:
            text = f"{text}\n  hint: {self.hint}"
        return text


class SiteWarning(UserWarning):
    """Something SystemImager itself only warns about (e.g. a missing override directory)."""
