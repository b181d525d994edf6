"""What reading a SystemImager site is told (the application's Settings has these fields; a
Protocol, so sources/ imports nothing above it)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..core.limits import Limits


class SiteOptions(Protocol):
    @property
    def root(self) -> Path: ...  # --root PREFIX: where the image server's tree is
    @property
    def cluster_xml(self) -> Path | None: ...
    @property
    def images_dir(self) -> Path | None: ...
    @property
    def overrides_dir(self) -> Path | None: ...
    @property
    def scripts_dir(self) -> Path | None: ...
    @property
    def rsync_stubs_dir(self) -> Path | None: ...
    @property
    def images(self) -> dict[str, Path]: ...  # explicit --image NAME=PATH
    @property
    def allow_dynamic_nodes(self) -> bool: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def allow_layers_outside(self) -> tuple[Path, ...]: ...
    @property
    def allow_layers_outside_source(self) -> str | None: ...
    @property
    def strict(self) -> bool: ...  # one unservable node refuses the whole site
