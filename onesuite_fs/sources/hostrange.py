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

from ..core.limits import LimitExceeded

_UNESCAPED_HYPHEN = re.compile(r"(?<!\\)-")
_NUMBERED = re.compile(r"^(.*?)(\d+)(\..+)?$", re.DOTALL)
_ITEM_SEPARATORS = re.compile(r"[,\s]+")
_MAX_DIGITS = 253  # a DNS name's length


def _ipv4_to_int(text: str) -> int | None:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() and len(p) <= 3 and int(p) <= 255
                                  for p in parts):
        return None
    value = 0
    for part in parts:
        value = value * 256 + int(part)
    return value


def _int_to_ipv4(value: int) -> str:
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def _unescape(name: str) -> str:
    return name.replace("\\-", "-")


def expand_item(item: str, limit: int | None = None) -> list[str]:
    """Expand one item (a host, ``A-B`` host range or IPv4 range) into host names.

    With `limit`, an item that would make more names than that raises LimitExceeded before
    a single name is made (``node1-node99999999`` is 10^8 strings)."""
    pieces = _UNESCAPED_HYPHEN.split(item, maxsplit=1)
    if len(pieces) == 1:
        return [_unescape(item)]
    front, end = pieces
    ip_start, ip_end = _ipv4_to_int(front), _ipv4_to_int(end)
    # SystemImager treats address 0 (0.0.0.0) as "not an address"; so do we.
    if ip_start and ip_end:
        _check_size(item, ip_end - ip_start + 1, limit)
        return [_int_to_ipv4(v) for v in range(ip_start, ip_end + 1)]
    start, stop = _NUMBERED.match(front), _NUMBERED.match(end)
    for match in (start, stop):
        if match is not None and len(match.group(2)) > _MAX_DIGITS:
            # also past int()'s own limit of 4,300 digits
            raise LimitExceeded(f"host range {item[:40]!r}...: a number of "
                                f"{len(match.group(2)):,} digits",
                                f"a host number has at most {_MAX_DIGITS} digits")
    if (
        start is None
        or stop is None
        or _number(start) > _number(stop)
        or start.group(1) != stop.group(1)
        or (start.group(3) or "") != (stop.group(3) or "")
    ):
        return [_unescape(item)]
    root, width, domain = _unescape(start.group(1)), len(start.group(2)), start.group(3) or ""
    _check_size(item, _number(stop) - _number(start) + 1, limit)
    return [
        f"{root}{number:0{width}d}{domain}"
        for number in range(_number(start), _number(stop) + 1)
    ]


def _number(match: re.Match[str]) -> int:
    return int(match.group(2))


def _check_size(item: str, count: int, limit: int | None) -> None:
    if limit is not None and count > limit:
        raise LimitExceeded(
            f"host range {item[:80]!r} has {_count_text(count)} names, more than the "
            f"{limit:,} still allowed",
            "split the range, or raise [limits] max_nodes in onesuite.toml if the site "
            "really has that many nodes", counted=True)


def _count_text(count: int) -> str:
    return f"{count:,}" if count < 10 ** 15 else f"about 10^{len(str(count)) - 1}"


def expand_range_list(text: str, limit: int | None = None) -> list[str]:
    """Expand a whole ``<node>`` text into a sorted list of unique host names; with `limit`,
    more than that many names (counted before de-duplication) raise LimitExceeded."""
    hosts: set[str] = set()
    made = 0
    for item in _ITEM_SEPARATORS.split(text):
        if item:
            names = expand_item(item, None if limit is None else limit - made)
            made += len(names)
            hosts.update(names)
    return sorted(hosts)
