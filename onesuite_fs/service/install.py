"""``onesuite install-service``: the systemd units, the fstab mount helper and the logrotate
snippet from packaging/, written for the onesuite program that runs them.

A command rather than the setup script: the units must name the program the admin really
installed (a virtualenv anywhere), which only the running program knows, and an admin
installs a service on a server, not on the machine that builds and tests onesuite-fs.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from .mount_helper import HELPER_NAMES

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
UNITS = ("onesuite-mount@.service", "onesuite-serve@.service")
PLACEHOLDER = "@ONESUITE@"
# What a program path may contain in a unit's ExecStart= (no specifier %, no variable $, no
# quoting, no whitespace) and in /sbin's symlink.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+/-]+")


@dataclass(frozen=True)
class Installed:
    """One file written: where, and what it is."""
    path: Path
    what: str


def default_program() -> Path:
    """The onesuite program running now (its absolute path, symlinks kept: a virtualenv's
    bin/ is where the console script is)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "onesuite" and os.access(argv0, os.X_OK):
        return argv0.absolute()
    found = shutil.which("onesuite")
    if found is None:
        raise ConfigError("cannot tell where the onesuite program is",
                          hint="name it: --program /path/to/onesuite")
    return Path(found).absolute()


def check_program(program: Path) -> Path:
    text = str(program)
    if not _SAFE_PATH.fullmatch(text) or "/../" in text or text.endswith("/.."):
        raise ConfigError(f"the program path {text!r} cannot be written into a unit",
                          hint="an absolute path of letters, digits and . _ + - /")
    if not (program.is_file() and os.access(program, os.X_OK)):
        raise ConfigError(f"{program} is not an executable file",
                          hint="name the onesuite program: --program /path/to/onesuite")
    return program


def render(template: str, program: Path) -> str:
    return template.replace(PLACEHOLDER, str(program))


def install(program: Path, prefix: Path = Path("/"), *, dry_run: bool = False
            ) -> list[Installed]:
    """Write the units, the mount helper (a symlink to `program`) and the logrotate snippet
    under `prefix`; return what was (or, with dry_run, would be) written."""
    check_program(program)
    if not PACKAGING.is_dir():
        raise ConfigError(f"{PACKAGING} is missing: install-service runs from a checkout "
                          "of onesuite-fs (tools/setup.sh installs it in editable mode)")
    plan: list[tuple[Path, str, str | None]] = []
    for unit in UNITS:
        text = render((PACKAGING / "systemd" / unit).read_text(), program)
        plan.append((prefix / "etc/systemd/system" / unit, "systemd unit", text))
    plan.append((prefix / "etc/logrotate.d/onesuite",
                 "logrotate snippet", (PACKAGING / "logrotate/onesuite").read_text()))
    plan.append((prefix / "sbin" / HELPER_NAMES[0], f"mount helper -> {program}", None))
    written = [Installed(path, what) for path, what, _ in plan]
    if dry_run:
        return written
    (prefix / "etc/onesuite").mkdir(parents=True, exist_ok=True)
    for path, _what, text in plan:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.onesuite-new")
        temporary.unlink(missing_ok=True)
        if text is None:
            temporary.symlink_to(program)
        else:
            temporary.write_text(text)
            temporary.chmod(0o644)
        temporary.replace(path)  # a unit or helper is never seen half-written
    return written


def escape_path(path: str) -> str:
    """systemd-escape --path: the instance name of a template unit for `path`."""
    trimmed = "/".join(part for part in path.split("/") if part)
    if not trimmed:
        return "-"
    out = []
    for index, char in enumerate(trimmed):
        if char == "/":
            out.append("-")
        elif (char.isascii() and (char.isalnum() or char in ":_.")) and not (
                index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)
