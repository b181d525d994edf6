"""The functions a Warewulf template may call that need no renderer state: Go's
text/template builtins (but and/or, which short-circuit), Warewulf's pure ones
(overlay/funcmap.go UniqueField, go-systemd's unit name escaping, basename, inc, dec) and the
sprig functions the shipped overlays call. Each takes and returns govalues values; a wrong
argument raises ValueError or TypeError, which the renderer reports with file and line."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

import regex

from .govalues import IP, MISSING, GoStruct, WWBool, go_string, truth

REGEX_TIMEOUT = 0.25


def sort_key(key: object) -> tuple[int, object]:
    return (0, key) if isinstance(key, int | float) else (1, str(key))


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {go_string(value)}")
    return int(value)


def _basename(path: str) -> str:
    path = str(path).rstrip("/")
    if not path:
        return "/" if str(path).startswith("/") else "."
    return path.rsplit("/", 1)[-1]


def _unique_field(sep: str, index: int, text: str) -> str:
    seen: set[str] = set()
    out = []
    for line in str(text).split("\n"):
        fields = line.split(sep)
        if len(fields) > index and fields[index]:
            if fields[index] in seen:
                continue
            seen.add(fields[index])
        out.append(line)
    return "\n".join(out)


_UNIT_ALLOWED = re.compile(r"[A-Za-z0-9:_.]")


def _systemd_escape(text: str) -> str:
    """go-systemd unit.UnitNameEscape (systemd-escape)."""
    out = []
    for i, byte in enumerate(str(text).encode()):
        ch = chr(byte)
        if ch == "/":
            out.append("-")
        elif (i == 0 and ch == ".") or not _UNIT_ALLOWED.fullmatch(ch):
            out.append(f"\\x{byte:02x}")
        else:
            out.append(ch)
    return "".join(out)


def _systemd_escape_path(text: str) -> str:
    """go-systemd unit.UnitNamePathEscape (systemd-escape --path)."""
    path = os.path.normpath(str(text)) if text else "/"
    path = path.strip("/")
    if path in ("", "."):
        return "-"
    return _systemd_escape(path)


# ----- text/template builtins ------------------------------------------------------------------
def _eq(first: object, *others: object) -> bool:
    if not others:
        raise ValueError("missing argument for comparison")
    return any(_basic(first) == _basic(o) for o in others)


def _basic(value: object) -> object:
    if value is MISSING:
        raise ValueError("invalid type for comparison")
    if isinstance(value, WWBool):
        return str(value)
    if isinstance(value, list | dict | GoStruct):
        raise ValueError("non-comparable type")
    return value


def _compare(a: object, b: object) -> int:
    a, b = _basic(a), _basic(b)
    if isinstance(a, str) != isinstance(b, str):
        raise ValueError("incompatible types for comparison")
    return (a > b) - (a < b)  # type: ignore[operator]


def _index(item: object, *keys: object) -> object:
    for key in keys:
        if isinstance(item, dict):
            item = item.get(key, "" if _str_map(item) else None)
        elif isinstance(item, list | tuple | str):
            item = item[_int(key)]
        elif item is None or item is MISSING:
            raise ValueError("index of untyped nil")
        else:
            raise ValueError(f"can't index item of type {type(item).__name__}")
    return item


def _str_map(item: dict) -> bool:
    """Whether a map is one of Warewulf's map[string]string (Tags): a missing key is ""."""
    return getattr(item, "string_values", False)


def _length(item: object) -> int:
    if isinstance(item, list | tuple | dict | str):
        return len(item)
    raise ValueError(f"len of {go_string(item)}")


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+))?([a-zA-Z%])")


def _printf(fmt: str, *args: object) -> str:
    values = list(args)
    out, pos = [], 0

    def take() -> object:
        return values.pop(0) if values else MISSING

    for match in _VERB.finditer(str(fmt)):
        out.append(fmt[pos:match.start()])
        pos = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if width == "*":
            width = str(_int(take()))
        value = take()
        if value is MISSING and verb != "%":
            out.append(f"%!{verb}(MISSING)")
            continue
        if verb in ("v", "s"):
            text = go_string(value)
            if precision is not None:
                text = text[:int(precision)]
        elif verb == "q":
            text = json.dumps(go_string(value), ensure_ascii=False)
        elif verb == "t":
            text = go_string(value)
        elif verb in ("d", "x", "X", "o", "b", "c"):
            if not isinstance(value, int) or isinstance(value, bool):
                if verb in ("x", "X") and isinstance(value, str):
                    text = value.encode().hex()
                    text = text.upper() if verb == "X" else text
                else:
                    text = f"%!{verb}({type(value).__name__}={go_string(value)})"
            else:
                spec = {"d": "d", "x": "x", "X": "X", "o": "o", "b": "b", "c": "c"}[verb]
                text = format(value, spec)
        elif verb in ("f", "g", "e"):
            spec = f".{precision or 6}{verb}" if verb != "g" else "g"
            text = format(float(value), spec)  # type: ignore[arg-type]
        else:
            raise ValueError(f"printf verb %{verb} is not supported")
        if width:
            pad = "0" if "0" in flags and "-" not in flags and verb not in "sqv" else " "
            text = text.ljust(int(width)) if "-" in flags else text.rjust(int(width), pad)
        out.append(text)
    out.append(str(fmt)[pos:])
    if values:
        out.append("%!(EXTRA " + ", ".join(f"{type(v).__name__}={go_string(v)}"
                                           for v in values) + ")")
    return "".join(out)


def _print(*args: object) -> str:
    # fmt.Sprint: a space between operands when neither is a string.
    out = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_string(arg))
    return "".join(out)


BUILTINS: dict[str, Callable[..., object]] = {
    "not": lambda v: not truth(v),
    "len": _length,
    "index": _index,
    "print": _print,
    "printf": _printf,
    "println": lambda *a: " ".join(go_string(v) for v in a) + "\n",
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": lambda a, b: _compare(a, b) < 0,
    "le": lambda a, b: _compare(a, b) <= 0,
    "gt": lambda a, b: _compare(a, b) > 0,
    "ge": lambda a, b: _compare(a, b) >= 0,
}


# ----- sprig (github.com/Masterminds/sprig/v3), the functions overlays call -------------------
def _empty(value: object) -> bool:
    return not truth(value)


def _default(default: object, *given: object) -> object:
    if not given or _empty(given[0]):
        return default
    return given[0]


def _to_strings(value: object) -> list[str]:
    if isinstance(value, list | tuple):
        return [go_string(v) if not isinstance(v, str) else v for v in value]
    if value is None or value is MISSING:
        return []
    return [go_string(value)]


def _join(sep: str, value: object) -> str:
    return str(sep).join(_to_strings(value))


def _regex(pattern: str) -> regex.Pattern[str]:
    try:
        return regex.compile(str(pattern))
    except regex.error as exc:
        raise ValueError(f"bad regexp {pattern!r}: {exc}") from None


def _regex_match(pattern: str, text: str) -> bool:
    try:
        return _regex(pattern).search(str(text), timeout=REGEX_TIMEOUT) is not None
    except TimeoutError:
        raise ValueError(f"regexp {pattern!r} took too long") from None


def _regex_split(pattern: str, text: str, count: int) -> list[str]:
    parts = _regex(pattern).split(str(text), maxsplit=0 if _int(count) < 0 else _int(count)
                                  - 1 if _int(count) > 0 else 0, timeout=REGEX_TIMEOUT)
    return [] if _int(count) == 0 else parts


def _regex_replace_all(pattern: str, text: str, replacement: str) -> str:
    repl = re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", str(replacement))
    return _regex(pattern).sub(repl, str(text), timeout=REGEX_TIMEOUT)


def _without(items: object, *remove: object) -> list[object]:
    return [v for v in _as_list(items) if v not in remove]


def _as_list(value: object) -> list[object]:
    if isinstance(value, list | tuple):
        return list(value)
    if value is None or value is MISSING:
        return []
    raise ValueError(f"not a list: {go_string(value)}")


def _append(items: object, value: object) -> list[object]:
    return [*_as_list(items), value]


def _dict(*pairs: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for i in range(0, len(pairs), 2):
        out[go_string(pairs[i])] = pairs[i + 1] if i + 1 < len(pairs) else ""
    return out


def _set(mapping: dict, key: str, value: object) -> dict:
    if not isinstance(mapping, dict):
        raise ValueError("set needs a dict")
    mapping[str(key)] = value
    return mapping


def _has_key(mapping: object, key: str) -> bool:
    return isinstance(mapping, dict) and str(key) in mapping


def _ternary(yes: object, no: object, condition: object) -> object:
    return yes if truth(condition) else no


def _substr(start: object, end: object, text: str) -> str:
    text, s, e = str(text), _int(start), _int(end)
    if s < 0:
        return text[:e]
    if e < 0 or e > len(text):
        return text[s:]
    return text[s:e]


def _split(sep: str, text: str) -> dict[str, str]:
    return {f"_{i}": part for i, part in enumerate(str(text).split(str(sep)))}


def _split_list(sep: str, text: str) -> list[str]:
    return str(text).split(str(sep))


def _coalesce(*values: object) -> object:
    return next((v for v in values if truth(v)), None)


def _to_json(value: object) -> str:
    def plain(v: object) -> object:
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, IP):
            return None if v.address is None else str(v)
        if isinstance(v, GoStruct):
            raise ValueError("toJson of a Warewulf struct is not supported")
        return None if v is MISSING else v
    return json.dumps(plain(value), separators=(",", ":"), sort_keys=True)


def _indent(spaces: object, text: str) -> str:
    pad = " " * _int(spaces)
    return pad + str(text).replace("\n", "\n" + pad)


def _quote(*values: object) -> str:
    return " ".join(json.dumps(go_string(v), ensure_ascii=False) for v in values
                    if v is not None)


def _uniq(items: object) -> list[object]:
    out: list[object] = []
    for v in _as_list(items):
        if v not in out:
            out.append(v)
    return out


SPRIG: dict[str, Callable[..., object]] = {
    "default": _default,
    "empty": _empty,
    "coalesce": _coalesce,
    "ternary": _ternary,
    "join": _join,
    "without": _without,
    "append": _append,
    "list": lambda *items: list(items),
    "dict": _dict,
    "set": _set,
    "hasKey": _has_key,
    "regexMatch": _regex_match,
    "regexSplit": _regex_split,
    "regexReplaceAll": _regex_replace_all,
    "split": _split,
    "splitList": _split_list,
    "trim": lambda s: str(s).strip(" \t\n\r\v\f"),
    "trimSuffix": lambda suffix, s: str(s).removesuffix(str(suffix)),
    "trimPrefix": lambda prefix, s: str(s).removeprefix(str(prefix)),
    "trimAll": lambda chars, s: str(s).strip(str(chars)),
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "replace": lambda old, new, s: str(s).replace(str(old), str(new)),
    "contains": lambda sub, s: str(sub) in str(s),
    "hasPrefix": lambda prefix, s: str(s).startswith(str(prefix)),
    "hasSuffix": lambda suffix, s: str(s).endswith(str(suffix)),
    "substr": _substr,
    "quote": _quote,
    "squote": lambda *v: " ".join(f"'{go_string(x)}'" for x in v if x is not None),
    "toString": go_string,
    "toJson": _to_json,
    "indent": _indent,
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "first": lambda items: (_as_list(items) or [None])[0],
    "last": lambda items: (_as_list(items) or [None])[-1],
    "uniq": _uniq,
    "has": lambda needle, items: needle in _as_list(items),
    "sortAlpha": lambda items: sorted(_to_strings(items)),
    "add": lambda *n: sum(_int(v) for v in n),
    "sub": lambda a, b: _int(a) - _int(b),
    "atoi": lambda s: int(str(s)) if re.fullmatch(r"[-+]?\d+", str(s)) else 0,
    "cat": lambda *v: " ".join(go_string(x) for x in v if x is not None),
}


# Warewulf's own functions that need no renderer (overlay.go buildTemplateFuncMap).
WAREWULF_PURE: dict[str, Callable[..., object]] = {
    "basename": _basename, "inc": lambda i: _int(i) + 1, "dec": lambda i: _int(i) - 1,
    "UniqueField": _unique_field, "SystemdEscape": _systemd_escape,
    "SystemdEscapePath": _systemd_escape_path,
}
