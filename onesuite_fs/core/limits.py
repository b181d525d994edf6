"""How much work one configuration may ask for: bounds that no real site reaches, so that a
hostile or mistaken input is refused (file and line) instead of running out of memory or time.

Each bound and why it is where it is (docs/configuration.md, "Limits"):

* max_nodes: host names one cluster.xml or cluster.txt may define, counted as ranges and
  <dynamic_node> output are expanded (before anything is built). The largest machines have
  about 160,000 nodes (Fugaku); 1,000,000 leaves six times that, while
  ``node1-node99999999`` (10^8 names, gigabytes of strings) is refused before expanding.
* max_config_lines: lines one sysimage.conf may read, counting every INCLUDEd file as often
  as it is included. Real configs have hundreds of lines; an INCLUDE doubling chain (A
  includes B twice, B includes C twice, ...) reaches 2^25 lines with 25 small files.
* regexp_timeout: seconds one NODECLASS_REGEXP or PROPERTY -re match of one host name may
  take. A real host pattern matches in microseconds; a pattern that backtracks
  catastrophically is stopped and reported with its file, line and the host.

Not configurable because they follow from what can match at all: a host pattern with more
bracket ranges than a host name has characters (MAX_HOST_RANGES) can never match, and a
RAM*/LINK* path whose {a,b} alternatives expand to more than MAX_BRACE_PATHS paths, or that
has more than MAX_BRACE_GROUPS of them, is no path list anyone writes by hand. A regexp
whose counted repeats unroll to more than MAX_REGEXP_SIZE items (the regex engine compiles
``a{1000}`` as a thousand copies: ``((a{1000}){1000}){1000}`` took 24 GB and the OOM killer)
is no host pattern either; Perl itself refuses a count above 65534.
"""

from __future__ import annotations

from dataclasses import dataclass

# A DNS name has at most 253 characters and each bracket range takes at least one digit.
MAX_HOST_RANGES = 253
MAX_BRACE_PATHS = 4096
MAX_BRACE_GROUPS = 64
MAX_REGEXP_SIZE = 100_000  # ~30 MB and ~30 ms to compile


@dataclass(frozen=True)
class Limits:
    max_nodes: int = 1_000_000
    max_config_lines: int = 100_000
    regexp_timeout: float = 0.25

    def __post_init__(self) -> None:
        if self.max_nodes < 1 or self.max_config_lines < 1 or not self.regexp_timeout > 0:
            raise ValueError("limits must be positive")


DEFAULT_LIMITS = Limits()


class LimitExceeded(ValueError):
    """Pure code found an input past a limit; the caller adds the file and line."""

    def __init__(self, message: str, hint: str, *, counted: bool = False) -> None:
        super().__init__(message)
        self.hint = hint
        self.counted = counted  # past a count that a caller may share out (max_nodes)
