"""SystemImager image servers at scale, for benchmarks: G groups, N nodes (10 to 10,000+),
a share of nodes with host overrides of a chosen density, and one golden image.

The image is either a real Debian root (`debootstrap --variant=minbase`, built and cached by
tools/golden_image.sh) or a synthetic tree whose kinds (files, directories, symlinks) and file
sizes follow a real distribution: the golden image's own histogram when it exists, a built-in
table of a Debian minbase otherwise. The site is written with sitegen's writers (cluster.xml,
rsync stubs, layers), plus ``PREFIX/etc/hosts`` giving every node an address, so the NFS
exports of `onesuite serve` cover every node.

Sites are deterministic in their parameters and cached: `cached_site` returns a finished tree
under CACHE/<key> and builds it only when missing (built beside it, renamed into place).
Images are hard-linked into each site from one cached copy, so a 10,000-node site costs the
overrides only.

CLI: python tools/scalesite.py PREFIX --nodes 1000 [--groups 10 --host-share 0.1 ...]
     python tools/scalesite.py --cached --nodes 10000      # prints the cached prefix
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sitegen import (  # noqa: E402  (tools/ is not a package)
    EPOCH,
    IMAGES_DIR,
    LAYER_SPAN,
    GroupSpec,
    PlannedEntry,
    SiteSpec,
    write_cluster_xml,
    write_layer,
    write_rsync_stubs,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("ONESUITE_BENCH_CACHE", "/var/tmp/onesuite-bench"))
IMAGE_NAME = "bench"
GLOBAL_OVERRIDE = "all"
BIG_FILE = "var/tmp/big100M.bin"  # in the first node's host override (the reads benchmark)
FORMAT_VERSION = 1  # bump when the layout changes: cached sites are keyed by it

# File sizes of a Debian 12 minbase (log2 buckets: bucket b holds sizes in [2^(b-1), 2^b),
# bucket 0 is the empty file), as a fraction of regular files. Used when no golden image
# is available to measure.
BUILTIN_SIZE_HISTOGRAM = {
    0: 0.02, 5: 0.02, 6: 0.04, 7: 0.06, 8: 0.08, 9: 0.10, 10: 0.12, 11: 0.12, 12: 0.11,
    13: 0.09, 14: 0.07, 15: 0.06, 16: 0.05, 17: 0.03, 18: 0.02, 19: 0.008, 20: 0.002,
}  # fmt: skip
# Share of each kind among entries (minbase: 78% files, 12% directories, 10% symlinks).
BUILTIN_KINDS = {"file": 0.78, "dir": 0.12, "symlink": 0.10}
SKELETON = (  # the shape every synthetic image starts with: what boot sets and overrides use
    "etc/default", "etc/network", "etc/ssh", "etc/systemd/system", "etc/profile.d",
    "usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "usr/lib/systemd/system",
    "usr/share/doc", "usr/share/man/man1", "usr/share/locale", "var/lib/dpkg/info",
    "var/log", "var/tmp", "tmp", "root", "home", "opt", "srv", "mnt",
)  # fmt: skip
TOP_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
WORDS = ("lib", "conf", "core", "net", "sys", "util", "data", "base", "ssl", "gnu", "xml",
         "fmt", "io", "tls", "dbus", "crypt", "zstd", "pam", "udev", "apt")  # fmt: skip


@dataclass(frozen=True)
class ScaleParams:
    """Everything that shapes a site; equal parameters give an identical tree."""

    nodes: int
    groups: int = 10
    host_share: float = 0.1  # share of nodes with a host override directory
    density: int = 8  # files per host override
    image: str = "debootstrap"  # or "systemd" (debootstrap + systemd-sysv), "synthetic"
    synthetic_entries: int = 8000
    big_file_mib: int = 100
    seed: int = 1
    max_dir_entries: int = 0  # synthetic: entries a directory may hold (0: no limit)

    def key(self, golden: Path | None) -> str:
        shape = asdict(self)
        if not self.max_dir_entries:
            del shape["max_dir_entries"]  # the sites cached before the limit keep their key
        text = json.dumps({**shape, "golden": str(golden), "v": FORMAT_VERSION},
                          sort_keys=True)
        return f"n{self.nodes}-{self.image}-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def hosts(count: int) -> list[str]:
    width = max(5, len(str(count)))
    return [f"node{i:0{width}d}" for i in range(1, count + 1)]


def address(index: int) -> str:
    """10.77.x.y for the index-th node (0-based): up to 64,000 nodes, never a real network."""
    return f"10.{77 + index // 64000}.{index // 250 % 256}.{index % 250 + 1}"


def golden_image(build: bool = True, image: str = "debootstrap") -> Path | None:
    """The cached debootstrap image (tools/golden_image.sh; image "systemd": the same plus
    systemd-sysv, tools/systemd_image.sh), built if `build`, else None."""
    script = REPO / ("tools/systemd_image.sh" if image == "systemd" else "tools/golden_image.sh")
    if not build:
        cache = Path(os.environ.get("ONESUITE_CACHE", "/var/cache/onesuite-fs")) / "golden"
        found = sorted(cache.glob("*-minbase-*")) if cache.is_dir() else []
        found = [p for p in found if ".building." not in p.name]
        return found[-1] if found else None
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"golden_image.sh failed:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Synthetic image


def size_histogram(image: Path | None) -> dict[int, float]:
    """log2 bucket -> share of regular files, measured on `image` (or the built-in table)."""
    if image is None or not image.is_dir():
        return dict(BUILTIN_SIZE_HISTOGRAM)
    counts: Counter[int] = Counter()
    for directory, _dirs, files in os.walk(image):
        for name in files:
            st = os.lstat(os.path.join(directory, name))
            if os.path.isfile(os.path.join(directory, name)) and not os.path.islink(
                    os.path.join(directory, name)):
                counts[st.st_size.bit_length()] += 1
    total = sum(counts.values()) or 1
    return {bucket: n / total for bucket, n in sorted(counts.items())}


def _draw_size(rng: random.Random, histogram: dict[int, float]) -> int:
    bucket = rng.choices(list(histogram), weights=list(histogram.values()))[0]
    if bucket == 0:
        return 0
    low, high = 1 << (bucket - 1), (1 << bucket) - 1
    return int(math.exp(rng.uniform(math.log(low), math.log(high + 1)))) if high > low else low


def plan_synthetic_image(entries: int, histogram: dict[int, float], seed: int,
                         max_dir_entries: int = 0) -> dict[str, PlannedEntry]:
    """A distro-shaped tree of about `entries` entries: a fixed skeleton, then directories,
    files and symlinks placed with a preference for directories that already hold a lot
    (real trees are skewed: usr/share/doc, usr/lib/x86_64-linux-gnu). Without a limit the
    largest directories grow in proportion to the tree; `max_dir_entries` stops a directory
    there, so a larger tree has more directories, not larger ones (as a larger install has
    more packages)."""
    rng = random.Random(seed)
    mtime = EPOCH * 10**9
    plan: dict[str, PlannedEntry] = {"": PlannedEntry("dir", 0o755, 0, 0, mtime)}
    for rel in SKELETON:
        parts = rel.split("/")
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            mode = 0o1777 if path in ("tmp", "var/tmp") else 0o700 if path == "root" else 0o755
            plan.setdefault(path, PlannedEntry("dir", mode, 0, 0, mtime))
    for name, target in TOP_LINKS.items():
        plan[name] = PlannedEntry("symlink", 0o777, 0, 0, mtime, target=target)
    dirs = [rel for rel, e in plan.items() if e.kind == "dir"]
    weights = [1.0] * len(dirs)
    held = [0] * len(dirs)  # entries placed in each (the skeleton's own not counted)
    files: list[str] = []
    kinds, shares = list(BUILTIN_KINDS), list(BUILTIN_KINDS.values())
    counter = 0
    while len(plan) < entries:
        counter += 1
        index = rng.choices(range(len(dirs)), weights=weights)[0]
        parent = dirs[index]
        weights[index] += 1.0
        held[index] += 1
        if held[index] == max_dir_entries:
            weights[index] = 0.0  # full: never chosen again
        kind = rng.choices(kinds, weights=shares)[0]
        stem = f"{rng.choice(WORDS)}{counter}"
        rel = f"{parent}/{stem}" if parent else stem
        if kind == "dir":
            plan[rel] = PlannedEntry("dir", 0o755, 0, 0, mtime)
            dirs.append(rel)
            weights.append(1.0)
            held.append(0)
        elif kind == "symlink" and files:
            plan[rel] = PlannedEntry("symlink", 0o777, 0, 0, mtime,
                                     target="/" + rng.choice(files))
        else:
            name = f"{rel}.so.{counter % 7}" if parent.startswith("usr/lib/") else rel
            size = _draw_size(rng, histogram)
            plan[name] = PlannedEntry("file", rng.choice((0o644, 0o644, 0o755)), 0, 0, mtime,
                                      data=rng.randbytes(size))
            files.append(name)
    return plan


# --------------------------------------------------------------------------------------------
# Overrides


def _file(rng: random.Random, layer: int, text: str, size: int = 0) -> PlannedEntry:
    mtime = (EPOCH + layer * LAYER_SPAN) * 10**9 + rng.randrange(LAYER_SPAN * 10**9)
    return PlannedEntry("file", 0o644, 0, 0, mtime, data=text.encode() + rng.randbytes(size))


def _dir(layer: int) -> PlannedEntry:
    return PlannedEntry("dir", 0o755, 0, 0, (EPOCH + layer * LAYER_SPAN) * 10**9)


def plan_override(rng: random.Random, layer: int, files: dict[str, str]) -> dict[str, PlannedEntry]:
    """An override tree holding `files` (relative path -> text), parents included."""
    plan: dict[str, PlannedEntry] = {"": _dir(layer)}
    for rel, text in files.items():
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            plan.setdefault("/".join(parts[:depth]), _dir(layer))
        plan[rel] = _file(rng, layer, text, rng.choice((0, 64, 300, 1500)))
    return plan


def host_files(rng: random.Random, host: str, density: int,
               image_etc: list[str]) -> dict[str, str]:
    """A node's own files: identity first, then replacements of image files under etc/."""
    files = {"etc/hostname": f"{host}\n",
             "etc/network/interfaces.d/eth0": f"# {host}\n",
             "etc/ssh/ssh_host_ed25519_key": f"key of {host}\n"}
    pool = [p for p in image_etc if p not in files]
    for rel in rng.sample(pool, min(len(pool), max(0, density - len(files)))):
        files[rel] = f"{host} copy of /{rel}\n"
    extra = 0
    while len(files) < density:  # more than the image has under etc/: node-private files
        files[f"etc/onesuite-bench/{host}-{extra}.conf"] = f"{host} {extra}\n"
        extra += 1
    return dict(list(files.items())[:max(density, 1)])


# --------------------------------------------------------------------------------------------
# The site


def plan_topology(params: ScaleParams, prefix: Path) -> SiteSpec:
    """G groups of contiguous node ranges, each with its own override, all on one image."""
    names = hosts(params.nodes)
    per_group = math.ceil(len(names) / params.groups)
    groups = [GroupSpec(f"group{g:02d}", None, IMAGE_NAME, [f"group{g:02d}"],
                      names[g * per_group:(g + 1) * per_group])
              for g in range(params.groups) if names[g * per_group:(g + 1) * per_group]]
    images = {IMAGE_NAME: prefix / IMAGES_DIR / IMAGE_NAME}
    return SiteSpec("master1", "cluster", [GLOBAL_OVERRIDE], groups, images, prefix)


def host_override_nodes(params: ScaleParams) -> list[str]:
    """Nodes with a host override: evenly spread, always the first (it holds BIG_FILE)."""
    names = hosts(params.nodes)
    count = max(1, round(params.nodes * params.host_share))
    step = params.nodes / count
    return sorted({names[int(i * step)] for i in range(count)})


def _image_source(params: ScaleParams, cache: Path, golden: Path | None) -> Path:
    if params.image in ("debootstrap", "systemd"):
        if golden is None:
            raise RuntimeError("no golden image: run tools/golden_image.sh or use --image "
                               "synthetic")
        return golden
    limit = f" max{params.max_dir_entries}" if params.max_dir_entries else ""
    key = hashlib.sha256(f"{params.synthetic_entries} {params.seed} {golden} "
                         f"{FORMAT_VERSION}{limit}".encode()).hexdigest()[:10]
    target = cache / "images" / f"synthetic-{key}"
    if not target.is_dir():
        plan = plan_synthetic_image(params.synthetic_entries, size_histogram(golden),
                                    params.seed, params.max_dir_entries)
        building = target.with_name(f"{target.name}.building.{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        write_layer(building, plan)
        building.rename(target)
    return target


def generate_scale_site(prefix: Path, params: ScaleParams, *, cache: Path = DEFAULT_CACHE,
                        golden: Path | None = None) -> SiteSpec:
    """Write the site under `prefix` (absent or empty) and return its description."""
    prefix = Path(prefix)
    if prefix.exists() and any(prefix.iterdir()):
        raise ValueError(f"{prefix} is not empty")
    rng = random.Random(params.seed)
    spec = plan_topology(params, prefix)
    write_cluster_xml(spec)
    write_rsync_stubs(spec)
    image = spec.images[IMAGE_NAME]
    image.parent.mkdir(parents=True, exist_ok=True)
    # Hard links: the image is never written, and 10,000-node sites then cost no image copy.
    subprocess.run(["cp", "-al", str(_image_source(params, cache, golden)), str(image)],
                   check=True)
    image_etc = sorted(str(p.relative_to(image)) for p in (image / "etc").rglob("*")
                       if p.is_file() and not p.is_symlink())
    layer = 1
    global_files = {rel: f"site-wide /{rel}\n" for rel in
                    ("etc/motd", "etc/resolv.conf", "etc/issue", "etc/profile.d/site.sh")}
    write_layer(spec.override_dir(GLOBAL_OVERRIDE), plan_override(rng, layer, global_files))
    for group in spec.groups:
        layer += 1
        files = {"etc/fstab": f"# {group.name}\n", f"opt/{group.name}/app.conf": "x\n",
                 "etc/profile.d/group.sh": f"GROUP={group.name}\n"}
        write_layer(spec.override_dir(group.name), plan_override(rng, layer, files))
    for host in host_override_nodes(params):
        layer += 1
        plan = plan_override(rng, layer, host_files(rng, host, params.density, image_etc))
        write_layer(spec.override_dir(host), plan)
    first = spec.override_dir(hosts(params.nodes)[0]) / BIG_FILE
    first.parent.mkdir(parents=True, exist_ok=True)
    with open(first, "wb") as out:  # random bytes: nothing on the way can compress them
        for _ in range(params.big_file_mib):
            out.write(os.urandom(1 << 20))
    hosts_file = prefix / "etc/hosts"
    hosts_file.write_text("".join(f"{address(i)}\t{h}\n" for i, h in
                                  enumerate(hosts(params.nodes))))
    return spec


def cached_site(params: ScaleParams, cache: Path = DEFAULT_CACHE) -> tuple[Path, SiteSpec]:
    """(prefix, spec) of the site for `params`, generated only the first time."""
    golden = golden_image(build=params.image in ("debootstrap", "systemd"), image=params.image)
    prefix = cache / "sites" / params.key(golden)
    if not (prefix / ".complete").exists():
        building = prefix.with_name(f"{prefix.name}.building.{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        generate_scale_site(building, params, cache=cache, golden=golden)
        (building / ".complete").write_text(json.dumps(asdict(params)))
        shutil.rmtree(prefix, ignore_errors=True)
        building.rename(prefix)
    spec = plan_topology(params, prefix)  # the same plan, now pointing at the final prefix
    return prefix, spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("prefix", type=Path, nargs="?", metavar="PREFIX",
                        help="write the site here (absent or empty)")
    parser.add_argument("--cached", action="store_true",
                        help="use (or build) the cached site and print its prefix")
    parser.add_argument("--nodes", type=int, required=True, help="number of nodes")
    parser.add_argument("--groups", type=int, default=10, help="groups (default 10)")
    parser.add_argument("--host-share", type=float, default=0.1,
                        help="share of nodes with a host override (default 0.1)")
    parser.add_argument("--density", type=int, default=8,
                        help="files per host override (default 8)")
    parser.add_argument("--image", choices=("debootstrap", "systemd", "synthetic"),
                        default="debootstrap",
                        help="the golden image: real minbase (cached), the same with "
                             "systemd-sysv (it boots), or synthetic")
    parser.add_argument("--synthetic-entries", type=int, default=8000,
                        help="entries of a synthetic image (default 8000)")
    parser.add_argument("--max-dir-entries", type=int, default=0, metavar="N",
                        help="a synthetic directory holds at most N entries; a larger image "
                             "gets more directories instead (default 0: no limit, the "
                             "largest grow with the image)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    params = ScaleParams(args.nodes, args.groups, args.host_share, args.density, args.image,
                         args.synthetic_entries, seed=args.seed,
                         max_dir_entries=args.max_dir_entries)
    if args.cached:
        prefix, _ = cached_site(params)
    elif args.prefix is None:
        parser.error("PREFIX or --cached is needed")
    else:
        golden = golden_image(build=params.image in ("debootstrap", "systemd"),
                              image=params.image)
        generate_scale_site(args.prefix, params, golden=golden)
        prefix = args.prefix
    print(prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
