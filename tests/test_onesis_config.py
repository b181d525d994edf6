"""Tests for the sysimage.conf parser and oneSIS class/property/rule logic (domain.md B.1, B.2.3).

Every verbatim example of domain.md B.1.3 is parsed here, each in both syntaxes
(`DIRECTIVE: args` and `DIRECTIVE args`): `parse()` checks that both give the same config.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onesuite_fs.core.errors import ConfigError
from onesuite_fs.core.onesis_rules import (
    LEGACY_FORCE,
    LEGACY_PROTECT,
    Limiters,
    Policy,
    SysimageConfig,
    class_chain,
    limiters_match,
    node_class,
    node_properties,
    parse_host_pattern,
)
from onesuite_fs.core.sysimage_conf import parse_sysimage_conf

# --- Verbatim examples (domain.md B.1.3) -----------------------------------------------------

HOWTO_SIMPLE = r"""# /etc/sysimage.conf
NODECLASS_REGEXP node\d+ compute
"""

HOWTO_WRITEABLE_DIRS = r"""# /etc/sysimage.conf
LINKDIR /var/run
"""

# sysimage.conf-centos6.3-compute lines 11-32, after ten lines standing in for lines 1-10 so
# that line numbers match the original.
NCI_LINES_1_10 = "#\n" * 9 + "\n"
NCI_LINES_11_32 = r"""
####-----------------------------------------------------------------------####
# DISTRO: <name> <version>                                                    #

# rjh - the -rjh variant adds root on lustre umount hacks to the halt script
DISTRO: RedHat-EL-6.2-rjh

####-----------------------------------------------------------------------####

####-----------------------------------------------------------------------####
# INCLUDE: <path>                                                             #

####-----------------------------------------------------------------------####

####-----------------------------------------------------------------------####
# NODECLASS_REGEXP: <perl_regexp> <CLASS>                                     #
# NODECLASS_MAP: <NODE> <CLASS>                                               #
# NODECLASS_RANGE: <prefix[RANGE]...suffix> <CLASS>                           #
#                  RANGE can be of the form [a-b,x-y,...], where a<b and x<y  #

NODECLASS_REGEXP: v\d+ vu.compute.internal
NODECLASS_REGEXP: vayu\d+ vu.compute.external.login
NODECLASS_REGEXP: vayu\d+gige vu.compute.external.login
""".removeprefix("\n")

NCI_OTHER_LINES = r"""NODECLASS_MAP: vayu4 vu.compute.external.login.trawl
NODECLASS_RANGE: v[1433-1484] vu.compute.internal.bigmem
NODECLASS_REGEXP: r\d+(|gige) r.compute.internal
NODECLASS_RANGE: r[3521-3592] r.compute.internal.hugemem
PROPERTY: gpu -r x[1-2,6,11-16] -n d43
SERVICE nfidia -p gpu
SERVICE irqbalance -c vu.compute.internal,xe.compute.internal,r.compute.internal
RAMSIZE: 10m -c vu.compute.internal,xe.compute.internal,dcc.compute.internal,r.compute.internal
LINKDIR /var/log
LINKDIR /var/lib/nfs -d
LINKFILE /etc/ganglia/gmond.conf
LINKFILE /etc/smartd.conf -d -c r.compute.external
LINKBACK /etc/sysconfig/network-scripts/ifcfg-eth1 NODE -h -n vayu4,vayu4gige,xe,xe-apps
LINKBACK /etc/sysconfig/network-scripts/ifcfg-eth2      CLASS -h -c xe.compute.external.login,r.compute.external
LINKBACK /etc/fstab CLASS -c vu,vu.compute.external,xe.compute,dcc,r,r.compute.external
LINKBACK /etc/fstab NODE -n vayu4,vayu4gige,xe,xe-apps,dcc-apps,raijin7gige,raijin7
# note - the ordering here is important - want properties to trump classes:
LINKBACK /var/spool/pbs/mom_priv/config CLASS
LINKBACK /var/spool/pbs/mom_priv/config PROPERTY -p fc,global
LINKBACK /etc/modprobe.conf CLASS
"""  # noqa: E501

OSS_MDS_LINES = r"""PROPERTY: vu.odd -r hamster[1,3,5,7,9,11,13,15,17,19,21,23,25]
PROPERTY: alkindi.odd  -re koss\d[13579](|-gige)
RAMSIZE: 100m
#LINKBACK /var/spool/pbs/mom_priv /var/spool/pbs/mom_privs/$NODE -f
"""

# Synthetic (lines of the full NCI file that domain.md does not quote): the classes and
# properties the quoted limiters name, which must be defined (see test_unknown_* below).
NCI_DEFINITIONS = r"""NODECLASS_REGEXP: x\d+ xe.compute.internal
NODECLASS_MAP: xe xe.compute.external.login
NODECLASS_REGEXP: d\d+ dcc.compute.internal
NODECLASS_MAP: dcc-apps dcc.compute.external
NODECLASS_REGEXP: raijin\d+(|gige) r.compute.external.login
PROPERTY: fc -r v[1409-1440,1465-1488]
PROPERTY: global -r v[1-1200]
"""


# --- Helpers ---------------------------------------------------------------------------------


def other_syntax(text: str) -> str:
    """The same config with each directive written the other way: `NAME: args` <-> `NAME args`."""
    lines = []
    for line in text.splitlines():
        word, space, rest = line.partition(" ")
        if not word or word.startswith("#"):
            lines.append(line)
        elif word.endswith(":"):
            lines.append(word[:-1] + space + rest)
        else:
            lines.append(word + ":" + space + rest)
    return "\n".join(lines) + "\n"


def parse(text: str, **kwargs) -> SysimageConfig:
    """Parse `text`; the other syntax (B.1.1) must give the very same config."""
    config = parse_sysimage_conf(text, filename="sysimage.conf", **kwargs)
    assert parse_sysimage_conf(other_syntax(text), filename="sysimage.conf", **kwargs) == config
    return config


def error_of(text: str, **kwargs) -> ConfigError:
    """The error `text` raises; the other syntax must fail at the same place."""
    with pytest.raises(ConfigError) as caught:
        parse_sysimage_conf(text, filename="sysimage.conf", **kwargs)
    with pytest.raises(ConfigError) as other:
        parse_sysimage_conf(other_syntax(text), filename="sysimage.conf", **kwargs)
    assert (other.value.file, other.value.line) == (caught.value.file, caught.value.line)
    assert caught.value.hint
    return caught.value


def loader(files: dict[str, str]) -> Callable[[str], tuple[str, str]]:
    def load(path: str) -> tuple[str, str]:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return path, files[path]

    return load


@pytest.fixture(scope="module")
def nci() -> SysimageConfig:
    return parse(NCI_LINES_1_10 + NCI_LINES_11_32 + NCI_DEFINITIONS + NCI_OTHER_LINES)


# --- The verbatim examples -------------------------------------------------------------------


def test_howto_one_class_for_all_nodes() -> None:
    config = parse(HOWTO_SIMPLE)
    [rule] = config.class_rules
    assert (rule.kind, rule.pattern, rule.class_name, rule.line) == (
        "REGEXP",
        r"node\d+",
        "compute",
        2,
    )
    assert [node_class(config, f"node{n}") for n in (1, 64, 128)] == ["compute"] * 3
    assert config.classes() == ("compute",)


def test_howto_linkdir() -> None:
    [ram] = parse(HOWTO_WRITEABLE_DIRS).ram_paths
    assert (ram.kind, ram.pattern, ram.duplicate, ram.cleanable, ram.limiters) == (
        "LINKDIR",
        "/var/run",
        False,
        False,
        Limiters(),
    )


def test_nci_lines_11_to_32() -> None:
    config = parse(NCI_LINES_1_10 + NCI_LINES_11_32)
    assert [(d.name, d.args, d.line) for d in config.directives] == [
        ("DISTRO", ("RedHat-EL-6.2-rjh",), 15),
        ("NODECLASS_REGEXP", (r"v\d+", "vu.compute.internal"), 30),
        ("NODECLASS_REGEXP", (r"vayu\d+", "vu.compute.external.login"), 31),
        ("NODECLASS_REGEXP", (r"vayu\d+gige", "vu.compute.external.login"), 32),
    ]
    assert config.classes() == ("vu.compute.internal", "vu.compute.external.login")
    assert node_class(config, "vayu3gige") == "vu.compute.external.login"


def test_nci_other_lines_class_and_property_rules(nci: SysimageConfig) -> None:
    assert [(r.kind, r.pattern, r.class_name) for r in nci.class_rules[-4:]] == [
        ("MAP", "vayu4", "vu.compute.external.login.trawl"),
        ("RANGE", "v[1433-1484]", "vu.compute.internal.bigmem"),
        ("REGEXP", r"r\d+(|gige)", "r.compute.internal"),
        ("RANGE", "r[3521-3592]", "r.compute.internal.hugemem"),
    ]
    gpu = nci.property_rules[-1]
    assert (gpu.name, gpu.nodes, gpu.classes, gpu.regexp) == ("gpu", ("d43",), (), None)
    assert gpu.range is not None and gpu.range.text == "x[1-2,6,11-16]"


def test_nci_other_lines_services_and_ramsize(nci: SysimageConfig) -> None:
    internal = ("vu.compute.internal", "xe.compute.internal", "r.compute.internal")
    assert [(s.name, s.limiters) for s in nci.services] == [
        ("nfidia", Limiters(properties=("gpu",))),
        ("irqbalance", Limiters(classes=internal)),
    ]
    [ramsize] = [d for d in nci.directives if d.name == "RAMSIZE"]
    assert ramsize.args == ("10m",)
    assert ramsize.classes == (
        "vu.compute.internal",
        "xe.compute.internal",
        "dcc.compute.internal",
        "r.compute.internal",
    )


def test_nci_other_lines_ram_paths(nci: SysimageConfig) -> None:
    assert [(r.kind, r.pattern, r.duplicate, r.limiters) for r in nci.ram_paths] == [
        ("LINKDIR", "/var/log", False, Limiters()),
        ("LINKDIR", "/var/lib/nfs", True, Limiters()),
        ("LINKFILE", "/etc/ganglia/gmond.conf", False, Limiters()),
        ("LINKFILE", "/etc/smartd.conf", True, Limiters(classes=("r.compute.external",))),
    ]


def test_nci_other_lines_linkbacks(nci: SysimageConfig) -> None:
    scripts = "/etc/sysconfig/network-scripts/"
    assert [
        (lb.path, lb.target_kind, lb.hidden, lb.force, lb.limiters) for lb in nci.linkbacks
    ] == [
        (
            scripts + "ifcfg-eth1",
            "NODE",
            True,
            False,
            Limiters(nodes=("vayu4", "vayu4gige", "xe", "xe-apps")),
        ),
        (
            scripts + "ifcfg-eth2",
            "CLASS",
            True,
            False,
            Limiters(classes=("xe.compute.external.login", "r.compute.external")),
        ),
        (
            "/etc/fstab",
            "CLASS",
            False,
            False,
            Limiters(
                classes=(
                    "vu",
                    "vu.compute.external",
                    "xe.compute",
                    "dcc",
                    "r",
                    "r.compute.external",
                )
            ),
        ),
        (
            "/etc/fstab",
            "NODE",
            False,
            False,
            Limiters(
                nodes=("vayu4", "vayu4gige", "xe", "xe-apps", "dcc-apps", "raijin7gige", "raijin7")
            ),
        ),
        ("/var/spool/pbs/mom_priv/config", "CLASS", False, False, Limiters()),
        (
            "/var/spool/pbs/mom_priv/config",
            "PROPERTY",
            False,
            False,
            Limiters(properties=("fc", "global")),
        ),
        ("/etc/modprobe.conf", "CLASS", False, False, Limiters()),
    ]
    assert all(lb.target is None and lb.legacy is None for lb in nci.linkbacks)


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("v12", "vu.compute.internal"),
        ("v1440", "vu.compute.internal.bigmem"),  # the later RANGE line beats the REGEXP line
        ("v1485", "vu.compute.internal"),
        ("vayu3", "vu.compute.external.login"),
        ("vayu4", "vu.compute.external.login.trawl"),
        ("r3550", "r.compute.internal.hugemem"),
        ("r12gige", "r.compute.internal"),
        ("r3550gige", "r.compute.internal"),  # the RANGE has no `gige` suffix
        ("login1", None),
    ],
)
def test_nci_classes(nci: SysimageConfig, hostname: str, expected: str | None) -> None:
    assert node_class(nci, hostname) == expected


def test_oss_mds_lines() -> None:
    config = parse(OSS_MDS_LINES)
    odd, alkindi = config.property_rules
    assert (odd.name, odd.range and odd.range.text) == (
        "vu.odd",
        "hamster[1,3,5,7,9,11,13,15,17,19,21,23,25]",
    )
    assert (alkindi.name, alkindi.regexp and alkindi.regexp.text) == (
        "alkindi.odd",
        r"koss\d[13579](|-gige)",
    )
    assert [d.args for d in config.directives if d.name == "RAMSIZE"] == [("100m",)]
    assert config.linkbacks == ()  # the LINKBACK line is commented out
    assert node_properties(config, "hamster25", None) == ("vu.odd",)
    assert node_properties(config, "hamster4", None) == ()
    assert node_properties(config, "koss03-gige", None) == ("alkindi.odd",)
    assert node_properties(config, "koss02", None) == ()
    assert node_properties(config, "koss013", None) == ()  # anchored: one digit, then odd


def test_oss_mds_explicit_target_when_uncommented() -> None:
    text = OSS_MDS_LINES.replace("#LINKBACK", "LINKBACK")
    [lb] = parse(text).linkbacks
    assert (lb.path, lb.target_kind, lb.target, lb.force, lb.hidden, lb.line) == (
        "/var/spool/pbs/mom_priv",
        "PATH",
        "/var/spool/pbs/mom_privs/$NODE",
        True,
        False,
        4,
    )
    assert lb.explicit_target("hamster1", "vu.oss") == "/var/spool/pbs/mom_privs/hamster1"


# --- Per-node rules on the NCI config --------------------------------------------------------


def test_linkback_last_matching_line_decides(nci: SysimageConfig) -> None:
    assert nci.rules_for("vayu4").linkback_for("/etc/fstab").target_kind == "NODE"
    assert nci.rules_for("v12").linkback_for("/etc/fstab").target_kind == "CLASS"  # -c vu
    assert nci.rules_for("r3550").linkback_for("/etc/fstab/").target_kind == "CLASS"  # -c r
    assert nci.rules_for("x3").linkback_for("/etc/fstab").target_kind == "CLASS"  # xe.compute
    assert nci.rules_for("login1").linkback_for("/etc/fstab") is None  # no class, no -n
    mom = "/var/spool/pbs/mom_priv/config"
    assert nci.rules_for("v100").properties == ("global",)
    assert nci.rules_for("v100").linkback_for(mom).target_kind == "PROPERTY"
    assert nci.rules_for("v1300").linkback_for(mom).target_kind == "CLASS"


def test_hidden_node_linkback_only_for_listed_nodes(nci: SysimageConfig) -> None:
    path = "/etc/sysconfig/network-scripts/ifcfg-eth1"
    assert nci.rules_for("vayu4").linkback_for(path).hidden
    assert nci.rules_for("v12").linkback_for(path) is None


def test_services_enabled_per_node(nci: SysimageConfig) -> None:
    assert dict(nci.rules_for("x1").services) == {"nfidia": True, "irqbalance": True}
    assert dict(nci.rules_for("d43").services) == {"nfidia": True, "irqbalance": False}
    assert dict(nci.rules_for("x3").services) == {"nfidia": False, "irqbalance": True}
    assert dict(nci.rules_for("vayu4").services) == {"nfidia": False, "irqbalance": False}


def test_ram_paths_and_last_directive_per_node(nci: SysimageConfig) -> None:
    smartd = "/etc/smartd.conf"
    assert smartd in [r.pattern for r in nci.rules_for("raijin1").ram_paths]
    assert smartd not in [r.pattern for r in nci.rules_for("v12").ram_paths]
    assert nci.rules_for("v12").last("RAMSIZE").args == ("10m",)
    assert nci.rules_for("vayu4").last("RAMSIZE") is None
    assert nci.rules_for("vayu4").last("DISTRO").line == 15


def test_later_ram_line_for_same_pattern_wins() -> None:
    config = parse("NODECLASS_MAP n1 big\nLINKDIR /var/log\nRAMDIR /var/log -d -c big\n")
    [n1] = config.rules_for("n1").ram_paths
    [n2] = config.rules_for("n2").ram_paths
    assert (n1.kind, n1.duplicate, n2.kind, n2.duplicate) == ("RAMDIR", True, "LINKDIR", False)


def test_rules_for_refuses_bad_hostnames(nci: SysimageConfig) -> None:
    for bad in ("", "..", "a/b", "a b"):
        with pytest.raises(ValueError):
            nci.rules_for(bad)


# --- Classes ---------------------------------------------------------------------------------


def test_class_chain() -> None:
    assert class_chain("a.b.c") == ("a.b.c", "a.b", "a")
    assert class_chain("compute") == ("compute",)


def test_later_nodeclass_line_wins_in_either_order() -> None:
    regexp, mapped = r"NODECLASS_REGEXP node\d+ compute", "NODECLASS_MAP node7 io"
    assert node_class(parse(f"{regexp}\n{mapped}\n"), "node7") == "io"
    assert node_class(parse(f"{mapped}\n{regexp}\n"), "node7") == "compute"


def test_classname_override_wins() -> None:
    config = parse(HOWTO_SIMPLE)
    assert node_class(config, "node1", "io.fast") == "io.fast"
    assert config.rules_for("other", classname_override="io").node_class == "io"
    with pytest.raises(ValueError):
        node_class(config, "node1", "../etc")


HOWTO_CONFIG = parse_sysimage_conf(HOWTO_SIMPLE, filename="sysimage.conf")


@given(st.text(alphabet="nodex01", max_size=8))
def test_regexp_is_anchored(hostname: str) -> None:
    expected = "compute" if re.fullmatch(r"node[0-9]+", hostname) else None
    assert node_class(HOWTO_CONFIG, hostname) == expected


def test_regexp_anchoring_examples() -> None:
    assert [node_class(HOWTO_CONFIG, h) for h in ("node1", "xnode1", "node1x", "node")] == [
        "compute",
        None,
        None,
        None,
    ]


# --- Ranges ----------------------------------------------------------------------------------

range_items = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 30)), min_size=1, max_size=5)


def range_text(items: list[tuple[int, int]]) -> str:
    return ",".join(f"{low}-{low + extra}" if extra else str(low) for low, extra in items)


@given(range_items)
def test_range_matches_exactly_the_numbers_inside(items: list[tuple[int, int]]) -> None:
    pattern = parse_host_pattern(f"node[{range_text(items)}]")
    inside = {n for low, extra in items for n in range(low, low + extra + 1)}
    for number in range(0, 340):
        assert pattern.matches(f"node{number}") == (number in inside)


@given(range_items, st.integers(0, 340))
def test_property_range_through_config(items: list[tuple[int, int]], number: int) -> None:
    config = parse_sysimage_conf(f"PROPERTY: p -r x[{range_text(items)}]y\n", filename="c")
    inside = any(low <= number <= low + extra for low, extra in items)
    assert node_properties(config, f"x{number}y", None) == (("p",) if inside else ())


def test_range_with_several_groups() -> None:
    pattern = parse_host_pattern("rack[1-4]node[1-32]")
    assert pattern.matches("rack4node12")
    assert not pattern.matches("rack5node12")
    assert not pattern.matches("rack4node33")
    assert not pattern.matches("rack4node12x")
    adjacent = parse_host_pattern("x[1-9][10-20]")
    assert adjacent.matches("x110") and adjacent.matches("x920")
    assert not adjacent.matches("x921")


def test_range_leading_zeros_policy() -> None:
    exact, padded = parse_host_pattern("node[1-32]"), parse_host_pattern("node[001-128]")
    assert exact.matches("node7") and not exact.matches("node07")
    assert padded.matches("node007") and padded.matches("node128")
    assert not padded.matches("node7")
    loose = parse_host_pattern("node[1-32]", numbers="value")
    assert loose.matches("node07") and loose.matches("node7")
    config = parse("NODECLASS_RANGE node[1-32] c\n", policy=Policy(range_numbers="value"))
    assert node_class(config, "node0032") == "c"


def test_range_without_brackets_is_one_name() -> None:
    assert node_class(parse("NODECLASS_RANGE: vu-test vu\n"), "vu-test") == "vu"


# --- Properties and limiters -----------------------------------------------------------------


def test_property_selectors_or_together() -> None:
    config = parse(r"""NODECLASS_REGEXP: v\d+ vu.compute.internal
NODECLASS_REGEXP: x\d+ xe.compute
PROPERTY: gpu -r x[1-2,6,11-16] -n d43
PROPERTY: odd -re n\d*[13579]
PROPERTY: vuprop -c vu
PROPERTY: everyone
""")
    assert node_properties(config, "x6", "xe.compute") == ("gpu", "everyone")
    assert node_properties(config, "x7", "xe.compute") == ("everyone",)
    assert node_properties(config, "d43", None) == ("gpu", "everyone")
    assert node_properties(config, "n13", None) == ("odd", "everyone")
    assert node_properties(config, "xn13", None) == ("everyone",)
    assert node_properties(config, "v1", "vu.compute.internal") == ("vuprop", "everyone")
    assert config.rules_for("v1").properties == ("vuprop", "everyone")


def test_class_limiter_subclass_policy() -> None:
    text = "NODECLASS_REGEXP: v\\d+ vu.compute\nPROPERTY: p -c vu\nSERVICE s -c vu\n"
    assert parse(text).rules_for("v1").properties == ("p",)
    assert parse(text).rules_for("v1").services["s"]
    strict = parse(text, policy=Policy(class_matches_subclasses=False))
    assert strict.rules_for("v1").properties == ()
    assert not strict.rules_for("v1").services["s"]


def test_limiters_or_between_kinds_and_none_means_all() -> None:
    config = parse(
        "NODECLASS_MAP n1 a.b\nPROPERTY: p -n n3\nSERVICE s -c a -n n2 -p p\nSERVICE all\n"
    )
    [limited, unlimited] = config.services
    assert limiters_match(limited, "n1", "a.b", ())
    assert not limiters_match(limited, "n1", "a.b", (), class_matches_subclasses=False)
    assert limiters_match(limited, "n2", None, ())
    assert limiters_match(limited, "n3", None, ("p",))
    assert not limiters_match(limited, "n4", "c", ("q",))
    assert limiters_match(unlimited, "n4", None, ())
    assert limiters_match(config.directives[-1], "n4", None, ())


def test_limiter_class_may_be_defined_later_or_be_a_parent() -> None:
    config = parse("SERVICE s -c vu,vu.compute\nNODECLASS_MAP n1 vu.compute.internal\n")
    assert config.rules_for("n1").services == {"s": True}


def test_trailing_comment_policy() -> None:
    # verbatim from sysimage.conf-centos6.3-compute (not quoted in domain.md)
    line = "SERVICE smartd -c vu.compute.external,xe.compute # -p fc\n"
    text = "NODECLASS_MAP a vu.compute.external\nNODECLASS_MAP b xe.compute\n" + line
    [smartd] = parse(text).services
    assert smartd.limiters == Limiters(classes=("vu.compute.external", "xe.compute"))
    assert "takes 1 argument" in error_of(text, policy=Policy(trailing_comments=False)).message


# --- Legacy (2.0rc10) syntax -----------------------------------------------------------------


def test_legacy_star_means_force() -> None:
    [d] = parse("LINKBACK /etc/fstab * CLASS\n").directives
    assert (d.args, dict(d.options), d.legacy) == (
        ("/etc/fstab", "CLASS"),
        {"-f": True},
        LEGACY_FORCE,
    )
    [lb] = parse("LINKBACK /etc/fstab * CLASS -h\n").linkbacks
    assert (lb.target_kind, lb.force, lb.hidden, lb.legacy) == ("CLASS", True, True, LEGACY_FORCE)


@pytest.mark.parametrize(
    "line", ["LINKDIR /var/log -p", "RAMDIR /var/x -p -d", "RAMDIR /var/x -p -m 0700"]
)
def test_legacy_p_without_list_means_protect(line: str) -> None:
    [ram] = parse(line + "\n").ram_paths
    assert (ram.legacy, ram.cleanable, ram.limiters) == (LEGACY_PROTECT, False, Limiters())


def test_p_with_list_is_a_property_limiter() -> None:
    [ram] = parse("PROPERTY gpu\nLINKDIR /var/log -p gpu -cl\n").ram_paths
    assert (ram.legacy, ram.cleanable, ram.limiters) == (None, True, Limiters(properties=("gpu",)))


# --- Other directives ------------------------------------------------------------------------


def test_ram_owner_and_mode() -> None:
    [ram] = parse("RAMFILE /etc/x -d -m 0640 -u root -g 42\n").ram_paths
    assert (ram.kind, ram.duplicate, ram.mode, ram.user, ram.group) == (
        "RAMFILE",
        True,
        0o640,
        "root",
        "42",
    )


def test_commands_keep_their_own_flags() -> None:
    config = parse(
        "POWERCMD ON -c io ipmitool -H %h power on\nCONSOLECMD conman -j %h\nNODECLASS_MAP n1 io\n"
    )
    power, console = config.directives[:2]
    assert (power.args, power.classes) == (("ON", "ipmitool -H %h power on"), ("io",))
    assert (console.args, console.limiters) == (("conman -j %h",), Limiters())


def test_no_effect_on_served_root() -> None:
    config = parse(
        "DISTRO: RedHat-EL-6.2-rjh\nMATCH_DNS_HOSTS\nMAC_ADDR r-pbs 00:19:99:C5:EE:AA\n"
        "ETH_PRELOAD: igb\nBOOTLOADER grub\nLINKDIR /var/log\n"
        "DEPLOYMOUNT sda,sdb 100% / -t ext4 -r 1\n"
    )
    assert [d.location for d in config.no_effect_on_served_root()] == [
        "sysimage.conf:2",
        "sysimage.conf:3",
        "sysimage.conf:4",
        "sysimage.conf:5",
        "sysimage.conf:7",
    ]


# --- INCLUDE ---------------------------------------------------------------------------------


def test_include_inserts_lines_at_its_place() -> None:
    files = {"inc.conf": "NODECLASS_MAP n1 second\nNODECLASS_MAP n2 inc\n"}
    config = parse(
        "NODECLASS_MAP n1 first\nINCLUDE inc.conf\nNODECLASS_MAP n1 third\n",
        load_include=loader(files),
    )
    assert [(d.name, d.file, d.line) for d in config.directives] == [
        ("NODECLASS_MAP", "sysimage.conf", 1),
        ("INCLUDE", "sysimage.conf", 2),
        ("NODECLASS_MAP", "inc.conf", 1),
        ("NODECLASS_MAP", "inc.conf", 2),
        ("NODECLASS_MAP", "sysimage.conf", 3),
    ]
    assert [node_class(config, n) for n in ("n1", "n2")] == ["third", "inc"]


def test_include_cycle_names_the_chain() -> None:
    files = {"b.conf": "# b\nINCLUDE a.conf\n", "a.conf": "INCLUDE b.conf\n"}
    with pytest.raises(ConfigError) as caught:
        parse_sysimage_conf(files["a.conf"], filename="a.conf", load_include=loader(files))
    err = caught.value
    assert (err.file, err.line) == ("b.conf", 2)
    assert "a.conf -> b.conf -> a.conf" in err.message


def test_include_depth_is_bounded() -> None:
    def load(path: str) -> tuple[str, str]:  # a cycle the display names do not reveal
        return path + "/", f"INCLUDE {path}/\n"

    assert "nested more than" in error_of("INCLUDE a\n", load_include=load).message


def test_include_errors_point_at_the_include_line() -> None:
    missing = error_of("LINKDIR /var/log\nINCLUDE nope.conf\n", load_include=loader({}))
    assert (missing.line, missing.column) == (2, 9)
    assert "nope.conf" in missing.message

    def refuse(path: str) -> tuple[str, str]:
        raise ConfigError("escapes the image", hint="keep INCLUDE paths inside the image")

    refused = error_of("\n\nINCLUDE ../../etc/x\n", load_include=refuse)
    assert (refused.line, refused.hint) == (3, "keep INCLUDE paths inside the image")
    assert "escapes the image" in refused.message
    assert error_of("INCLUDE x.conf\n").line == 1  # no loader given


def test_errors_inside_an_include_name_that_file() -> None:
    files = {"inc.conf": "\nBOGUS x\n"}
    err = error_of("INCLUDE inc.conf\n", load_include=loader(files))
    assert (err.file, err.line) == ("inc.conf", 2)


# --- Errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("# c\nLINKDIR /var/log\nLNKDIR /var/run\n", 3, "unknown directive 'LNKDIR'"),
        ("linkdir /var/run\n", 1, "unknown directive"),
        ("NODECLASS\n", 1, "unknown directive"),
        ("\nNODECLASS_MAP vayu4\n", 2, "takes 2 argument(s), got 1"),
        ("LINKDIR /var/log /var/run\n", 1, "takes 1 argument(s), got 2"),
        ("MATCH_DNS_HOSTS yes\n", 1, "takes 0 argument(s)"),
        ("LINKDIR /var/log -x\n", 1, "LINKDIR has no flag -x"),
        ("NODECLASS_MAP n1 a -c a\n", 1, "has no flag -c"),
        ("PROPERTY p -p q\n", 1, "has no flag -p"),
        ("SERVICE s -c\n", 1, "-c needs a value"),
        ("NODECLASS_MAP n1 a\nSERVICE s -c a -c a\n", 2, "-c given twice"),
        ("SERVICE s -c a,,b\n", 1, "is not a valid class name"),
        ("\n\nNODECLASS_REGEXP: node(\\d+ compute\n", 3, "bad regexp"),
        ("PROPERTY: p -re [z-a]\n", 1, "bad regexp"),
        ("NODECLASS_RANGE: node[5-2] compute\n", 1, "runs backwards"),
        ("NODECLASS_RANGE: node[1- compute\n", 1, "never closed"),
        ("NODECLASS_RANGE: node1-4] compute\n", 1, "without a matching"),
        ("NODECLASS_RANGE: node[] compute\n", 1, "not a number"),
        ("PROPERTY: p -r x[1-2,,6]\n", 1, "not a number"),
        ("NODECLASS_MAP n1 a..b\n", 1, "not a valid class name"),
        ("NODECLASS_MAP n1 a.b\n\nLINKBACK /etc/fstab CLASS -c a.c\n", 3, "no NODECLASS line"),
        ("PROPERTY fc\nSERVICE s -p fc,gpu\n", 2, "no PROPERTY line"),
        ("LINKBACK /etc/fstab /etc/fstabs/../shadow\n", 1, "would escape its directory"),
        ("LINKBACK /etc/fstab ../fstab.$NODE -f\n", 1, "would escape its directory"),
        ("LINKBACK /etc/fstab class\n", 1, "neither CLASS, NODE, PROPERTY"),
        ("LINKBACK /etc/x /etc/x.$NODE -h\n", 1, "-h (hidden) works only"),
        ("LINKBACK /etc/x PROPERTY -f\n", 1, "-f (force) cannot be used with PROPERTY"),
        ("LINKBACK /etc/x * PROPERTY\n", 1, "-f (force) cannot be used with PROPERTY"),
        ("LINKBACK /etc/inittab CLASS\n", 1, "cannot be a linkback"),
        ("LINKBACK etc/fstab CLASS\n", 1, "not an absolute path"),
        ("LINKDIR /var/../etc\n", 1, "'..' component"),
        ("RAMDIR /x -m 999\n", 1, "not an octal mode"),
        ("RAMDIR /x -cl -p\n", 1, "-cl (cleanable) together with the old -p"),
        ("RAMFILE /x -p\n", 1, "-p needs a value"),
        ("RAMSIZE: 10q\n", 1, "not a size"),
        ("BOOTLOADER: syslinux\n", 1, "not one of grub, lilo"),
    ],
)
def test_errors_name_the_line(text: str, line: int, message: str) -> None:
    err = error_of(text)
    assert (err.file, err.line) == ("sysimage.conf", line)
    assert message in err.message


def test_error_columns() -> None:
    text = "NODECLASS_REGEXP: node(\\d+ compute\n"
    assert error_of(text).column == text.index("(") + 1
    text = "NODECLASS_RANGE: node[1-4,9-7] compute\n"
    assert error_of(text).column == text.index("9-7") + 1


def test_unknown_directive_hint() -> None:
    assert error_of("linkdir /var/run\n").hint == "directive names are upper-case: write LINKDIR"
    assert "did you mean LINKBACK?" in error_of("LINKBAK /etc/fstab CLASS\n").hint
