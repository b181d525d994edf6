"""SystemImager host-range lists: ``node001-node100,login\\-1 10.0.0.1-10.0.0.9``.

Mirrors ``SystemImager::HostRange::expand_range_list`` (domain.md A.3.2): items are split on
commas and white space, an unescaped ``-`` makes a range, numbers are zero-padded to the width
of the start number, ``\\-`` is a literal hyphen, and the result is de-duplicated and
string-sorted. Bracket forms (``node[1-4]``) are oneSIS/pdsh syntax, not SystemImager's, and
are taken literally here, as SystemImager would.

Deviation, on purpose: SystemImager splits only on ``,``, space and newline, so a tab in
``<node>`` would become part of a host name; we split on every white-space character and drop
empty items, because a name with a tab in it can never be a real host.
"""

from __future__ import annotations

import re

_UNESCAPED_HYPHEN = re.compile(r"(?<!\\)-")
_NUMBERED = re.compile(r"^(.*?)(\d+)(\..+)?$", re.DOTALL)
_ITEM_SEPARATORS = re.compile(r"[,\s]+")


def _ipv4_to_int(text: str) -> int | None:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() and int(p) <= 255 for p in parts):
        return None
    value = 0
    for part in parts:
        value = value * 256 + int(part)
    return value


def _int_to_ipv4(value: int) -> str:
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def _unescape(name: str) -> str:
    return name.replace("\\-", "-")


def expand_item(item: str) -> list[str]:
    """Expand one item (a host, ``A-B`` host range or IPv4 range) into host names."""
    pieces = _UNESCAPED_HYPHEN.split(item, maxsplit=1)
    if len(pieces) == 1:
        return [_unescape(item)]
    front, end = pieces
    ip_start, ip_end = _ipv4_to_int(front), _ipv4_to_int(end)
    # SystemImager treats address 0 (0.0.0.0) as "not an address"; so do we.
    if ip_start and ip_end:
        return [_int_to_ipv4(v) for v in range(ip_start, ip_end + 1)]
    start, stop = _NUMBERED.match(front), _NUMBERED.match(end)
    if (
        start is None
        or stop is None
        or int(start.group(2)) > int(stop.group(2))
        or start.group(1) != stop.group(1)
        or (start.group(3) or "") != (stop.group(3) or "")
    ):
        return [_unescape(item)]
    root, width, domain = _unescape(start.group(1)), len(start.group(2)), start.group(3) or ""
    return [
        f"{root}{number:0{width}d}{domain}"
        for number in range(int(start.group(2)), int(stop.group(2)) + 1)
    ]


def expand_range_list(text: str) -> list[str]:
    """Expand a whole ``<node>`` text into a sorted list of unique host names."""
    hosts: set[str] = set()
    for item in _ITEM_SEPARATORS.split(text):
        if item:
            hosts.update(expand_item(item))
    return sorted(hosts)
