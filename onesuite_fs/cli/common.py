"""What every onesuite command shares: site options, loading, warnings, exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..model import Site
from ..settings import OVERRIDE_ORDERS, Settings, load_settings
from ..sources.systemimager import load_site
from ..stack import missing_overrides, node_stages

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def site_options() -> argparse.ArgumentParser:
    """The options naming an image server, shared by every command that reads one."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("image server")
    group.add_argument("--root", type=Path, metavar="PREFIX",
                       help="where the server's tree is: PREFIX/etc/systemimager and "
                            "PREFIX/var/lib/systemimager (default: /)")
    group.add_argument("--config", type=Path, metavar="FILE",
                       help="onesuite.toml naming paths and policies explicitly "
                            "(command-line options win over it)")
    group.add_argument("--override-order", choices=OVERRIDE_ORDERS,
                       help="which SystemImager tool's override order to reproduce: "
                            "autoinstall (4.3 installs; default), updateclient "
                            "(si_updateclient: no host or image-named override), "
                            "pushoverrides (si_pushoverrides: first source wins)")
    group.add_argument("--allow-dynamic-nodes", action="store_true", default=None,
                       help="run cluster.xml <dynamic_node> commands (off by default: "
                            "they are shell commands)")
    return common


def load(args: argparse.Namespace) -> tuple[Settings, Site]:
    settings = load_settings(args.config) if args.config else Settings()
    settings = settings.with_options(root=args.root, override_order=args.override_order,
                                     allow_dynamic_nodes=args.allow_dynamic_nodes,
                                     cache_timeout=getattr(args, "cache_timeout", None))
    site = load_site(settings)
    return settings, site


def report_warnings(site: Site, order: str) -> None:
    seen: set[str] = set()
    for warning in site.warnings:
        print(f"onesuite: warning: {warning}", file=sys.stderr)
    # Only overrides cluster.xml names explicitly: most nodes have no host override and the
    # image-named one is implicit, so those are shown by `onesuite nodes`, not warned about.
    for host in site.nodes:
        for entry in missing_overrides(node_stages(site, host, order)):
            if entry.role not in ("host", "script override") and entry.layer.name not in seen:
                seen.add(entry.layer.name)
                print(f"onesuite: warning: override {entry.layer.name!r} ({entry.role}, "
                      f"node {host}) has no directory at {entry.layer.path}; skipped, as "
                      "SystemImager does", file=sys.stderr)


