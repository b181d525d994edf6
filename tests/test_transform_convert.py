"""onesuite convert: the round trips, through real mounts.

to-onesis: for random SystemImager sites, the oneSIS image it writes, served by onesuite-fs as
the image of a site listing the same nodes, gives every node the root the SystemImager site
gave it, entry for entry (oracle.compare), except for the variant files the conversion adds,
/etc/sysimage.conf, and the root directory's own metadata where the conversion reports it
(oneSIS has no variant of /).
"""

from __future__ import annotations

import os
import re
from collections import Counter

import oracle
import pytest
import sitegen
from conftest import needs_root_fuse, run_onesuite
from transformtools import OURS, run, serving_site

pytestmark = [needs_root_fuse(), pytest.mark.mount]


def variant_paths(conf: str) -> list[tuple[str, str]]:
    """(directory, name) of every LINKBACK path in a generated sysimage.conf."""
    found = []
    for line in conf.splitlines():
        match = re.match(r"LINKBACK (\S+) ", line)
        if match:
            directory, _, name = match[1].rpartition("/")
            found.append((directory, name))
    return found


def allowed_extra(path: str, variants: list[tuple[str, str]], suffixes: set[str]) -> bool:
    """The conversion's own files: /etc/sysimage.conf, and name.<variant> or .name.<variant>
    next to a LINKBACK path (with everything below a directory variant)."""
    if path == "/etc/sysimage.conf":
        return True
    for directory, name in variants:
        for suffix in suffixes:
            for variant in (f"{name}.{suffix}", f".{name}.{suffix}"):
                top = f"{directory}/{variant}"
                if path == top or path.startswith(top + "/"):
                    return True
    return False


def limited_root_hosts(stderr: str) -> set[str]:
    match = re.search(r"limit: /: .* differ on (.*?); ", stderr)
    return set(match[1].split(", ")) if match else set()


def image_pass_excludes(path: str, entries: dict) -> bool:
    """Whether the image pass leaves `path` out: a directory named lost+found or below one,
    or anything below /proc."""
    parts = path.strip("/").split("/")
    if len(parts) > 1 and parts[0] == "proc":
        return True
    return any(part == "lost+found" and entries.get("/" + "/".join(parts[:n + 1])) is not None
               and entries["/" + "/".join(parts[:n + 1])].kind == "dir"
               for n, part in enumerate(parts))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_to_onesis_round_trip(seed, tmp_path, mount_site):
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    images = Counter(spec.image_of(h) for h in spec.nodes())
    image = images.most_common(1)[0][0]
    hosts = sorted(h for h in spec.nodes() if spec.image_of(h) == image)
    out = tmp_path / "onesis-image"
    done = run_onesuite("convert", "to-onesis", "--root", spec.prefix, "--image", image, out)
    conf = (out / "etc/sysimage.conf").read_text()
    assert all(f"NODECLASS_MAP {h} " in conf for h in hosts)
    variants = variant_paths(conf)
    suffixes = {"default", *hosts, *(line.split()[2] for line in conf.splitlines()
                                     if line.startswith("NODECLASS_MAP"))}
    odd_roots = limited_root_hosts(done.stderr)
    site = serving_site(tmp_path / "served", image, out, hosts)
    original = mount_site(spec.prefix, name="si")
    converted = mount_site(site, "--config", str(site / "onesuite.toml"), name="onesis")
    for host in hosts:
        want = oracle.snapshot(original.node(host), ignore_xattr_prefixes=OURS)
        got = oracle.snapshot(converted.node(host), ignore_xattr_prefixes=OURS)
        got = {p: e for p, e in got.items()
               if p in want or not allowed_extra(p, variants, suffixes)}
        if host in odd_roots:
            del want["/"], got["/"]
        # Served again as an image, the converted root goes through the image pass, which
        # leaves out lost+found directories and /proc/* (docs/semantics.md): so would a
        # reinstall from it.
        want = {p: e for p, e in want.items() if not image_pass_excludes(p, want)}
        differences = oracle.compare(want, got)
        assert not differences, f"seed {seed}, {host}:\n" + "\n".join(differences)
    assert len(odd_roots) < len(hosts)  # the base has the root of at least one node


# ----- bad input ------------------------------------------------------------------------------


def test_to_onesis_bad_input_fails_before_writing(tmp_path):
    spec = sitegen.generate_random_site(tmp_path / "site", 0)
    image = spec.image_of(spec.nodes()[0])
    unknown = run_onesuite("convert", "to-onesis", "--root", spec.prefix, "--image", "nosuch",
                           tmp_path / "out", check=False)
    assert unknown.returncode == 2 and "no image named 'nosuch'" in unknown.stderr
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep").write_text("keep me")
    refused = run_onesuite("convert", "to-onesis", "--root", spec.prefix, "--image", image,
                           taken, check=False)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert [p.name for p in taken.iterdir()] == ["keep"]
    small = tmp_path / "small"
    small.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", small)
    try:
        full = run_onesuite("convert", "to-onesis", "--root", spec.prefix, "--image", image,
                            small / "onesis", check=False)
        assert full.returncode == 2 and "not enough space for the oneSIS image" in full.stderr
        assert os.listdir(small) == []
    finally:
        run("umount", small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site", "small", "taken"]
