"""What a view's root is: one directory under nodes/, groups/ or images/ and its layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .layers import LayerStore
from .resolve import Contribution
from .stack import Stages

if TYPE_CHECKING:
    from .updateclient import Installed

NAMESPACES = ("nodes", "groups", "images")


@dataclass(frozen=True)
class Entry:
    """One directory under nodes/, groups/ or images/: a view's root."""

    namespace: str
    name: str
    stages: Stages  # for display and provenance
    contribution: Contribution  # the present layers by stage, as layer ids
    slot: int  # the entry's keyed slot: the high bits of its view-keyed inode numbers
    # --override-order updateclient: the installed (autoinstall) stack and the exclusions
    # whose paths keep its entries (updateclient.py).
    installed: Installed | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def host(self) -> str | None:
        return self.name if self.namespace == "nodes" else None


def stage_ids(store: LayerStore, stages: Stages) -> Contribution:
    ids = (tuple(store.add(e.layer) for e in stage if e.present) for stage in stages)
    return tuple(stage for stage in ids if stage)
