"""Random whiteout lists for generated sites (tools/sitegen.py): each override directory
gets a list of paths taken from every layer of the site (files, links, directories, paths
its own tree has again, a missing one), so the merge meets every whiteout case."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

from onesuite_fs.core.whiteouts import SUFFIX


def layer_paths(root: Path) -> list[str]:
    found = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            found.append("/" + os.path.relpath(os.path.join(directory, name), root))
    return found


def add_random_whiteouts(overrides_dir: Path, images: list[Path],
                         seed: int) -> dict[str, list[str]]:
    """Write NAME.whiteouts beside most override directories; returns what each lists."""
    rng = random.Random(seed)
    layers = sorted(p for p in overrides_dir.iterdir() if p.is_dir())
    every = sorted({p for root in [*images, *layers] for p in layer_paths(root)})
    written = {}
    for layer in layers:
        if rng.random() < 0.25 or not every:
            continue
        chosen = rng.sample(every, min(len(every), rng.randint(1, 6)))
        own = layer_paths(layer)
        if own and rng.random() < 0.5:  # a path the override itself has: laid again
            chosen.append(rng.choice(own))
        chosen.append("/no/such/path")
        (overrides_dir / f"{layer.name}{SUFFIX}").write_text(
            "# random whiteouts\n" + "".join(f"{p}\n" for p in chosen))
        written[layer.name] = chosen
    return written


def listed(overrides_dir: Path, name: str) -> list[str]:
    path = overrides_dir / f"{name}{SUFFIX}"
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def remove_below(dest: Path, path: str) -> None:
    """`rm -rf DEST/PATH`, but only when every directory on the way is a real directory in
    DEST: a list never reaches through a link (nor does the merge, which hides only names
    of merged directories)."""
    parts = path.strip("/").split("/")
    here = dest
    for part in parts[:-1]:
        here = here / part
        if os.path.islink(here) or not here.is_dir():
            return
    target = here / parts[-1]
    if not os.path.lexists(target):
        return
    # A removal is not a change the merge models for the directory (it keeps the times the
    # layers give it): put the parent's times back.
    times = os.lstat(here)
    if os.path.islink(target) or not target.is_dir():
        os.unlink(target)
    else:
        subprocess.run(["rm", "-rf", "--one-file-system", str(target)], check=True)
    os.utime(here, ns=(times.st_atime_ns, times.st_mtime_ns), follow_symlinks=False)
