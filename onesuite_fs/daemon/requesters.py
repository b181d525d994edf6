"""Who sent a FUSE request: an NFS server thread serving clients, or anyone else.

Every node's root is in one FUSE filesystem, and an NFS server accepts any handle of that
filesystem under a client's own export (docs/nfs.md, "Isolation"). So the daemon refuses an
NFS server's client-serving threads everything above the node roots. The kernel puts the
requesting *thread* id into every request; /proc tells whose it is:

- a thread of a user-space NFS server (its executable named in `executables`, ganesha.nfsd by
  default) other than its main thread: ganesha reads its configuration and resolves export
  paths in the main thread, and serves clients only in worker threads;
- a kernel thread named like the kernel server's (``nfsd``): knfsd resolves export paths in
  rpc.mountd, a user process, and serves clients only in these threads.

Only requests for something outside the node roots are checked, so the cost is paid on
namespace directories, never on a node's own files. Reading /proc costs about 50 us; answers
are kept per thread, keyed by the inode number of its /proc directory, which procfs gives
each task anew (a thread id the kernel hands out again never finds the old answer), so a
thread asking again costs one stat (about 2 us).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PF_KTHREAD = 0x00200000  # include/linux/sched.h
DEFAULT_NFS_SERVERS = ("ganesha.nfsd",)
DEFAULT_KERNEL_THREADS = ("nfsd",)
REMEMBERED_THREADS = 4096


class NfsServerThreads:
    def __init__(self, executables: Iterable[str] = DEFAULT_NFS_SERVERS,
                 kernel_threads: Iterable[str] = DEFAULT_KERNEL_THREADS,
                 proc: Path = Path("/proc")) -> None:
        self.executables = frozenset(executables)
        self.kernel_threads = tuple(kernel_threads)
        self.proc = proc
        self._known: dict[tuple[int, int], bool] = {}

    def serves_clients(self, tid: int) -> bool:
        """Whether thread `tid` is an NFS server thread serving clients. A thread /proc
        no longer shows (it exited after sending) is not one: it is waiting for no answer."""
        if tid <= 0:
            return False  # a request the kernel sent on nobody's behalf
        try:
            instance = (tid, os.stat(self.proc / str(tid)).st_ino)
        except (FileNotFoundError, ProcessLookupError):
            return False
        known = self._known.get(instance)
        if known is None:
            if len(self._known) >= REMEMBERED_THREADS:
                self._known.clear()
            known = self._known[instance] = self._ask_proc(tid)
        return known

    def _ask_proc(self, tid: int) -> bool:
        try:
            stat_line = (self.proc / str(tid) / "stat").read_bytes()
            tgid = _status_field(self.proc / str(tid) / "status", b"Tgid:")
        except (FileNotFoundError, ProcessLookupError):
            return False
        # stat: "pid (comm) state ppid ...", comm may hold spaces and parentheses
        comm, _, rest = stat_line.partition(b" (")[2].rpartition(b") ")
        flags = int(rest.split()[6])
        if flags & PF_KTHREAD:
            name = comm.decode(errors="replace")
            return any(name.startswith(k) for k in self.kernel_threads)
        if tgid == tid:
            return False  # a main thread: configuration and export set-up
        try:
            exe = os.readlink(self.proc / str(tgid) / "exe")
        except OSError:
            return False
        return os.path.basename(exe.removesuffix(" (deleted)")) in self.executables


def _status_field(path: Path, field: bytes) -> int:
    for line in path.read_bytes().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise FileNotFoundError(path)
