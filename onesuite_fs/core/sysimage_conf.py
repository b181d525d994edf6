"""oneSIS `/etc/sysimage.conf`: read it into the rules of `onesis_rules.py`.

Pure: no FUSE and no file access except through the `load_include` callback. The reference is
`domain.md` section B (B.1 for the syntax, B.2.3 for how the LINKBACK line is chosen). The oneSIS
sources were not available (domain.md E), so each point they would settle is either a `Policy`
field or a decision documented where it is made, citing the evidence used.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar, cast

import regex

from .errors import ConfigError
from .limits import (
    DEFAULT_LIMITS,
    MAX_BRACE_GROUPS,
    MAX_BRACE_PATHS,
    MAX_REGEXP_SIZE,
    Limits,
)
from .onesis_rules import (
    DEFAULT_POLICY,
    HOSTNAME_PATTERN,
    LEGACY_FORCE,
    LEGACY_PROTECT,
    NAME_PATTERN,
    NOT_LINKBACKS,
    AnchoredRegexp,
    BadArgument,
    ClassKind,
    ClassRule,
    Directive,
    HostPattern,
    IncludeLoader,
    LinkBack,
    Option,
    Policy,
    PropertyRule,
    RamKind,
    RamPath,
    RuleLine,
    Service,
    SysimageConfig,
    TargetKind,
    class_chain,
    normalize_path,
    parse_host_pattern,
    shown,
)

_V = TypeVar("_V")


# --------------------------------------------------------------------------------------------
# Parsing

@dataclass(frozen=True)
class _Token:
    text: str
    column: int  # 1-based


@dataclass(frozen=True)
class _Line:
    """One non-empty config line, for building errors that point at it."""

    file: str
    number: int
    tokens: tuple[_Token, ...]

    def error(self, message: str, hint: str, at: str | None = None,
              offset: int = 0) -> ConfigError:
        column = next((t.column + offset for t in self.tokens if t.text == at), None)
        return ConfigError(message, self.file, self.number, column, hint)


@dataclass(frozen=True)
class _Syntax:
    """How to read one directive: `required` positionals then up to `optional` more; flags are
    "flag" (no value), "value" (one word) or "list" (comma list). With `rest`, the last
    positional is the remainder of the line (a command that may itself contain flags)."""

    usage: str
    required: int
    optional: int = 0
    flags: Mapping[str, str] = field(default_factory=dict)
    rest: bool = False


_LIMIT = {"-c": "list", "-n": "list", "-p": "list"}
_LIMIT_USAGE = "[-c class,...] [-n node,...] [-p property,...]"
_OWNER = {"-m": "value", "-u": "value", "-g": "value"}

# The 2.0.5 directive summary (B.1.2, node85) with the arities from the manual and NCI headers.
# "Any directive (except NODECLASS*) can be limited" (node32): limiters are accepted wherever a
# line can concern some nodes only; not on INCLUDE, DISTRO, MAC_ADDR, SPECFORMAT, whose
# documented syntax has none.
_SYNTAX: dict[str, _Syntax] = {
    "DISTRO": _Syntax("DISTRO <name> [version] [-sp] [-kn]", 1, 1,
                      {"-sp": "flag", "-kn": "flag"}),
    "MATCH_DNS_HOSTS": _Syntax("MATCH_DNS_HOSTS", 0),
    "INCLUDE": _Syntax("INCLUDE <path>", 1),
    "NODECLASS_MAP": _Syntax("NODECLASS_MAP <node> <class>", 2),
    "NODECLASS_REGEXP": _Syntax("NODECLASS_REGEXP <perl_regexp> <class>", 2),
    "NODECLASS_RANGE": _Syntax("NODECLASS_RANGE <prefix[range]...suffix> <class>", 2),
    "PROPERTY": _Syntax("PROPERTY <name> [-c class,...] [-n node,...] [-r range] [-re regexp]",
                        1, 0, {"-c": "list", "-n": "list", "-r": "value", "-re": "value"}),
    "SERVICE": _Syntax(f"SERVICE <name> {_LIMIT_USAGE}", 1, 0, _LIMIT),
    "RAMSIZE": _Syntax(f"RAMSIZE <max_size[k|m|g]> {_LIMIT_USAGE}", 1, 0, _LIMIT),
    "RAMDIR": _Syntax(f"RAMDIR <dir> [-d] [-cl] {_LIMIT_USAGE} [-m mode] [-u user] [-g group]",
                      1, 0, {"-d": "flag", "-cl": "flag", **_LIMIT, **_OWNER}),
    "RAMFILE": _Syntax(f"RAMFILE <file> [-d] {_LIMIT_USAGE} [-m mode] [-u user] [-g group]",
                       1, 0, {"-d": "flag", **_LIMIT, **_OWNER}),
    "LINKDIR": _Syntax(f"LINKDIR <dir> [-d] [-cl] {_LIMIT_USAGE}", 1, 0,
                       {"-d": "flag", "-cl": "flag", **_LIMIT}),
    "LINKFILE": _Syntax(f"LINKFILE <file> [-d] {_LIMIT_USAGE}", 1, 0, {"-d": "flag", **_LIMIT}),
    "LINKBACK": _Syntax(f"LINKBACK <file|dir> <CLASS|NODE|PROPERTY|target> [-h] [-f] "
                        f"{_LIMIT_USAGE}", 2, 0, {"-h": "flag", "-f": "flag", **_LIMIT}),
    "DISKMOUNT": _Syntax(f"DISKMOUNT <disk> <size[%]> <mountpoint> {_LIMIT_USAGE}", 3, 0,
                         _LIMIT),
    "DISKSWAP": _Syntax(f"DISKSWAP <disk> <size[%]> {_LIMIT_USAGE}", 2, 0, _LIMIT),
    "DEPLOYMOUNT": _Syntax(f"DEPLOYMOUNT <disk[,disk]...> <size[%]> <mountpoint> [-t fstype] "
                           f"[-r raidlevel] {_LIMIT_USAGE}", 3, 0,
                           {"-t": "value", "-r": "value", **_LIMIT}),
    "DEPLOYSWAP": _Syntax(f"DEPLOYSWAP <disk> <size[%]> {_LIMIT_USAGE}", 2, 0, _LIMIT),
    "BOOTLOADER": _Syntax(f"BOOTLOADER <grub|lilo> {_LIMIT_USAGE}", 1, 0, _LIMIT),
    "SYNCDIR": _Syntax(f"SYNCDIR <path> {_LIMIT_USAGE}", 1, 0, _LIMIT),
    "EXCLUDESYNC": _Syntax(f"EXCLUDESYNC <path> {_LIMIT_USAGE}", 1, 0, _LIMIT),
    "EXCLUDEDEPLOY": _Syntax(f"EXCLUDEDEPLOY <path> {_LIMIT_USAGE}", 1, 0, _LIMIT),
    "ETH_PRELOAD": _Syntax(f"ETH_PRELOAD <driver[,driver]...> {_LIMIT_USAGE}", 1, 0, _LIMIT),
    "MAC_ADDR": _Syntax("MAC_ADDR <hostname> <mac_address>", 2),
    "CONSOLECMD": _Syntax(f"CONSOLECMD {_LIMIT_USAGE} <command>", 1, 0, _LIMIT, rest=True),
    "POWERCMD": _Syntax(f"POWERCMD <ON|OFF|CYCLE|STATUS|LEDON|LEDOFF|LEDSTATUS> {_LIMIT_USAGE} "
                        "<command>", 2, 0, _LIMIT, rest=True),
    "SPECFORMAT": _Syntax("SPECFORMAT <spec_id> <format> [HOST:/// | IP:///] [SPEC:///]", 2, 2),
}

_MAX_INCLUDE_DEPTH = 32
_LIST_ITEM = {"-c": ("class name", NAME_PATTERN), "-p": ("property name", NAME_PATTERN),
              "-n": ("hostname", HOSTNAME_PATTERN)}


def parse_sysimage_conf(text: str, *, filename: str, load_include: IncludeLoader | None = None,
                        policy: Policy = DEFAULT_POLICY,
                        limits: Limits = DEFAULT_LIMITS) -> SysimageConfig:
    """Parse a sysimage.conf; raise ConfigError (file, line, hint) at the first problem.

    `load_include(path)` returns (display name, text) for an INCLUDE argument, as written; the
    included lines take the INCLUDE's place (node72). Display names identify files: a name
    already being read is an INCLUDE cycle. More than `limits.max_config_lines` lines read in
    all (an included file counted each time it is included) are refused.
    """
    reading = _Reading(load_include, policy, limits, limits.max_config_lines)
    reading.take(text, None, filename)
    parsed = list(_read(text, filename, reading, (filename,)))

    def views(kind: type[_V]) -> tuple[_V, ...]:
        return tuple(view for _, view in parsed if isinstance(view, kind))

    config = SysimageConfig(
        filename=filename,
        directives=tuple(d for d, _ in parsed),
        class_rules=views(ClassRule),
        property_rules=views(PropertyRule),
        linkbacks=views(LinkBack),
        ram_paths=views(RamPath),
        services=views(Service),
        policy=policy,
    )
    _check_limiter_names(config)
    return config


@dataclass
class _Reading:
    """What one parse shares across its INCLUDEs: how to read them, and the lines left."""

    load_include: IncludeLoader | None
    policy: Policy
    limits: Limits
    lines_left: int

    def take(self, text: str, including: _Line | None, filename: str) -> None:
        """Count a file's lines against the budget; refuse at the line that went past it."""
        count = text.count("\n") + 1
        self.lines_left -= count
        if self.lines_left >= 0:
            return
        limit = self.limits.max_config_lines
        hint = ("look for a file included many times (an INCLUDE chain that doubles), or "
                "raise [limits] max_config_lines in onesuite.toml")
        if including is None:
            raise ConfigError(f"more than {limit:,} lines", filename, limit + 1, None, hint)
        raise including.error(f"INCLUDE {including.tokens[-1].text}: more than {limit:,} "
                              "lines read in all, counting each INCLUDE", hint)


def _read(text: str, filename: str, reading: _Reading,
          chain: tuple[str, ...]) -> Iterator[tuple[Directive, RuleLine | None]]:
    policy, limits = reading.policy, reading.limits
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _Line(filename, number, _tokenize(raw, policy))
        if not line.tokens:
            continue
        directive = _parse_directive(line)
        build = _BUILDERS.get(directive.name)
        yield directive, build(directive, line, policy, limits) if build else None
        if directive.name == "INCLUDE":
            yield from _include(directive.args[0], line, reading, chain)


def _include(path: str, line: _Line, reading: _Reading,
             chain: tuple[str, ...]) -> Iterator[tuple[Directive, RuleLine | None]]:
    load_include = reading.load_include
    if load_include is None:
        raise line.error(f"INCLUDE {path}: includes cannot be read here", at=path,
                         hint="parse the file from an image so INCLUDE paths can be resolved")
    try:
        name, text = load_include(path)
    except ConfigError as err:
        raise line.error(f"cannot include {path}: {err.message}", at=path,
                         hint=err.hint or "fix or remove this INCLUDE line") from err
    except (OSError, UnicodeError) as err:
        raise line.error(f"cannot include {path}: {getattr(err, 'strerror', None) or err}",
                         at=path,
                         hint="relative INCLUDE paths are taken from the image root") from err
    if name in chain:
        raise line.error("INCLUDE cycle: " + " -> ".join((*chain, name)), at=path,
                         hint="remove one of the INCLUDE lines in this chain")
    if len(chain) > _MAX_INCLUDE_DEPTH:  # a cycle through names the loader spells differently
        raise line.error(f"INCLUDEs nested more than {_MAX_INCLUDE_DEPTH} deep", at=path,
                         hint="look for a file that includes itself under another name")
    reading.take(text, line, name)
    yield from _read(text, name, reading, (*chain, name))


def _tokenize(raw: str, policy: Policy) -> tuple[_Token, ...]:
    """Split on whitespace; drop a `#` comment (whole line, or trailing: see Policy)."""
    tokens: list[_Token] = []
    for match in re.finditer(r"\S+", raw):
        if match[0].startswith("#") and (not tokens or policy.trailing_comments):
            break
        tokens.append(_Token(match[0], match.start() + 1))
    return tuple(tokens)


def _parse_directive(line: _Line) -> Directive:
    """Read `NAME: args` or `NAME args` (both seen in NCI configs, B.1.1) against _SYNTAX."""
    first = line.tokens[0]
    name, colon, glued = first.text.partition(":")
    words = line.tokens[1:]
    if glued:  # `RAMSIZE:10m`
        words = (_Token(glued, first.column + len(name) + len(colon)), *words)
    syntax = _SYNTAX.get(name)
    if syntax is None:
        raise _unknown_directive(name, line)
    args, options, legacy = _parse_words(name, syntax, words, line)
    if not syntax.required <= len(args) <= syntax.required + syntax.optional:
        raise _wrong_arity(name, syntax, args, line)
    return Directive(name, tuple(a.text for a in args), MappingProxyType(options),
                     line.file, line.number, legacy)


def _parse_words(name: str, syntax: _Syntax, words: tuple[_Token, ...],
                 line: _Line) -> tuple[list[_Token], dict[str, Option], str | None]:
    args: list[_Token] = []
    options: dict[str, Option] = {}
    legacy: str | None = None
    i = 0
    while i < len(words):
        word = words[i]
        if syntax.rest and len(args) == syntax.required - 1 and word.text not in syntax.flags:
            args.append(_Token(" ".join(w.text for w in words[i:]), word.column))
            break
        if name == "LINKBACK" and word.text == "*" and len(args) == 1:
            options["-f"], legacy = True, LEGACY_FORCE
        elif _is_legacy_protect(name, words, i):
            legacy = LEGACY_PROTECT
        elif word.text.startswith("-") and len(word.text) > 1:
            i = _take_flag(name, syntax, words, i, options, line)
        else:
            args.append(word)
        i += 1
    return args, options, legacy


def _is_legacy_protect(name: str, words: tuple[_Token, ...], i: int) -> bool:
    """2.0rc10 `RAMDIR/LINKDIR ... -p` had no value; in 2.0.5 `-p` takes a property list. A
    `-p` followed by nothing, a flag or a path is the old form (B.1.2)."""
    if name not in ("RAMDIR", "LINKDIR") or words[i].text != "-p":
        return False
    return i + 1 == len(words) or words[i + 1].text.startswith(("-", "/"))


def _take_flag(name: str, syntax: _Syntax, words: tuple[_Token, ...], i: int,
               options: dict[str, Option], line: _Line) -> int:
    """Store the flag at words[i] (and its value); return the index of the last word used."""
    flag = words[i].text
    kind = syntax.flags.get(flag)
    if kind is None:
        accepted = ", ".join(syntax.flags) or "no flags"
        raise line.error(f"{name} has no flag {flag}", at=flag,
                         hint=f"{name} accepts {accepted}; usage: {syntax.usage}")
    if flag in options:
        raise line.error(f"{flag} given twice", at=flag,
                         hint="give it once; a list takes comma-separated items")
    if kind == "flag":
        options[flag] = True
        return i
    if i + 1 == len(words):
        raise line.error(f"{flag} needs a value", at=flag, hint=f"usage: {syntax.usage}")
    value = words[i + 1].text
    options[flag] = value if kind == "value" else _split_list(flag, value, line)
    return i + 1


def _split_list(flag: str, value: str, line: _Line) -> tuple[str, ...]:
    what, pattern = _LIST_ITEM[flag]
    items = tuple(value.split(","))
    for item in items:
        if not pattern.fullmatch(item):
            raise line.error(f"{flag}: {item!r} is not a valid {what}", at=value,
                             hint="separate items with single commas, without spaces")
    return items


def _unknown_directive(name: str, line: _Line) -> ConfigError:
    if name.upper() in _SYNTAX:
        hint = f"directive names are upper-case: write {name.upper()}"
    else:
        close = difflib.get_close_matches(name.upper(), _SYNTAX, n=1)
        hint = (f"did you mean {close[0]}? " if close else "") + (
            "oneSIS 2.0.5 directives: " + ", ".join(_SYNTAX))
    return line.error(f"unknown directive {name!r}", hint, at=line.tokens[0].text)


def _wrong_arity(name: str, syntax: _Syntax, args: list[_Token], line: _Line) -> ConfigError:
    low, high = syntax.required, syntax.required + syntax.optional
    wanted = str(low) if low == high else f"{low} to {high}"
    got = " ".join(a.text for a in args) or "none"
    surplus = args[high].text if len(args) > high else None
    return line.error(f"{name} takes {wanted} argument(s), got {len(args)}: {got}",
                      at=surplus, hint=f"usage: {syntax.usage}")


# --------------------------------------------------------------------------------------------
# Per-directive checks (in _BUILDERS), each returning the directive's typed view or None

def _class_rule(d: Directive, line: _Line, policy: Policy, limits: Limits) -> ClassRule:
    pattern, class_name = d.args
    _check_name(class_name, "class name", line)
    kind = d.name.removeprefix("NODECLASS_")
    matcher: AnchoredRegexp | HostPattern | None = None
    if kind == "REGEXP":
        matcher = _regexp(pattern, line, limits)
    elif kind == "RANGE":
        matcher = _host_pattern(pattern, line, policy)
    elif not HOSTNAME_PATTERN.fullmatch(pattern):
        raise line.error(f"{pattern!r} is not a valid hostname", at=pattern,
                         hint="NODECLASS_MAP takes one hostname and one class")
    return ClassRule(cast(ClassKind, kind), pattern, class_name, matcher, d.file, d.line)


def _property_rule(d: Directive, line: _Line, policy: Policy, limits: Limits) -> PropertyRule:
    name = d.args[0]
    _check_name(name, "property name", line)
    range_text, regexp_text = d.options.get("-r"), d.options.get("-re")
    return PropertyRule(
        name, d.classes, d.nodes,
        _host_pattern(range_text, line, policy) if isinstance(range_text, str) else None,
        _regexp(regexp_text, line, limits) if isinstance(regexp_text, str) else None,
        d.file, d.line)


def _service(d: Directive, line: _Line, policy: Policy, limits: Limits) -> Service:
    if not HOSTNAME_PATTERN.fullmatch(d.args[0]):  # an init script's file name
        raise line.error(f"{d.args[0]!r} is not a service name", at=d.args[0],
                         hint="name the init script, without a directory")
    return Service(d.args[0], d.limiters, d.file, d.line)


def _linkback(d: Directive, line: _Line, policy: Policy, limits: Limits) -> LinkBack:
    path = _absolute_path(d.args[0], line)
    if path in NOT_LINKBACKS:
        raise line.error(f"{path} cannot be a linkback", at=d.args[0],
                         hint="oneSIS refuses /etc/inittab, /boot/grub/menu.lst and "
                              "/etc/sysimage.conf (manual node46)")
    target = d.args[1]
    kind = cast(TargetKind, target if target in ("CLASS", "NODE", "PROPERTY") else "PATH")
    hidden, force = bool(d.options.get("-h")), bool(d.options.get("-f"))
    if kind == "PATH":
        _check_explicit_target(target, line)
    if hidden and kind == "PATH":
        raise line.error("-h (hidden) works only with CLASS, NODE or PROPERTY", at="-h",
                         hint="drop -h, or use a CLASS, NODE or PROPERTY target")
    if force and kind == "PROPERTY":
        raise line.error("-f (force) cannot be used with PROPERTY", at="-f",
                         hint="drop -f (and any '*'); manual node50")
    return LinkBack(path, kind, target if kind == "PATH" else None, hidden, force,
                    d.limiters, d.file, d.line, d.legacy)


def _check_explicit_target(target: str, line: _Line) -> None:
    """An explicit target must be absolute (a relative symlink would point into /ram, and this
    catches a misspelt keyword such as `Class`) and must not climb out with `..`."""
    if "\x00" in target or ".." in target.split("/"):
        raise line.error("a variant name that would escape its directory is refused", at=target,
                         hint="write the target without '..' components")
    if not target.startswith("/"):
        raise line.error(f"LINKBACK target {target!r} is neither CLASS, NODE, PROPERTY nor an "
                         "absolute path", at=target,
                         hint="keywords are upper-case; an explicit target starts with '/'")


def _ram_path(d: Directive, line: _Line, policy: Policy, limits: Limits) -> RamPath:
    pattern = _absolute_path(d.args[0], line)
    mode = d.options.get("-m")
    if isinstance(mode, str) and not re.fullmatch(r"[0-7]{3,4}", mode):
        raise line.error(f"-m {mode}: not an octal mode", at=mode, hint="write e.g. -m 0755")
    if d.options.get("-cl") and d.legacy == LEGACY_PROTECT:
        raise line.error("-cl (cleanable) together with the old -p (protect)", at="-cl",
                         hint="keep -cl for cleanable, or neither for protected")
    user, group = d.options.get("-u"), d.options.get("-g")
    for flag, owner in (("-u", user), ("-g", group)):
        if isinstance(owner, str):
            _check_owner(flag, owner, line)
    _check_braces(d.args[0], line)
    return RamPath(
        cast(RamKind, d.name), pattern, bool(d.options.get("-d")), bool(d.options.get("-cl")),
        int(mode, 8) if isinstance(mode, str) else None,
        user if isinstance(user, str) else None, group if isinstance(group, str) else None,
        d.limiters, d.file, d.line, d.legacy)


# 2^32 - 1 is "no change" to chown(2): the largest id a file can have is one less.
MAX_ID = 2**32 - 2
_OWNER_NAME = re.compile(r"[^:\s/\x00-\x1f\x7f]+")  # anything /etc/passwd can hold


def _check_owner(flag: str, owner: str, line: _Line) -> None:
    """-u/-g: a number a file can be owned by, or a user/group name (looked up in each node's
    own /etc/passwd or /etc/group when the mount starts: onesis_config)."""
    what = "user" if flag == "-u" else "group"
    if owner.isascii() and owner.isdigit():
        if len(owner) > 10 or int(owner) > MAX_ID:
            raise line.error(f"{flag} {owner[:20]}: not a {what} id (0 to {MAX_ID})", at=owner,
                             hint=f"use a {what} id below 2^32 - 1, or a {what} name")
    elif not _OWNER_NAME.fullmatch(owner) or len(owner) > 256:
        raise line.error(f"{flag} {owner[:40]!r}: not a {what} name or id", at=owner,
                         hint=f"use a {what} name from the image's /etc/"
                              f"{'passwd' if flag == '-u' else 'group'} or a number")


def _check_braces(pattern: str, line: _Line) -> None:
    """{a,b} alternatives multiply: refuse a path list longer than anyone writes by hand."""
    count = 1
    groups = re.findall(r"\{([^{}]*)\}", pattern)
    if len(groups) > MAX_BRACE_GROUPS:  # expanded one group per recursion (onesis_view)
        raise line.error(f"more than {MAX_BRACE_GROUPS} {{a,b}} groups in one path",
                         at=pattern, hint="write several lines, or a glob such as *")
    for group in groups:
        count *= group.count(",") + 1
        if count > MAX_BRACE_PATHS:
            raise line.error(f"{{a,b}} alternatives make more than {MAX_BRACE_PATHS:,} paths",
                             at=pattern, hint="write several lines, or a glob such as *")


def _check_ramsize(d: Directive, line: _Line, policy: Policy, limits: Limits) -> None:
    if not re.fullmatch(r"[0-9]+[kmgKMG]?", d.args[0]):
        raise line.error(f"RAMSIZE {d.args[0]}: not a size", at=d.args[0],
                         hint="write a number with an optional k, m or g suffix, e.g. 10m")


def _check_choice(*choices: str) -> Callable[[Directive, _Line, Policy, Limits], None]:
    def check(d: Directive, line: _Line, policy: Policy, limits: Limits) -> None:
        if d.args[0] not in choices:
            raise line.error(f"{d.name} {d.args[0]}: not one of {', '.join(choices)}",
                             at=d.args[0], hint=f"usage: {_SYNTAX[d.name].usage}")
    return check


_BUILDERS: dict[str, Callable[[Directive, _Line, Policy, Limits], RuleLine | None]] = {
    "NODECLASS_MAP": _class_rule,
    "NODECLASS_REGEXP": _class_rule,
    "NODECLASS_RANGE": _class_rule,
    "PROPERTY": _property_rule,
    "SERVICE": _service,
    "LINKBACK": _linkback,
    "RAMDIR": _ram_path,
    "RAMFILE": _ram_path,
    "LINKDIR": _ram_path,
    "LINKFILE": _ram_path,
    "RAMSIZE": _check_ramsize,
    "BOOTLOADER": _check_choice("grub", "lilo"),
    "POWERCMD": _check_choice("ON", "OFF", "CYCLE", "STATUS", "LEDON", "LEDOFF", "LEDSTATUS"),
}


def _check_name(name: str, what: str, line: _Line) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise line.error(f"{name!r} is not a valid {what}", at=name,
                         hint="use dot-separated parts without '/' or empty parts, e.g. "
                              "compute.gige")


def _absolute_path(text: str, line: _Line) -> str:
    if not text.startswith("/"):
        raise line.error(f"{text!r} is not an absolute path", at=text,
                         hint="paths in the image are written from the root, e.g. /etc/fstab")
    if "\x00" in text or ".." in text.split("/"):
        raise line.error(f"{text!r}: a path with a '..' component is refused", at=text,
                         hint="write the path without '..' components")
    return normalize_path(text)


def _regexp(text: str, line: _Line, limits: Limits) -> AnchoredRegexp:
    refused = _not_perl(text)
    if refused is not None:
        what, offset = refused
        raise line.error(f"regexp {shown(text)}: {what}", at=text, offset=offset,
                         hint="oneSIS matches with Perl; this construct would not match here "
                              "as Perl matches it, so it is refused (docs/onesis.md, "
                              "'Regular expressions')")
    size = _unrolled_size(text)
    if size > MAX_REGEXP_SIZE:
        raise line.error(f"regexp {shown(text)} unrolls to {size:,} items (at most "
                         f"{MAX_REGEXP_SIZE:,})", at=text,
                         hint="the engine compiles a counted repeat x{n} as n copies of x, "
                              "nested counts multiply: no host pattern needs this many")
    try:
        raw = text.encode("utf-8", "surrogateescape")
        compiled = regex.compile(raw, regex.VERSION0)
        literal = regex.compile(b"^" + raw + b"$", regex.VERSION0) \
            if _has_top_level_bar(text) else None
    except (regex.error, OverflowError, RecursionError, ValueError) as err:
        message = getattr(err, "msg", None) or str(err)
        raise line.error(f"bad regexp {shown(text)}: {message}", at=text,
                         offset=_error_offset(text, getattr(err, "pos", None) or 0),
                         hint="oneSIS takes a Perl regexp; see docs/onesis.md for the syntax "
                              "read here") from None
    return AnchoredRegexp(text, compiled, line.file, line.number, limits.regexp_timeout,
                          literal)


def _outside_classes(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """(position, character) of a pattern from `start`, escapes and character classes
    stepped over: what the scans for groups, bars and repeats look at."""
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
        elif char == "[":
            i = _class_end(text, i)
        else:
            yield i, char
            i += 1


def _has_top_level_bar(text: str) -> bool:
    """Whether `text` has a `|` outside every group and character class."""
    depth = 0
    for _, char in _outside_classes(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "|" and depth == 0:
            return True
    return False


def _error_offset(text: str, offset: int) -> int:
    """Where to point for a bad pattern: Python's re points at an unclosed '(' itself, the
    regex engine at the end of the pattern; take re's position when re refuses it too."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # [[:digit:]]: re's own opinion
            re.compile(text)
    except re.error as err:
        return err.pos or 0
    except (OverflowError, RecursionError, ValueError):
        pass
    return offset


_COUNT = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")
_BRACED_ESCAPES = frozenset("xpPNkgo")  # \x{41}, \p{L}...: braces that are no count


def _unrolled_size(text: str) -> int:
    """How many items the regex engine makes of `text` (an upper bound): it copies a counted
    repeat's operand once per count, so nested counts multiply. Read before compiling,
    because compiling is what runs out of memory (the match has its timeout)."""
    frames = [[0, 0]]  # per open group: [total so far, size of its last item]
    i = 0
    while i < len(text):
        char, item = text[i], 1
        if char == "\\":
            if text[i + 1:i + 2] in _BRACED_ESCAPES and text[i + 2:i + 3] == "{":
                end = text.find("}", i)
                i = len(text) if end < 0 else end + 1
            else:
                i += 2
        elif char == "[":
            i = _class_end(text, i)
        elif char == "(":
            frames.append([0, 0])
            i += 1
            continue
        elif char == ")" and len(frames) > 1:
            item = frames.pop()[0] + 1
            i += 1
        elif char == "{" and (count := _COUNT.match(text, i)) is not None \
                and (count[1] or count[2]):
            most = count[2] or count[1]
            frame = frames[-1]
            frame[0] += frame[1] * (max(int(most), 1) - 1)
            frame[1] *= max(int(most), 1)
            i = count.end()
            continue
        else:
            i += 1
        frames[-1][0] += item
        frames[-1][1] = item
    while len(frames) > 1:  # an unclosed group: the engine refuses it anyway
        done = frames.pop()[0]
        frames[-1][0] += done
    return frames[0][0]


def _class_end(text: str, start: int) -> int:
    """The index after the character class opening at `start` (escapes, a leading ']' and
    POSIX classes such as [:digit:] inside it)."""
    i = start + 1
    if text[i:i + 1] == "^":
        i += 1
    if text[i:i + 1] == "]":
        i += 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text.startswith("[:", i) and (end := text.find(":]", i + 2)) >= 0:
            i = end + 2
        elif text[i] == "]":
            return i + 1
        else:
            i += 1
    return i


# Escapes that the regex engine reads differently from Perl (Perl's meaning in brackets):
# \g back-references (\g1, \g{-1}), \N (not a newline), \v (vertical white space), \m and
# \M (regex: word start/end; Perl: the letters), \L (regex: a named list; Perl: lower-case),
# \u, \U (regex: a code point; Perl: upper-case the next character, or until \E), \l.
_DIFFERENT_ESCAPES = frozenset("gNvmMLuUl")
# Inline flags Perl and regex share (imsx, a/u character sets, and turning flags off).
_SHARED_FLAGS = frozenset("imsxau-")
_INLINE_FLAGS = re.compile(r"\(\?\^?([A-Za-z-]*)[:)]")  # not (?1) or (?R): recursion
# {e<=1}, {i}, {1<=e<=3, s<2}...: fuzzy-matching constraints, which Perl reads as literal text.
_FUZZY = re.compile(r"\{[^{}]*[eisd][^{}]*\}")
_QUANTIFIER = re.compile(r"\{\s*\d*\s*(?:,\s*\d*\s*)?\}")


def _not_perl(text: str) -> tuple[str, int] | None:
    """A construct the regex engine accepts but reads differently from Perl, and where."""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            if text[i + 1:i + 2] in _DIFFERENT_ESCAPES and i + 1 < len(text):
                return f"\\{text[i + 1]} means something else in Perl", i
            if text[i + 1:i + 2] in _BRACED_ESCAPES and text[i + 2:i + 3] == "{":
                end = text.find("}", i)  # \p{Digit}: a name, not a count or fuzzy braces
                i = len(text) if end < 0 else end + 1
                continue
            i += 2
            continue
        if char == "(":
            flags = _INLINE_FLAGS.match(text, i)
            if flags is not None and flags[0] != "(?R)" and not set(flags[1]) <= _SHARED_FLAGS:
                return f"inline flags (?{flags[1]}) are not Perl's", i
        if text.startswith(("(?<=", "(?<!"), i):
            unbounded = _unbounded_inside(text, i)
            if unbounded is not None:
                return ("a lookbehind without a fixed maximum length (Perl refuses one: "
                        "at most 255 characters)", unbounded)
        if char == "{":
            fuzzy = _FUZZY.match(text, i)
            if fuzzy is not None and not _QUANTIFIER.fullmatch(fuzzy[0]):
                return f"{fuzzy[0]} is fuzzy matching, not Perl (write \\{{ for a brace)", i
        i += 1
    return None


def _unbounded_inside(text: str, start: int) -> int | None:
    """Where the group opening at `start` repeats without bound (*, +, {n,}), if it does."""
    depth = 0
    for i, char in _outside_classes(text, start):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return None
        elif _repeats_without_bound(text, i):
            return i
    return None


def _repeats_without_bound(text: str, i: int) -> bool:
    """Whether text[i] is a `*`, a `+` (not the possessive mark after another repeat) or a
    `{n,}`."""
    char = text[i]
    if char == "*" or (char == "+" and text[i - 1:i] not in ("*", "+", "?", "}")):
        return True
    count = _COUNT.match(text, i) if char == "{" else None
    return count is not None and bool(count[1]) and count[0].rstrip("} ").endswith(",")


def _host_pattern(text: str, line: _Line, policy: Policy) -> HostPattern:
    try:
        return parse_host_pattern(text, policy.range_numbers)
    except BadArgument as err:
        raise line.error(f"bad range {shown(text)}: {err}", at=text, offset=err.offset,
                         hint="a range is [a-b,x-y,...] with a <= b, e.g. node[1-32] or "
                              "x[1-2,6,11-16]") from err


def _check_limiter_names(config: SysimageConfig) -> None:
    """A `-c` naming no class (nor a parent of one) or a `-p` naming no property can never
    match: almost surely a typo, so it is an error, checked once the whole file is read."""
    classes = {name for c in config.classes() for name in class_chain(c)}
    properties = {rule.name for rule in config.property_rules}
    for d in config.directives:
        _check_defined(d, "-c", d.classes, classes, "NODECLASS")
        _check_defined(d, "-p", d.properties, properties, "PROPERTY")


def _check_defined(d: Directive, flag: str, names: tuple[str, ...], known: set[str],
                   definer: str) -> None:
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(f"{flag} names {name!r}, which no {definer} line defines",
                              d.file, d.line, None,
                              (f"did you mean {close[0]}? " if close else "")
                              + f"define it with a {definer} line, or remove it")
