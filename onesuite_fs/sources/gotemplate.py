"""A parser for the subset of Go text/template that Warewulf overlay templates use.

Warewulf renders ``.ww`` files with Go's text/template (Option "missingkey=default", its own
functions and sprig's: internal/pkg/overlay/overlay.go RenderTemplate). This module only
parses: text, ``{{ }}`` actions with ``{{-``/``-}}`` trimming, comments, pipelines, variables
(``$x :=``, ``$x =``), ``if``/``else if``/``else``, ``range`` (with ``else``, ``break``,
``continue``) and ``with``. ``define``, ``template`` and ``block`` are refused: no shipped
overlay uses them, and a template that calls another is a loop to bound. Anything else this
module cannot read is refused with the template's file and line, never guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..core.errors import ConfigError

MAX_TEMPLATE_BYTES = 1 << 20  # shipped templates are a few KiB
MAX_NESTING = 64  # if/range/with inside each other, and parentheses


class TemplateError(ConfigError):
    """A template this renderer refuses or cannot render (file and line set)."""


# ----- the tree ----------------------------------------------------------------------------
@dataclass
class Text:
    text: str


@dataclass
class Literal:
    value: object


@dataclass
class Dot:
    pass


@dataclass
class Field:
    """``.A.B`` (from dot) or ``$x.A.B`` (variable) or ``(pipe).A``."""

    base: object  # Dot(), Variable, or Pipe
    names: tuple[str, ...]


@dataclass
class Variable:
    name: str  # "$" or "$x"


@dataclass
class Identifier:
    name: str  # a function


@dataclass
class Command:
    args: list[object]


@dataclass
class Pipe:
    declare: list[str]  # variables declared (:=) or assigned (=)
    assign: bool  # '=' rather than ':='
    commands: list[Command]
    line: int


@dataclass
class Action:
    pipe: Pipe
    line: int


@dataclass
class Block:
    kind: str  # "if", "range", "with"
    pipe: Pipe
    body: list[object]
    otherwise: list[object] = field(default_factory=list)
    line: int = 0


@dataclass
class Jump:
    kind: str  # "break" or "continue"
    line: int


# ----- lexing ------------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)+')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO]?[0-7_]+(?![.\deE])|
                     (?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][-+]?\d+)?))
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<variable>\$[A-Za-z0-9_]*)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()|,])
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _unquote(text: str, where: tuple[str, int]) -> str:
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[nxt]
            digits = body[i + 2:i + 2 + width]
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                _refuse(where, f"bad escape in {text}")
            i += 2 + width
        elif nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            _refuse(where, f"unknown escape \\{nxt} in {text}")
    return "".join(out)


def _refuse(where: tuple[str, int], message: str, hint: str | None = None) -> None:
    raise TemplateError(message, file=where[0], line=where[1],
                        hint=hint or "onesuite-fs renders the subset of Go templates that "
                                     "Warewulf's shipped overlays use (docs/warewulf.md)")


def _tokens(source: str, where: tuple[str, int]) -> list[tuple[str, str]]:
    """(kind, text) pairs; a field straight after an operand, with no space between (the
    ``.B`` of ``$x.B``, ``(pipe).B``), is of kind "chain"."""
    found: list[tuple[str, str]] = []
    at = 0
    spaced = True
    while at < len(source):
        match = _TOKEN.match(source, at)
        if match is None:
            _refuse(where, f"cannot read {source[at:at + 20]!r} in an action")
        assert match is not None
        kind = match.lastgroup or ""
        if kind == "field" and not spaced and found and (
                found[-1][0] in ("string", "raw", "char", "number", "variable", "dot",
                                 "ident", "field", "chain") or found[-1][1] == ")"):
            kind = "chain"
        if kind != "space":
            found.append((kind, match.group()))
        spaced = kind == "space"
        at = match.end()
    return found


# ----- parsing -----------------------------------------------------------------------------
_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_COMMENT = re.compile(r"^\s*/\*.*\*/\s*$", re.DOTALL)


def parse(text: str, filename: str) -> list[object]:
    """The template's tree; TemplateError (file:line) for what is not supported."""
    if len(text.encode()) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"template larger than {MAX_TEMPLATE_BYTES} bytes",
                            file=filename, hint="a real overlay template is a few KiB")
    items: list[tuple[str, object, int]] = []  # ("text", str, line) / ("action", src, line)
    at, line = 0, 1
    for match in _ACTION.finditer(text):
        before = text[at:match.start()]
        if match.group(1):
            before = before.rstrip(" \t\r\n")
        items.append(("text", before, line))
        line += text.count("\n", at, match.start())
        inner = match.group(2)
        if match.group(1) is None and inner.startswith("-") and inner[1:2] in ("", "}"):
            _refuse((filename, line), "'{{-' must be followed by a space")
        items.append(("action", inner, line))
        line += text.count("\n", match.start(), match.end())
        at = match.end()
        if match.group(3):
            rest = text[at:]
            stripped = rest.lstrip(" \t\r\n")
            line += rest[:len(rest) - len(stripped)].count("\n")
            at += len(rest) - len(stripped)
    if "{{" in text[at:]:
        _refuse((filename, line + text.count("\n", at, text.index("{{", at))),
                "unclosed action")
    items.append(("text", text[at:], line))
    parser = _Parser(items, filename)
    body, end = parser.list_until(())
    if end is not None:
        _refuse((filename, end[1]), f"unexpected {{{{{end[0]}}}}}")
    return body


class _Parser:
    def __init__(self, items: list[tuple[str, object, int]], filename: str) -> None:
        self.items = items
        self.pos = 0
        self.filename = filename
        self.depth = 0

    def list_until(self, stops: tuple[str, ...]) -> tuple[list[object], tuple[str, int] | None]:
        """Nodes up to an {{end}}/{{else}} (returned as (keyword source, line))."""
        body: list[object] = []
        while self.pos < len(self.items):
            kind, value, line = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                if value:
                    body.append(Text(value))  # type: ignore[arg-type]
                continue
            source = str(value)
            if _COMMENT.match(source):
                continue
            where = (self.filename, line)
            tokens = _tokens(source, where)
            if not tokens:
                _refuse(where, "empty action {{}}")
            head = tokens[0]
            if head[0] == "ident" and head[1] in ("end", "else"):
                if head[1] not in stops:
                    _refuse(where, f"unexpected {{{{{head[1]}}}}}")
                self.pending = tokens
                return body, (head[1], line)
            if head[0] == "ident" and head[1] in ("if", "range", "with"):
                body.append(self.block(head[1], tokens[1:], line))
            elif head[0] == "ident" and head[1] in ("break", "continue"):
                if len(tokens) != 1:
                    _refuse(where, f"{head[1]} takes no arguments")
                body.append(Jump(head[1], line))
            elif head[0] == "ident" and head[1] in ("define", "template", "block"):
                _refuse(where, f"{{{{{head[1]}}}}} is not supported (no shipped Warewulf "
                               "overlay uses it)")
            else:
                body.append(Action(self.pipe(tokens, where, allow_declare=True), line))
        return body, None

    def block(self, kind: str, tokens: list[tuple[str, str]], line: int) -> Block:
        where = (self.filename, line)
        self.depth += 1
        if self.depth > MAX_NESTING:
            _refuse(where, f"blocks nested deeper than {MAX_NESTING}")
        node = Block(kind, self.pipe(tokens, where, allow_declare=True), [], [], line)
        node.body, end = self.list_until(("end", "else"))
        if end is None:
            _refuse(where, f"{{{{{kind}}}}} has no {{{{end}}}}")
        assert end is not None
        if end[0] == "else":
            rest = self.pending[1:]
            if rest and rest[0] == ("ident", "if") and kind == "if" or \
                    rest and rest[0] == ("ident", "with") and kind == "with":
                # {{else if x}} ... {{end}}: one {{end}} closes the chain.
                self.depth -= 1
                node.otherwise = [self.chained(kind, rest[1:], end[1])]
                return node
            if rest:
                _refuse((self.filename, end[1]), "unexpected words after {{else}}")
            node.otherwise, end2 = self.list_until(("end",))
            if end2 is None:
                _refuse(where, f"{{{{{kind}}}}} has no {{{{end}}}}")
            assert end2 is not None
            if len(self.pending) != 1:
                _refuse((self.filename, end2[1]), "unexpected words after {{end}}")
        elif len(self.pending) != 1:
            _refuse((self.filename, end[1]), "unexpected words after {{end}}")
        self.depth -= 1
        return node

    def chained(self, kind: str, tokens: list[tuple[str, str]], line: int) -> Block:
        return self.block(kind, tokens, line)

    def pipe(self, tokens: list[tuple[str, str]], where: tuple[str, int], *,
             allow_declare: bool) -> Pipe:
        declare: list[str] = []
        assign = False
        # $x := ..., $k, $v := ...
        names = []
        i = 0
        while i < len(tokens) and tokens[i][0] == "variable":
            names.append(tokens[i][1])
            if i + 1 < len(tokens) and tokens[i + 1][1] == ",":
                i += 2
                continue
            break
        if names and i + 1 < len(tokens) and tokens[i + 1][0] in ("declare", "assign"):
            if not allow_declare:
                _refuse(where, "a declaration is not allowed here")
            declare, assign = names, tokens[i + 1][0] == "assign"
            tokens = tokens[i + 2:]
        commands: list[Command] = []
        args: list[object] = []
        pos = 0
        while pos < len(tokens):
            kind, text = tokens[pos]
            if text == "|":
                if not args:
                    _refuse(where, "missing command before '|'")
                commands.append(Command(args))
                args = []
                pos += 1
                continue
            arg, pos = self.operand(tokens, pos, where)
            args.append(arg)
        if not args:
            _refuse(where, "missing value")
        commands.append(Command(args))
        return Pipe(declare, assign, commands, where[1])

    def operand(self, tokens: list[tuple[str, str]], pos: int,
                where: tuple[str, int]) -> tuple[object, int]:
        kind, text = tokens[pos]
        pos += 1
        node: object
        if kind == "punct" and text == "(":
            depth, end = 1, pos
            while end < len(tokens) and depth:
                depth += {"(": 1, ")": -1}.get(tokens[end][1], 0) \
                    if tokens[end][0] == "punct" else 0
                end += 1
            if depth:
                _refuse(where, "unclosed '('")
            self.depth += 1
            if self.depth > MAX_NESTING:
                _refuse(where, f"parentheses nested deeper than {MAX_NESTING}")
            node = self.pipe(tokens[pos:end - 1], where, allow_declare=False)
            self.depth -= 1
            pos = end
        elif kind == "string":
            node = Literal(_unquote(text, where))
        elif kind == "raw":
            node = Literal(text[1:-1])
        elif kind == "char":
            node = Literal(ord(_unquote(text, where)))
        elif kind == "number":
            node = Literal(_number(text, where))
        elif kind == "field":
            return Field(Dot(), tuple(text[1:].split("."))), pos
        elif kind == "chain":
            _refuse(where, f"unexpected {text} (a field of what?)")
        elif kind == "variable":
            node = Variable(text)
        elif kind == "dot":
            node = Dot()
        elif kind == "ident":
            if text in ("true", "false"):
                node = Literal(text == "true")
            elif text == "nil":
                node = Literal(None)
            else:
                return Identifier(text), pos
        else:
            _refuse(where, f"unexpected {text!r}")
            raise AssertionError
        # A field chain straight after: $x.A.B, (pipe).A
        if pos < len(tokens) and tokens[pos][0] == "chain":
            node = Field(node, tuple(tokens[pos][1][1:].split(".")))
            pos += 1
        return node, pos


def _number(text: str, where: tuple[str, int]) -> int | float:
    clean = text.replace("_", "")
    try:
        if re.fullmatch(r"[-+]?0[xXbBoO]?[0-9a-fA-F]+", clean) and not re.fullmatch(
                r"[-+]?[1-9]\d*|[-+]?0", clean):
            return int(clean, 0) if clean.lstrip("+-")[1:2].isalpha() else int(clean, 8)
        if re.fullmatch(r"[-+]?\d+", clean):
            return int(clean)
        return float(clean)
    except ValueError:
        _refuse(where, f"bad number {text}")
        raise AssertionError from None
