"""Writing an output so that an interrupted run never leaves something that looks finished:
everything goes to a hidden temporary name next to the target and is renamed into place only
when complete. Existing outputs and free space are checked before anything is written."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path

from ..core.errors import ConfigError
from ..progress import human


def check_target(path: Path, *, force: bool, directory: bool) -> None:
    """Refuse an existing output (a non-empty directory, or any file) unless `force`."""
    if not path.parent.is_dir():
        raise ConfigError(f"{path.parent} does not exist", hint="create the directory first")
    if not os.path.lexists(path):
        return
    if directory and path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return  # an empty directory is as good as none
    if not force:
        what = "directory is not empty" if path.is_dir() else "file exists"
        raise ConfigError(f"{path}: {what}", hint="choose another name or pass --force to "
                                                  "replace it once the new one is complete")
    if path.is_dir() != directory and not path.is_symlink():
        kind = "a directory" if path.is_dir() else "not a directory"
        raise ConfigError(f"{path} is {kind}; --force replaces only an output of the same kind")


def check_space(path: Path, needed: int, what: str) -> None:
    """Fail before writing when the file system holding `path` has less than `needed` bytes
    available (to unprivileged users, as statvfs reports them)."""
    fs = os.statvfs(path.parent)
    available = fs.f_bavail * fs.f_frsize
    if needed > available:
        raise ConfigError(f"not enough space for {what} in {path.parent}: needs about "
                          f"{human(needed)}, {human(available)} available",
                          hint="free some space or write elsewhere")


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.onesuite-partial.{os.getpid()}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


def _remove_with_helpers(temp: Path) -> None:
    """The partial output and what writers staged beside it under its name (`TEMP.work`,
    `TEMP.stage`): a failure or signal at any point leaves none of them."""
    _remove(temp)
    for helper in temp.parent.glob(f"{glob_escape(temp.name)}.*"):
        _remove(helper)


# A file output holds a whole node root (its host keys, shadow, keytabs): readable by its
# owner only, from the moment it exists, whatever the writing tool or the umask would give.
FILE_OUTPUT_MODE = 0o600


@contextmanager
def atomic_output(path: Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it to `path` when the block completes,
    remove it when the block fails or is interrupted. A replaced output (--force) is removed
    only after the new one is in place. A file output is made (empty) before the block runs,
    mode 0600, and is 0600 when renamed into place."""
    temp = temporary_name(path)
    _remove(temp)
    if directory:
        temp.mkdir()
    else:
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         FILE_OUTPUT_MODE))
    try:
        yield temp
        if not directory:
            os.chmod(temp, FILE_OUTPUT_MODE)  # a tool may have made the file anew
    except BaseException as exc:
        _remove_with_helpers(temp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ConfigError(f"ran out of space writing {path}: {exc.strerror}; nothing was "
                              "kept", hint="free some space or write elsewhere") from None
        raise
    old = None
    if os.path.lexists(path):
        if directory and path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        else:
            old = path.with_name(f".{path.name}.onesuite-old.{os.getpid()}")
            os.rename(path, old)
    os.rename(temp, path)
    if old is not None:
        _remove(old)
