"""onesuite-fs benchmarks: `bench/run.py --help` says what each family measures."""

import sys
from pathlib import Path

# tools/ (scalesite, sitegen) and tests/ (the rsync oracle, NFS helpers) are plain
# directories, not packages: put them on the path once for every family.
_REPO = Path(__file__).resolve().parent.parent
for _extra in (_REPO / "tools", _REPO / "tests"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))
