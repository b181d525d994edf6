"""onesuite exports, serve: the per-node roots over NFS."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.model import Site
from ..core.view import View
from ..nfs.exports import DEFAULT_ATTR_EXPIRATION, MAX_ATTR_EXPIRATION, check_attr_expiration
from ..settings import Settings
from .common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_serving_options,
    build_tree,
    build_view,
    live_options,
    load,
    report_warnings,
)

DEFAULT_STATE_DIR = Path("/var/lib/onesuite-fs/nfs")

ADDRESSES_HELP = """\
addresses: each node's root is exported to that node's address only. The first source that
names a node wins: [nfs.addresses] in onesuite.toml; cluster.xml <ip-range> of its groups
(paired as si_clusterconfig does: host names sorted, addresses in numeric order); the
server's scripts/hosts; PREFIX/etc/hosts. A node without an address is reported and not
exported; two nodes with one address are refused.
"""

EXPORTS_EPILOG = ADDRESSES_HELP + """
exit status: 0 success, 1 failure, 2 bad configuration or usage.
examples:
  onesuite exports --root /srv/si /export/roots > /etc/ganesha/onesuite-exports.conf
  onesuite exports --root /srv/si --format exports /export/roots > /etc/exports.d/onesuite.exports
  onesuite exports --root /srv/si --json /export/roots | jq '.unexported'
"""

SERVE_EPILOG = ADDRESSES_HELP + """
NFS state directory (--nfs-state-dir): ganesha.conf, ganesha.log (the previous run's in
ganesha.log.1), onesuite.log (the FUSE daemon) and recovery/. A node's NFS file handles are
the same after a restart and on every server serving the same store with the same handle
key (docs/nfs.md, "Several servers"): clients carry on across a restart or a failover.

exit status: 0 stopped by SIGINT/SIGTERM, 1 the NFS server or the FUSE daemon failed (the
message names the log), 2 bad configuration or usage.
examples:
  onesuite serve --root /srv/si --bind 10.1.0.254 /export/roots
  onesuite serve --root /srv/si --protocols 4 --nfs-state-dir /run/onesuite /export/roots
"""

KEEPALIVED_EPILOG = """
[ha] in onesuite.toml (docs/nfs.md, "Several servers"):
  [ha]
  interface = "eth0"               # where the floating addresses live, on every server
  servers = ["srv1", "srv2"]       # every server's name, as --server gives it
  router_id = 51                   # VRRP id of the first floating address (one per address)
  advert_int = 1                   # seconds between VRRP adverts (failover in about 3 s)
  [[ha.floating]]
  address = "10.1.0.250/24"        # what these nodes mount their roots from
  nodes = "node001-node064"        # a host range, as in cluster.xml
Each address has a home server (the first listed for the first address, the second for the
second, ...), priority 150 there and 100, 90, ... on the others in order. Every instance tracks
'onesuite ha-check', so a server that stops serving gives its addresses away.

exit status: 0 success, 1 failure, 2 bad configuration or usage.
examples:
  onesuite keepalived --root /srv/si --server srv1 > /etc/keepalived/keepalived.conf
  onesuite keepalived --root /srv/si --server srv2 --json | jq '.floating[].nodes'
"""

HA_CHECK_EPILOG = """
exit status: 0 this server serves its exports, 1 it does not (the reason on stderr), 2 usage.
example:
  onesuite ha-check --nfs-state-dir /var/lib/onesuite-fs/nfs && echo serving
"""


def add_port_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-unprivileged-ports", action="store_true",
                        help="accept NFS requests from source ports >= 1024 (default: refused, "
                             "so only root on a node can reach its root; [nfs] "
                             "privileged_ports = false does the same)")
    parser.add_argument("--count-writes", action="store_true",
                        help="export every node read-write, so that the writes a node tries "
                             "reach the mount, which refuses them (EROFS, as before) and "
                             "counts them for 'onesuite status --writes'. Default: a node "
                             "without persistent paths is exported read-only and the NFS "
                             "server refuses its writes before the mount sees them")


def add_attr_expiration_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attr-expiration", type=int, metavar="SECONDS",
                        help="how long ganesha answers attributes and listings from its "
                             f"cache (Attr_Expiration_Time, 0-{MAX_ATTR_EXPIRATION}; default "
                             f"{DEFAULT_ATTR_EXPIRATION}, or [nfs] attr_expiration): after a "
                             "reload, clients see a changed file or directory at most this "
                             "long plus 1 s late; 0 re-reads attributes on every request, "
                             "several times slower (docs/nfs.md)")


def _attr_expiration(args: argparse.Namespace, settings: Settings) -> int:
    value = args.attr_expiration
    source = "--attr-expiration"
    if value is None:
        value, source = settings.nfs_attr_expiration, "[nfs] attr_expiration"
    if value is None:
        return DEFAULT_ATTR_EXPIRATION
    try:
        return check_attr_expiration(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}",
                          file=settings.config_file if source.startswith("[") else None,
                          hint="e.g. 10; 0 turns ganesha's attribute cache off") from None


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    exports = commands.add_parser(
        "exports", parents=[common], help="print the NFS exports of every node's root",
        description="Print an NFS export of MOUNTPOINT/nodes/<host> for every node, to that "
                    "node's address only, from privileged source ports only: read-only (read-"
                    "write for a node with persistent writable paths; the mount refuses every "
                    "other write), no root squash, a stable Export_Id "
                    "(ganesha) or fsid= (kernel server) per node, and for ganesha a short "
                    "attribute cache (--attr-expiration): after a reload a changed file or "
                    "listing is served stale for at most that long plus a second. The output "
                    "drops into ganesha.conf (%%include) "
                    "or /etc/exports. MOUNTPOINT is where 'onesuite mount' mounts (or has "
                    "mounted) the roots.",
        epilog=EXPORTS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    exports.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    exports.add_argument("--format", choices=("ganesha", "exports"), default="ganesha",
                         help="ganesha: EXPORT blocks for nfs-ganesha (default); exports: "
                              "/etc/exports lines for the kernel NFS server")
    exports.add_argument("--protocols", choices=("3,4", "4", "3"), metavar="VERSIONS",
                         help="NFS versions in ganesha EXPORT blocks: 3,4 (default), 4 or 3")
    add_port_option(exports)
    add_attr_expiration_option(exports)
    exports.add_argument("--json", action="store_true",
                         help="machine-readable: exports, unexported nodes and the rendered "
                              "configuration")
    exports.set_defaults(func=cmd_exports)

    serve = commands.add_parser(
        "serve", parents=[common], help="mount and serve every node's root over NFS",
        description="Mount the per-node roots at MOUNTPOINT, write the ganesha configuration "
                    "(one export per node, as 'onesuite exports' prints it), and run "
                    "nfs-ganesha in the foreground. Returns when the server is stopped: on "
                    "SIGINT or SIGTERM it stops the NFS server first, then unmounts and waits "
                    "for the FUSE daemon. If ganesha or the FUSE daemon dies, it stops the "
                    "other and exits 1; starting serve again lets clients continue with the "
                    "file handles they hold.",
        epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    serve.add_argument("--nfs", choices=("ganesha",), default="ganesha",
                       help="NFS server to run (ganesha; for the kernel server use "
                            "'onesuite mount' + 'onesuite exports --format exports')")
    serve.add_argument("--bind", metavar="ADDR",
                       help="listen on this address only (default: every address)")
    serve.add_argument("--port", type=int, metavar="PORT", help="NFS port (default 2049)")
    serve.add_argument("--mount-port", type=int, default=20048, metavar="PORT",
                       help="NFSv3 MOUNT protocol port (default 20048)")
    serve.add_argument("--protocols", choices=("3,4", "4", "3"), metavar="VERSIONS",
                       help="NFS versions: 3,4 (default), 4 or 3; NFSv3 needs rpcbind running")
    serve.add_argument("--nfs-state-dir", type=Path, metavar="DIR",
                       help="ganesha's configuration, logs and state, and the serving "
                            f"status ha-check reads (default {DEFAULT_STATE_DIR})")
    serve.add_argument("--cache-timeout", type=float, metavar="SECONDS",
                       help="kernel entry/attribute cache time of the mount (default 300)")
    serve.add_argument("--ganesha", default="ganesha.nfsd", metavar="PROGRAM",
                       help="the ganesha.nfsd program (default: from PATH)")
    add_port_option(serve)
    add_attr_expiration_option(serve)
    add_serving_options(serve)
    serve.add_argument("--json", action="store_true",
                       help="print one JSON status line on stdout once serving")
    serve.set_defaults(func=cmd_serve)

    keepalived = commands.add_parser(
        "keepalived", parents=[common],
        help="print keepalived's configuration for one of several servers",
        description="Print keepalived.conf for this server: one VRRP instance per floating "
                    "address of [ha] in onesuite.toml (the address a set of nodes mounts "
                    "its root from), with this server's priority for it, all tracking "
                    "'onesuite ha-check'. Every server runs 'onesuite serve' over the same "
                    "store with the same handle key, so a node's file handles are valid on "
                    "all of them and keepalived only moves addresses.",
        epilog=KEEPALIVED_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    keepalived.add_argument("--server", required=True, metavar="NAME",
                            help="this server's name, as [ha] servers lists it")
    keepalived.add_argument("--nfs-state-dir", type=Path, metavar="DIR",
                            help=f"serve's state directory (default {DEFAULT_STATE_DIR})")
    keepalived.add_argument("--check-program", metavar="PATH",
                            help="the onesuite program the health check runs (default: this "
                                 "Python with -m onesuite_fs.cli)")
    keepalived.add_argument("--json", action="store_true",
                            help="machine-readable: addresses, nodes, priorities and the "
                                 "configuration")
    keepalived.set_defaults(func=cmd_keepalived)

    ha_check = commands.add_parser(
        "ha-check", help="exit 0 if this server serves its exports (keepalived's check)",
        description="Check that the 'onesuite serve' using DIR runs, that its ganesha and "
                    "FUSE daemon are alive, that the mount answers and that ganesha answers "
                    "an NFS NULL call. Each step is bounded in time (a hung mount is a "
                    "failure, not a hung check). keepalived runs it every second.",
        epilog=HA_CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ha_check.add_argument("--nfs-state-dir", type=Path, metavar="DIR",
                          help=f"serve's state directory (default {DEFAULT_STATE_DIR})")
    ha_check.add_argument("--address", metavar="ADDR",
                          help="where to call ganesha (default: serve's --bind, else "
                               "127.0.0.1)")
    ha_check.add_argument("--json", action="store_true", help="machine-readable output")
    ha_check.set_defaults(func=cmd_ha_check)


def _plan(settings: Settings, site: Site, mountpoint: Path, args: argparse.Namespace,
          view: View) -> Any:
    from ..nfs.addresses import node_addresses
    from ..nfs.exports import plan_exports

    book = node_addresses(site, settings.nfs_addresses, settings.config_file)
    for warning in book.warnings:
        print(f"onesuite: warning: {warning}", file=sys.stderr)
    privileged = settings.nfs_privileged_ports and not args.allow_unprivileged_ports
    # --count-writes: every export RW; the mount still refuses all but persistent paths.
    writable = set(book.found) if args.count_writes else view.writable_nodes()
    plan = plan_exports(book, mountpoint, writable=writable,
                        privileged_ports=privileged)
    for node, why in plan.unexported:
        print(f"onesuite: warning: node {node} is not exported: {why}", file=sys.stderr)
    return plan


def _protocols(args: argparse.Namespace, settings: Settings) -> str:
    value = args.protocols or settings.nfs_protocols or "3,4"
    if value not in ("3,4", "4", "3"):
        raise ConfigError(f"[nfs] protocols = {value!r} is not one of 3,4 / 4 / 3",
                          file=settings.config_file)
    return value


def cmd_exports(args: argparse.Namespace) -> int:
    from ..nfs.exports import plan_json, render_exports, render_ganesha_exports

    settings, site = load(args)
    report_warnings(site, settings.override_order)
    plan = _plan(settings, site, args.mountpoint.absolute(), args, build_view(settings, site))
    protocols = _protocols(args, settings)
    text = (render_exports(plan) if args.format == "exports"
            else render_ganesha_exports(plan, protocols, _attr_expiration(args, settings)))
    if args.json:
        json.dump({**plan_json(plan), "format": args.format, "config": text}, sys.stdout,
                  indent=2)
        print()
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from ..nfs.ganesha import GaneshaOptions, NfsServerError
    from ..nfs.serve import serve

    settings, site = load(args)
    report_warnings(site, settings.override_order)
    mountpoint = args.mountpoint.resolve()
    tree = build_tree(settings, site)
    plan = _plan(settings, site, mountpoint, args, tree.view)
    if not plan.exports:
        raise ConfigError("no node has an address, so there is nothing to export",
                          hint="give addresses in cluster.xml <ip-range>, scripts/hosts, "
                               "/etc/hosts or [nfs.addresses] of onesuite.toml")
    options = GaneshaOptions(bind=args.bind or settings.nfs_bind,
                             port=args.port or settings.nfs_port or 2049,
                             mount_port=args.mount_port,
                             protocols=_protocols(args, settings), binary=args.ganesha,
                             attr_expiration=_attr_expiration(args, settings))
    state_dir = (args.nfs_state_dir or settings.nfs_state_dir or DEFAULT_STATE_DIR).absolute()
    try:
        return serve(settings, tree, plan, options, state_dir,
                     json_status=args.json, live=live_options(args, settings, site, tree))
    except NfsServerError as exc:
        print(f"onesuite: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_keepalived(args: argparse.Namespace) -> int:
    from ..nfs.keepalived import check_command, plan_ha, plan_json, render_keepalived

    settings, site = load(args)
    plan = plan_ha(settings.ha, site.nodes, settings.config_file, settings.limits.max_nodes)
    if settings.nfs_bind:
        raise ConfigError(f"[nfs] bind = {settings.nfs_bind!r}: ganesha would not answer on "
                          "the floating addresses", file=settings.config_file,
                          hint="remove bind: with floating addresses ganesha listens on every "
                               "address")
    state_dir = (args.nfs_state_dir or settings.nfs_state_dir or DEFAULT_STATE_DIR).absolute()
    program = [args.check_program] if args.check_program else [sys.executable, "-m",
                                                                "onesuite_fs.cli"]
    text = render_keepalived(plan, args.server, check_command(program, state_dir))
    if plan.unassigned:
        shown = ", ".join(plan.unassigned[:5]) + (", ..." if len(plan.unassigned) > 5 else "")
        print(f"onesuite: note: {len(plan.unassigned)} node(s) have no floating address "
              f"({shown}): they mount from a fixed server ([[ha.floating]] nodes)",
              file=sys.stderr)
    if args.json:
        json.dump({**plan_json(plan, args.server), "config": text}, sys.stdout, indent=2)
        print()
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_ha_check(args: argparse.Namespace) -> int:
    from ..nfs.health import check

    state_dir = (args.nfs_state_dir or DEFAULT_STATE_DIR).absolute()
    health = check(state_dir, args.address)
    if args.json:
        print(json.dumps({"healthy": health.healthy, "reason": health.reason}))
    elif not health.healthy:
        print(f"onesuite: not serving: {health.reason}", file=sys.stderr)
    return EXIT_OK if health.healthy else EXIT_FAILURE
