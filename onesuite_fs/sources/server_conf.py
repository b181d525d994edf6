"""The syntax of the two files a SystemImager server reads its places from, as their real
readers parse them: rsync stubs as rsyncd reads rsyncd.conf (rsyncd.conf(5)), and
systemimager.conf as Perl's AppConfig reads it (SystemImager 4.3 lib/SystemImager/Config.pm
lines 25-39 declare the keys; AppConfig's defaults decide the rest). docs/semantics.md,
"Where things are read from", lists each rule."""

from __future__ import annotations

import re
from collections.abc import Iterator

_SECTION = re.compile(r"^\s*\[([^\]]*)\]")
_COMMENT = re.compile(r"(?<!\\)#.*$")
_APPCONFIG_LINE = re.compile(r"^([^\s=]+)\s*(?:=\s*)?(.*?)\s*$")


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, line) with a trailing backslash joining the next line, as both
    rsyncd (params.c) and AppConfig::File continue lines."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending.append(raw[:-1])
            continue
        pending.append(raw)
        yield start, "".join(pending)
        pending = []
    if pending:
        yield start, "".join(pending)


def rsyncd_module_paths(text: str) -> dict[str, tuple[str, int]]:
    """module -> (path= value, line) of an rsyncd.conf fragment. rsyncd.conf(5): a line
    starting with '#' or ';' is a comment; parameter names are case-insensitive and their
    white space (leading, trailing, inner) is irrelevant; only the first '=' counts; the
    value keeps its inner white space, leading and trailing white space is dropped. A later
    path= of the same module wins, as rsyncd's does."""
    modules: dict[str, tuple[str, int]] = {}
    section: str | None = None
    for number, line in _logical_lines(text):
        stripped = line.lstrip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        header = _SECTION.match(line)
        if header:
            section = header.group(1).strip()
            continue
        name, equals, value = line.partition("=")
        if equals and section is not None and "".join(name.split()).lower() == "path":
            modules[section] = (value.strip(), number)
    return modules


def appconfig_values(text: str) -> dict[str, tuple[str, int]]:
    """KEY (upper case) -> (value, line) as AppConfig reads systemimager.conf: names are
    case-insensitive (AppConfig's CASE 0), '=' between name and value is optional, '#'
    starts a comment unless written '\\#', white space around the value is dropped; a
    '[block]' line prefixes the names after it with 'block_'. The last setting wins."""
    values: dict[str, tuple[str, int]] = {}
    prefix = ""
    for number, line in _logical_lines(text):
        line = _COMMENT.sub("", line).replace("\\#", "#").strip()
        if not line:
            continue
        header = _SECTION.match(line)
        if header and line.endswith("]"):
            block = header.group(1).strip()
            prefix = f"{block}_" if block else ""
            continue
        match = _APPCONFIG_LINE.match(line)
        if match:
            values[(prefix + match.group(1)).upper()] = (match.group(2), number)
    return values
