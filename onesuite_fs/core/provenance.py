"""Where an entry of a view comes from, as a value: the layer and the path in it, and the
oneSIS rule that put it there, if one did.

The View makes one for every entry it resolves, from the facts it resolved the entry with.
The mount's ``user.onesuite.origin`` text (docs/semantics.md), the ``--json`` fields
(docs/json.md) and the terminal column of preview, explain and diff are three renderings of
it, so nothing reads provenance back from text.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    NAMESPACE = "namespace"  # the mount root, nodes/, groups/, images/
    LAYER = "layer"  # a layer's entry: image:NAME or override:NAME
    PERSISTENT = "persistent"  # a node-private, writable path: state:HOST
    SYNTHETIC = "synthetic"  # an entry no layer has, made by a oneSIS rule: onesis
    DIRECTORY = "directory"  # a plain directory on disk (onesuite diff A dir:PATH)
    WHITEOUT = "whiteout"  # not an entry: a path a layer's whiteout list hides (--whiteouts)


ONESIS = "onesis"  # the label of an entry a oneSIS rule made
GENERATED_PREFIX = "generated:"  # a layer of files an install writes itself (generated.py)


@dataclass(frozen=True, slots=True)
class Provenance:
    kind: Kind
    layer: str  # "image:rocky9", "override:n1", "state:n1", "onesis", "dir:/path", ...
    source: str | None  # the absolute path inside that layer; None for a synthetic entry
    rule: str | None = None  # "file:line" of the oneSIS line that chose or made it
    # What that line did ("CLASS variant fstab.compute", "LINKDIR (rc.preinit fills /ram)");
    # for a persistent path, the line's kind and pattern ("RAMFILE /etc/hosts").
    reason: str | None = None
    is_dir: bool = False
    hard_links: int = 1  # a layer file's link count: above 1, one inode for every name

    # ----- made by the View ---------------------------------------------------------------
    @classmethod
    def namespace(cls) -> Provenance:
        return cls(Kind.NAMESPACE, "onesuite:namespace", None, is_dir=True)

    @classmethod
    def of_layer(cls, label: str, path: str, *, is_dir: bool, hard_links: int = 1,
                 rule: str | None = None, reason: str | None = None) -> Provenance:
        """A layer's entry at `path` (relative); `rule`: the LINKBACK that chose it."""
        return cls(Kind.LAYER, label, "/" + path, rule, reason, is_dir, hard_links)

    @classmethod
    def persistent(cls, host: str, path: str, kind: str, pattern: str,
                   rule: str) -> Provenance:
        return cls(Kind.PERSISTENT, f"state:{host}", "/" + path, rule, f"{kind} {pattern}")

    @classmethod
    def synthetic(cls, reason: str, rule: str | None, *, is_dir: bool) -> Provenance:
        return cls(Kind.SYNTHETIC, ONESIS, None, rule or None, reason, is_dir)

    @classmethod
    def on_disk(cls, label: str, path: str, *, is_dir: bool) -> Provenance:
        """An entry of a plain directory tree: `label` "dir:ROOT", `path` absolute."""
        return cls(Kind.DIRECTORY, label, path, is_dir=is_dir)

    @classmethod
    def whiteout(cls, label: str, path: str, line: str) -> Provenance:
        """A path (absolute) the list of layer `label` hides; `line` its file:line."""
        return cls(Kind.WHITEOUT, label, path, line, "whiteout")

    # ----- renderings ---------------------------------------------------------------------
    def _hard_link_note(self) -> str:
        # One inode for every name of a hard-linked file: its source is the first name seen.
        return f" (one of {self.hard_links} hard links)" if self.hard_links > 1 else ""

    def xattr_text(self) -> str:
        """The ``user.onesuite.origin`` value (docs/semantics.md, docs/onesis.md)."""
        if self.kind is Kind.NAMESPACE:
            return self.layer
        if self.kind is Kind.SYNTHETIC:
            return f"onesis: {self.reason}" + (f" ({self.rule})" if self.rule else "")
        if self.kind is Kind.PERSISTENT:
            return f"{self.layer} {self.source} (persistent: {self.reason} {self.rule})"
        if self.kind is Kind.WHITEOUT:
            return f"hidden by {self.layer} (whiteout {self.source}, {self.rule})"
        text = f"{self.layer} {self.source}"
        if self.layer.startswith(GENERATED_PREFIX) and self.rule is not None:
            return f"{text} (written by {self.reason}, {self.rule})"
        if self.rule is not None and not self.is_dir:
            # A LINKBACK'd directory's origin names its variant only (docs/semantics.md:
            # for a directory, the layer its metadata comes from); --json adds the line.
            text += f" (LINKBACK {self.rule}: {self.reason})"
        return text + self._hard_link_note()

    @property
    def shown_rule(self) -> str | None:
        """The rule as --json and explain show it: file:line; for a persistent path the
        line's kind and pattern before it."""
        if self.kind is Kind.PERSISTENT:
            return f"{self.reason} {self.rule}"
        return self.rule

    @property
    def shown_source(self) -> str | None:
        """The source as --json shows it (a hard-linked file: with its note, as before)."""
        if self.source is None:
            return None
        return self.source + self._hard_link_note()

    def json_fields(self) -> dict[str, str | None]:
        """The provenance keys of an entry record (docs/json.md)."""
        return {"layer": self.layer, "source": self.shown_source, "rule": self.shown_rule,
                "origin": self.xattr_text()}

    def terminal(self, view_path: str, paint: Callable[[str], str]) -> str:
        """The last column of a preview or diff row: the layer, painted by `paint`, the
        path in it when it is not `view_path`, and the deciding line's file name."""
        where = f"  [{os.path.basename(self.shown_rule)}]" if self.shown_rule else ""
        if self.kind is Kind.SYNTHETIC:
            return f"{paint(self.layer)}: {self.reason}{where}"
        if self.kind is Kind.WHITEOUT:
            return f"hidden by {paint(self.layer)}{where}"
        text = paint(self.layer)
        source = self.shown_source
        if source is not None and source != view_path:
            text += f" {source}"
        return text + where
