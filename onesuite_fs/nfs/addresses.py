"""Which address each node mounts its root from: an NFS export is granted to that address only.

Sources, the first that names a node wins:

1. ``[nfs.addresses]`` in onesuite.toml (the admin said so explicitly);
2. cluster.xml ``<ip-range>``/``<domain>`` of the node's groups, most important group first,
   paired the way ``si_clusterconfig``'s ``add_hosts_entries`` pairs them: the group's host
   names sorted as strings, its addresses sorted numerically, matched one to one (a count
   mismatch is an error there too); for a Warewulf site, the address of each node's
   primary network device in nodes.conf (docs/warewulf.md);
3. ``scripts/hosts``, the copy of the server's /etc/hosts that ``si_clusterconfig`` leaves for
   the clients;
4. ``PREFIX/etc/hosts``.

A host-file name matches a node by its full name or by its short name (cut at the first dot,
as SystemImager's clients do); a full-name match wins. Loopback, multicast and link-local
addresses never identify a node. Two nodes that end up with one address are refused: the
export of one would be readable by the other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..core.model import Group, Site
from ..sources.hostrange import expand_range_list


@dataclass(frozen=True)
class NodeAddress:
    node: str
    address: str  # normalised (ipaddress), IPv4 or IPv6
    source: str  # where it was found, for messages and `exports --json`


@dataclass(frozen=True)
class AddressBook:
    found: dict[str, NodeAddress]  # node -> address, for every node that has one
    missing: tuple[str, ...]  # nodes with no address anywhere: never exported
    warnings: tuple[str, ...]


def _parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _usable(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A unicast address a client can come from (not the server's own loopback names)."""
    return not (addr.is_loopback or addr.is_multicast or addr.is_link_local
                or addr.is_unspecified)


def _split_source(source: str) -> tuple[str | None, int | None]:
    file, _, line = source.rpartition(":")
    if file and line.isdigit():
        return file, int(line)
    return (source or None), None


def from_config(configured: Mapping[str, object], nodes: set[str],
                config_file: str | None) -> tuple[dict[str, NodeAddress], list[str]]:
    """[nfs.addresses]: node = "address"; unknown nodes are warned about, bad values refused."""
    found: dict[str, NodeAddress] = {}
    warnings: list[str] = []
    for node, value in configured.items():
        addr = _parse_address(value) if isinstance(value, str) else None
        if addr is None:
            raise ConfigError(f"[nfs.addresses] {node} = {value!r} is not an IP address",
                              file=config_file,
                              hint='write node001 = "10.1.1.1" (an IPv4 or IPv6 address)')
        if node not in nodes:
            warnings.append(f"{config_file}: [nfs.addresses] names {node!r}, which is not a "
                            "node of this cluster; ignored")
            continue
        found[node] = NodeAddress(node, str(addr), f"{config_file} [nfs.addresses]")
    return found, warnings


def from_ip_range(group: Group) -> dict[str, NodeAddress]:
    """One group's <ip-range> paired with its nodes, as add_hosts_entries pairs them."""
    if not group.ip_range:
        return {}
    file, line = _split_source(group.source)
    parsed = []
    for item in expand_range_list(group.ip_range):
        addr = _parse_address(item)
        if addr is None or addr.version != 4:
            raise ConfigError(f"group {group.name}: <ip-range> item {item!r} is not an IPv4 "
                              "address or range", file=file, line=line,
                              hint="write e.g. 10.1.0.1-10.1.0.64,10.1.1.7")
        parsed.append(addr)
    hosts = sorted(group.nodes)
    if len(parsed) != len(hosts):
        raise ConfigError(f"group {group.name}: <ip-range> has {len(parsed)} addresses for "
                          f"{len(hosts)} nodes", file=file, line=line,
                          hint="si_clusterconfig refuses this too: give one address per node "
                               "(nodes sorted by name get addresses in numeric order)")
    where = f"{group.source} <ip-range> of group {group.name}"
    return {host: NodeAddress(host, str(addr), where)
            for host, addr in zip(hosts, sorted(parsed), strict=True)}


def from_hosts_file(path: Path, nodes: set[str]) -> dict[str, NodeAddress]:
    """Nodes named in an /etc/hosts-format file; the first usable line for a name wins."""
    try:
        text = path.read_text(errors="surrogateescape")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return {}
    by_lower = {node.lower(): node for node in nodes}
    exact: dict[str, NodeAddress] = {}
    short: dict[str, NodeAddress] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        fields = raw.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        addr = _parse_address(fields[0])
        if addr is None or not _usable(addr):
            continue
        for name in fields[1:]:
            where = NodeAddress("", str(addr), f"{path}:{number}")
            full = by_lower.get(name.lower())
            if full is not None and full not in exact:
                exact[full] = NodeAddress(full, where.address, where.source)
            brief = by_lower.get(name.split(".", 1)[0].lower())
            if brief is not None and brief not in short:
                short[brief] = NodeAddress(brief, where.address, where.source)
    return {**short, **exact}


def node_addresses(site: Site, configured: Mapping[str, object] | None = None,
                   config_file: str | None = None) -> AddressBook:
    """Every node's address, from the sources in the module docstring; refuses collisions."""
    nodes = set(site.nodes)
    found: dict[str, NodeAddress] = {}
    warnings: list[str] = []
    if configured:
        explicit, notes = from_config(configured, nodes, config_file)
        found.update(explicit)
        warnings.extend(notes)
    for group in site.cluster.groups:  # most important group first
        for node, addr in from_ip_range(group).items():
            found.setdefault(node, addr)
    for node, addr in from_warewulf(site).items():
        found.setdefault(node, addr)
    for path in (site.layout.scripts_dir / "hosts", site.layout.root / "etc/hosts"):
        for node, addr in from_hosts_file(path, nodes).items():
            found.setdefault(node, addr)
    check_collisions(found)
    missing = tuple(sorted(nodes - found.keys()))
    return AddressBook(found={n: found[n] for n in sorted(found)}, missing=missing,
                       warnings=tuple(warnings))


def from_warewulf(site: Site) -> dict[str, NodeAddress]:
    """A Warewulf site: each node's primary network device address in nodes.conf."""
    if site.warewulf is None:
        return {}
    from ..sources.warewulf import primary_address

    ww = site.warewulf.site  # type: ignore[attr-defined]
    found = {}
    for name, node in ww.nodes.items():
        text = primary_address(node)
        addr = _parse_address(text) if text else None
        if addr is not None and _usable(addr):
            found[name] = NodeAddress(name, str(addr), f"{ww.nodes_conf}:{node.line}")
    return found


def check_collisions(found: Mapping[str, NodeAddress]) -> None:
    by_address: dict[str, list[NodeAddress]] = {}
    for entry in found.values():
        by_address.setdefault(entry.address, []).append(entry)
    clashes = {a: sorted(e, key=lambda x: x.node) for a, e in by_address.items() if len(e) > 1}
    if not clashes:
        return
    address, entries = sorted(clashes.items())[0]
    detail = "; ".join(f"{e.node} (from {e.source})" for e in entries)
    more = f" ({len(clashes) - 1} more address(es) are shared too)" if len(clashes) > 1 else ""
    raise ConfigError(f"nodes share the address {address}: {detail}{more}",
                      hint="each node's root is exported to its address only, so two nodes "
                           "with one address would read each other's root; fix the address "
                           "of one of them (or set it in [nfs.addresses] of onesuite.toml)")
