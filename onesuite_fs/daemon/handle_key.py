"""The site's handle key: the secret every inode number and generation is keyed with.

NFS file handles carry those numbers, so whoever could compute them could open any node's
files with a forged handle (docs/nfs.md, "Isolation"). Every server of a site must hold the
same key to give the same handles (copy the file; it is 64 hex digits and a newline).
The file is created on first use: 32 random bytes, mode 0600, in a 0700 directory, written
beside and linked into place, so two servers starting at once never see half a key.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from ..core.errors import ConfigError
from ..core.inodes import KEY_BYTES

DEFAULT_HANDLE_KEY = Path("/var/lib/onesuite-fs/handle.key")
_HINT = ("the key must be a regular file of 64 hex digits, owned by the user running the "
         "mount and readable by nobody else (chmod 600); copy it from another server of "
         "the site, or remove it to have a new one made (every NFS client then remounts)")


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`, made first if there is none. ConfigError if it is unusable."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (secrets.token_bytes(KEY_BYTES).hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # fails if another process made one first: use that
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ConfigError(f"cannot open the handle key: {exc.strerror}", file=str(path),
                          hint=_HINT) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError("the handle key is not a regular file", file=str(path),
                              hint=_HINT)
        if info.st_mode & 0o077 or info.st_uid != os.geteuid():
            raise ConfigError(f"the handle key has mode {stat.S_IMODE(info.st_mode):04o} "
                              f"and owner {info.st_uid}: anyone who reads it can forge NFS "
                              "handles", file=str(path), hint=_HINT)
        text = os.read(fd, 4096).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ConfigError("the handle key is not 32 to 64 hex digits", file=str(path),
                          line=1, hint=_HINT)
    return key
