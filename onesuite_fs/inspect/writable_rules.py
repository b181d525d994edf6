"""The sysimage.conf line that would make a refused write succeed (`status --writes`).

For each path a node tried to write (daemon/write_attempts.py), the rule's path is:

- the directory, when the write made, removed or renamed an entry in it (create, mkdir,
  mknod, symlink, link, unlink, rmdir, rename): a file created inside a directory needs the
  directory writable;
- the entry itself otherwise (a write or truncate of a file, chmod, chown, utimes, an
  extended attribute): RAMFILE/LINKFILE for a regular file, RAMDIR/LINKDIR for a directory.

The kind: with the `ram` link policy (oneSIS's own, rc.preinit fills /ram on the node) only
LINKDIR/LINKFILE make the served path writable (they turn it into a link into /ram; a
RAMDIR/RAMFILE only makes /ram/PATH), so LINK is proposed. With the `persistent` policy both
make it writable on the server; the kind the node's rules already use most is proposed
(LINK on a tie: it works under both policies). `-d` is added when the image has content
there (a non-empty directory, a non-empty file), which would otherwise be hidden by an empty
one.

Nothing is proposed, with the reason, when: a rule already covers the path (or a directory
above it); a LINKBACK decides it or a directory above it (a RAM/LINK rule would hide the
variant); the path is a symlink, a special file, or absent in the served root; it is the
root itself or under the /ram prefix; or its name cannot be written in sysimage.conf
(white space, a glob character `* ? [ ] { }`, a control character, bytes that are not
UTF-8: oneSIS splits lines on white space and globs every path).
"""

from __future__ import annotations

import base64
import fnmatch
import re
import stat
import unicodedata

from ..core.onesis_view import NodeOnesis
from ..core.view import View
from ..core.walk import Root

IN_DIRECTORY = frozenset({"create", "mkdir", "mknod", "symlink", "link", "unlink", "rmdir",
                          "rename"})
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_UNWRITABLE = re.compile(r"[\s*?\[\]{}\\]|[\x00-\x1f\x7f]")


def escape(path: str) -> str:
    """`path` shown safely on a terminal or in JSON: backslash, control characters and
    bytes that are not UTF-8 as C escapes (\\n, \\t, \\xNN), invisible or reordering
    characters (bidi overrides, separators) as \\uNNNN; everything else as it is."""
    out = []
    for char in path:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte (os.fsdecode's surrogate)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif code < 0x100 and not char.isprintable():
            out.append(f"\\x{code:02x}")
        elif unicodedata.category(char) in _HIDDEN:  # bidi overrides, line separators...
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


def _raw(path: str) -> str:
    return base64.b64encode(path.encode("utf-8", "surrogateescape")).decode()


def _covering(onesis: NodeOnesis, path: str) -> str | None:
    """The RAM*/LINK* or LINKBACK line deciding `path` or a directory above it, as text."""
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        linkback = onesis.rules.linkback_for("/" + prefix)
        if linkback is not None:
            return f"LINKBACK {linkback.file}:{linkback.line}"
        for ram in onesis.rules.ram_paths:
            if fnmatch.fnmatchcase(prefix, ram.pattern.strip("/")):
                return f"{ram.kind} {ram.pattern} ({ram.file}:{ram.line})"
    return None


def _rule_below(onesis: NodeOnesis, directory: str) -> str | None:
    """A LINKBACK or RAM*/LINK* line for a path below `directory`, as text."""
    prefix = directory + "/"
    for path, linkback in onesis.rules.linkbacks.items():
        if path.strip("/").startswith(prefix):
            return f"LINKBACK {path} ({linkback.file}:{linkback.line})"
    for ram in onesis.rules.ram_paths:
        if ram.pattern.strip("/").startswith(prefix):
            return f"{ram.kind} {ram.pattern} ({ram.file}:{ram.line})"
    return None


def _kind(view: View, onesis: NodeOnesis | None) -> tuple[str, str]:
    policy = view.onesis.policy if view.onesis is not None else None
    if policy is None:
        return "LINK", ("this mount applies no sysimage.conf (--no-onesis): the line takes "
                        "effect where oneSIS rules are applied")
    if policy == "ram":
        return "LINK", ("link policy ram: LINKDIR/LINKFILE turn the path into a link into "
                        "/ram, which makes it writable on the node; RAMDIR/RAMFILE would "
                        "only make /ram/PATH")
    rules = onesis.rules.ram_paths if onesis is not None else ()
    ram = sum(1 for r in rules if r.kind.startswith("RAM"))
    link = len(rules) - ram
    if ram > link:
        return "RAM", (f"link policy persistent: both kinds are writable; this node's rules "
                       f"use RAM* ({ram} RAM, {link} LINK)")
    return "LINK", (f"link policy persistent: both kinds are writable; LINK* "
                    f"({ram} RAM, {link} LINK rules for this node; LINK also works under "
                    "the ram policy)")


def propose(view: View, node: str, path: str, operations: dict[str, int]) -> dict[str, object]:
    """The proposal for one kept path of one node: {"line"} or {"none": why}, "why"."""
    in_directory = any(op in IN_DIRECTORY for op in operations)
    target = path.rpartition("/")[0] if in_directory else path
    entry = view.entries["nodes"].get(node)
    if entry is None:
        return {"line": None, "why": "the node is not served by this generation" if node != "*"
                else "a file every node shows (no single node looked it up): see the "
                     "nodes' own rows, or propose for the image"}
    if not target:
        return {"line": None, "why": "the node's root itself cannot be made writable"}
    if _UNWRITABLE.search(target) or any(unicodedata.category(c) in _HIDDEN
                                         for c in target):
        return {"line": None, "why": "the name cannot be written in sysimage.conf (white "
                                     "space, a glob character, a control character or "
                                     "bytes that are not UTF-8): write the rule by hand"}
    onesis = view.node_onesis(entry)
    prefix = (view.onesis.ram_prefix if view.onesis is not None else "/ram").strip("/")
    if target == prefix or target.startswith(prefix + "/"):
        return {"line": None, "why": f"under /{prefix}, the oneSIS tmpfs"}
    if onesis is not None:
        covered = _covering(onesis, target)
        if covered is not None:
            return {"line": None, "why": f"already decided by {covered}"}
        below = _rule_below(onesis, target)
        if below is not None:
            return {"line": None, "why": f"{below} decides a path below /{target}: a rule "
                                         "for the whole directory would hide it; make the "
                                         "entry itself writable, or write the rule by hand"}
    item = Root(view, entry).lookup(target)
    if item is None:
        return {"line": None, "why": "not in the served root (made by something else?)"}
    mode = item.attr.mode
    if stat.S_ISDIR(mode):
        kind_suffix = "DIR"
        has_content = any(True for _ in Root(view, entry).children(item))
    elif stat.S_ISREG(mode):
        kind_suffix = "FILE"
        has_content = item.attr.size > 0
    else:
        what = "a symlink" if stat.S_ISLNK(mode) else "a special file"
        return {"line": None, "why": f"/{target} is {what} in the served root: make what it "
                                     "points to writable, or write the rule by hand"}
    kind, why = _kind(view, onesis)
    line = f"{kind}{kind_suffix} /{target}" + (" -d" if has_content else "")
    why += ("; -d copies the image's content, which an empty one would hide"
            if has_content else "")
    if in_directory:
        why = f"an entry was made or removed in /{target}: the directory; " + why
    if onesis is None and view.onesis is not None:
        why += ("; this node has no sysimage.conf: give its image /etc/sysimage.conf, or "
                "use --onesis-config")
    return {"line": line, "why": why}


def writes_report(view: View, attempts: dict[str, object]) -> dict[str, object]:
    """The counters of write_attempts.WriteAttempts.to_json with a proposal per path, and
    the distinct proposed lines with the nodes that need each."""
    nodes = []
    lines: dict[str, set[str]] = {}
    for node, counts in sorted(dict(attempts.get("nodes", {})).items()):  # type: ignore[call-overload]
        rows = []
        for path, kept in sorted(counts["paths"].items()):
            proposal = propose(view, node, path, kept["operations"])
            rows.append({"path": escape(path), "path_b64": _raw(path), **kept, **proposal})
            if proposal["line"]:
                lines.setdefault(str(proposal["line"]), set()).add(node)
        nodes.append({"node": escape(node), "other": counts["other"], "paths": rows})
    proposed = [{"line": line, "nodes": sorted(found)} for line, found in sorted(lines.items())]
    # A directory rule makes everything below it writable: lines it covers are redundant.
    dirs = [p["line"].split()[1] for p in proposed if p["line"].split()[0].endswith("DIR")]
    for entry in proposed:
        target = entry["line"].split()[1]
        entry["covered_by"] = next((d for d in dirs if target.startswith(d + "/")), None)
    summary = {k: attempts.get(k) for k in ("total", "outside_nodes", "other_nodes", "limits")}
    return {**summary, "nodes": nodes, "proposed": proposed}
