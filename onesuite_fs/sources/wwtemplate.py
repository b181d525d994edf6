"""Rendering Warewulf ``.ww`` overlay templates: Go text/template semantics over node data.

What Warewulf gives a template (internal/pkg/overlay/datastructure.go InitStruct) is a Go
struct; here it is a `GoStruct` of Python values with the same field names, printed the way
Go's fmt prints them (govalues.py). The parse is gotemplate.py's; the stateless functions
are gofuncs.py's. The functions are Warewulf's own (overlay.go buildTemplateFuncMap:
Include, IncludeFrom, IncludeBlock, file, softlink, abort, nobackup, UniqueField,
SystemdEscape(Path), basename, inc, dec) and the sprig functions the shipped overlays call.
A function outside that list, and the ones that read the server's filesystem outside the
site (readlink, ImportLink), are refused with the template's file and line.

Templates are hostile input: output is bounded (MAX_OUTPUT_BYTES per template), so are
range iterations (MAX_STEPS) and nesting (gotemplate.MAX_NESTING); Include reads only files
inside the Warewulf root and IncludeFrom only inside the node's image, opened component by
component without following symlinks (`read_inside`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .gofuncs import BUILTINS, SPRIG, WAREWULF_PURE, sort_key
from .gotemplate import (
    Action,
    Block,
    Command,
    Dot,
    Field,
    Identifier,
    Jump,
    Literal,
    Pipe,
    TemplateError,
    Text,
    Variable,
    parse,
)
from .govalues import (  # noqa: F401 (StringMap, WWBool, IP: what callers build data with)
    IP,
    MISSING,
    GoStruct,
    Missing,
    StringMap,
    WWBool,
    go_string,
    truth,
)

MAX_OUTPUT_BYTES = 16 << 20
MAX_STEPS = 1_000_000  # range iterations and function calls of one template
MAX_INCLUDE_BYTES = 16 << 20


@dataclass
class Rendered:
    """What one template produced (overlay.go RenderedTemplate)."""

    write: bool = True  # False after abort()
    backup: bool = True  # False after nobackup()
    files: list[RenderedFile] = field(default_factory=list)


@dataclass
class RenderedFile:
    name: str  # "" for the default output
    content: list[str] = field(default_factory=list)
    symlink: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.content)


class _Abort(Exception):
    pass


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


# ----- reading files for Include and IncludeFrom ---------------------------------------------
def read_inside(root: Path, relative: str, what: str) -> bytes | None:
    """The file at `relative` under `root`, reached without following any symlink and
    without '..': None when it does not exist; TemplateError-worthy OSError otherwise."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PermissionError(errno.EACCES, f"{what}: '..' in {relative!r}")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(root, flags | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                return None
            os.close(fd)
            fd = child
        if not parts:
            return None
        try:
            file_fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        except FileNotFoundError:
            return None
        with os.fdopen(file_fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None  # Warewulf's util.IsFile: not a regular file, not included
            data = handle.read(MAX_INCLUDE_BYTES + 1)
        if len(data) > MAX_INCLUDE_BYTES:
            raise OSError(errno.EFBIG, f"{what}: {relative} is larger than "
                                       f"{MAX_INCLUDE_BYTES} bytes")
        return data
    finally:
        os.close(fd)


@dataclass
class Context:
    """Where a template's file functions may read, and how to name messages."""

    filename: str  # the template, for messages
    warewulf_root: Path  # Include: absolute paths are taken under it
    sysconfdir: str  # Include: relative paths are SYSCONFDIR/warewulf/PATH
    image_rootfs: Callable[[str], Path | None]  # IncludeFrom: an image's rootfs


# ----- rendering ------------------------------------------------------------------------------
class Renderer:
    def __init__(self, tree: list[object], data: GoStruct, context: Context) -> None:
        self.tree = tree
        self.data = data
        self.ctx = context
        self.result = Rendered(files=[RenderedFile("")])
        self.current = self.result.files[0]
        self.size = 0
        self.steps = 0
        self.line = 0
        self.functions: dict[str, Callable[..., object]] = self._functions()

    def refuse(self, message: str, hint: str | None = None) -> TemplateError:
        return TemplateError(message, file=self.ctx.filename, line=self.line or None,
                             hint=hint or "onesuite-fs renders the subset of Go templates "
                                          "Warewulf's shipped overlays use (docs/warewulf.md)")

    def render(self) -> Rendered:
        scope: list[dict[str, object]] = [{"$": self.data}]
        try:
            self.walk(self.tree, self.data, scope)
        except _Abort:
            self.result.write = False
        except (_Break, _Continue):
            raise self.refuse("break or continue outside a range") from None
        except RecursionError:
            raise self.refuse("template nested too deeply") from None
        return self.result

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT_BYTES:
            raise self.refuse(f"output larger than {MAX_OUTPUT_BYTES} bytes",
                              hint="a template that writes this much is not a config file")
        self.current.content.append(text)

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise self.refuse(f"more than {MAX_STEPS} steps (range iterations and calls)")

    def charge(self, result: object) -> None:
        """A call's result costs steps by its size: `append` or `printf` in a loop would
        otherwise copy without bound (quadratic lists, doubling strings) within MAX_STEPS."""
        if isinstance(result, str):
            self.steps += len(result) // 64
        elif isinstance(result, list | dict):
            self.steps += len(result)
        if self.steps > MAX_STEPS:
            raise self.refuse(f"more than {MAX_STEPS} steps (range iterations, calls and the "
                              "size of what they make)")

    def walk(self, nodes: list[object], dot: object, scope: list[dict[str, object]]) -> None:
        for node in nodes:
            if isinstance(node, Text):
                self.emit(node.text)
            elif isinstance(node, Action):
                self.line = node.line
                value = self.pipe(node.pipe, dot, scope)
                if not node.pipe.declare:
                    self.emit(go_string(value))
            elif isinstance(node, Block):
                self.block(node, dot, scope)
            elif isinstance(node, Jump):
                self.line = node.line
                raise _Break() if node.kind == "break" else _Continue()

    def block(self, node: Block, dot: object, scope: list[dict[str, object]]) -> None:
        self.line = node.line
        inner = [*scope, {}]
        if node.kind == "range":
            self.range(node, dot, inner)
            return
        value = self.pipe(node.pipe, dot, inner)
        if truth(value):
            self.walk(node.body, value if node.kind == "with" else dot, inner)
        else:
            self.walk(node.otherwise, dot, [*scope, {}])

    def range(self, node: Block, dot: object, scope: list[dict[str, object]]) -> None:
        pipe = node.pipe
        names = pipe.declare
        bare = Pipe([], False, pipe.commands, pipe.line)
        value = self.pipe(bare, dot, scope)
        pairs: Iterable[tuple[object, object]]
        if isinstance(value, dict):
            pairs = sorted(value.items(), key=lambda kv: sort_key(kv[0]))
        elif isinstance(value, list | tuple):
            pairs = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            pairs = ((i, i) for i in range(value))  # lazily: `range 100000000` is no list
        elif value is None or value is MISSING:
            pairs = []
        else:
            raise self.refuse(f"range can't iterate over {go_string(value)}")
        if len(names) > 2:
            raise self.refuse("range declares at most two variables")
        empty = not value if not isinstance(value, int) or isinstance(value, bool) \
            else value <= 0
        if empty:
            self.walk(node.otherwise, dot, scope)
            return
        for key, item in pairs:
            self.step()
            frame = {}
            if len(names) == 1:
                frame[names[0]] = item
            elif len(names) == 2:
                frame[names[0]], frame[names[1]] = key, item
            try:
                self.walk(node.body, item, [*scope[:-1], frame])
            except _Break:
                break
            except _Continue:
                continue

    def pipe(self, pipe: Pipe, dot: object, scope: list[dict[str, object]]) -> object:
        value: object = _NOTHING
        for command in pipe.commands:
            value = self.command(command, dot, scope, value)
        if pipe.declare:
            if len(pipe.declare) != 1:
                raise self.refuse("only range declares two variables")
            name = pipe.declare[0]
            if pipe.assign:
                for frame in reversed(scope):
                    if name in frame:
                        frame[name] = value
                        break
                else:
                    raise self.refuse(f"undefined variable {name}")
            else:
                scope[-1][name] = value
        return value

    def command(self, command: Command, dot: object, scope: list[dict[str, object]],
                previous: object) -> object:
        first, rest = command.args[0], command.args[1:]
        if isinstance(first, Identifier):
            function = self.functions.get(first.name)
            if function is None:
                raise self.refuse(f"function {first.name!r} is not supported")
            if first.name in ("and", "or"):
                return self.logic(first.name, rest, dot, scope, previous)
            args = [self.arg(a, dot, scope) for a in rest]
            if previous is not _NOTHING:
                args.append(previous)
            self.step()
            try:
                result = function(*args)
                self.charge(result)
                return result
            except TemplateError:
                raise
            except (_Abort, _Break, _Continue):
                raise
            except TypeError as exc:
                raise self.refuse(f"{first.name}: wrong arguments ({exc})") from None
            except (ValueError, KeyError, IndexError, OverflowError, OSError) as exc:
                raise self.refuse(f"error calling {first.name}: {exc}") from None
        if rest or previous is not _NOTHING:
            if isinstance(first, Field):
                args = [self.arg(a, dot, scope) for a in rest]
                if previous is not _NOTHING:
                    args.append(previous)
                return self.field(first, dot, scope, args)
            raise self.refuse("can't give arguments to a non-function")
        return self.arg(first, dot, scope)

    def logic(self, name: str, rest: list[object], dot: object,
              scope: list[dict[str, object]], previous: object) -> object:
        operands: list[Callable[[], object]] = [
            (lambda a=a: self.arg(a, dot, scope)) for a in rest]
        if previous is not _NOTHING:
            operands.append(lambda: previous)
        if not operands:
            raise self.refuse(f"{name} needs at least one argument")
        value: object = None
        for get in operands:
            value = get()
            if (name == "and") != truth(value):
                return value
        return value

    def arg(self, node: object, dot: object, scope: list[dict[str, object]]) -> object:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Dot):
            return dot
        if isinstance(node, Variable):
            return self.variable(node.name, scope)
        if isinstance(node, Field):
            return self.field(node, dot, scope, [])
        if isinstance(node, Pipe):
            return self.pipe(node, dot, scope)
        if isinstance(node, Identifier):
            function = self.functions.get(node.name)
            if function is None:
                raise self.refuse(f"function {node.name!r} is not supported")
            self.step()
            return function()
        raise self.refuse("unsupported operand")

    def variable(self, name: str, scope: list[dict[str, object]]) -> object:
        for frame in reversed(scope):
            if name in frame:
                return frame[name]
        raise self.refuse(f"undefined variable {name}")

    def field(self, node: Field, dot: object, scope: list[dict[str, object]],
              args: list[object]) -> object:
        base = node.base
        if isinstance(base, Dot):
            value = dot
        elif isinstance(base, Variable):
            value = self.variable(base.name, scope)
        elif isinstance(base, Pipe):
            value = self.pipe(base, dot, scope)
        else:
            value = self.arg(base, dot, scope)
        for index, name in enumerate(node.names):
            last = index == len(node.names) - 1
            value = self.member(value, name, args if last else [])
        return value

    def member(self, value: object, name: str, args: list[object]) -> object:
        if isinstance(value, GoStruct):
            if name in value.methods:
                self.step()
                return value.methods[name](*args)
            if name in value.fields:
                if args:
                    raise self.refuse(f"{name} is a field of {value.type_name}, not a method")
                return value.fields[name]
            raise self.refuse(f"can't evaluate field {name} in type {value.type_name}")
        if isinstance(value, WWBool) and name in ("Bool", "BoolDefaultTrue"):
            return value._value(name == "BoolDefaultTrue")
        if isinstance(value, IP) and name == "String":
            return str(value)
        if args:
            raise self.refuse(f"{name} is not a method")
        if isinstance(value, dict):
            return value.get(name, MISSING)
        if value is None:
            raise self.refuse(f"nil pointer evaluating .{name}")
        if value is MISSING:
            return MISSING  # Go: a field of an invalid value is invalid again
        raise self.refuse(f"can't evaluate field {name} in {go_string(value)!r}")

    # ----- the functions ------------------------------------------------------------------
    def _functions(self) -> dict[str, Callable[..., object]]:
        own = {
            "Include": self._include, "IncludeFrom": self._include_from,
            "IncludeBlock": self._include_block, "file": self._file,
            "softlink": self._softlink, "abort": self._abort, "nobackup": self._nobackup,
        }
        return {**BUILTINS, **SPRIG, **WAREWULF_PURE, **own, "and": _nothing,
                "or": _nothing}

    def _file(self, name: str) -> str:
        self.current = RenderedFile(str(name))
        self.result.files.append(self.current)
        return ""

    def _softlink(self, target: str) -> str:
        self.result.files[-1].symlink = str(target)
        return ""

    def _abort(self) -> str:
        raise _Abort()

    def _nobackup(self) -> str:
        self.result.backup = False
        return ""

    def _include_path(self, name: str) -> tuple[Path, str]:
        name = str(name)
        if not name.startswith("/"):
            name = f"{self.ctx.sysconfdir.rstrip('/')}/warewulf/{name}"
        return self.ctx.warewulf_root, name

    def _include(self, name: str) -> str:
        root, relative = self._include_path(name)
        data = self._read(root, relative, f"Include {name!r}")
        return "" if data is None else data.decode(errors="surrogateescape").removesuffix("\n")

    def _include_block(self, name: str, stop: str) -> str:
        root, relative = self._include_path(name)
        data = self._read(root, relative, f"IncludeBlock {name!r}")
        if data is None:
            return str(stop)
        kept = []
        for line in data.decode(errors="surrogateescape").splitlines():
            if str(stop) in line:
                break
            kept.append(line + "\n")
        return "".join(kept) + str(stop)

    def _include_from(self, image: str, name: str) -> str:
        rootfs = self.ctx.image_rootfs(str(image)) if image else None
        if rootfs is None:
            return ""  # Warewulf warns and includes nothing
        data = self._read(rootfs, str(name), f"IncludeFrom {image!r} {name!r}")
        return "" if data is None else data.decode(errors="surrogateescape").removesuffix("\n")

    def _read(self, root: Path, relative: str, what: str) -> bytes | None:
        try:
            return read_inside(root, relative, what)
        except OSError as exc:
            if exc.errno == errno.ELOOP or exc.errno == errno.ENOTDIR:
                raise self.refuse(f"{what}: a symlink on the way to {relative} (inside "
                                  f"{root}); not followed",
                                  hint="include a regular file of the site, or copy the "
                                       "file into the overlay") from None
            raise self.refuse(f"{what}: {exc.strerror or exc}",
                              hint=f"Include reads only files under {root}") from None


_NOTHING = object()


def _nothing(*_args: object) -> object:
    raise AssertionError("and/or are evaluated lazily")


def render_template(path: Path, text: str, data: GoStruct, context: Context,
                    tree: list[object] | None = None) -> Rendered:
    """Render one template's text (read by the caller, bounded) with `data`; `tree`: its
    parse, when the caller keeps one per template."""
    return Renderer(parse(text, context.filename) if tree is None else tree, data,
                    context).render()


# The TemplateStruct fields that are the same for every node (the server's, the site's).
NODE_INDEPENDENT_FIELDS = frozenset({
    "AllNodes", "Ipaddr", "IpCIDR", "Netmask", "Network", "NetworkCIDR", "Ipaddr6",
    "PrefixLen6", "IpCIDR6", "Network6", "NetworkCIDR6", "Ipv6", "Dhcp", "Nfs", "Ssh",
    "Warewulf", "Tftp", "Paths", "BuildHost", "BuildTime", "BuildTimeUnix", "BuildSource",
    "Overlay"})


def node_independent(tree: list[object]) -> bool:
    """Whether a template reads nothing of the node it is rendered for: every access to the
    data's root (`.X` where dot is the root, `$.X`, `.` or `$` themselves) names a field of
    NODE_INDEPENDENT_FIELDS. Then its output is the same for every node (a hosts file
    listing $.AllNodes) and is rendered once, not once per node."""
    def pipe_ok(pipe: Pipe, root_dot: bool) -> bool:
        return all(operand_ok(arg, root_dot) for command in pipe.commands
                   for arg in command.args)

    def operand_ok(node: object, root_dot: bool) -> bool:
        if isinstance(node, Dot):
            return not root_dot
        if isinstance(node, Variable):
            return node.name != "$"
        if isinstance(node, Field):
            base = node.base
            if isinstance(base, Dot) and root_dot or \
                    isinstance(base, Variable) and base.name == "$":
                return node.names[0] in NODE_INDEPENDENT_FIELDS
            if isinstance(base, Pipe):
                return pipe_ok(base, root_dot)
            return operand_ok(base, root_dot) if not isinstance(base, Dot | Variable) \
                else True
        if isinstance(node, Pipe):
            return pipe_ok(node, root_dot)
        return True  # literals, functions

    def nodes_ok(nodes: list[object], root_dot: bool) -> bool:
        for node in nodes:
            if isinstance(node, Action) and not pipe_ok(node.pipe, root_dot):
                return False
            if isinstance(node, Block):
                if not pipe_ok(node.pipe, root_dot):
                    return False
                body_root = root_dot and node.kind == "if"  # range/with rebind dot
                if not nodes_ok(node.body, body_root) or \
                        not nodes_ok(node.otherwise, root_dot):
                    return False
        return True

    return nodes_ok(tree, True)
