"""What every onesuite command shares: site options, loading, warnings, exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from ..core.errors import ConfigError
from ..core.inodes import Numbering
from ..core.model import Site
from ..core.onesis_config import OnesisSource
from ..core.onesis_rules import Policy
from ..core.stack import missing_overrides, node_stages
from ..core.state import prepare_store
from ..core.view import View
from ..daemon.handle_key import DEFAULT_HANDLE_KEY, load_or_create_key
from ..daemon.inode_tree import InodeTree
from ..daemon.live import LiveOptions
from ..settings import FIDELITIES, LINK_POLICIES, OVERRIDE_ORDERS, Settings, load_settings
from ..sources.systemimager import load_site

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("onesuite.site")
DEFAULT_STATE_DIR = Path("/var/lib/onesuite-fs/state")
DEFAULT_CONFIG = Path("/etc/onesuite/onesuite.toml")  # read when it exists and no --config


def site_options() -> argparse.ArgumentParser:
    """The options naming an image server, shared by every command that reads one."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("image server")
    group.add_argument("--root", type=Path, metavar="PREFIX",
                       help="where the server's tree is: PREFIX/etc/systemimager and "
                            "PREFIX/var/lib/systemimager (default: /)")
    group.add_argument("--config", type=Path, metavar="FILE",
                       help="onesuite.toml naming paths and policies explicitly "
                            "(command-line options win over it; default "
                            f"{DEFAULT_CONFIG} when that file exists)")
    group.add_argument("--override-order", choices=OVERRIDE_ORDERS,
                       help="which SystemImager tool's override order to reproduce: "
                            "autoinstall (4.3 installs; default), updateclient "
                            "(si_updateclient: no host or image-named override), "
                            "pushoverrides (si_pushoverrides onto an installed node: the "
                            "autoinstall layers, then one copy where the first source wins)")
    group.add_argument("--fidelity", choices=FIDELITIES,
                       help="intent (default): an override's file shows its own bytes, what "
                            "the admin meant; install: exactly what a SystemImager 4.3 "
                            "install leaves: a file rsync's quick check skips (same size and "
                            "mtime as the one below) keeps the lower layer's bytes under "
                            "the override's mode and owner, and no extended attribute is "
                            "kept (4.3 passes no -X)")
    group.add_argument("--whiteouts", action="store_true", default=None,
                       help="let an override hide paths of the layers below it for its "
                            "nodes: the file NAME.whiteouts beside overrides/NAME/ lists one "
                            "absolute path per line ('#' comments), each hidden with "
                            "everything below it (docs/semantics.md, \"Whiteouts\"). Off "
                            "by default: SystemImager has no deletion, so roots stay exactly "
                            "its own")
    group.add_argument("--allow-dynamic-nodes", action="store_true", default=None,
                       help="run cluster.xml <dynamic_node> commands (off by default: "
                            "they are shell commands)")
    group.add_argument("--strict", action="store_true", default=None,
                       help="refuse the whole site when one node cannot be served (a "
                            "missing image, a group defined twice, a failing "
                            "<dynamic_node>); by default only that node is left out and "
                            "listed by 'onesuite nodes' (exit status 1) and 'status'")
    group.add_argument("--allow-layers-outside", action="append", type=Path, metavar="DIR",
                       help="an image or override may really be in DIR (another "
                            "filesystem, a symlinked directory) although it is not inside "
                            "the images/overrides directory; repeat per directory (replaces "
                            "allow_layers_outside of --config). Without it such layers are "
                            "refused")
    group.add_argument("--warewulf-root", type=Path, metavar="PREFIX",
                       help="serve a Warewulf 4 site instead: its tree is under PREFIX "
                            "(PREFIX/etc/warewulf/nodes.conf and warewulf.conf, "
                            "PREFIX/var/lib/warewulf, PREFIX/usr/share/warewulf); profiles "
                            "are the groups, overlays the layers (docs/warewulf.md)")
    onesis = common.add_argument_group("oneSIS rules")
    onesis.add_argument("--onesis-config", type=Path, metavar="FILE",
                        help="one sysimage.conf for every node (default: each node's own "
                             "/etc/sysimage.conf, when its root has one)")
    onesis.add_argument("--no-onesis", dest="onesis_enabled", action="store_false",
                        default=None, help="ignore sysimage.conf: plain SystemImager roots")
    onesis.add_argument("--link-policy", choices=LINK_POLICIES,
                        help="RAMDIR/RAMFILE/LINKDIR/LINKFILE paths: 'ram' (default) shows "
                             "them as mk-sysimage leaves them, links into /ram that "
                             "oneSIS's boot script fills; 'persistent' makes them writable "
                             "and node-private, kept in --persistent-dir across reboots")
    onesis.add_argument("--persistent-dir", type=Path, metavar="DIR",
                        help="where persistent paths are kept, one directory per node "
                             f"(default {DEFAULT_STATE_DIR})")
    return common


def load(args: argparse.Namespace) -> tuple[Settings, Site]:
    config = config_file(args)
    settings = load_settings(config) if config is not None else Settings()
    settings = settings.with_options(root=args.root, override_order=args.override_order,
                                     allow_dynamic_nodes=args.allow_dynamic_nodes,
                                     strict=args.strict, fidelity=args.fidelity,
                                     whiteouts=getattr(args, "whiteouts", None),
                                     cache_timeout=getattr(args, "cache_timeout", None),
                                     handle_key=getattr(args, "handle_key", None),
                                     onesis_config=args.onesis_config,
                                     onesis_enabled=args.onesis_enabled,
                                     onesis_link_policy=args.link_policy,
                                     onesis_state_dir=args.persistent_dir)
    if args.allow_layers_outside:
        settings = settings.with_options(
            allow_layers_outside=tuple(p.absolute() for p in args.allow_layers_outside),
            allow_layers_outside_source="--allow-layers-outside")
    settings = settings.with_options(warewulf_root=getattr(args, "warewulf_root", None))
    if settings.warewulf_root is not None:
        from ..sources.warewulf import load_warewulf
        from ..sources.warewulf_build import DEFAULT_RENDER_CACHE, to_site

        if args.override_order is not None:
            raise ConfigError("--override-order chooses a SystemImager tool's layering; a "
                              "Warewulf site is layered as Warewulf does",
                              hint="drop --override-order (docs/warewulf.md)")
        # The Tree's order names the layering for explain and preview (docs/json.md).
        settings = replace(settings, override_order="warewulf")
        warewulf = load_warewulf(settings.warewulf_root, settings.limits)
        return settings, to_site(warewulf, settings.warewulf_render_cache
                                 or DEFAULT_RENDER_CACHE)
    site = load_site(settings)
    return settings, site


def config_file(args: argparse.Namespace) -> Path | None:
    """--config, else the default file when it exists: a server configured entirely on the
    command line (or by defaults) needs none."""
    if args.config is not None:
        return args.config
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def build_view(settings: Settings, site: Site, *, serving: bool = False,
               one_pass: bool = False, reloading: bool = False,
               numbering: Numbering | None = None) -> View:
    """The roots the mount serves and the inspection commands read (oneSIS rules included).
    Only a serving view numbers its inodes with the site's handle key (made on first use)
    and prepares the persistent store. A reload passes `reloading` and the `numbering` it
    started with: it never empties the store's staging while copies run, and a replaced key
    file never changes live handles. A `one_pass` view (export, convert, preview, diff) keeps
    bounded caches. Raises ConfigError for a bad sysimage.conf or key, naming the file."""
    if serving and numbering is None:
        numbering = Numbering(load_or_create_key(settings.handle_key or DEFAULT_HANDLE_KEY))
    onesis = None
    if settings.onesis_enabled:
        onesis = OnesisSource(settings.onesis_config, settings.onesis_link_policy,
                              settings.onesis_ram_prefix, settings.limits,
                              Policy(range_numbers=settings.onesis_range_numbers))
    state_dir = settings.onesis_state_dir or DEFAULT_STATE_DIR
    view = View(site, settings.override_order, onesis, state_dir, bounded_caches=one_pass,
                numbering=numbering, serving=serving, fidelity=settings.fidelity,
                whiteouts=settings.whiteouts)
    # After the view: what building it refuses (an owner no node's passwd has) is refused
    # before the store is made or locked, so a refused mount writes nothing.
    if serving and not reloading and onesis is not None and onesis.policy == "persistent":
        prepare_store(state_dir)  # closed to local users, crash leftovers removed
    if view.not_updated:
        shown = ", ".join(view.not_updated[:5]) + (" ..." if len(view.not_updated) > 5 else "")
        print(f"onesuite: note: {len(view.not_updated)} view(s) ({shown}) have no "
              "/etc/systemimager/updateclient.local.exclude in their installed root: "
              "si_updateclient stops there, so they are shown as installed (autoinstall)",
              file=sys.stderr)
    if onesis is not None:
        for config in onesis.distinct_configs():
            for directive in config.no_effect_on_served_root():
                print(f"onesuite: note: {directive.location}: {directive.name} has no effect "
                      "on a served root (diskful deployment or power/console only)",
                      file=sys.stderr)
    return view


def build_tree(settings: Settings, site: Site, *, reloading: bool = False,
               numbering: Numbering | None = None) -> InodeTree:
    """What a mount serves: the serving view, numbered by inode, making nodes' persistent
    paths as they are first used."""
    view = build_view(settings, site, serving=True, reloading=reloading, numbering=numbering)
    return InodeTree(view, create_state=True)


def report_warnings(site: Site, order: str) -> None:
    seen: set[str] = set()
    for warning in site.warnings:
        print(f"onesuite: warning: {warning}", file=sys.stderr)
    for line in broken_lines(site):
        print(f"onesuite: error: {line}", file=sys.stderr)
    # Only overrides cluster.xml names explicitly: most nodes have no host override and the
    # image-named one is implicit, so those are shown by `onesuite nodes`, not warned about.
    for host in site.nodes:
        for entry in missing_overrides(node_stages(site, host, order)):
            if entry.role not in ("host", "script override") and entry.layer.name not in seen:
                seen.add(entry.layer.name)
                print(f"onesuite: warning: override {entry.layer.name!r} ({entry.role}, "
                      f"node {host}) has no directory at {entry.layer.path}; skipped, as "
                      "SystemImager does", file=sys.stderr)




def broken_lines(site: Site) -> list[str]:
    """One line per node that is not served, with its file:line and reason."""
    return [f"node {name} not served: {error}".replace("\n", " ")
            for name, error in sorted(site.broken.items())]


def add_serving_options(parser: argparse.ArgumentParser) -> None:
    """Options of a serving mount (mount, serve): how it follows changes, how it numbers."""
    parser.add_argument("--handle-key", type=Path, metavar="FILE",
                        help="the site's secret that inode numbers and NFS file handles are "
                             "keyed with, so no client can forge a handle; made on first "
                             "use (mode 0600). Every server of a site needs the same file "
                             f"(default {DEFAULT_HANDLE_KEY})")
    add_live_options(parser)


def add_live_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-watch", action="store_true",
                        help="do not follow changes on the image server (reload only on "
                             "'onesuite reload' or SIGHUP)")
    parser.add_argument("--poll-interval", type=float, default=60.0, metavar="SECONDS",
                        help="how often to check for changes inotify may have missed "
                             "(default 60)")


def live_options(args: argparse.Namespace, settings: Settings, site: Site,
                 tree: InodeTree) -> LiveOptions:
    """How the daemon re-reads the site: the same options, read again from scratch, and the
    serving `tree`'s numbering (handles stay valid across reloads)."""

    def rebuild() -> InodeTree:
        new_settings, new_site = load(args)
        for line in broken_lines(new_site):
            log.error("reload: %s", line)
        return build_tree(new_settings, new_site, reloading=True, numbering=tree.numbering)

    watched = () if args.no_watch else watch_paths(settings, site)
    return LiveOptions(rebuild, watched, poll_every=args.poll_interval)


def watch_paths(settings: Settings, site: Site) -> tuple[Path, ...]:
    """Everything a reload reads: the server's configuration, scripts, overrides, images."""
    layout = site.layout
    paths = [layout.config_dir, layout.scripts_dir, layout.overrides_dir,
             *(image.path for image in site.images.values())]
    if settings.onesis_config is not None:
        paths.append(settings.onesis_config.parent)
    if site.warewulf is not None:  # every overlay, distribution ones too (templates)
        overlays = site.warewulf.site.overlays.values()  # type: ignore[attr-defined]
        # --whiteouts: an overlay's list is beside its rootfs (core/whiteouts.py)
        paths += [p.parent for p in overlays] if settings.whiteouts else overlays
    return tuple(dict.fromkeys(p for p in paths if p.is_dir()))
