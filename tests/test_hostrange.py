"""SystemImager host-range syntax (domain.md A.3.2, HostRange::expand_range_list)."""

from hypothesis import given
from hypothesis import strategies as st

from onesuite_fs.sources.hostrange import expand_range_list


def test_zero_padded_to_the_width_of_the_start_number():
    assert expand_range_list("node001-node003") == ["node001", "node002", "node003"]
    assert expand_range_list("node8-node11") == ["node10", "node11", "node8", "node9"]
    assert expand_range_list("node1293-node1295") == ["node1293", "node1294", "node1295"]


def test_lists_split_on_commas_spaces_and_newlines_deduplicated_and_sorted():
    text = "node002,node001 node003\nnode001-node002"
    assert expand_range_list(text) == ["node001", "node002", "node003"]


def test_escaped_hyphen_is_literal():
    assert expand_range_list(r"login\-1") == ["login-1"]
    assert expand_range_list(r"rack\-a01-rack\-a03") == ["rack-a01", "rack-a02", "rack-a03"]


def test_domain_suffix_kept_and_must_match():
    assert expand_range_list("n1.example.org-n2.example.org") == [
        "n1.example.org", "n2.example.org"]
    assert expand_range_list("n1.a-n2.b") == ["n1.a-n2.b"]  # not a range: taken literally


def test_ip_ranges():
    assert expand_range_list("10.0.0.254-10.0.1.1") == [
        "10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"]


def test_not_a_range_is_taken_literally():
    assert expand_range_list("node5-node2") == ["node5-node2"]
    assert expand_range_list("a-b") == ["a-b"]
    # Bracket ranges are oneSIS/pdsh syntax, not SystemImager's.
    assert expand_range_list("node[1-3]") == ["node[1-3]"]


def test_shipped_example_group():
    hosts = expand_range_list("node001,node1293-node1308")
    assert hosts[0] == "node001" and hosts[-1] == "node1308" and len(hosts) == 17


@given(prefix=st.from_regex(r"[a-z]{1,6}", fullmatch=True),
       start=st.integers(0, 5000), count=st.integers(1, 60), width=st.integers(1, 5))
def test_range_property(prefix, start, count, width):
    stop = start + count - 1
    hosts = expand_range_list(f"{prefix}{start:0{width}d}-{prefix}{stop:0{width}d}")
    assert len(hosts) == count
    assert hosts == sorted(hosts)
    assert {int(h[len(prefix):]) for h in hosts} == set(range(start, stop + 1))
    assert all(h.startswith(prefix) for h in hosts)
    assert all(len(h) - len(prefix) >= len(f"{start:0{width}d}") for h in hosts)


@given(st.lists(st.from_regex(r"[a-z]{1,4}[0-9]{1,3}", fullmatch=True), min_size=1,
                max_size=20))
def test_plain_lists_are_a_sorted_set(names):
    assert expand_range_list(",".join(names)) == sorted(set(names))
