"""NFS exports of the per-node roots: one per node, to that node's address only, from a
privileged source port; read-only, except for a node with persistent writable paths (its
export is read-write, and the mount answers EROFS everywhere else in its root).

Rendered for nfs-ganesha (``EXPORT`` blocks) and for the kernel server (``/etc/exports``
lines). Both need identities that do not change between runs, because NFS clients keep file
handles across a server restart and a diskless root cannot recover from ESTALE:

- ganesha puts the ``Export_Id`` into every handle: it is derived from the node name (a hash
  into 1..65535; a node whose slot is taken by another probes linearly, see `export_ids`);
- ganesha's VFS FSAL also puts the file system's id there, and for FUSE (``f_fsid`` 0) that is
  the mount's device number, which differs between servers and runs. ``fsid_type = Major64``
  keeps only its major (0 for every FUSE mount), so the handle is the same on every server;
  ``Filesystem_id`` fixes the fsid clients see in attributes (else the device number again);
- the kernel server needs ``fsid=`` for a FUSE file system (it has no device UUID): a UUID
  derived from the node name.

With these, and the inode numbers and generations of core/inodes.py, a node's handle is the
same on every server serving the same store (docs/nfs.md, "Several servers").
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .addresses import AddressBook

MAX_EXPORT_ID = 65535  # ganesha's Export_Id is 16 bits; 0 is its pseudo-fs root
PROTOCOL_CHOICES = ("3,4", "4", "3")
# How long ganesha answers attributes (and so listings, whose validity it checks with the
# directory's mtime) from its cache: the bound on what a client sees stale after a reload,
# and what spares ganesha re-opening every object it touches (bench/notes.md, "Attribute
# caching"). 0 re-fetches every time.
DEFAULT_ATTR_EXPIRATION = 10
MAX_ATTR_EXPIRATION = 3600

# Names written into ganesha.conf strings and /etc/exports paths unescaped. Host names never
# need more; anything else is reported, not exported.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._@:+~-]+$")


@dataclass(frozen=True)
class Export:
    node: str
    address: str
    address_source: str
    path: Path  # MOUNTPOINT/nodes/<host>
    pseudo: str  # the path clients mount: /nodes/<host> (NFSv4 pseudo fs; v3 too, see below)
    export_id: int  # ganesha Export_Id
    fsid: str  # kernel server fsid= (UUID)
    writable: bool = False  # persistent RAM*/LINK* paths: RW (the mount refuses the rest)


@dataclass(frozen=True)
class ExportPlan:
    mountpoint: Path
    exports: tuple[Export, ...]
    unexported: tuple[tuple[str, str], ...]  # (node, why)
    privileged_ports: bool = True  # refuse requests from source ports >= 1024


def check_attr_expiration(seconds: int) -> int:
    """A bounded whole number of seconds (ganesha reads an int32; more than an hour of stale
    answers is never what an admin meant)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not (
            0 <= seconds <= MAX_ATTR_EXPIRATION):
        raise ValueError(f"attribute expiration must be a whole number of seconds from 0 to "
                         f"{MAX_ATTR_EXPIRATION}, not {seconds!r}")
    return seconds


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(f"onesuite-fs:{text}".encode()).digest()[:8], "big")


def export_ids(nodes: Iterable[str]) -> dict[str, int]:
    """Stable ganesha Export_Ids: each node gets its hash slot unless another node claims it.

    First every slot goes to the smallest name hashing to it, so a node without a collision
    keeps its id whatever other nodes come and go (unless a new node hashes onto its slot and
    sorts before it); the others then probe upwards, in name order.
    """
    names = sorted(set(nodes))
    if len(names) > MAX_EXPORT_ID:
        raise ValueError(f"{len(names)} nodes: ganesha allows at most {MAX_EXPORT_ID} exports")
    home = {name: _hash(name) % MAX_EXPORT_ID + 1 for name in names}
    taken: dict[int, str] = {}
    for name in names:
        taken.setdefault(home[name], name)
    ids = {name: slot for slot, name in taken.items()}
    for name in names:
        if name in ids:
            continue
        slot = home[name]
        while slot in taken:
            slot = slot % MAX_EXPORT_ID + 1
        taken[slot] = name
        ids[name] = slot
    return ids


def kernel_fsid(node: str) -> str:
    """fsid= for /etc/exports: a UUID from the node name (the same on every server)."""
    return str(uuid.UUID(bytes=hashlib.sha256(f"onesuite-fs:fsid:{node}".encode()).digest()[:16]))


def ganesha_filesystem_id(node: str) -> str:
    """Filesystem_id for ganesha (``major.minor``): from the node name, like `kernel_fsid`."""
    digest = hashlib.sha256(f"onesuite-fs:fsid:{node}".encode()).digest()
    return f"{int.from_bytes(digest[:4], 'big')}.{int.from_bytes(digest[4:8], 'big')}"


def plan_exports(book: AddressBook, mountpoint: Path, *, writable: set[str] | None = None,
                 privileged_ports: bool = True) -> ExportPlan:
    ids = export_ids(book.found)
    exports = []
    unexported = [(node, "no address (cluster.xml <ip-range>, scripts/hosts, /etc/hosts or "
                         "[nfs.addresses] in onesuite.toml)") for node in book.missing]
    for node, found in book.found.items():
        if not _SAFE_NAME.match(node):
            unexported.append((node, "the name has characters that cannot be written into an "
                                     "export configuration unescaped"))
            continue
        exports.append(Export(node=node, address=found.address, address_source=found.source,
                              path=mountpoint / "nodes" / node, pseudo=f"/nodes/{node}",
                              export_id=ids[node], fsid=kernel_fsid(node),
                              writable=node in (writable or ())))
    return ExportPlan(mountpoint, tuple(exports), tuple(sorted(unexported)), privileged_ports)


def _header(plan: ExportPlan, comment: str) -> list[str]:
    lines = [f"{comment} onesuite-fs: the root of every node under {plan.mountpoint}/nodes,",
             f"{comment} to that node's address only (generated by onesuite exports);",
             f"{comment} read-write only for nodes with persistent writable paths.",
             f"{comment} {len(plan.exports)} exported"]
    for node, why in plan.unexported:
        lines.append(f"{comment} NOT exported: {node}: {why}")
    return lines


def render_exports(plan: ExportPlan) -> str:
    """/etc/exports lines for the kernel NFS server (the mount must be up before exportfs)."""
    lines = _header(plan, "#")
    lines += ["# ro: a root is written only in its persistent paths (rw for those nodes; the",
              "# mount refuses every other write); no_root_squash: a diskless node's root must",
              "# read root-only files (shadow, ssh host keys); knfsd's default 'secure' takes",
              "# privileged source ports only; no_subtree_check: the export is a directory of",
              "# the FUSE mount, which refuses nfsd threads everything outside the node roots",
              "# (handles are keyed: docs/nfs.md); fsid=: FUSE has no device UUID and handles",
              "# must stay valid across restarts and across servers."]
    port = "" if plan.privileged_ports else "insecure,"
    for e in plan.exports:
        access = "rw" if e.writable else "ro"
        lines.append(f"{e.path} {e.address}({access},no_root_squash,no_subtree_check,{port}"
                     f"sec=sys,fsid={e.fsid})")
    return "\n".join(lines) + "\n"


def render_ganesha_exports(plan: ExportPlan, protocols: str = "3,4",
                           attr_expiration: int = DEFAULT_ATTR_EXPIRATION) -> str:
    """nfs-ganesha EXPORT blocks (FSAL_VFS) to include in ganesha.conf."""
    check_attr_expiration(attr_expiration)
    proto = ", ".join(protocols.split(","))
    lines = _header(plan, "#")
    lines += ["# Clients mount <server>:/nodes/<host> (the Pseudo path; NFSv3 too when",
              "# NFS_CORE_PARAM has mount_path_pseudo = true, else the Path).",
              f"# Attr_Expiration_Time = {attr_expiration}: ganesha answers from its cache "
              "for that long; after a",
              f"# reload it serves a changed file or listing at most {attr_expiration + 1} s "
              "longer (docs/nfs.md).",
              "# PrivilegedPort: only root on a node can send requests (source port < 1024)."]
    privileged = "true" if plan.privileged_ports else "false"
    for e in plan.exports:
        access = "RW" if e.writable else "RO"
        lines += [
            "EXPORT {",
            f"    Export_Id = {e.export_id};  # derived from the node name: stable",
            f'    Path = "{e.path}";',
            f'    Pseudo = "{e.pseudo}";',
            f"    Protocols = {proto};",
            "    Transports = TCP;",
            "    SecType = sys;",
            "    Access_Type = None;  # nobody but the CLIENT below",
            "    Squash = No_Root_Squash;",
            f"    Attr_Expiration_Time = {attr_expiration};",
            f"    PrivilegedPort = {privileged};",
            f"    CLIENT {{ Clients = {e.address}; Access_Type = {access}; "
            "Squash = No_Root_Squash; }",
            f"    Filesystem_id = {ganesha_filesystem_id(e.node)};  # the fsid clients see",
            "    # Handles hold the fsid's major only (0 for FUSE), not the device number:",
            "    # the same on every server and after every restart.",
            "    FSAL { Name = VFS; fsid_type = Major64; }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def plan_json(plan: ExportPlan) -> dict[str, object]:
    return {
        "mountpoint": str(plan.mountpoint),
        "exports": [{"node": e.node, "address": e.address, "address_source": e.address_source,
                     "path": str(e.path), "pseudo": e.pseudo, "export_id": e.export_id,
                     "fsid": e.fsid, "writable": e.writable} for e in plan.exports],
        "privileged_ports": plan.privileged_ports,
        "unexported": [{"node": node, "reason": why} for node, why in plan.unexported],
    }
