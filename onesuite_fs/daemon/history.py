"""The last few generations a mount served, and what `onesuite rollback` returns to.

A generation is built from a configuration (cluster.xml and the rest of the SystemImager
configuration, onesuite.toml's policies, the oneSIS rules as parsed) over the layer trees
as they are on disk when it is built. The configuration is kept, as parsed, for the last
KEEP generations; layer contents cannot be kept (they are the image server's files). So a
rollback builds a *new* generation from an earlier generation's configuration over today's
layers, and switches to it like a reload: atomically, with precise invalidation.

After a rollback the mount is *pinned* to that configuration: automatic reloads (the
watcher, the periodic check, a file changed under an open) still follow the layers but
build from the pinned configuration, so an edit of a configuration file is not applied
again behind the admin's back; `onesuite reload` reads the configuration from disk again
and unpins. Owned by whatever coordinates reloads (today: Generations, in the one serving
process).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.inodes import Numbering
from ..core.model import Site
from ..core.onesis_config import OnesisSource
from ..core.view import View

if TYPE_CHECKING:
    from .inode_tree import InodeTree

KEEP = 5  # generations whose configuration is kept (the serving one included)
# Triggers that read the configuration from disk and unpin: an admin asked for it.
EXPLICIT = "reload"


@dataclass
class _KeptRules(OnesisSource):
    """The oneSIS rules an earlier generation parsed, applied again (not read again)."""

    kept: dict[str, object] = field(default_factory=dict)

    def _parse_all(self, tree) -> None:  # type: ignore[no-untyped-def,override]
        self._configs = {host: self.kept.get(host)  # type: ignore[misc]
                         for host in tree.entries["nodes"]}


@dataclass(frozen=True)
class Configuration:
    """What a generation was built from, besides the layers' contents."""

    site: Site
    order: str
    onesis: OnesisSource | None
    state_dir: Path | None
    fidelity: str
    numbering: Numbering

    @classmethod
    def of(cls, view: View) -> Configuration:
        return cls(view.site, view.order, view.onesis, view.state_dir, view.fidelity,
                   view.numbering)

    def build(self) -> InodeTree:
        """A new generation from this configuration over the layers as they are now."""
        from .inode_tree import InodeTree  # noqa: PLC0415 - inode_tree imports nothing here

        onesis = None
        if self.onesis is not None:
            old = self.onesis
            onesis = _KeptRules(old.config_file, old.policy, old.ram_prefix, old.limits,
                                kept={h: old.config_of(h) for h in self.site.nodes})
        view = View(self.site, self.order, onesis, self.state_dir, numbering=self.numbering,
                    serving=True, fidelity=self.fidelity)
        return InodeTree(view, create_state=True)


@dataclass
class Record:
    generation: int
    at: float
    trigger: str  # mount, watch, open, reload, rollback
    digest: str | None  # configuration_digest (inspect/plan.py); None until computed
    configuration: Configuration = field(repr=False)
    based_on: int  # the generation whose configuration this one was built from
    nodes_affected: int = 0
    paths_changed: int = 0

    def to_json(self) -> dict[str, object]:
        return {"generation": self.generation, "at": self.at, "trigger": self.trigger,
                "config_digest": self.digest, "configuration_of": self.based_on,
                "nodes_affected": self.nodes_affected, "paths_changed": self.paths_changed}


@dataclass
class Pin:
    generation: int  # whose configuration automatic reloads build from
    since: float
    configuration: Configuration = field(repr=False)


class History:
    """The last KEEP generations, newest last, and the pin a rollback left."""

    def __init__(self, keep: int = KEEP) -> None:
        self.records: deque[Record] = deque(maxlen=keep)
        self.pinned: Pin | None = None

    def add(self, record: Record) -> None:
        self.records.append(record)

    def current(self) -> Record | None:
        return self.records[-1] if self.records else None

    def rollback_target(self) -> Record | None:
        """The generation a rollback returns to: the newest one older than the one whose
        configuration is served now (so a second rollback goes one further back)."""
        current = self.current()
        if current is None:
            return None
        for record in reversed(self.records):
            if record.generation < current.based_on:
                return record
        return None

    def configuration_for(self, trigger: str) -> tuple[Configuration | None, int | None]:
        """What a reload of this trigger builds from: (None, None) reads the disk; else the
        pinned configuration and its generation."""
        if trigger == EXPLICIT or self.pinned is None:
            return None, None
        return self.pinned.configuration, self.pinned.generation

    def status(self) -> dict[str, object]:
        pin = self.pinned
        return {
            "history": [r.to_json() for r in self.records],
            "kept": self.records.maxlen,
            "pinned": None if pin is None else {
                "configuration_of": pin.generation, "since": pin.since,
                "note": "rolled back: automatic reloads build from this generation's "
                        "configuration; 'onesuite reload' reads it from disk again"},
        }

    def pin(self, record: Record) -> None:
        self.pinned = Pin(record.based_on, time.time(), record.configuration)
