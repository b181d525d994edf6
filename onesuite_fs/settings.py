"""Settings: command-line options over an optional ``onesuite.toml`` over defaults.

The file can name every path and policy explicitly (example in docs/configuration.md)::

    [paths]                       # absolute, or relative to the file
    root = "/"
    cluster_xml = "/etc/systemimager/cluster.xml"
    images_dir = "/var/lib/systemimager/images"
    overrides_dir = "/var/lib/systemimager/overrides"
    scripts_dir = "/var/lib/systemimager/scripts"
    rsync_stubs_dir = "/etc/systemimager/rsync_stubs"
    allow_layers_outside = ["/data/images"]   # layers may really be there (see below)

    [images]                      # image name -> directory, over rsync stubs
    rhel9 = "/data/images/rhel9"

    [policy]
    override_order = "autoinstall"    # or "updateclient", "pushoverrides"
    allow_dynamic_nodes = false
    strict = false                    # one node that cannot be served refuses the site
    fidelity = "intent"               # or "install": exactly what a 4.3 install leaves
    whiteouts = false                 # true: overrides/NAME.whiteouts hides paths below NAME

    [mount]
    cache_timeout = 300.0             # kernel entry/attr cache, seconds
    handle_key = "/var/lib/onesuite-fs/handle.key"   # keys inode numbers (NFS handles)

    [onesis]                          # oneSIS rules over the nodes' roots
    enabled = true                    # read each node's /etc/sysimage.conf when it has one
    config = "/etc/onesuite/sysimage.conf"   # one file for every node instead
    link_policy = "ram"               # RAM*/LINK* paths: "ram" or "persistent"
    range_numbers = "value"           # or "exact": node007 not in node[1-128]
    ram_prefix = "/ram"
    state_dir = "/var/lib/onesuite-fs/state" # persistent paths live here, per node

    [nfs]                             # onesuite exports / serve
    bind = "10.1.0.254"               # NFS server address (default: every address)
    port = 2049
    protocols = "3,4"                 # or "4" (no rpcbind needed)
    attr_expiration = 10              # seconds ganesha caches attributes (docs/nfs.md)
    privileged_ports = true           # refuse requests from source ports >= 1024
    state_dir = "/var/lib/onesuite-fs/nfs"

    [nfs.addresses]                   # node -> address, over cluster.xml and hosts files
    node001 = "10.1.1.1"

    [warewulf]                        # serve a Warewulf 4 site instead (docs/warewulf.md)
    root = "/"                        # its tree: etc/warewulf, var/lib/warewulf, usr/share
    render_cache = "/var/cache/onesuite-fs/warewulf"   # rendered templates, by content
    [ha]                              # several servers: onesuite keepalived (nfs/keepalived.py)
    interface = "eth0"
    servers = ["srv1", "srv2"]
    [[ha.floating]]
    address = "10.1.0.250/24"
    nodes = "node001-node064"

    [limits]                          # refuse inputs past these (docs/configuration.md)
    max_nodes = 1000000               # host names after expanding ranges
    max_config_lines = 100000         # sysimage.conf lines, INCLUDEs counted as read
    regexp_timeout = 0.25             # seconds for one host pattern match
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .core.errors import ConfigError
from .core.limits import DEFAULT_LIMITS, Limits

OVERRIDE_ORDERS = ("autoinstall", "updateclient", "pushoverrides")

_PATH_KEYS = ("root", "cluster_xml", "images_dir", "overrides_dir", "scripts_dir",
              "rsync_stubs_dir")
_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "paths": {key: str for key in _PATH_KEYS},
    "policy": {"override_order": str, "allow_dynamic_nodes": bool, "strict": bool,
               "fidelity": str, "whiteouts": bool},
    "mount": {"cache_timeout": (int, float), "handle_key": str},
    "onesis": {"enabled": bool, "config": str, "link_policy": str, "ram_prefix": str,
               "state_dir": str, "range_numbers": str},
    "nfs": {"bind": str, "port": int, "protocols": str, "state_dir": str, "addresses": dict,
            "privileged_ports": bool, "attr_expiration": int},
    "warewulf": {"root": str, "render_cache": str},
    "limits": {"max_nodes": int, "max_config_lines": int, "regexp_timeout": (int, float)},
}


@dataclass(frozen=True)
class Settings:
    root: Path = Path("/")
    cluster_xml: Path | None = None
    images_dir: Path | None = None
    overrides_dir: Path | None = None
    scripts_dir: Path | None = None
    rsync_stubs_dir: Path | None = None
    images: dict[str, Path] = field(default_factory=dict)
    override_order: str = "autoinstall"
    allow_dynamic_nodes: bool = False
    # Refuse the whole site for one node that cannot be served (CI checks); by default only
    # that node is left out (model.Site.broken).
    strict: bool = False
    # "intent" (an override's file shows its bytes) or "install" (what a 4.3 install leaves:
    # rsync's quick check, no xattrs); docs/semantics.md.
    fidelity: str = "intent"
    # Off: SystemImager's semantics exactly (nothing hides anything). On: an override's list
    # file beside it hides paths of the layers below it (core/whiteouts.py).
    whiteouts: bool = False
    cache_timeout: float = 300.0
    handle_key: Path | None = None  # None: handle_key.DEFAULT_HANDLE_KEY
    # [onesis]
    onesis_enabled: bool = True
    onesis_config: Path | None = None
    onesis_link_policy: str = "ram"
    onesis_ram_prefix: str = "/ram"
    onesis_state_dir: Path | None = None
    # "value": node007 is in node[1-128] (oneSIS manual node36); "exact": only as written.
    onesis_range_numbers: str = "value"
    # [nfs]: read by onesuite_fs.nfs only (the core never looks at them).
    nfs_bind: str | None = None
    nfs_port: int | None = None
    nfs_protocols: str | None = None
    nfs_state_dir: Path | None = None
    nfs_addresses: dict[str, object] = field(default_factory=dict)
    nfs_privileged_ports: bool = True  # exports refuse source ports >= 1024
    nfs_attr_expiration: int | None = None  # ganesha's Attr_Expiration_Time, seconds
    # [ha]: as written; checked by onesuite_fs.nfs.keepalived against the site's nodes.
    ha: dict[str, object] = field(default_factory=dict)
    limits: Limits = DEFAULT_LIMITS
    # [warewulf]: a Warewulf 4 site instead of a SystemImager one (sources/warewulf.py)
    warewulf_root: Path | None = None
    warewulf_render_cache: Path | None = None
    config_file: str | None = None  # the onesuite.toml these came from, for messages
    # --- layers outside their directories (issue 14, part "layers") -----------------------
    # Directories where an image or override may really be although it is not inside the
    # images/overrides directory (a symlink, a stub naming another filesystem). One entry
    # per location, never a global switch: see docs/configuration.md.
    allow_layers_outside: tuple[Path, ...] = ()
    allow_layers_outside_source: str | None = None  # "onesuite.toml:LINE" or the option
    # --- end of layers block ---------------------------------------------------------------

    def with_options(self, **options: Any) -> Settings:
        """These settings with every option that is not None replaced."""
        given = {k: v for k, v in options.items() if v is not None}
        if "override_order" in given:
            check_override_order(given["override_order"])
        if "fidelity" in given:
            check_fidelity(given["fidelity"])
        return replace(self, **given)


LINK_POLICIES = ("ram", "persistent")
FIDELITIES = ("intent", "install")


def check_fidelity(value: str, file: str | None = None) -> str:
    if value not in FIDELITIES:
        raise ConfigError(f"unknown fidelity {value!r}", file=file,
                          hint=f"use one of: {', '.join(FIDELITIES)}")
    return value


def check_link_policy(policy: str, file: str | None = None) -> str:
    if policy not in LINK_POLICIES:
        raise ConfigError(f"unknown link policy {policy!r}", file=file,
                          hint=f"use one of: {', '.join(LINK_POLICIES)}")
    return policy


def check_override_order(order: str, file: str | None = None) -> str:
    if order not in OVERRIDE_ORDERS:
        raise ConfigError(f"unknown override order {order!r}", file=file,
                          hint=f"use one of: {', '.join(OVERRIDE_ORDERS)}")
    return order


def _under(base: Path, value: str) -> Path:
    """A path from the file: absolute, or relative to the file's directory; normalized."""
    return Path(os.path.normpath(base / value))


def load_settings(path: Path) -> Settings:
    """Read onesuite.toml; unknown sections or keys and wrong types are errors."""
    filename = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("configuration file not found", file=filename) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=filename) from None
    base = path.parent.resolve()
    values: dict[str, Any] = {}
    values.update(_allow_layers_outside(data, path, base))
    for section, table in data.items():
        if section == "ha":
            if not isinstance(table, dict):
                raise ConfigError("[ha] must be a table", file=filename)
            values["ha"] = table
            continue
        if section == "images":
            if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
                raise ConfigError("[images] must map image names to directory strings",
                                  file=filename)
            values["images"] = {name: _under(base, p) for name, p in table.items()}
            continue
        schema = _SCHEMA.get(section)
        if schema is None or not isinstance(table, dict):
            raise ConfigError(f"unknown section [{section}]", file=filename,
                              hint=f"known sections: {', '.join([*_SCHEMA, 'images', 'ha'])}")
        for key, value in table.items():
            expected = schema.get(key)
            if expected is None:
                raise ConfigError(f"unknown key {key!r} in [{section}]", file=filename,
                                  hint=f"known keys: {', '.join(schema)}")
            if not isinstance(value, expected) or (expected is not bool
                                                   and isinstance(value, bool)):
                raise ConfigError(f"[{section}] {key} has the wrong type "
                                  f"({type(value).__name__})", file=filename)
            if section == "limits":
                values.setdefault("limits", {})[key] = value
            elif section in ("nfs", "onesis", "warewulf"):
                is_path = key in ("state_dir", "config", "root", "render_cache")
                values[f"{section}_{key}"] = _under(base, value) if is_path else value
            else:
                is_path = section == "paths" or key == "handle_key"
                values[key] = _under(base, value) if is_path else value
    if "override_order" in values:
        check_override_order(values["override_order"], filename)
    if "fidelity" in values:
        check_fidelity(values["fidelity"], filename)
    if "onesis_link_policy" in values:
        check_link_policy(values["onesis_link_policy"], filename)
    if values.get("onesis_range_numbers", "value") not in ("value", "exact"):
        raise ConfigError(f"[onesis] range_numbers {values['onesis_range_numbers']!r} is "
                          "neither \"value\" nor \"exact\"", file=filename,
                          hint='"value" (node007 is in node[1-128]) or "exact" (only as the '
                               'range writes it)')
    if "limits" in values:
        try:
            values["limits"] = Limits(**values["limits"])
        except ValueError:
            raise ConfigError("every value in [limits] must be greater than 0", file=filename,
                              hint="raise a limit rather than remove it") from None
    return Settings(**values, config_file=filename)


# --- layers outside their directories (issue 14, part "layers") ---------------------------
def _allow_layers_outside(data: dict[str, Any], path: Path, base: Path) -> dict[str, Any]:
    """[paths] allow_layers_outside = ["/data/images", ...], taken out of the table: a list of
    directories (absolute, or relative to the file), checked when the site is loaded."""
    table = data.get("paths")
    if not isinstance(table, dict) or "allow_layers_outside" not in table:
        return {}
    value = table.pop("allow_layers_outside")
    line = next((n for n, text in enumerate(path.read_text().splitlines(), 1)
                 if text.lstrip().startswith("allow_layers_outside")), None)
    where = f"{path}:{line}" if line else str(path)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError("[paths] allow_layers_outside must be a list of directories",
                          file=str(path), line=line,
                          hint='e.g. allow_layers_outside = ["/data/images"]')
    return {"allow_layers_outside": tuple(_under(base, v) for v in value),
            "allow_layers_outside_source": where}
# --- end of layers block -------------------------------------------------------------------
