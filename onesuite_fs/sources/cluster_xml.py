"""``/etc/systemimager/cluster.xml``: the cluster topology (domain.md A.3).

Parsed with expat directly so that every element keeps its line and column for messages, and
so that no DTD, entity declaration or external entity is ever processed (a billion-laughs
file is refused, not expanded).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from xml.parsers import expat

from ..core.errors import ConfigError
from ..core.limits import DEFAULT_LIMITS, LimitExceeded, Limits
from ..core.model import Cluster, Group
from ..core.names import check_name
from .hostrange import expand_range_list

_PRIORITY = re.compile(r"^\s*[0-9]+\s*$")
# Perl compares priorities as numbers (doubles): past 20 digits (2^64) none is a real rank.
_MAX_PRIORITY_DIGITS = 20
_TOP_ELEMENTS = {"master", "name", "override", "group"}
_GROUP_ELEMENTS = {"name", "priority", "image", "override", "node", "dynamic_node",
                   "ip-range", "domain"}


@dataclass
class Element:
    tag: str
    line: int
    column: int
    text: str = ""
    children: list[Element] = field(default_factory=list)

    def all(self, tag: str) -> list[Element]:
        return [c for c in self.children if c.tag == tag]


def parse_xml(data: bytes, filename: str) -> Element:
    """Parse XML into Elements with positions; refuse DTDs and entities."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    root: list[Element] = []
    stack: list[Element] = []
    texts: list[list[str]] = []  # per open element: its pieces, joined once at its end

    def here() -> tuple[int, int]:
        return parser.CurrentLineNumber, parser.CurrentColumnNumber + 1

    def refuse_dtd(*_args: object) -> None:
        line, column = here()
        raise ConfigError("DOCTYPE and entity declarations are not allowed in cluster.xml",
                          file=filename, line=line, column=column,
                          hint="remove the <!DOCTYPE ...> block; cluster.xml needs none")

    def start(tag: str, _attrs: dict[str, str]) -> None:
        line, column = here()
        element = Element(tag, line, column)
        (stack[-1].children if stack else root).append(element)
        stack.append(element)
        texts.append([])

    def end(_tag: str) -> None:
        stack.pop().text = "".join(texts.pop())

    def text(data: str) -> None:
        # expat calls this per line and per entity (&amp;...): appending to a str here was
        # quadratic (a node list of a million &amp; took 16 s, ten million for ever)
        if texts:
            texts[-1].append(data)

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.ExternalEntityRefHandler = refuse_dtd
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise ConfigError(f"malformed XML: {expat.errors.messages[exc.code]}", file=filename,
                          line=exc.lineno, column=exc.offset + 1,
                          hint="fix the XML syntax at that position") from None
    except (LookupError, UnicodeError) as exc:  # encoding="..." Python has no codec for
        line, column = here()
        raise ConfigError(f"cannot read the XML encoding: {exc}", file=filename,
                          line=line, column=column,
                          hint='write encoding="UTF-8" (or drop the encoding declaration)'
                          ) from None
    return root[0]


def _single_text(parent: Element, tag: str, filename: str, *, required: bool,
                 what: str) -> tuple[str | None, Element | None]:
    found = parent.all(tag)
    if not found:
        if required:
            raise ConfigError(f"{what} has no <{tag}>", file=filename, line=parent.line,
                              column=parent.column, hint=f"add a <{tag}> element")
        return None, None
    if len(found) > 1:
        raise ConfigError(f"{what} has more than one <{tag}>", file=filename,
                          line=found[1].line, column=found[1].column,
                          hint=f"keep exactly one <{tag}>")
    value = found[0].text.strip()
    if required and not value:
        raise ConfigError(f"<{tag}> of {what} is empty", file=filename, line=found[0].line,
                          column=found[0].column)
    return value or None, found[0]


def parse_cluster_xml(path: Path, *, dynamic_nodes: Callable[[str], str] | None = None,
                      warn: Callable[[str], None] = lambda _m: None,
                      limits: Limits = DEFAULT_LIMITS, strict: bool = False) -> Cluster:
    """Read cluster.xml. `dynamic_nodes(command)` returns a <dynamic_node> command's output;
    when it is None, such commands are not run (and a warning says so). More host names than
    `limits.max_nodes` (ranges expanded) are refused.

    A group defined twice and a <dynamic_node> command that fails cost only their nodes
    (`Cluster.broken`), as upstream they affect only those nodes; `strict` refuses the file
    instead. A malformed file, a bad name or an exceeded limit is refused either way."""
    filename = str(path)
    root = parse_xml(path.read_bytes(), filename)
    for child in root.children:
        if child.tag not in _TOP_ELEMENTS:
            warn(f"{filename}:{child.line}: unknown element <{child.tag}> ignored")
    global_name, _ = _single_text(root, "name", filename, required=True,
                                  what="cluster.xml (the global group)")
    global_overrides = tuple(
        check_name("override", e.text.strip(), file=filename, line=e.line)
        for e in root.all("override") if e.text.strip())
    if not root.all("override"):
        raise ConfigError("cluster.xml has no top-level <override>", file=filename,
                          line=root.line, column=root.column,
                          hint="SystemImager requires one (it may name an override "
                               "directory that does not exist)")
    budget = _HostBudget(limits.max_nodes)
    broken: dict[str, ConfigError] = {}
    groups = [_parse_group(e, filename, dynamic_nodes, warn, budget, broken, strict)
              for e in root.all("group")]
    groups = _without_duplicates(groups, filename, broken, strict)
    groups = _global_group_takes_everyone(groups, global_name or "")
    master, _ = _single_text(root, "master", filename, required=False, what="cluster.xml")
    return Cluster(global_name=global_name or "", global_overrides=global_overrides,
                   groups=tuple(sorted(groups, key=lambda g: g.rank)), source=filename,
                   master=master, broken=broken)


def _without_duplicates(groups: list[Group], filename: str, broken: dict[str, ConfigError],
                        strict: bool) -> list[Group]:
    """The groups whose name is defined once. si_clusterconfig keys groups by name (the last
    definition's image and overrides for the hosts of all of them); which one the admin
    meant is unknowable, so every node of a twice-defined group is broken instead."""
    first: dict[str, Group] = {}
    twice: dict[str, ConfigError] = {}
    for group in groups:
        if group.name in first:
            error = ConfigError(f"group {group.name!r} is defined twice (first at "
                                f"{first[group.name].source})", file=filename,
                                line=int(group.source.rsplit(":", 1)[1]),
                                hint="merge the two <group> elements or rename one")
            if strict:
                raise error
            twice.setdefault(group.name, error)
        else:
            first[group.name] = group
    for group in groups:
        if group.name in twice:
            for host in group.nodes:
                broken.setdefault(host, twice[group.name])
    return [group for group in groups if group.name not in twice]


def _global_group_takes_everyone(groups: list[Group], global_name: str) -> list[Group]:
    """A group named like the global <name> holds every node of every group: upstream's
    expand_groups_xml (HostRange.pm:125-141 at HEAD, :129 at 4.3) matches any group when
    the name asked for is the global one, and si_clusterconfig writes that group's line for
    each of them at its own sort_group rank (docs/semantics.md, "the global group")."""
    if not any(group.name == global_name for group in groups):
        return groups
    everyone = tuple(sorted({host for group in groups for host in group.nodes}))
    return [replace(group, nodes=everyone) if group.name == global_name else group
            for group in groups]


class _HostBudget:
    """Host names still allowed in the whole file (each <node> text counted as expanded)."""

    def __init__(self, limit: int) -> None:
        self.limit = self.left = limit

    def expand(self, text: str, filename: str, line: int) -> list[str]:
        try:
            hosts = expand_range_list(text, self.left)
        except LimitExceeded as exc:
            total = f" (max_nodes {self.limit:,} for the whole file)" if exc.counted else ""
            raise ConfigError(f"{exc}{total}", file=filename, line=line,
                              hint=exc.hint) from None
        self.left -= len(hosts)
        return hosts


def _parse_group(element: Element, filename: str,
                 dynamic_nodes: Callable[[str], str] | None,
                 warn: Callable[[str], None], budget: _HostBudget,
                 broken: dict[str, ConfigError], strict: bool) -> Group:
    where = f"<group> at line {element.line}"
    name, name_el = _single_text(element, "name", filename, required=True, what=where)
    assert name is not None and name_el is not None
    check_name("group", name, file=filename, line=name_el.line)
    what = f"group {name!r}"
    for child in element.children:
        if child.tag == "base_image":
            raise ConfigError(f"{what}: <base_image> is deprecated", file=filename,
                              line=child.line, column=child.column,
                              hint="use <override> instead (as si_clusterconfig says)")
        if child.tag not in _GROUP_ELEMENTS:
            warn(f"{filename}:{child.line}: unknown element <{child.tag}> in {what} ignored")
    priority_text, priority_el = _single_text(element, "priority", filename, required=False,
                                              what=what)
    priority = None
    if priority_text is not None:
        assert priority_el is not None
        if not _PRIORITY.match(priority_text):
            raise ConfigError(f"{what}: <priority> {priority_text[:40]!r} is not a number",
                              file=filename, line=priority_el.line, column=priority_el.column,
                              hint="use a non-negative integer; lower means more important")
        if len(priority_text.strip().lstrip("0")) > _MAX_PRIORITY_DIGITS:
            raise ConfigError(f"{what}: <priority> has {len(priority_text.strip()):,} digits",
                              file=filename, line=priority_el.line, column=priority_el.column,
                              hint=f"use a number of at most {_MAX_PRIORITY_DIGITS} digits; "
                                   "lower means more important")
        priority = int(priority_text)
    image, image_el = _single_text(element, "image", filename, required=False, what=what)
    if image is not None:
        assert image_el is not None
        check_name("image", image, file=filename, line=image_el.line)
    overrides = tuple(check_name("override", e.text.strip(), file=filename, line=e.line)
                      for e in element.all("override") if e.text.strip())
    hosts: set[str] = set()
    for node_el in element.all("node"):
        for host in budget.expand(node_el.text, filename, node_el.line):
            hosts.add(check_name("node", host, file=filename, line=node_el.line))
    for dyn in element.all("dynamic_node"):
        command = dyn.text.strip()
        if dynamic_nodes is None:
            warn(f"{filename}:{dyn.line}: {what}: <dynamic_node> command {command!r} not run "
                 "(pass --allow-dynamic-nodes to run it); its nodes are not included")
            continue
        try:
            output = dynamic_nodes(command)
        except ConfigError as exc:
            error = ConfigError(f"{what}: {exc.message}; the nodes it names are not served",
                                file=filename, line=dyn.line, column=dyn.column,
                                hint="fix the command, or run it by hand and list its "
                                     "nodes in a <node> element")
            if strict:
                raise error from None
            broken[f"<dynamic_node> of group {name} (line {dyn.line})"] = error
            continue
        for line in output.splitlines():
            for host in budget.expand(line, filename, dyn.line):
                hosts.add(check_name("node", host, file=filename, line=dyn.line))
    ip_range, _ = _single_text(element, "ip-range", filename, required=False, what=what)
    domain, _ = _single_text(element, "domain", filename, required=False, what=what)
    return Group(name=name, priority=priority, image=image, overrides=overrides,
                 nodes=tuple(sorted(hosts)), ip_range=ip_range, domain=domain,
                 source=f"{filename}:{element.line}",
                 priority_perl_false=priority_el is not None and priority_el.text == "0")


def run_dynamic_node(command: str, timeout: float = 60.0) -> str:
    """Run a <dynamic_node> command as SystemImager does (through the shell)."""
    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"<dynamic_node> command {command!r} did not finish in "
                          f"{timeout:.0f} s") from None
    if done.returncode != 0:
        raise ConfigError(f"<dynamic_node> command {command!r} failed with exit status "
                          f"{done.returncode}: {done.stderr.strip()[:300]}")
    return done.stdout
