"""The autoinstall script a node runs, and the override list baked into it.

SystemImager 4.3's client picks the first script that exists in the scripts directory
(``choose_autoinstall_script``, ``initrd_source/skel/etc/init.d/functions`` lines 1202-1261
at v4.3.0): ``HOSTNAME.sh``, ``HOSTNAME.master``, then ``GROUP.sh``, ``GROUP.master`` for
each of its groups (cluster.txt order), then the base host name (``compute99`` ->
``compute``: the name cut at its first digit or dot), then the image name. The script that
``si_mkautoinstallscript --script NAME --overrides A,B`` writes holds
``[ -z $OVERRIDES ] && OVERRIDES="NAME $GROUP_OVERRIDES $HOSTNAME A B"``
(``lib/SystemImager/Server.pm`` lines 1996-2012), and the overrides are laid in that
order (``etc/autoinstallscript.template`` lines 327-383). So the script-named override is
the script's name, not always the image's, and ``--overrides`` come after the host's.

Read only as data: a script is never run. One that cannot be read, lies outside the
scripts directory, or has no plain ``OVERRIDES="..."`` line is reported and the node keeps
the rule used without scripts (image-named override, groups, host).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from ..core.model import ScriptOverrides
from ..core.names import name_problem

MAX_SCRIPT_BYTES = 4 << 20  # a master script is ~30 KB
_ASSIGNMENT = re.compile(r'^\s*(?:\[\s+-z\s+"?\$\{?OVERRIDES\}?"?\s+\]\s*&&\s*)?'
                         r'OVERRIDES="([^"`$\\]*(?:\$\{?\w+\}?[^"`$\\]*)*)"\s*$')
_VARIABLE = re.compile(r"^\$\{?(\w+)\}?$")


def base_hostname(host: str) -> str:
    """`echo $HOSTNAME | sed "s/[.0-9].*$//"`."""
    return re.sub(r"[.0-9].*$", "", host, flags=re.DOTALL)


def candidates(host: str, groups: tuple[str, ...], image: str) -> list[str]:
    """Script file names in the client's order of preference."""
    names = [host, *groups, base_hostname(host), image]
    return [f"{name}{suffix}" for name in names if name for suffix in (".sh", ".master")]


def choose_script(scripts_dir: Path, host: str, groups: tuple[str, ...], image: str,
                  listing: set[str]) -> Path | None:
    """The first candidate that exists (`[ -e ]`: a symlink counts when its target exists);
    `listing`: the names in the scripts directory, read once for the whole site."""
    for name in candidates(host, groups, image):
        if name in listing and os.path.exists(scripts_dir / name):
            return scripts_dir / name
    return None


def read_overrides(script: Path, scripts_dir: Path,
                   warn: Callable[[str], None]) -> ScriptOverrides | None:
    """The script's last OVERRIDES="..." assignment, or None (warned) when it cannot be used."""
    real, home = Path(os.path.realpath(script)), Path(os.path.realpath(scripts_dir))
    if home not in real.parents:
        warn(f"{script}: autoinstall script outside {scripts_dir} (really {real}); not "
             "read, the node keeps the image-named override rule")
        return None
    try:
        with open(real, "rb") as f:
            data = f.read(MAX_SCRIPT_BYTES + 1)
    except OSError as exc:
        warn(f"{script}: cannot read the autoinstall script ({exc.strerror}); the node keeps "
             "the image-named override rule")
        return None
    if len(data) > MAX_SCRIPT_BYTES:
        warn(f"{script}: autoinstall script larger than {MAX_SCRIPT_BYTES >> 20} MiB; not "
             "read, the node keeps the image-named override rule")
        return None
    found: ScriptOverrides | None = None
    for number, line in enumerate(data.decode("utf-8", "surrogateescape").splitlines(), 1):
        match = _ASSIGNMENT.match(line)
        if match is None:
            continue
        words = []
        for word in match.group(1).split():
            variable = _VARIABLE.match(word)
            if variable is not None and variable.group(1) in ("GROUP_OVERRIDES", "HOSTNAME"):
                words.append(f"${variable.group(1)}")
            elif name_problem(word) is None and "$" not in word:
                words.append(word)
            else:
                warn(f"{script}:{number}: OVERRIDES names {word[:60]!r}, which is no "
                     "override name; the node keeps the image-named override rule")
                return None
        found = ScriptOverrides(script, number, tuple(words))
    if found is None:
        warn(f"{script}: no OVERRIDES=\"...\" line (as si_mkautoinstallscript writes it); "
             "the node keeps the image-named override rule")
    return found


def node_scripts(scripts_dir: Path, nodes: dict[str, tuple[tuple[str, ...], str]],
                 warn: Callable[[str], None]
                 ) -> tuple[dict[str, ScriptOverrides], dict[str, Path]]:
    """(host -> the OVERRIDES of the script it runs, for every node that has usable ones;
    host -> the script it runs). `nodes`: host -> (its groups in cluster.txt order, image)."""
    try:
        listing = {entry.name for entry in os.scandir(scripts_dir)}
    except (FileNotFoundError, NotADirectoryError):
        return {}, {}
    parsed: dict[Path, ScriptOverrides | None] = {}
    found: dict[str, ScriptOverrides] = {}
    chosen: dict[str, Path] = {}
    for host, (groups, image) in nodes.items():
        script = choose_script(scripts_dir, host, groups, image, listing)
        if script is None:
            continue
        chosen[host] = script
        if script not in parsed:
            parsed[script] = read_overrides(script, scripts_dir, warn)
        if parsed[script] is not None:
            found[host] = parsed[script]  # type: ignore[assignment]
    return found, chosen


_IMAGENAME = re.compile(r'^\s*(?:\[\s+-z\s+"?\$\{?IMAGENAME\}?"?\s+\]\s*&&\s*)?'
                        r'IMAGENAME="?([^"\s`$\\;&|]+)"?\s*$')


def read_imagename(script: Path, scripts_dir: Path) -> tuple[int, str] | None:
    """(line, image) of the script's last `IMAGENAME=` assignment, as si_mkautoinstallscript
    writes it (`[ -z $IMAGENAME ] && IMAGENAME=NAME`, 4.3 Server.pm lines 1991-1993 from the
    template's ##SET_IMAGENAME##, line 37): the image a node installs when cluster.txt gives
    it none. None when the script is outside the scripts directory, unreadable, or has none."""
    real = Path(os.path.realpath(script))
    if Path(os.path.realpath(scripts_dir)) not in real.parents:
        return None
    try:
        with open(real, "rb") as f:
            data = f.read(MAX_SCRIPT_BYTES).decode("utf-8", "surrogateescape")
    except OSError:
        return None
    found = None
    for number, line in enumerate(data.splitlines(), 1):
        match = _IMAGENAME.match(line)
        if match is not None and name_problem(match.group(1)) is None:
            found = (number, match.group(1))
    return found


def script_image(scripts_dir: Path, host: str, groups: tuple[str, ...]
                 ) -> tuple[Path, int, str] | None:
    """(script, line, image) for a node none of whose groups names an image: the script the
    client would choose (by host, groups, base host name; it has no image name to try) and
    the IMAGENAME it sets."""
    try:
        listing = {entry.name for entry in os.scandir(scripts_dir)}
    except (FileNotFoundError, NotADirectoryError):
        return None
    script = choose_script(scripts_dir, host, groups, "", listing)
    if script is None:
        return None
    found = read_imagename(script, scripts_dir)
    return (script, *found) if found is not None else None


IMAGE_LAST_SYNCED_TO = "/etc/systemimager/IMAGE_LAST_SYNCED_TO"

