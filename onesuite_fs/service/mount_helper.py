"""``mount.fuse.onesuite``: the helper mount(8) runs for an /etc/fstab line of type
fuse.onesuite, so ``mount -a``, ``mount /srv/onesuite`` and systemd's fstab generator work::

    onesuite  /srv/onesuite  fuse.onesuite  defaults,root=/srv/si  0 0

mount(8) looks for /sbin/mount.<type> before anything else (mount(8), "External helpers")
and calls it as ``mount.fuse.onesuite SPEC DIR [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]``. The
helper turns the options into ``onesuite mount`` options and mounts in daemon mode: it
returns once the mount answers, or fails with the reason, as ``onesuite mount`` does.

SPEC must be "onesuite", the source name /proc/mounts shows for every onesuite mount, so
that ``mount -a`` recognizes a line it already mounted. The configuration is
/etc/onesuite/onesuite.toml by default, or ``config=FILE``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

HELPER_NAMES = ("mount.fuse.onesuite", "mount.onesuite")
SOURCE = "onesuite"  # mount.py: fsname=onesuite

# mount(8) exit codes (mount(8), "RETURN CODES").
EXIT_MOUNTED, EXIT_USAGE, EXIT_MOUNT_FAILED = 0, 1, 32

# Options every fstab line may carry that mean nothing to the daemon (the mount is always
# nosuid, nodev and read-only except for persistent paths).
GENERIC = frozenset({
    "defaults", "rw", "ro", "auto", "noauto", "nofail", "_netdev", "suid", "nosuid", "dev",
    "nodev", "exec", "noexec", "atime", "noatime", "relatime", "norelatime", "strictatime",
    "nostrictatime", "diratime", "nodiratime", "lazytime", "nolazytime", "sync", "async",
    "silent", "loud", "nouser", "nousers", "fail",
})
GENERIC_PREFIXES = ("x-", "comment=")
# Non-root mounts: the daemon needs root (/dev/fuse, every node's files); refused by name.
USER_MOUNTS = frozenset({"user", "users", "owner", "group"})

# option=VALUE -> onesuite mount option; path values must be absolute.
VALUED = {"config": "--config", "root": "--root", "handle_key": "--handle-key",
          "log_file": "--log-file", "onesis_config": "--onesis-config",
          "persistent_dir": "--persistent-dir", "allow_layers_outside": "--allow-layers-outside",
          "override_order": "--override-order", "link_policy": "--link-policy",
          "cache_timeout": "--cache-timeout", "poll_interval": "--poll-interval"}
PATH_VALUED = frozenset({"config", "root", "handle_key", "log_file", "onesis_config",
                         "persistent_dir", "allow_layers_outside"})
FLAGS = {"no_onesis": "--no-onesis", "allow_dynamic_nodes": "--allow-dynamic-nodes",
         "no_watch": "--no-watch"}
MAX_OPTIONS_LENGTH = 4096


class HelperError(Exception):
    """A bad invocation or fstab line; the message says what to change."""


@dataclass
class HelperCall:
    mountpoint: str
    onesuite_options: list[str] = field(default_factory=list)
    fake: bool = False  # -f: do everything but mount
    sloppy: bool = False  # -s: ignore options we do not know
    verbose: bool = False

    def argv(self) -> list[str]:
        """The ``onesuite`` command line that mounts it."""
        return [*(["-v"] if self.verbose else []), "mount", *self.onesuite_options,
                "--", self.mountpoint]


def parse(args: list[str]) -> HelperCall:
    """mount(8)'s helper arguments -> what to mount; HelperError for anything unclear."""
    positional: list[str] = []
    options: list[str] = []
    flags = {"f": False, "s": False, "v": False}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in ("-o", "-t", "-N"):
            if index + 1 >= len(args):
                raise HelperError(f"{arg} needs a value")
            if arg == "-o":
                options.append(args[index + 1])
            elif arg == "-t" and args[index + 1] not in ("fuse.onesuite", "onesuite"):
                raise HelperError(f"this helper mounts type fuse.onesuite, not {args[index + 1]}")
            elif arg == "-N":
                raise HelperError("-N (another mount namespace) is not supported")
            index += 2
            continue
        if arg.startswith("-") and len(arg) > 1 and set(arg[1:]) <= set("sfnvr"):
            for letter in arg[1:]:  # -n (no mtab) and -r (read-only) change nothing here
                flags[letter] = True
            index += 1
            continue
        if arg.startswith("-"):
            raise HelperError(f"unknown flag {arg}")
        positional.append(arg)
        index += 1
    if len(positional) != 2:
        raise HelperError("usage: mount.fuse.onesuite onesuite MOUNTPOINT [-sfnv] "
                          "[-o OPTIONS]")
    spec, mountpoint = positional
    if spec != SOURCE:
        raise HelperError(f"the source (first field of the fstab line) must be {SOURCE!r}, "
                          f"not {spec!r}: name a configuration with -o config=FILE "
                          "(/proc/mounts shows every onesuite mount as 'onesuite', so "
                          "mount -a would not recognize it as mounted otherwise)")
    if not mountpoint.startswith("/"):
        raise HelperError(f"the mount point {mountpoint!r} must be an absolute path")
    call = HelperCall(mountpoint, fake=flags["f"], sloppy=flags["s"], verbose=flags["v"])
    for text in options:
        call.onesuite_options += translate_options(text, sloppy=call.sloppy)
    return call


def translate_options(text: str, *, sloppy: bool = False) -> list[str]:
    """"defaults,root=/srv/si,no_watch" -> ["--root=/srv/si", "--no-watch"]."""
    if len(text) > MAX_OPTIONS_LENGTH:
        raise HelperError(f"the mount options are longer than {MAX_OPTIONS_LENGTH} characters")
    result: list[str] = []
    seen: set[str] = set()
    for option in filter(None, text.split(",")):
        name, has_value, value = option.partition("=")
        key = name.replace("-", "_")
        if option in GENERIC or option.startswith(GENERIC_PREFIXES):
            continue
        if key in USER_MOUNTS:
            raise HelperError(f"option {name!r}: onesuite mounts are made by root only "
                              "(the daemon reads every node's files)")
        if key in VALUED:
            if not has_value or not value:
                raise HelperError(f"option {name!r} needs a value ({name}=...)")
            if key in PATH_VALUED and not value.startswith("/"):
                raise HelperError(f"option {name}={value}: the path must be absolute")
            if "\0" in value or "\n" in value:
                raise HelperError(f"option {name!r}: the value has a control character")
            if key in seen and key != "allow_layers_outside":
                raise HelperError(f"option {name!r} is given twice")
            seen.add(key)
            result.append(f"{VALUED[key]}={value}")  # one argument: never an option
        elif key in FLAGS:
            if has_value:
                raise HelperError(f"option {name!r} takes no value")
            result.append(FLAGS[key])
        elif not sloppy:
            known = ", ".join(sorted([*VALUED, *FLAGS]))
            raise HelperError(f"unknown mount option {option!r}; onesuite options: {known} "
                              "(and generic ones: defaults, noauto, nofail, _netdev, "
                              "x-systemd.*, ...)")
    return result


def main(args: list[str], run_onesuite: Callable[[list[str]], int]) -> int:
    """The helper's exit status, by mount(8)'s conventions."""
    try:
        call = parse(args)
    except HelperError as exc:
        print(f"mount.fuse.onesuite: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if os.geteuid() != 0:
        print("mount.fuse.onesuite: onesuite mounts need root", file=sys.stderr)
        return EXIT_USAGE
    if call.fake:
        return EXIT_MOUNTED
    return EXIT_MOUNTED if run_onesuite(call.argv()) == 0 else EXIT_MOUNT_FAILED
