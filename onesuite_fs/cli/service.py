"""onesuite install-service: run onesuite-fs as a systemd service and from /etc/fstab."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import EXIT_OK

INSTALL_EPILOG = """\
what it writes (under --prefix, default /):
  etc/systemd/system/onesuite-mount@.service   the mount (onesuite mount --foreground)
  etc/systemd/system/onesuite-serve@.service   mount + nfs-ganesha (onesuite serve)
  sbin/mount.fuse.onesuite                     mount(8) helper for fuse.onesuite fstab lines
  etc/logrotate.d/onesuite                     rotation of the log files it writes
  etc/onesuite/                                where onesuite.toml is read from by default
Re-running replaces them (after an upgrade, or to name another program).

then:
  systemctl daemon-reload
  systemctl enable --now onesuite-mount@$(systemd-escape --path /srv/onesuite).service
  systemctl reload onesuite-mount@srv-onesuite.service    # = onesuite reload /srv/onesuite
or an /etc/fstab line:
  onesuite  /srv/onesuite  fuse.onesuite  defaults,root=/srv/si  0 0
See docs/service.md.
"""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    install = commands.add_parser(
        "install-service", help="install the systemd units and the fstab mount helper",
        description="Install the systemd units that run 'onesuite mount' and 'onesuite "
                    "serve' as services (readiness reported to systemd, 'systemctl reload' "
                    "= 'onesuite reload', restarted after a crash), the mount.fuse.onesuite "
                    "helper that lets /etc/fstab mount onesuite-fs, and a logrotate snippet. "
                    "The units run the onesuite program given by --program (default: this "
                    "one).",
        epilog=INSTALL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    install.add_argument("--program", type=Path, metavar="PATH",
                         help="the onesuite program the units and the helper run (default: "
                              "the one running now)")
    install.add_argument("--prefix", type=Path, default=Path("/"), metavar="DIR",
                         help="install under DIR instead of / (packaging, a chroot)")
    install.add_argument("--mountpoint", type=Path, metavar="PATH",
                         help="print the unit names for this mount point")
    install.add_argument("--dry-run", action="store_true", help="write nothing, say what")
    install.add_argument("--json", action="store_true", help="machine-readable output")
    install.set_defaults(func=cmd_install_service)


def cmd_install_service(args: argparse.Namespace) -> int:
    from ..service.install import UNITS, default_program, escape_path, install

    program = (args.program or default_program()).absolute()
    written = install(program, args.prefix.absolute(), dry_run=args.dry_run)
    units = {}
    if args.mountpoint is not None:
        instance = escape_path(str(args.mountpoint.absolute()))
        units = {unit.split("@")[0]: unit.replace("@.", f"@{instance}.") for unit in UNITS}
    if args.json:
        json.dump({"program": str(program), "dry_run": args.dry_run,
                   "files": [{"path": str(i.path), "what": i.what} for i in written],
                   "units": units}, sys.stdout, indent=2)
        print()
        return EXIT_OK
    verb = "would write" if args.dry_run else "wrote"
    for item in written:
        print(f"{verb} {item.path}  ({item.what})")
    if units:
        print("then:\n  systemctl daemon-reload")
        for name in units.values():
            print(f"  systemctl enable --now {name}")
    return EXIT_OK
