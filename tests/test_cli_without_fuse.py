"""The commands that only read a site run where pyfuse3 and trio cannot be imported (an admin
workstation without libfuse): nodes, preview, explain, diff, export and convert."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# None in sys.modules makes `import pyfuse3` raise ImportError, as on a machine without it.
BLOCKED = ("import sys; sys.modules['pyfuse3'] = None; sys.modules['trio'] = None; "
           "from onesuite_fs.cli import main; sys.exit(main(sys.argv[1:]))")


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKED, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_blocking_works():
    done = subprocess.run([sys.executable, "-c", BLOCKED.replace(
        "from onesuite_fs.cli import main; sys.exit(main(sys.argv[1:]))", "import pyfuse3")],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "import of pyfuse3 halted" in done.stderr


def test_reading_commands_need_no_pyfuse3(example_site, tmp_path):
    root = ("--root", example_site)
    for args in (("nodes", *root, "--json"),
                 ("preview", *root, "node001", "/etc"),
                 ("explain", *root, "node001", "/etc/hostname"),
                 ("diff", *root, "node:node001", "node:node002"),
                 ("export", *root, "node001", "--format", "tar", tmp_path / "node001.tar"),
                 ("convert", "to-onesis", *root, "--image", "rocky9", tmp_path / "onesis")):
        done = run(*args)
        assert done.returncode in (0, 1), (args, done.stderr)  # diff: 1 = they differ
        assert "Traceback" not in done.stderr and "pyfuse3" not in done.stderr, (args,
                                                                               done.stderr)
    assert (tmp_path / "node001.tar").stat().st_size > 0
