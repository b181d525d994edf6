"""Go values as Warewulf's templates see them: structs, net.IP, wwtype.WWbool, maps, and
how text/template prints them and decides their truth (sources/wwtemplate.py renders)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field


class Missing:
    """Go's invalid reflect.Value: a map key that is not there (missingkey=default)."""

    def __repr__(self) -> str:
        return "<no value>"


MISSING = Missing()


class IP:
    """A Go net.IP: prints dotted or compressed, ``<nil>`` when unset; false when empty."""

    __slots__ = ("address",)

    def __init__(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> None:
        self.address = address

    def __bool__(self) -> bool:
        return self.address is not None

    def __str__(self) -> str:
        return "<nil>" if self.address is None else str(self.address)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IP) and other.address == self.address

    def __hash__(self) -> int:
        return hash(self.address)


class WWBool(str):
    """wwtype.WWbool: a string with Bool and BoolDefaultTrue (internal/pkg/wwtype/wwbool.go)."""

    def _value(self, default: bool) -> bool:
        text = self.lower()
        if text in ("undef", "unset", "--"):
            return False
        if text == "yes":
            return True
        if text == "no":
            return False
        if text == "":
            return default
        return {"1": True, "t": True, "true": True, "0": False, "f": False,
                "false": False}.get(text, default)


@dataclass
class GoStruct:
    """A Go struct value: fields, and methods (zero-argument callables)."""

    type_name: str
    fields: dict[str, object]
    methods: dict[str, Callable[..., object]] = field(default_factory=dict)


def go_string(value: object) -> str:
    """fmt.Sprint of one value, as text/template prints it."""
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | IP):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{go_string(k)}:{go_string(v)}"
                                 for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))\
            + "]"
    if isinstance(value, GoStruct):
        return "{" + " ".join(go_string(v) for v in value.fields.values()) + "}"
    return str(value)


def _go_float(value: float) -> str:
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def truth(value: object) -> bool:
    """text/template's IsTrue: zero values and empty containers are false."""
    if value is MISSING or value is None:
        return False
    if isinstance(value, GoStruct):
        return True
    return bool(value)


class StringMap(dict):
    """A Go map[string]string: `index` of a missing key is "" (its zero value)."""

    string_values = True
