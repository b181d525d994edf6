"""``onesuite``: the command-line front end, a thin client of the core like the mount.

Each module of this package registers its own subcommands.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType

from ..core.errors import ConfigError
from ..core.view import TreeError
from ..service import logs, sd_notify
from ..service.mount_helper import HELPER_NAMES
from ..service.mount_helper import main as mount_helper_main
from . import changes, core, inspect, nfs, service, transform
from .common import EXIT_FAILURE, EXIT_USAGE, site_options

DESCRIPTION = """\
onesuite-fs serves a SystemImager image server (golden images, overrides and cluster.xml)
as one read-only FUSE mount with every node's effective root, resolved when a path is looked
up, without copying a tree:

  MOUNTPOINT/nodes/<host>/     the node's root: image + its overrides, as SystemImager
                               would have installed it
  MOUNTPOINT/groups/<group>/   a group's root, without any host override
  MOUNTPOINT/images/<image>/   a golden image as it is

Every entry carries the extended attribute user.onesuite.origin naming the layer it comes
from (e.g. "override:node001 /etc/hostname").
"""

EPILOG = """\
exit status: 0 success, 1 failure, 2 bad configuration or usage, 128+N stopped by
signal N (Ctrl-C, kill): a partial output is removed, nothing that looks finished is left.
examples:
  onesuite nodes --root /srv/si
  onesuite mount --root /srv/si /export/roots
  getfattr -n user.onesuite.origin /export/roots/nodes/node001/etc/hostname
  onesuite umount /export/roots
"""


COMMAND_MODULES = (core, changes, nfs, transform, inspect, service)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onesuite", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = site_options()
    for module in COMMAND_MODULES:
        module.register(commands, common)
    return parser


class Stopped(BaseException):
    """A termination signal, raised where the run is so that outputs being written are
    removed on the way out (as for Ctrl-C); a BaseException like KeyboardInterrupt, so no
    handler of ordinary errors swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    sd_notify.take_socket()  # before anything can start a child that would inherit it
    if argv is None and os.path.basename(sys.argv[0]) in HELPER_NAMES:
        # Called by mount(8) for an /etc/fstab line (a symlink to this program).
        return mount_helper_main(sys.argv[1:], main)
    args = build_parser().parse_args(argv)
    # `kill` and a closed terminal stop a long export or conversion like Ctrl-C does. A
    # mount installs its own handlers (it unmounts), which replace these.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _stop)
    logs.configure(args.verbose)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"onesuite: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("onesuite: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Stopped as stop:
        print(f"onesuite: stopped by {signal.Signals(stop.signum).name}", file=sys.stderr)
        return 128 + stop.signum
    except (OSError, TreeError) as exc:
        # A disk or a tool failing mid-run: say what failed, not where in our code
        # (-v shows that too).
        if args.verbose:
            logging.exception("onesuite %s failed", args.command)
        print(f"onesuite: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        # An input no check refused, or a bug: still one line and no traceback (-v shows
        # where); every known bad input has its own message with file and line.
        if args.verbose:
            logging.exception("onesuite %s failed", args.command)
        detail = str(exc)[:500] or "(no detail)"
        print(f"onesuite: error: unexpected {type(exc).__name__}: {detail}\n"
              "  hint: run with -v for where it happened, and report it as a bug",
              file=sys.stderr)
        return EXIT_FAILURE
