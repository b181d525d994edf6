"""The progress bar of export and convert: drawn on stderr when it is a terminal (entries and
bytes, with totals), never when stderr is a file or a pipe (scripts, logs)."""

from __future__ import annotations

import os
import re
import subprocess

import sitegen
from conftest import ONESUITE, run_onesuite
from sitetools import onesis_site

# Each redraw starts with a carriage return (text-mode pipes turn it into a new line).
BAR = re.compile(r"(?:^|[\r\n])(?P<label>[^:\r\n]+): \[[#.]{24}\] +(?P<share>\d+)% "
                 r"(?P<entries>[\d,]+)/(?P<total>[\d,]+) entries, (?P<bytes>[\d.]+ \w+)")


def on_a_terminal(*args: object) -> tuple[int, str]:
    """Run onesuite with stderr on a pseudo-terminal: (exit status, what it drew there)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([*ONESUITE, *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)


def test_export_draws_entries_and_bytes_on_a_terminal(tmp_path):
    site = onesis_site(tmp_path / "site")
    status, drawn = on_a_terminal("export", "--root", site, "n1", "--format", "tar",
                                  tmp_path / "n1.tar")
    assert status == 0, drawn
    bars = list(BAR.finditer(drawn))
    assert bars, drawn
    last = bars[-1]
    assert last["label"] == "n1 -> n1.tar" and last["share"] == "100"
    assert last["entries"] == last["total"] and int(last["total"].replace(",", "")) > 30


def test_convert_draws_progress_on_a_terminal(tmp_path):
    spec = sitegen.generate_random_site(tmp_path / "site", 0)
    image = spec.image_of(spec.nodes()[0])
    hosts = [h for h in spec.nodes() if spec.image_of(h) == image]
    out = tmp_path / "onesis"
    status, drawn = on_a_terminal("convert", "to-onesis", "--root", spec.prefix, "--image",
                                  image, out)
    assert status == 0, drawn
    assert any(bar["label"] == f"to-onesis {image}" for bar in BAR.finditer(drawn)), drawn
    (tmp_path / "nodes").write_text("\n".join(hosts) + "\n")
    status, drawn = on_a_terminal("convert", "to-systemimager", out, "--nodes",
                                  tmp_path / "nodes", tmp_path / "si")
    assert status == 0, drawn
    assert any(bar["label"] == "to-systemimager" for bar in BAR.finditer(drawn)), drawn


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path):
    site = onesis_site(tmp_path / "site")
    done = run_onesuite("export", "--root", site, "n1", "--format", "cpio", tmp_path / "n1.cpio")
    assert "entries," not in done.stderr and "\r" not in done.stderr
    forced = run_onesuite("export", "--root", site, "n1", "--format", "cpio", "--progress",
                          "--force", tmp_path / "n1.cpio")
    assert BAR.search(forced.stderr), forced.stderr
