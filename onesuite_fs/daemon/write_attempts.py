"""Writes the mount refused (EROFS), counted per node and path in bounded memory.

A node booting from a read-only root finds its missing writable paths by failing; the
daemon sees every one of those refusals. This keeps them: per node, per path, which
operations were tried, how often, first and last time. `onesuite status --writes` lists
them with the sysimage.conf line that would make each writable (inspect/writable_rules.py).

Memory is bounded whatever the nodes do (a node creating 100,000 distinct names must not
grow the daemon): at most MAX_NODES nodes and MAX_PATHS_PER_NODE distinct paths per node, and
MAX_PATHS in all; a path is kept to its first MAX_PATH_BYTES bytes. What is past a cap is
still counted, without its path: per node in `other` (attempts on paths not kept), and for
nodes not kept in `other_nodes`. Nothing is ever evicted: the first paths a node tried are
the ones kept (a boot's first failures are the informative ones).

Counters merge by summing (`merge`), so several serving processes can each keep their own
and one of them report the total; `to_json` / `from_json` carry them between processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_NODES = 4096  # nodes with their own paths
MAX_PATHS_PER_NODE = 256  # distinct paths kept per node
MAX_PATHS = 65_536  # distinct paths kept in all (a few MiB at most)
MAX_PATH_BYTES = 1024  # a longer path is kept as its first bytes and "..."
TRUNCATED = "..."
# The node of a write to a file of an image or override that no single node looked up:
# such a file is one inode for every node showing it (docs/architecture.md).
SHARED = "*"
# Operations, as `status --writes` names them.
OPERATIONS = ("create", "mkdir", "mknod", "symlink", "link", "unlink", "rmdir", "rename",
              "write", "truncate", "chmod", "chown", "utimes", "setxattr", "removexattr")


@dataclass
class PathCount:
    count: int
    first: float
    last: float
    operations: dict[str, int] = field(default_factory=dict)

    def add(self, operation: str, count: int, first: float, last: float) -> None:
        self.count += count
        self.first = min(self.first, first)
        self.last = max(self.last, last)
        self.operations[operation] = self.operations.get(operation, 0) + count


@dataclass
class NodeCounts:
    paths: dict[str, PathCount] = field(default_factory=dict)
    other: int = 0  # attempts on paths past the caps (not kept)


def _bounded(path: str) -> str:
    """`path` as kept: its first MAX_PATH_BYTES bytes (UTF-8, undecodable bytes as the
    surrogates os.fsdecode gives them) and "..." when it was longer."""
    raw = path.encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_PATH_BYTES:
        return path
    return raw[:MAX_PATH_BYTES].decode("utf-8", "ignore") + TRUNCATED


class WriteAttempts:
    """Refused writes per node and path; plain Python, called from the handler thread."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeCounts] = {}
        self.total = 0  # every refused write counted here, kept or not
        self.outside_nodes = 0  # refused writes to the mount root, groups/ or images/
        self.other_nodes = 0  # attempts by nodes past MAX_NODES
        self._kept = 0  # distinct paths kept, all nodes

    def record(self, node: str | None, path: str, operation: str, now: float,
               count: int = 1, first: float | None = None) -> None:
        """Count `count` refusals of `operation` on `path` ("etc/motd") by `node` (None:
        not inside a node's root)."""
        self.total += count
        if node is None:
            self.outside_nodes += count
            return
        counts = self.nodes.get(node)
        if counts is None:
            if len(self.nodes) >= MAX_NODES:
                self.other_nodes += count
                return
            counts = self.nodes[node] = NodeCounts()
        path = _bounded(path)
        kept = counts.paths.get(path)
        if kept is None:
            if len(counts.paths) >= MAX_PATHS_PER_NODE or self._kept >= MAX_PATHS:
                counts.other += count
                return
            kept = counts.paths[path] = PathCount(0, now if first is None else first, now)
            self._kept += 1
        kept.add(operation, count, now if first is None else first, now)

    def merge(self, other: WriteAttempts) -> None:
        """Add `other`'s counts to these (another serving process's), within the same caps."""
        self.outside_nodes += other.outside_nodes
        self.other_nodes += other.other_nodes
        self.total += other.outside_nodes + other.other_nodes
        for node, counts in other.nodes.items():
            for path, kept in counts.paths.items():
                for operation, count in kept.operations.items():
                    self.record(node, path, operation, kept.last, count, kept.first)
            if counts.other:
                if node in self.nodes:
                    self.nodes[node].other += counts.other
                else:
                    self.other_nodes += counts.other
                self.total += counts.other

    def to_json(self) -> dict[str, object]:
        return {
            "total": self.total, "outside_nodes": self.outside_nodes,
            "other_nodes": self.other_nodes,
            "limits": {"nodes": MAX_NODES, "paths_per_node": MAX_PATHS_PER_NODE,
                       "paths": MAX_PATHS, "path_bytes": MAX_PATH_BYTES},
            "nodes": {node: {"other": counts.other, "paths": {
                path: {"count": kept.count, "first": kept.first, "last": kept.last,
                       "operations": dict(kept.operations)}
                for path, kept in counts.paths.items()}}
                for node, counts in self.nodes.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> WriteAttempts:  # type: ignore[type-arg]
        """Counters `to_json` wrote (another process's); the caps apply again."""
        attempts = cls()
        attempts.merge_json(data)
        return attempts

    def merge_json(self, data: dict) -> None:  # type: ignore[type-arg]
        other = WriteAttempts()
        other.outside_nodes = int(data.get("outside_nodes", 0))
        other.other_nodes = int(data.get("other_nodes", 0))
        for node, counts in dict(data.get("nodes", {})).items():
            for path, kept in dict(counts.get("paths", {})).items():
                for operation, count in dict(kept.get("operations", {})).items():
                    other.record(str(node), str(path), str(operation), float(kept["last"]),
                                 int(count), float(kept["first"]))
            if counts.get("other"):
                other.nodes.setdefault(str(node), NodeCounts()).other += int(counts["other"])
                other.total += int(counts["other"])
        self.merge(other)


class LookupHints:
    """Which node looked up each layer file lately: a file of an image or override is one
    inode in every node's root, so a write refused on it names no node by itself. A file
    only one node looked up (of those seen since the table was last emptied) is that node's;
    one several nodes looked up is counted under SHARED. Bounded: emptied when full."""

    LIMIT = 65_536

    def __init__(self) -> None:
        self._nodes: dict[int, str] = {}

    def looked_up(self, ino: int, node: str) -> None:
        known = self._nodes.get(ino)
        if known is None:
            if len(self._nodes) >= self.LIMIT:
                self._nodes.clear()
            self._nodes[ino] = node
        elif known != node and known != SHARED:
            self._nodes[ino] = SHARED

    def node_of(self, ino: int) -> str:
        return self._nodes.get(ino, SHARED)
