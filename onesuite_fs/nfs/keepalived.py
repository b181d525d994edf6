"""Floating NFS server addresses for several servers: keepalived's configuration, from the site.

Every server runs ``onesuite serve`` over the same store and answers every node (active-
active); what moves is the address a node mounts its root from. Each floating address is one
VRRP instance: its home server holds it while it serves, the others stand by in a fixed
order, and a server whose health check fails (``onesuite ha-check``: its NFS server answers
and its mount is up) gives its addresses away. keepalived (VRRP, a Debian package) does the
election and the gratuitous ARP; nothing here elects or sends heartbeats. Why keepalived and
not ctdb: ctdb's job is a clustered Samba/NFS *state* database and it needs a cluster lock
on a shared file system; read-only roots served with identical handles need neither, only
an address that moves, which is exactly VRRP (docs/nfs.md, "Several servers").

The ``[ha]`` section of onesuite.toml says it all::

    [ha]
    interface = "eth0"               # where the floating addresses live, on every server
    servers = ["srv1", "srv2"]       # every server, by the name each is given (--server)
    router_id = 51                   # VRRP virtual_router_id of the first address
    advert_int = 1                   # seconds between VRRP adverts

    [[ha.floating]]                  # one per address: which nodes mount from it
    address = "10.1.0.250/24"
    nodes = "node001-node064"        # a SystemImager host range (cluster.xml syntax)

Every value is checked before it is written into keepalived's configuration: a name or an
address that could break out of its line is refused with the file and what to do.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..core.limits import LimitExceeded
from ..sources.hostrange import expand_range_list

# Resets the TCP connections clients made to an address this server no longer holds.
RESET_CONNECTIONS = "/bin/ss -K -t src"  # iproute2; SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY)
HOME_PRIORITY = 150  # the address's home server; the others 100, 90, ... in server order
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_SAFE_INTERFACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}$")  # IFNAMSIZ - 1
# What may appear in the check command keepalived runs (no white space, quotes or braces:
# keepalived splits the script line on white space).
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_./:=@+,-]+$")
_KEYS = {"interface", "servers", "router_id", "advert_int", "floating"}


@dataclass(frozen=True)
class Floating:
    address: str  # "10.1.0.250/24"
    nodes: tuple[str, ...]
    router_id: int
    home: str  # the server that holds it while it serves


@dataclass(frozen=True)
class HaPlan:
    interface: str
    servers: tuple[str, ...]
    advert_int: int
    floating: tuple[Floating, ...]
    unassigned: tuple[str, ...]  # nodes no floating address names (they mount a fixed one)

    def priority(self, floating: Floating, server: str) -> int:
        """The home server first, then the others in the order after it (round robin)."""
        home = self.servers.index(floating.home)
        distance = (self.servers.index(server) - home) % len(self.servers)
        return HOME_PRIORITY if distance == 0 else 100 - 10 * (distance - 1)

    def address_of(self, node: str) -> str | None:
        """The floating address `node` mounts its root from (without the prefix length)."""
        for floating in self.floating:
            if node in floating.nodes:
                return floating.address.partition("/")[0]
        return None


def plan_ha(table: object, nodes: Iterable[str], file: str | None,
            max_nodes: int | None = None) -> HaPlan:
    """Check ``[ha]`` against the site's nodes; every refusal names the key and the fix."""
    def refuse(message: str, hint: str) -> ConfigError:
        return ConfigError(f"[ha] {message}", file=file, hint=hint)

    if not isinstance(table, dict) or not table:
        raise refuse("is missing", "add an [ha] section with interface, servers and "
                                   "[[ha.floating]] entries (docs/nfs.md, 'Several servers')")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise refuse(f"unknown key {unknown[0]!r}", f"known keys: {', '.join(sorted(_KEYS))}")
    interface = table.get("interface")
    if not isinstance(interface, str) or not _SAFE_INTERFACE.match(interface):
        raise refuse(f"interface = {interface!r} is not a network interface name",
                     'e.g. interface = "eth0" (the same name on every server)')
    servers = table.get("servers")
    if not isinstance(servers, list) or not servers or not all(
            isinstance(s, str) and _SAFE_NAME.match(s) for s in servers):
        raise refuse("servers must be a list of server names (letters, digits, '.', '_', "
                     "'-')", 'e.g. servers = ["srv1", "srv2"]')
    if len(set(servers)) != len(servers):
        raise refuse("servers names a server twice", "give each server once")
    advert_int = table.get("advert_int", 1)
    if isinstance(advert_int, bool) or not isinstance(advert_int, int) \
            or not 1 <= advert_int <= 255:
        raise refuse(f"advert_int = {advert_int!r} is not a whole number of seconds 1-255",
                     "advert_int = 1 (keepalived's default) fails over in about 3 s")
    entries = table.get("floating")
    if not isinstance(entries, list) or not entries or not all(
            isinstance(e, dict) for e in entries):
        raise refuse("has no [[ha.floating]] entries",
                     'add [[ha.floating]] with address = "10.1.0.250/24" and nodes = "..."')
    router_id = table.get("router_id", 51)
    if isinstance(router_id, bool) or not isinstance(router_id, int) \
            or not 1 <= router_id <= 256 - len(entries):
        raise refuse(f"router_id = {router_id!r} leaves no VRRP id 1-255 for each of the "
                     f"{len(entries)} floating addresses",
                     "choose a router_id no other VRRP router on this network uses")
    known = set(nodes)
    taken: dict[str, str] = {}
    seen_addresses: set[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = set()
    floating = []
    for index, entry in enumerate(entries):
        where = f"[[ha.floating]] #{index + 1}"
        if set(entry) - {"address", "nodes"}:
            raise refuse(f"{where}: unknown key {sorted(set(entry) - {'address', 'nodes'})[0]!r}",
                         "an entry has address and nodes only")
        address = _interface_address(entry.get("address"))
        if address is None:
            raise refuse(f"{where}: address = {entry.get('address')!r} is not an address with "
                         "its prefix length", 'e.g. address = "10.1.0.250/24"')
        if address in seen_addresses:
            raise refuse(f"{where}: address {address} is given twice", "one entry per address")
        seen_addresses.add(address)
        text = entry.get("nodes")
        if not isinstance(text, str) or not text.strip():
            raise refuse(f"{where}: nodes must be a host range", 'e.g. nodes = "node001-node064"')
        try:
            names = expand_range_list(text, max_nodes)
        except LimitExceeded as exc:
            raise refuse(f"{where}: nodes: {exc}", "list fewer nodes, or raise "
                                                    "[limits] max_nodes") from None
        for name in names:
            if name not in known:
                raise refuse(f"{where}: node {name!r} is not a node of this site",
                             "onesuite nodes lists them")
            if name in taken:
                raise refuse(f"{where}: node {name!r} is also under {taken[name]}",
                             "give each node one floating address")
            taken[name] = where
        floating.append(Floating(str(address), tuple(names), router_id + index,
                                 servers[index % len(servers)]))
    return HaPlan(interface, tuple(servers), advert_int, tuple(floating),
                  tuple(sorted(known - set(taken))))


def _interface_address(value: object) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    if not isinstance(value, str) or "/" not in value:
        return None
    try:
        address = ipaddress.ip_interface(value)
    except ValueError:
        return None
    ip = address.ip
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_link_local:
        return None
    return address


def check_command(program: list[str], state_dir: Path) -> str:
    """The health check's command line, refused if keepalived could split it wrongly."""
    words = [*program, "ha-check", "--nfs-state-dir", str(state_dir)]
    for word in words:
        if not _SAFE_WORD.match(word):
            raise ConfigError(f"{word!r} cannot be written into keepalived's script line "
                              "(white space, quotes or braces)",
                              hint="install onesuite and the NFS state directory under paths "
                                   "without them, or give --check-program a wrapper's path")
    return " ".join(words)


def render_keepalived(plan: HaPlan, server: str, check: str) -> str:
    """keepalived.conf for `server`: one VRRP instance per floating address, all tracking
    the health check, so a server that stops serving gives every address away."""
    if server not in plan.servers:
        raise ConfigError(f"server {server!r} is not in [ha] servers "
                          f"({', '.join(plan.servers)})",
                          hint="give --server this server's name as [ha] servers lists it")
    lines = [
        f"# Written by onesuite keepalived for server {server}; regenerate it when the site",
        "# changes. Every server serves every node (onesuite serve, the same handles on",
        "# each: docs/nfs.md); keepalived moves the addresses nodes mount from.",
        "global_defs {",
        f"    router_id onesuite_{server}",
        "    script_user root",
        "    enable_script_security",
        "}",
        "",
        "# This server serves its exports: ganesha answers NFS and the mount is up.",
        "vrrp_script onesuite_serves {",
        f"    script \"{check}\"",
        "    interval 1",
        "    timeout 3",
        "    fall 2",
        "    rise 2",
        "}",
    ]
    for floating in plan.floating:
        priority = plan.priority(floating, server)
        reset = f'"{RESET_CONNECTIONS} {floating.address.partition("/")[0]}"'
        shown = ", ".join(floating.nodes[:8]) + (", ..." if len(floating.nodes) > 8 else "")
        lines += [
            "",
            f"# {floating.address}: {len(floating.nodes)} nodes ({shown}); home {floating.home}",
            f"vrrp_instance onesuite_{floating.router_id} {{",
            "    state BACKUP",
            f"    interface {plan.interface}",
            f"    virtual_router_id {floating.router_id}",
            f"    priority {priority}",
            f"    advert_int {plan.advert_int}",
            "    # Gratuitous ARPs every 5 s while master, and an advert before yielding: after a",
            "    # split (a link back up) clients learn the winner's address at once.",
            "    garp_master_refresh 5",
            "    higher_prio_send_advert true",
            "    # The address gone from here (given back, this server failing, its link down,",
            "    # keepalived stopping): reset the NFS connections clients made to it here.",
            "    # Otherwise such a connection stays open, and when the address comes back, a",
            "    # client that reconnects from the same port (the Linux client does) meets it",
            "    # and neither side resets: the client hangs until its TCP gives up.",
            f"    notify_backup {reset}",
            f"    notify_fault {reset}",
            f"    notify_stop {reset}",
            "    virtual_ipaddress {",
            f"        {floating.address} dev {plan.interface}",
            "    }",
            "    track_script {",
            "        onesuite_serves",
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def plan_json(plan: HaPlan, server: str | None = None) -> dict[str, object]:
    return {
        "interface": plan.interface,
        "servers": list(plan.servers),
        "advert_int": plan.advert_int,
        "floating": [{"address": f.address, "router_id": f.router_id, "home": f.home,
                      "nodes": list(f.nodes),
                      "priorities": {s: plan.priority(f, s) for s in plan.servers}}
                     for f in plan.floating],
        "unassigned": list(plan.unassigned),
        **({"server": server} if server else {}),
    }
