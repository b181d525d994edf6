"""Hostile and mistaken inputs through the real CLI (issue 14, sections 3 and 4).

Each case writes one bad input into a small site, as an attacker or a careless admin would,
and runs `onesuite nodes` (and `onesuite mount` for the ones that used to pass a mount and
fail later). Every case must end in bounded time (the subprocess timeout is the failure, not
a speed assertion), exit non-zero, name the file and line, print no Python traceback, and a
refused mount must leave nothing mounted and nothing written.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ONESUITE, needs_root_fuse
from sitetools import make_site

# Generous: every case takes well under a second when bounded; a hang is caught, not waited
# out (the regexp and range cases ran for minutes, or for ever, before).
TIMEOUT = 60

CLUSTER_XML = """\
<xml>
  <master>master1</master>
  <name>all</name>
  <override>all</override>
  <group>
    <name>compute</name>
{priority}    <image>img</image>
    <override>compute</override>
    <node>{nodes}</node>
  </group>
</xml>
"""
NODES_LINE = 9  # the <node> line above, for the expected locations


def cluster_xml(*, nodes: str = "n1-n3", priority: str | None = None, head: str = "") -> str:
    prio = "" if priority is None else f"    <priority>{priority}</priority>\n"
    return head + CLUSTER_XML.format(nodes=nodes, priority=prio)


def base_site(root: Path, xml: str | None = None, conf: str = "") -> Path:
    make_site(root, cluster_xml() if xml is None else xml, images=("img",),
              overrides=("all", "compute"))
    image = root / "var/lib/systemimager/images/img"
    (image / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nchrony:x:996:996::/:/bin/false\n")
    (image / "etc/group").write_text("root:x:0:\nchrony:x:996:\n")
    (image / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (image / "etc/sysimage.conf").write_text(conf)
    return root


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]  # writes the site under the given root; returns the root
    where: Callable[[Path], str]  # a regexp of the "file:line" the message must contain
    options: tuple[str, ...] = ()


def xml_case(name: str, xml: str, line: int) -> Case:
    return Case(name, lambda root: base_site(root, xml),
                at(f"etc/systemimager/cluster.xml:{line}"))


def at(relative: str) -> Callable[[Path], str]:
    """The location regexp of `relative` (file:line under the site root), exactly."""
    return lambda root: re.escape(f"{root}/{relative}") + r"(?![0-9])"


def conf_case(name: str, conf: str, line: int, options: tuple[str, ...] = (),
              hosts: str = "n1-n3") -> Case:
    return Case(name, lambda root: base_site(root, cluster_xml(nodes=hosts), conf),
                at(f"var/lib/systemimager/images/img/etc/sysimage.conf:{line}"), options)


def cluster_txt_case(name: str, text: str, line: int) -> Case:
    def build(root: Path) -> Path:
        base_site(root)
        (root / "etc/systemimager/cluster.xml").unlink()
        scripts = root / "var/lib/systemimager/scripts"
        scripts.mkdir(parents=True, exist_ok=True)
        (scripts / "cluster.txt").write_text(text)
        return root
    return Case(name, build, at(f"var/lib/systemimager/scripts/cluster.txt:{line}"))


def include_chain(root: Path, depth: int) -> Path:
    """A includes B twice, B includes C twice, ...: 2^depth lines from `depth` tiny files."""
    base_site(root, conf="INCLUDE /etc/inc0\nINCLUDE /etc/inc0\n")
    etc = root / "var/lib/systemimager/images/img/etc"
    for level in range(depth):
        (etc / f"inc{level}").write_text(f"INCLUDE /etc/inc{level + 1}\n" * 2)
    (etc / f"inc{depth}").write_text("NODECLASS_MAP n1 compute\n")
    return root


def include_where(root: Path) -> str:
    return re.escape(f"{root}/var/lib/systemimager/images/img/etc/inc") + r"\d+:\d+"


def stub_without_dir(root: Path) -> Path:
    base_site(root)
    stub = root / "etc/systemimager/rsync_stubs/40img"
    stub.write_text("# stub\n[img]\n\tpath=/var/lib/systemimager/images/gone\n\n")
    return root


def stub_path_past_path_max(root: Path) -> Path:
    """A stub whose path= is a megabyte long: the stat failed (ENAMETOOLONG) with no file or
    line, and the message quoted the whole megabyte."""
    base_site(root)
    stub = root / "etc/systemimager/rsync_stubs/40img"
    stub.write_text("# stub\n[img]\n\tpath=/var/lib/systemimager/images/img"
                    + "/x" * 500_000 + "\n\n")
    return root


def group_without_image(root: Path) -> Path:
    return base_site(root, cluster_xml().replace("    <image>img</image>\n", ""))


HANG = "(a|a)+b"  # backtracks catastrophically in every engine without a timeout
LONG_A = "a" * 40 + "x"

CASES = [
    # section 3: found at load, with file:line
    xml_case("xml-unknown-encoding",
             cluster_xml(head='<?xml version="1.0" encoding="x-no-such-codec"?>\n'), 1),
    xml_case("priority-5000-digits", cluster_xml(priority="9" * 5000), 7),
    xml_case("host-range-100-million", cluster_xml(nodes="node1-node99999999"), NODES_LINE),
    xml_case("ip-range-16-million", cluster_xml(nodes="10.0.0.1-10.255.255.255"), NODES_LINE),
    xml_case("host-range-5000-digit-number",
             cluster_xml(nodes=f"n1-n{'9' * 5000}"), NODES_LINE),
    cluster_txt_case("cluster-txt-host-with-space",
                     "# global_override=::\nn1:compute:img:\nnode 2:compute:img:\n", 3),
    conf_case("owner-no-such-user", "RAMFILE /etc/hosts -d -u nosuchuser\n", 1,
              ("--link-policy", "persistent")),
    conf_case("owner-uid-2-to-the-32", "RAMFILE /etc/hosts -d -u 4294967296\n", 1),
    conf_case("owner-no-such-group", "RAMFILE /etc/hosts -g nosuchgroup\n", 1,
              ("--link-policy", "persistent")),
    conf_case("owner-gid-huge", "RAMDIR /var/lib/x -g 99999999999999999999\n", 1),
    # section 4: bounded work
    conf_case("regexp-catastrophic", f"NODECLASS_REGEXP {HANG} compute\n", 1, hosts=LONG_A),
    conf_case("property-regexp-catastrophic", f"PROPERTY p -re {HANG}\n", 1, hosts=LONG_A),
    conf_case("range-1100-ranges", "NODECLASS_RANGE " + "n[1-2]" * 1100 + " c\n", 1),
    conf_case("range-5000-digit-bound", f"NODECLASS_RANGE n[0-{'9' * 5000}] c\n", 1),
    conf_case("regexp-not-perl-fuzzy", "NODECLASS_REGEXP n{e<=1} c\n", 1),
    conf_case("regexp-not-perl-backref", "NODECLASS_REGEXP (n)\\g1 c\n", 1),
    conf_case("regexp-not-perl-flags", "NODECLASS_REGEXP (?w)n c\n", 1),
    conf_case("brace-explosion", "RAMDIR /" + "{a,b}" * 40 + "\n", 1),
    conf_case("brace-groups-1100", "RAMDIR /x" + "{a}" * 1100 + "\n", 1),
    conf_case("config-too-long", "# x\n" * 100_001, 100_001),
    Case("include-doubling-chain", lambda root: include_chain(root, 24), include_where),
    # errors that had no line number
    Case("group-without-image", group_without_image, at("etc/systemimager/cluster.xml:5")),
    xml_case("image-nobody-has", cluster_xml().replace("<image>img<", "<image>gone<"), 5),
    Case("stub-path-missing-dir", stub_without_dir, at("etc/systemimager/rsync_stubs/40img:3")),
    Case("stub-path-past-path-max", stub_path_past_path_max,
         at("etc/systemimager/rsync_stubs/40img:3")),
]

MOUNT_CASES = {"owner-no-such-user", "owner-uid-2-to-the-32", "owner-no-such-group",
               "cluster-txt-host-with-space", "regexp-catastrophic", "xml-unknown-encoding",
               "host-range-100-million", "priority-5000-digits"}


def run(*args: object) -> subprocess.CompletedProcess[str]:
    # A hang fails the test through TimeoutExpired; subprocess.run kills the child first.
    return subprocess.run([*ONESUITE, *map(str, args)], capture_output=True, text=True,
                          timeout=TIMEOUT, check=False, stdin=subprocess.DEVNULL)


def assert_refused(done: subprocess.CompletedProcess[str], where: str) -> None:
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert re.search(where, done.stderr), f"expected {where!r} in:\n{done.stderr[:3000]}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_nodes_refuses_hostile_input(tmp_path: Path, case: Case) -> None:
    root = case.build(tmp_path / "site")
    done = run("nodes", "--root", root, *case.options)
    assert_refused(done, case.where(root))


@needs_root_fuse()
@pytest.mark.mount
@pytest.mark.parametrize("case", [c for c in CASES if c.name in MOUNT_CASES],
                         ids=[c.name for c in CASES if c.name in MOUNT_CASES])
def test_mount_refuses_hostile_input(tmp_path: Path, case: Case) -> None:
    root = case.build(tmp_path / "site")
    mountpoint, state = tmp_path / "mnt", tmp_path / "state"
    mountpoint.mkdir()
    try:
        done = run("mount", "--root", root, "--persistent-dir", state,
                   "--log", tmp_path / "daemon.log", *case.options, mountpoint)
    finally:
        if os.path.ismount(mountpoint):  # the bug: mounted, to fail on first access
            run("umount", mountpoint)
            pytest.fail(f"{case.name}: mounted instead of refusing")
    assert_refused(done, case.where(root))
    assert not state.exists() or not any(state.iterdir()), "a refused mount wrote state"


RELOAD_EDITS = [
    ("sysimage", "RAMFILE /etc/hosts -d -u nosuchuser\n",
     "var/lib/systemimager/images/img/etc/sysimage.conf:1"),
    ("sysimage", "RAMFILE /etc/hosts -d -u 4294967296\n",
     "var/lib/systemimager/images/img/etc/sysimage.conf:1"),
    ("sysimage", f"NODECLASS_REGEXP {HANG} c\n",
     "var/lib/systemimager/images/img/etc/sysimage.conf:1"),
    ("xml", cluster_xml(nodes="node1-node99999999"), f"etc/systemimager/cluster.xml:{NODES_LINE}"),
]


@needs_root_fuse()
@pytest.mark.mount
def test_reload_refuses_bad_edits_and_keeps_serving(tmp_path: Path, mount_site) -> None:
    """Section 3: errors a first access used to find (and die of) are found by the reload,
    which exits 1 with file:line while the old generation keeps serving."""
    root = base_site(tmp_path / "site", cluster_xml(nodes=f"n1-n3,{LONG_A}"),
                     "RAMFILE /etc/hosts -d -u chrony\n")
    mount = mount_site(root, "--link-policy", "persistent", "--no-watch",
                       "--persistent-dir", str(tmp_path / "state"))
    conf = root / "var/lib/systemimager/images/img/etc/sysimage.conf"
    xml = root / "etc/systemimager/cluster.xml"
    good_conf, good_xml = conf.read_text(), xml.read_text()
    for kind, text, where in RELOAD_EDITS:
        (conf if kind == "sysimage" else xml).write_text(text)
        done = run("reload", mount.mountpoint)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"{root}/{where}" in done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        assert (mount.node("n1") / "etc/image").read_text() == "img"
        assert os.stat(mount.node(LONG_A) / "etc/hosts").st_uid == 996
        conf.write_text(good_conf)
        xml.write_text(good_xml)


def test_catastrophic_pattern_is_an_error_not_a_hang_in_core() -> None:
    """The pure parser: the match is stopped after the timeout and names line and host."""
    from onesuite_fs.core.errors import ConfigError
    from onesuite_fs.core.limits import Limits
    from onesuite_fs.core.onesis_rules import node_class
    from onesuite_fs.core.sysimage_conf import parse_sysimage_conf

    config = parse_sysimage_conf(f"# x\nNODECLASS_REGEXP {HANG} c\n", filename="s.conf",
                                 limits=Limits(regexp_timeout=0.05))
    with pytest.raises(ConfigError) as err:
        node_class(config, LONG_A)
    assert (err.value.file, err.value.line) == ("s.conf", 2)
    assert LONG_A in err.value.message


TWELVE_RANGES = """
from onesuite_fs.core.onesis_rules import parse_host_pattern
pattern = parse_host_pattern("n" + "[0-99999999]" * 12)
assert not pattern.matches("n" + "1" * 200)
assert pattern.matches("n" + "1" * 96)
assert parse_host_pattern("n" + "[1-2]" * 253).matches("n" + "1" * 253)
"""


def test_twelve_wide_ranges_match_in_bounded_time() -> None:
    """`NODECLASS_RANGE n[0-99999999]` x12 against a long digit run (it kept a worker busy
    for ever): in a child, so that a hang fails through the timeout."""
    done = subprocess.run([sys.executable, "-c", TWELVE_RANGES], capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr


def test_the_issue_pattern_is_bounded(tmp_path: Path) -> None:
    """`NODECLASS_REGEXP (a+)+b` with a host `aaaa...!` (issue 14): Python's re never came
    back; now it does not match, quickly, and the node simply has no class."""
    host = "a" * 64 + "!"
    root = base_site(tmp_path / "site", cluster_xml(nodes=f"n1,{host}"),
                     "NODECLASS_REGEXP (a+)+b c\n")
    done = run("nodes", "--root", root, "--json")
    assert done.returncode == 0, done.stderr
    classes = {n["name"]: n["onesis"]["class"] for n in json.loads(done.stdout)["nodes"]}
    assert classes == {"n1": None, host: None}


def test_twelve_wide_ranges_through_the_cli(tmp_path: Path) -> None:
    root = base_site(tmp_path / "site", cluster_xml(nodes="n" + "1" * 200),
                     "NODECLASS_RANGE n" + "[0-99999999]" * 12 + " c\n")
    done = run("nodes", "--root", root, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["nodes"][0]["onesis"]["class"] is None


def test_limits_are_configurable(tmp_path: Path) -> None:
    """A site past a default limit passes once onesuite.toml raises it, and a lower limit
    refuses what the default allows."""
    root = base_site(tmp_path / "site", cluster_xml(nodes="n1-n30"))
    low = tmp_path / "low.toml"
    low.write_text(f'[paths]\nroot = "{root}"\n[limits]\nmax_nodes = 20\n')
    done = run("nodes", "--config", low)
    assert_refused(done, at(f"etc/systemimager/cluster.xml:{NODES_LINE}")(root))
    assert "max_nodes" in done.stderr
    high = tmp_path / "high.toml"
    high.write_text(f'[paths]\nroot = "{root}"\n[limits]\nmax_nodes = 30\n')
    assert run("nodes", "--config", high).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nregexp_timeout = 0\n")
    done = run("nodes", "--config", bad)
    assert done.returncode == 2 and "[limits]" in done.stderr


def test_real_patterns_still_match(tmp_path: Path) -> None:
    """The engine switch keeps what worked (and reads POSIX classes as Perl does)."""
    conf = ("NODECLASS_REGEXP n[[:digit:]]+ posix\n"
            "NODECLASS_RANGE n[2-3] ranged\n"
            "RAMFILE /etc/hosts -d -u chrony -g 996\n")
    root = base_site(tmp_path / "site", conf=conf)
    done = run("nodes", "--root", root, "--json", "--link-policy", "persistent")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    classes = {n["name"]: n["onesis"]["class"] for n in json.loads(done.stdout)["nodes"]}
    assert classes == {"n1": "posix", "n2": "ranged", "n3": "ranged"}


def test_an_unexpected_error_is_one_line_without_traceback(tmp_path: Path, monkeypatch,
                                                           capsys) -> None:
    """The last guard: an error no check names (a bug) is still one line, exit 1."""
    from onesuite_fs import cli

    def broken(args: object) -> int:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(cli.core, "cmd_nodes", broken)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        assert cli.main(["nodes", "--root", str(tmp_path)]) == 1
    finally:  # main() installs its stop handlers; give pytest its own back
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    err = capsys.readouterr().err
    assert "unexpected RecursionError: maximum recursion depth exceeded" in err
    assert "Traceback" not in err


def _two_gib_address_space() -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.parametrize("pattern", ["((a{1000}){1000}){1000}", "[ab]{4000000000}",
                                     "(ab|cd){50000000}"])
def test_regexp_that_unrolls_without_bound_is_refused(tmp_path: Path, pattern: str) -> None:
    """One sysimage.conf line whose counted repeats the engine unrolls: compiling
    ((a{1000}){1000}){1000} took 24 GB before the OOM killer ended it (in a daemon, a reload
    would have taken the server's memory and then the daemon). Refused at its line, before
    compiling; the child runs with 2 GiB of address space so the bug fails the test, not
    the machine."""
    root = base_site(tmp_path / "site", conf=f"# x\nNODECLASS_REGEXP {pattern} c\n")
    done = subprocess.run([*ONESUITE, "nodes", "--root", str(root)], capture_output=True,
                          text=True, timeout=TIMEOUT, check=False, stdin=subprocess.DEVNULL,
                          preexec_fn=_two_gib_address_space)
    assert_refused(done, at("var/lib/systemimager/images/img/etc/sysimage.conf:2")(root))
    assert "unrolls to" in done.stderr


def test_unrolled_size_counts_nested_repeats() -> None:
    from onesuite_fs.core.sysimage_conf import _unrolled_size

    assert _unrolled_size(r"n\d+") == 3
    assert _unrolled_size(r"n[0-9]{4}r[0-9]{2}") == 8
    assert _unrolled_size(r"(\d{1,3}\.){3}\d{1,3}") == 18
    assert _unrolled_size(r"[[:digit:]]{3}\x{41}{2}[]{}]{5}") == 10
    assert _unrolled_size("((a{1000}){1000}){1000}") > 10**9


@pytest.mark.parametrize("name", ["n" * 256, "é" * 128, "&amp;" * 1100])
def test_name_longer_than_a_path_component_is_refused(tmp_path: Path, name: str) -> None:
    """A node name no server file system takes as one component (past 255 bytes): such a
    node mounted, and its first write to a persistent path failed (ENAMETOOLONG: the store
    names a directory after the node). Refused at its line; the message is not the name."""
    root = base_site(tmp_path / "site", cluster_xml(nodes=f"n1,{name}"))
    done = run("nodes", "--root", root)
    assert_refused(done, at(f"etc/systemimager/cluster.xml:{NODES_LINE}")(root))
    assert "longer than 255 bytes" in done.stderr
    assert len(done.stderr) < 1000


def test_many_entity_references_parse_in_linear_time(tmp_path: Path) -> None:
    """expat hands over text per entity reference: four million &amp; in <node> (20 MB)
    were joined one by one into a string, minutes of copying; now about a second."""
    root = base_site(tmp_path / "site", cluster_xml(nodes="n1," + "&amp;" * 4_000_000))
    done = run("nodes", "--root", root)
    assert_refused(done, at(f"etc/systemimager/cluster.xml:{NODES_LINE}")(root))
