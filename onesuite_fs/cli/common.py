"""What every onesuite command shares: site options, loading, warnings, exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.inodes import Numbering
from ..core.model import Site
from ..core.onesis_config import OnesisSource
from ..core.stack import missing_overrides, node_stages
from ..core.state import prepare_store
from ..core.view import View
from ..daemon.handle_key import DEFAULT_HANDLE_KEY, load_or_create_key
from ..daemon.inode_tree import InodeTree
from ..daemon.live import LiveOptions
from ..settings import LINK_POLICIES, OVERRIDE_ORDERS, Settings, load_settings
from ..sources.systemimager import load_site

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_STATE_DIR = Path("/var/lib/onesuite-fs/state")


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
    group.add_argument("--allow-layers-outside", action="append", type=Path, metavar="DIR",
                       help="an image or override may really be in DIR (another "
                            "filesystem, a symlinked directory) although it is not inside "
                            "the images/overrides directory; repeat per directory (replaces "
                            "allow_layers_outside of --config). Without it such layers are "
                            "refused")
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
    settings = load_settings(args.config) if args.config else Settings()
    settings = settings.with_options(root=args.root, override_order=args.override_order,
                                     allow_dynamic_nodes=args.allow_dynamic_nodes,
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
    site = load_site(settings)
    return settings, site


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
                              settings.onesis_ram_prefix, settings.limits)
    state_dir = settings.onesis_state_dir or DEFAULT_STATE_DIR
    view = View(site, settings.override_order, onesis, state_dir, bounded_caches=one_pass,
                numbering=numbering)
    # After the view: what building it refuses (an owner no node's passwd has) is refused
    # before the store is made or locked, so a refused mount writes nothing.
    if serving and not reloading and onesis is not None and onesis.policy == "persistent":
        prepare_store(state_dir)  # closed to local users, crash leftovers removed
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
    # Only overrides cluster.xml names explicitly: most nodes have no host override and the
    # image-named one is implicit, so those are shown by `onesuite nodes`, not warned about.
    for host in site.nodes:
        for entry in missing_overrides(node_stages(site, host, order)):
            if entry.role not in ("host", "script override") and entry.layer.name not in seen:
                seen.add(entry.layer.name)
                print(f"onesuite: warning: override {entry.layer.name!r} ({entry.role}, "
                      f"node {host}) has no directory at {entry.layer.path}; skipped, as "
                      "SystemImager does", file=sys.stderr)




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
    return tuple(dict.fromkeys(p for p in paths if p.is_dir()))
