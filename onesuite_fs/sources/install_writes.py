"""What a SystemImager 4.3 install writes into a node's root itself, after the image pass and
before the overrides (``etc/autoinstallscript.template`` at v4.3.0, lines 316-321):

* ``echo $IMAGENAME > /a/etc/systemimager/IMAGE_LAST_SYNCED_TO`` (line 317): the image name
  and a newline;
* the ``/etc/fstab`` si_mkautoinstallscript baked in at ``##GENERATE_FSTAB##`` (line 319): a
  ``cat <<'EOF' > /a/etc/fstab`` block made from the image's
  ``etc/systemimager/autoinstallscript.conf`` (``lib/SystemImager/Server.pm``
  ``_write_out_new_fstab_file``, lines 1589-1650).

The fstab is taken from the script the node runs when it has one (its block, byte for byte:
that is what runs); a node without a script follows the image-named rule (sources/scripts.py),
whose script si_mkautoinstallscript would make from the image's autoinstallscript.conf, so
that file is rendered as Server.pm renders it. Read only as data, bounded; a file that cannot
be rendered exactly is not guessed at: it is warned about and no fstab is shown.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from xml.parsers import expat

from ..core.layers import Layer, open_in_layer
from ..core.model import Image, Node, WrittenFile
from .scripts import IMAGE_LAST_SYNCED_TO, MAX_SCRIPT_BYTES

TEMPLATE_LINE = "etc/autoinstallscript.template:317"  # SystemImager v4.3.0
ECHO = "echo $IMAGENAME"
HEREDOC = "cat <<'EOF' > /a/etc/fstab"
CONF = "etc/systemimager/autoinstallscript.conf"
MAX_CONF_BYTES = 1 << 20  # a disk layout past this is not one si_prepareclient wrote
MAX_FSINFO = 4096
# The quoted form si_mkautoinstallscript writes (Server.pm line 1595); an unquoted EOF would
# let the shell expand the body, so it is read only when the body has nothing to expand.
_FSTAB_START = re.compile(r"""^\s*cat\s+<<\s*(?:'EOF'|(EOF))\s*>\s*/a/etc/fstab\s*$""")


def read_fstab_block(data: bytes) -> tuple[int, bytes] | str:
    """(line of `cat <<'EOF' > /a/etc/fstab`, the bytes the shell writes) of a script, or why
    not. Lines are split on newlines only, as the shell reads them."""
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        match = _FSTAB_START.match(line.decode("utf-8", "surrogateescape"))
        if match is None:
            continue
        body: list[bytes] = []
        for text in lines[number:]:
            if text == b"EOF":
                if match.group(1) and any(c in b"".join(body) for c in (b"$", b"`", b"\\")):
                    return (f"line {number}: an unquoted heredoc whose body the shell would "
                            "expand ($, ` or \\)")
                return number, b"".join(b + b"\n" for b in body)
            body.append(text)
        return f"line {number}: the heredoc has no EOF line"
    return "no fstab block"


class _Refused(Exception):
    """What stops reading an autoinstallscript.conf (a DTD, too many lines)."""


def render_autoinstallscript_conf(data: bytes) -> bytes | str:
    """The fstab Server.pm `_write_out_new_fstab_file` writes from an autoinstallscript.conf
    (XMLin with keyattr fsinfo => "+line": the <fsinfo> children of the root element by their
    line number, numerically), or why it cannot be rendered exactly."""
    found: list[dict[str, str]] = []
    problem: list[str] = []
    depth = 0

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth == 2 and name == "fsinfo":
            if len(found) >= MAX_FSINFO:
                raise _Refused(f"more than {MAX_FSINFO} <fsinfo> elements")
            found.append(dict(attrs))
        elif depth == 3 and parents[-1] == "fsinfo":
            problem.append(f"an <fsinfo> (line {found[-1].get('line')!r}) has a child element "
                           f"<{name}> (XMLin would give an ARRAY)")
        parents.append(name)

    def end(_name: str) -> None:
        nonlocal depth
        depth -= 1
        parents.pop()

    def refuse_dtd(*_args: object) -> None:
        raise _Refused("a DOCTYPE or entity declaration")

    parents: list[str] = []
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.ExternalEntityRefHandler = refuse_dtd
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        return f"not well-formed XML ({exc})"
    except _Refused as exc:
        return str(exc)
    if problem:
        return problem[0]
    if not found:
        return "no <fsinfo> element (Server.pm would stop: no hash of lines)"
    by_key: dict[str, dict[str, str]] = {}  # XMLin folds by the string: the later wins
    for info in found:
        line = info.get("line")
        if line is None or not re.fullmatch(r"[0-9]{1,9}", line):
            return (f"an <fsinfo> whose line is {line!r}, not a number (XMLin would not fold "
                    "the lines, or Perl's numeric sort would order them by chance)")
        by_key[line] = info
    by_line = {int(key): info for key, info in by_key.items()}
    if len(by_line) < len(by_key):  # "10" and "010": the hash's order decides
        return "two <fsinfo> lines with the same number written differently"
    out: list[str] = []
    for number in sorted(by_line):
        info = by_line[number]
        if "comment" in info:  # `defined($comment)`
            out.append(info["comment"] + "\n")
            continue
        mount_dev = (info.get("mount_dev", "") if _true(info, "mount_dev")
                     else info.get("real_dev", ""))
        text = f"{mount_dev}\t{info.get('mp', '')}\t{info.get('fs', '')}"
        if _true(info, "options"):
            text += "\t" + info["options"]
        if "dump" in info:
            text += "\t" + info["dump"]
            if "pass" in info:
                text += "\t" + info["pass"]
        if _true(info, "real_dev") and info["real_dev"] != mount_dev:
            text += "\t# " + info["real_dev"]
        out.append(text + "\n")
    rendered = "".join(out)
    if "EOF" in rendered.split("\n"):
        return ("a value makes a line 'EOF': the script's heredoc would end there and run "
                "the rest as shell commands")
    return rendered.encode("utf-8", "surrogateescape")


def _true(info: dict[str, str], key: str) -> bool:
    """Perl's truth of an attribute: defined, and neither "" nor "0"."""
    return info.get(key, "") not in ("", "0")


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _read_script(script: Path, scripts_dir: Path) -> tuple[bytes, int] | None:
    real = Path(os.path.realpath(script))
    if Path(os.path.realpath(scripts_dir)) not in real.parents:
        return None  # warned about by scripts.read_overrides
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_SCRIPT_BYTES), os.fstat(f.fileno()).st_mtime_ns


def _read_conf(image: Image) -> tuple[bytes, int] | str:
    """The image's autoinstallscript.conf, read inside the image without following links."""
    layer = Layer("image", image.name, image.path, image.real, image.allowed_by)
    directory, _, name = CONF.rpartition("/")
    try:
        with open_in_layer(layer, directory) as dir_fd:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         dir_fd=dir_fd)
    except FileNotFoundError:
        return "none"
    except OSError as exc:
        return f"cannot be read ({exc.strerror}; a symlink is not followed)"
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        data = f.read(MAX_CONF_BYTES + 1)
    if len(data) > MAX_CONF_BYTES:
        return f"larger than {MAX_CONF_BYTES >> 20} MiB"
    return data, st.st_mtime_ns


def install_writes(nodes: dict[str, Node], images: dict[str, Image], cluster_source: Path,
                   chosen_scripts: dict[str, Path], scripts_dir: Path,
                   warn: Callable[[str], None]) -> dict[str, tuple[WrittenFile, ...]]:
    """host -> what its install writes after the image pass. Each distinct script and image
    is read once."""
    synced_mtime = _mtime(cluster_source)  # the image name comes from the cluster's topology
    from_scripts: dict[Path, WrittenFile | None] = {}
    from_confs: dict[str, WrittenFile | None] = {}
    found: dict[str, tuple[WrittenFile, ...]] = {}
    for host, node in nodes.items():
        written = [WrittenFile(IMAGE_LAST_SYNCED_TO.lstrip("/"), f"{node.image}\n".encode(),
                               synced_mtime, TEMPLATE_LINE, ECHO)]
        script = chosen_scripts.get(host)
        if script is not None:
            if script not in from_scripts:
                from_scripts[script] = _fstab_of_script(script, scripts_dir, warn)
            fstab = from_scripts[script]
        else:
            if node.image not in from_confs:
                from_confs[node.image] = _fstab_of_conf(images.get(node.image), warn)
            fstab = from_confs[node.image]
        if fstab is not None:
            written.append(fstab)
        found[host] = tuple(written)
    return found


def _fstab_of_script(script: Path, scripts_dir: Path,
                     warn: Callable[[str], None]) -> WrittenFile | None:
    read = _read_script(script, scripts_dir)
    if read is None:
        return None
    block = read_fstab_block(read[0])
    if isinstance(block, str):
        if block != "no fstab block":  # a hand-written script that writes none is normal
            warn(f"{script}: {block}; the fstab it writes is not shown")
        return None
    return WrittenFile("etc/fstab", block[1], read[1], f"{script}:{block[0]}", HEREDOC)


def _fstab_of_conf(image: Image | None, warn: Callable[[str], None]) -> WrittenFile | None:
    if image is None:
        return None
    read = _read_conf(image)
    where = image.path / CONF
    if isinstance(read, str):
        if read != "none":
            warn(f"{where}: {read}; the fstab an install writes from it is not shown")
        return None
    rendered = render_autoinstallscript_conf(read[0])
    if isinstance(rendered, str):
        warn(f"{where}: {rendered}; the fstab an install writes from it is not shown")
        return None
    return WrittenFile("etc/fstab", rendered, read[1], str(where),
                       "si_mkautoinstallscript's fstab (Server.pm _write_out_new_fstab_file)")
