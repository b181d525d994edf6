"""oneSIS rules as data: a parsed sysimage.conf, one node's rules, and how a node is matched.

The types the parser (`sysimage_conf.py`) produces and the core reads: which class and
properties a host has (host ranges and Perl regexps, bounded in time), which LINKBACK, RAM/LINK
and SERVICE lines apply to it. Pure: no file access. The reference is `domain.md` section B;
each point it leaves UNCONFIRMED is a `Policy` field or a decision documented where it is made.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol, TypeVar

import regex

from .errors import ConfigError
from .limits import (
    DEFAULT_LIMITS,
    MAX_HOST_RANGES,
)

Option = str | bool | tuple[str, ...]
IncludeLoader = Callable[[str], tuple[str, str]]
TargetKind = Literal["CLASS", "NODE", "PROPERTY", "PATH"]
RamKind = Literal["RAMDIR", "RAMFILE", "LINKDIR", "LINKFILE"]
ClassKind = Literal["MAP", "REGEXP", "RANGE"]


@dataclass(frozen=True)
class Policy:
    """Choices on points domain.md marks UNCONFIRMED (B.1.1, B.1.3, E).

    trailing_comments: a word starting with `#` after whitespace ends the line. The NCI configs
        write `SERVICE smartd -c vu.compute.external,xe.compute # -p fc`, which only works if so.
    range_numbers: how digits in a hostname meet a `[a-b]` range. "exact": the number must be
        written as the range writes it, unpadded or zero-padded to the width of a padded start
        (`node[1-32]` matches `node7`, not `node07`; `node[01-32]` matches `node07`, not `node7`),
        so a differently spelt hostname is not swept into a class. "value": any digits whose
        value is in the range (`node07` matches `node[1-32]`), the loosest reading of node36's
        "hostnames having digits within that range".
    class_matches_subclasses: `-c vu` also selects `vu.compute.internal`. The NCI configs rely
        on it (`LINKBACK /etc/fstab CLASS -c vu,...,r`, B.1.3, where no node has the bare class
        `vu` or `r`), and node29 says subclasses inherit all the behaviours of a parent class.
    """

    trailing_comments: bool = True
    range_numbers: Literal["exact", "value"] = "exact"
    class_matches_subclasses: bool = True


DEFAULT_POLICY = Policy()

# Notes kept on directives written in the 2.0rc10 syntax (domain.md B.1.2, last paragraph).
LEGACY_FORCE = "2.0rc10 '*' before the LINKBACK target (force the link): read as -f"
LEGACY_PROTECT = (
    "2.0rc10 '-p' without a list (protect from update-node -clean): read as not cleanable"
)

# Directives that change nothing in the root a node is served (diskful deployment, power and
# console tools, DNS host ranges); the CLI reports them so an admin knows they are ignored.
NO_EFFECT_ON_SERVED_ROOT = frozenset({
    "DISKMOUNT", "DISKSWAP", "DEPLOYMOUNT", "DEPLOYSWAP", "BOOTLOADER", "SYNCDIR", "EXCLUDESYNC",
    "EXCLUDEDEPLOY", "ETH_PRELOAD", "MAC_ADDR", "CONSOLECMD", "POWERCMD", "SPECFORMAT",
    "MATCH_DNS_HOSTS",
})

# Directives that say who a node is rather than how it is set up; not limited (B.1.1).
_NOT_NODE_RULES = frozenset({"INCLUDE", "NODECLASS_MAP", "NODECLASS_REGEXP", "NODECLASS_RANGE",
                             "PROPERTY"})

# "/etc/inittab, /boot/grub/menu.lst, and /etc/sysimage.conf" cannot be linkbacks (B.2.3, node46).
NOT_LINKBACKS = frozenset({"/etc/inittab", "/boot/grub/menu.lst", "/etc/sysimage.conf"})


# --------------------------------------------------------------------------------------------
# Host patterns: anchored regexps (NODECLASS_REGEXP, PROPERTY -re) and bracket ranges
# (NODECLASS_RANGE, PROPERTY -r).

class BadArgument(ValueError):
    """A malformed argument; `offset` is where inside the argument the problem starts."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class NumberRange:
    """One `a-b` item of a bracket range; `width` > 0 when `a` is written zero-padded."""

    low: int
    high: int
    width: int

    def admits(self, digits: str, numbers: Literal["exact", "value"]) -> bool:
        value = int(digits)
        if not self.low <= value <= self.high:
            return False
        return numbers == "value" or digits == str(value).zfill(self.width)


@dataclass(frozen=True)
class HostPattern:
    """`prefix[RANGE]...suffix` (B.1.2, node36): literal text and bracket ranges in turn.

    A range takes a run of one or more digits; every way to split a digit run is tried, so
    `rack[1-4]node[1-32]` and `x[1-9][10-20]` match exactly the names they describe. The
    split points are followed as a set of positions, part by part (not by backtracking), so
    a match takes at most parts x length^2 steps whatever the pattern: `n[0-99999999]` x12
    against a long digit run is as quick as any other.
    """

    text: str
    parts: tuple[str | tuple[NumberRange, ...], ...]
    numbers: Literal["exact", "value"] = "exact"

    def matches(self, hostname: str) -> bool:
        positions = {0}
        for part in self.parts:
            if isinstance(part, str):
                positions = {p + len(part) for p in positions if hostname.startswith(part, p)}
            else:
                positions = {stop for p in positions for stop in self._stops(hostname, p, part)}
            if not positions:
                return False
        return len(hostname) in positions

    def _stops(self, hostname: str, pos: int,
               items: tuple[NumberRange, ...]) -> Iterator[int]:
        """Where a number starting at `pos` that one of `items` admits can end."""
        end = pos
        while end < len(hostname) and hostname[end] in "0123456789":
            end += 1
        for stop in range(pos + 1, end + 1):
            digits = hostname[pos:stop]
            if self.numbers == "value":  # leading zeros do not count: compare the value
                digits = digits.lstrip("0") or "0"
            if len(digits) > MAX_RANGE_DIGITS:
                break  # longer than any number a range can write, and so is every later stop
            if any(item.admits(digits, self.numbers) for item in items):
                yield stop


_RANGE_ITEM = re.compile(r"([0-9]+)(?:-([0-9]+))?")
MAX_RANGE_DIGITS = 64  # numbers in a host range (and int() never sees 4,300 digits)


def parse_host_pattern(text: str, numbers: Literal["exact", "value"] = "exact") -> HostPattern:
    """Parse `prefix[a[-b][,x[-y]]...]...suffix`; raises ValueError (with `.offset`) if bad."""
    parts: list[str | tuple[NumberRange, ...]] = []
    pos = 0
    while pos < len(text):
        opening = text.find("[", pos)
        stray = text.find("]", pos, None if opening == -1 else opening)
        if stray != -1:
            raise BadArgument("']' without a matching '['", stray)
        if opening == -1:
            parts.append(text[pos:])
            break
        closing = text.find("]", opening)
        if closing == -1:
            raise BadArgument("'[' is never closed", opening)
        if opening > pos:
            parts.append(text[pos:opening])
        parts.append(_parse_range_list(text[opening + 1:closing], opening + 1))
        if len(parts) > 2 * MAX_HOST_RANGES + 1:
            raise BadArgument(f"more than {MAX_HOST_RANGES} ranges: no host name is long "
                               "enough to match", opening)
        pos = closing + 1
    return HostPattern(text, tuple(parts), numbers)


def _parse_range_list(body: str, offset: int) -> tuple[NumberRange, ...]:
    items = []
    for item in body.split(","):
        match = _RANGE_ITEM.fullmatch(item)
        if match is None:
            raise BadArgument(f"range item {item[:40]!r} is not a number or a-b", offset)
        if max(len(match[1]), len(match[2] or "")) > MAX_RANGE_DIGITS:
            raise BadArgument(f"a range number has more than {MAX_RANGE_DIGITS} digits", offset)
        low, high = int(match[1]), int(match[2] or match[1])
        if low > high:
            raise BadArgument(f"range {item!r} runs backwards", offset)
        padded = len(match[1]) > 1 and match[1].startswith("0")
        items.append(NumberRange(low, high, len(match[1]) if padded else 0))
        offset += len(item) + 1
    return tuple(items)


@dataclass(frozen=True)
class AnchoredRegexp:
    """A Perl regexp that must match the whole hostname: oneSIS adds `^…$` (node36).

    Matched with the `regex` engine, which takes a timeout and lets other threads run while
    it matches: a pattern that backtracks catastrophically (`(a|a)+b`) is a ConfigError naming
    the pattern's line and the host, never a hang (docs/onesis.md, "Regular expressions").
    """

    text: str
    compiled: regex.Pattern[bytes] = field(repr=False, compare=False)
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)
    timeout: float = field(default=DEFAULT_LIMITS.regexp_timeout, compare=False)
    # With a `|` outside any group: the pattern as oneSIS writes it, /^PATTERN$/, where Perl
    # anchors only the first and the last alternative (see `matches`).
    literal: regex.Pattern[bytes] | None = field(default=None, repr=False, compare=False)

    def matches(self, hostname: str) -> bool:
        # oneSIS reads host names and patterns as bytes (no decoding): so does this, which
        # gives Perl's byte semantics (\w, [[:alpha:]], . on a UTF-8 name).
        host = hostname.encode("utf-8", "surrogateescape")
        try:
            found = self.compiled.fullmatch(host, timeout=self.timeout) is not None
            if self.literal is not None and found != (
                    self.literal.search(host, timeout=self.timeout) is not None):
                raise ConfigError(
                    f"regexp {shown(self.text)} has a '|' outside any group: oneSIS writes "
                    f"/^PATTERN$/, which anchors only the first and last alternative, and "
                    f"so {'matches' if not found else 'does not match'} host "
                    f"{shown(hostname)} although the whole name "
                    f"{'does not' if not found else 'does'}",
                    self.file, self.line or None, None,
                    f"put the alternatives in a group, ({self.text}), so that the whole "
                    "host name must match")
            return found
        except TimeoutError:
            raise ConfigError(
                f"regexp {shown(self.text)} took more than {self.timeout:g} s to match host "
                f"{shown(hostname)}", self.file, self.line or None, None,
                "the pattern backtracks catastrophically (nested repeats such as (a+)+ or "
                "(a|a)+): rewrite it, or raise [limits] regexp_timeout") from None


# --------------------------------------------------------------------------------------------
# Data model

@dataclass(frozen=True)
class Limiters:
    """The `-c`/`-n`/`-p` lists of one line; all empty means every node (B.1.1)."""

    classes: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    properties: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.classes or self.nodes or self.properties)


class Limited(Protocol):
    """Anything with limiters: a `Directive` or one of its typed views."""

    @property
    def limiters(self) -> Limiters: ...


@dataclass(frozen=True)
class Directive:
    """One directive line, normalized to 2.0.5 syntax; `legacy` notes an older spelling.

    `options` maps a flag as written (`-d`, `-c`, `-m`) to True, its value, or its comma list.
    """

    name: str
    args: tuple[str, ...]
    options: Mapping[str, Option] = field(hash=False)
    file: str
    line: int
    legacy: str | None = None

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def classes(self) -> tuple[str, ...]:
        return self._list("-c")

    @property
    def nodes(self) -> tuple[str, ...]:
        return self._list("-n")

    @property
    def properties(self) -> tuple[str, ...]:
        return self._list("-p")

    @property
    def limiters(self) -> Limiters:
        return Limiters(self.classes, self.nodes, self.properties)

    def _list(self, flag: str) -> tuple[str, ...]:
        value = self.options.get(flag, ())
        return value if isinstance(value, tuple) else ()


@dataclass(frozen=True)
class ClassRule:
    """A NODECLASS_MAP, NODECLASS_REGEXP or NODECLASS_RANGE line."""

    kind: ClassKind
    pattern: str
    class_name: str
    matcher: AnchoredRegexp | HostPattern | None  # None: MAP, the pattern is one hostname
    file: str
    line: int

    def matches(self, hostname: str) -> bool:
        if self.matcher is None:
            return hostname == self.pattern
        return self.matcher.matches(hostname)


@dataclass(frozen=True)
class PropertyRule:
    """A PROPERTY line: which nodes get the property `name` (B.1.2, node38)."""

    name: str
    classes: tuple[str, ...]
    nodes: tuple[str, ...]
    range: HostPattern | None
    regexp: AnchoredRegexp | None
    file: str
    line: int

    def matches(self, hostname: str, node_class: str | None, *,
                class_matches_subclasses: bool = True) -> bool:
        """Any one selector suffices; a line with none gives the property to every node.

        OR, because the verbatim `PROPERTY: gpu -r x[1-2,6,11-16] -n d43` (B.1.3) names a node
        outside its range.
        """
        if not (self.classes or self.nodes or self.range or self.regexp):
            return True
        return (
            _class_listed(node_class, self.classes, class_matches_subclasses)
            or hostname in self.nodes
            or (self.range is not None and self.range.matches(hostname))
            or (self.regexp is not None and self.regexp.matches(hostname))
        )


@dataclass(frozen=True)
class LinkBack:
    """A LINKBACK line (B.2.3). `target` is set only for an explicit (PATH) target."""

    path: str
    target_kind: TargetKind
    target: str | None
    hidden: bool
    force: bool
    limiters: Limiters
    file: str
    line: int
    legacy: str | None = None

    def explicit_target(self, hostname: str, node_class: str | None) -> str:
        """The PATH target with `$CLASS` and `$NODE` replaced (B.2.3)."""
        if self.target is None:
            raise ValueError(f"LINKBACK {self.path} has a {self.target_kind} target, not a path")
        if "$CLASS" in self.target and node_class is None:
            raise ValueError(f"{self.file}:{self.line}: $CLASS used but {hostname} has no class")
        return self.target.replace("$CLASS", node_class or "").replace("$NODE", hostname)


@dataclass(frozen=True)
class RamPath:
    """A RAMDIR, RAMFILE, LINKDIR or LINKFILE line; `pattern` may be a glob (node42)."""

    kind: RamKind
    pattern: str
    duplicate: bool
    cleanable: bool
    mode: int | None
    user: str | None
    group: str | None
    limiters: Limiters
    file: str
    line: int
    legacy: str | None = None


@dataclass(frozen=True)
class Service:
    """A SERVICE line: the init script `name` runs on the nodes the limiters select."""

    name: str
    limiters: Limiters
    file: str
    line: int


# A directive line read as what it decides (the parser builds one per line it types).
RuleLine = ClassRule | PropertyRule | LinkBack | RamPath | Service
_V = TypeVar("_V")


@dataclass(frozen=True)
class NodeRules:
    """What the config says about one node."""

    hostname: str
    node_class: str | None
    properties: tuple[str, ...]
    directives: tuple[Directive, ...]  # the node's setup lines that apply, in config order
    linkbacks: Mapping[str, LinkBack] = field(hash=False)  # path -> the deciding line
    ram_paths: tuple[RamPath, ...]  # pattern -> deciding line, in the deciding lines' order
    services: Mapping[str, bool] = field(hash=False)  # every SERVICE name -> enabled here

    def linkback_for(self, path: str) -> LinkBack | None:
        """The LINKBACK line that decides `path` for this node, if any."""
        return self.linkbacks.get(normalize_path(path))

    def last(self, name: str) -> Directive | None:
        """The last applying line of one directive (e.g. RAMSIZE, DISTRO): later lines win."""
        return next((d for d in reversed(self.directives) if d.name == name), None)


@dataclass(frozen=True)
class SysimageConfig:
    """A parsed sysimage.conf with INCLUDEs inlined (each line keeps its own file and line)."""

    filename: str
    directives: tuple[Directive, ...]
    class_rules: tuple[ClassRule, ...]
    property_rules: tuple[PropertyRule, ...]
    linkbacks: tuple[LinkBack, ...]
    ram_paths: tuple[RamPath, ...]
    services: tuple[Service, ...]
    policy: Policy = DEFAULT_POLICY

    def classes(self) -> tuple[str, ...]:
        """Every class a NODECLASS line names, in order of first appearance."""
        return tuple(dict.fromkeys(rule.class_name for rule in self.class_rules))

    def no_effect_on_served_root(self) -> tuple[Directive, ...]:
        """Lines that are kept but change nothing in a served root (see NO_EFFECT_...)."""
        return tuple(d for d in self.directives if d.name in NO_EFFECT_ON_SERVED_ROOT)

    def identity(self, hostname: str,
                 classname_override: str | None = None) -> tuple[str | None, tuple[str, ...]]:
        """The node's class and properties: where its host patterns are matched (regexps may
        raise ConfigError on a timeout, naming the pattern's line and the host)."""
        check_hostname(hostname)
        node_cls = node_class(self, hostname, classname_override)
        return node_cls, node_properties(self, hostname, node_cls)

    def rules_for(self, hostname: str, classname_override: str | None = None, *,
                  identity: tuple[str | None, tuple[str, ...]] | None = None) -> NodeRules:
        """The node's class, properties, and the lines that apply to it; `identity` is the
        node's (class, properties) when already known, so no pattern is matched again.

        LINKBACK and RAM*/LINK*: per path (pattern), the last applying line decides (B.2.3,
        node32). SERVICE: a named service is enabled iff any SERVICE line for it applies; a
        line can only enable, so "later overrides earlier" has nothing to override.
        """
        if identity is None:
            identity = self.identity(hostname, classname_override)
        else:
            check_hostname(hostname)
        node_cls, props = identity

        def applies(item: Limited) -> bool:
            return limiters_match(item, hostname, node_cls, props,
                                  class_matches_subclasses=self.policy.class_matches_subclasses)

        enabled = dict.fromkeys((s.name for s in self.services), False)
        enabled.update((s.name, True) for s in self.services if applies(s))
        return NodeRules(
            hostname=hostname,
            node_class=node_cls,
            properties=props,
            directives=tuple(
                d for d in self.directives if d.name not in _NOT_NODE_RULES and applies(d)),
            linkbacks=MappingProxyType(
                _last_per_key((lb for lb in self.linkbacks if applies(lb)), lambda lb: lb.path)),
            ram_paths=tuple(
                _last_per_key((r for r in self.ram_paths if applies(r)), lambda r: r.pattern)
                .values()),
            services=MappingProxyType(enabled),
        )


def _last_per_key(items: Iterable[_V], key: Callable[[_V], str]) -> dict[str, _V]:
    """Keep the last item per key, ordered by where each kept item stands."""
    chosen: dict[str, _V] = {}
    for item in items:
        chosen.pop(key(item), None)
        chosen[key(item)] = item
    return chosen


# --------------------------------------------------------------------------------------------
# Classes, properties, limiters

def class_chain(class_name: str) -> tuple[str, ...]:
    """A dotted class and its parents, most specific first: `a.b.c`, `a.b`, `a` (B.2.3)."""
    parts = class_name.split(".")
    return tuple(".".join(parts[:n]) for n in range(len(parts), 0, -1))


def node_class(config: SysimageConfig, hostname: str,
               classname_override: str | None = None) -> str | None:
    """The one class of a node: the later matching NODECLASS line wins; `classname=` wins over
    all (B.1.2, node35). None when no line matches."""
    if classname_override is not None:
        if not NAME_PATTERN.fullmatch(classname_override):
            raise ValueError(f"classname={classname_override!r} is not a valid class name")
        return classname_override
    for rule in reversed(config.class_rules):
        if rule.matches(hostname):
            return rule.class_name
    return None


def node_properties(config: SysimageConfig, hostname: str,
                    node_class: str | None) -> tuple[str, ...]:
    """Every property some PROPERTY line gives the node, in order of first definition."""
    subclasses = config.policy.class_matches_subclasses
    return tuple(dict.fromkeys(
        rule.name for rule in config.property_rules
        if rule.matches(hostname, node_class, class_matches_subclasses=subclasses)))


def limiters_match(directive: Limited, hostname: str, node_class: str | None,
                   properties: Iterable[str], *, class_matches_subclasses: bool = True) -> bool:
    """Whether a line's `-c`/`-n`/`-p` limiters select the node; none given selects all.

    Several kinds on one line: any one may match (OR). The manual is silent (B.1.1); NCI lines
    such as `SERVICE rpcbind -c dcc.compute -n vayu1,...` (sysimage.conf-centos6.3-compute)
    list nodes outside the listed classes, which only makes sense with OR.
    """
    limiters = directive.limiters
    if not limiters:
        return True
    return (
        _class_listed(node_class, limiters.classes, class_matches_subclasses)
        or hostname in limiters.nodes
        or not set(limiters.properties).isdisjoint(properties)
    )


def _class_listed(node_class: str | None, classes: tuple[str, ...], subclasses: bool) -> bool:
    if node_class is None:
        return False
    candidates = class_chain(node_class) if subclasses else (node_class,)
    return any(name in candidates for name in classes)


# Class and property names: dot-separated non-empty parts without '/', since they become file
# name extensions (`fstab.compute.gige`) and must not name another directory.
NAME_PATTERN = re.compile(r"[^./\s\x00]+(?:\.[^./\s\x00]+)*")
HOSTNAME_PATTERN = re.compile(r"(?!\.{1,2}$)[^/\s\x00]+")


def shown(text: str, width: int = 60) -> str:
    """A pattern or host name for a message: quoted, cut short if it is long."""
    return repr(text) if len(text) <= width else repr(text[:width]) + f"... ({len(text):,} chars)"


def check_hostname(hostname: str) -> None:
    if not HOSTNAME_PATTERN.fullmatch(hostname):
        raise ValueError(f"{hostname!r} is not a valid hostname")


def normalize_path(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/"))
