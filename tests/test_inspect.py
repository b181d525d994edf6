"""onesuite preview, explain and diff without a mount: diff against roots real rsync builds,
explain's merge rules and LINKBACK trails, bad input, and the output conventions."""

from __future__ import annotations

import io
import json
import os

import oracle
import pytest
import sitegen
from conftest import run_onesuite
from inspecttools import cli_tree, onesuite_json
from sitetools import onesis_site

from onesuite_fs.cli import main
from onesuite_fs.inspect.explain import explain
from onesuite_fs.inspect.targets import resolve_target
from onesuite_fs.progress import Progress

SEEDS = range(4)


@pytest.fixture(scope="module")
def onesis_root(tmp_path_factory):
    return onesis_site(tmp_path_factory.mktemp("onesis") / "site")


# --------------------------------------------------------------------------------------------
# diff against the rsync oracle


@pytest.mark.parametrize("seed", SEEDS)
def test_diff_against_rsync_built_roots_finds_nothing(seed, tmp_path, capsys):
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    for order in oracle.ORDERS:
        for host in spec.nodes():
            built = tmp_path / "oracle" / order / host
            oracle.build_root_with_rsync(spec, host, order, built)
            status, document = onesuite_json(capsys, "diff", "--root", spec.prefix,
                                             "--override-order", order, f"node:{host}",
                                             f"dir:{built}")
            assert (status, document["differences"]) == (0, []), (seed, order, host)
            assert document["equal"] is True


def _winning_override_file(tree, host):
    """A regular file of host's root that an override (not the image) wins, and its layer."""
    from onesuite_fs.inspect.walk import TreeView, walk

    view = TreeView(tree, resolve_target(tree, f"node:{host}"))
    for record in walk(view, view.stat("/")):
        found = record.provenance
        if record.kind == "file" and found.layer.startswith("override:"):
            return record, found
    return None, None


@pytest.mark.parametrize("seed", [1, 5])
def test_a_changed_override_shows_up_with_its_layer(seed, tmp_path, capsys):
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    tree = cli_tree(spec.prefix)
    host, record, found = next((h, *_winning_override_file(tree, h)) for h in spec.nodes()
                               if _winning_override_file(tree, h)[0] is not None)
    built = tmp_path / "oracle" / host
    oracle.build_root_with_rsync(spec, host, "autoinstall", built)
    layer_file = spec.override_dir(found.layer.partition(":")[2]) / found.source[1:]
    layer_file.write_bytes(layer_file.read_bytes() + b"changed\n")
    os.chmod(layer_file, 0o600)
    status, document = onesuite_json(capsys, "diff", "--root", spec.prefix, f"node:{host}",
                                     f"dir:{built}")
    assert status == 1
    changed = [d for d in document["differences"] if d["status"] == "changed"]
    # Every path backed by that file changed (an override's hard links share it).
    assert record.path in [d["path"] for d in changed]
    difference = next(d for d in changed if d["path"] == record.path)
    assert difference["fields"] == ["mode", "content"]
    assert difference["a"]["layer"] == found.layer and difference["a"]["mode"] == "0600"
    assert difference["b"]["layer"] == f"dir:{built}"


def test_diff_between_views_names_both_layers(onesis_root, capsys):
    status, document = onesuite_json(capsys, "diff", "--root", onesis_root, "node:n1",
                                     "node:n2")
    assert status == 1
    by_path = {d["path"]: d for d in document["differences"]}
    fstab = by_path["/etc/fstab"]
    assert fstab["fields"] == ["content"]
    assert (fstab["a"]["layer"], fstab["a"]["source"]) == ("image:img", "/etc/fstab.n1")
    assert (fstab["b"]["layer"], fstab["b"]["source"]) == ("override:n2", "/etc/fstab.compute")
    assert by_path["/from-n2"]["status"] == "added"
    assert document["counts"]["added"] == 1
    # The same node twice: equal, exit 0, and nothing hashed is needed to say so.
    status, document = onesuite_json(capsys, "diff", "--root", onesis_root, "n1", "node:n1")
    assert (status, document["equal"], document["differences"]) == (0, True, [])


def test_diff_lists_a_missing_directory_once(onesis_root, capsys):
    # The image has /opt; the group's root is the image plus "all": same /opt. A node with
    # LINKDIR /var/log has a symlink where the group has a directory with a file in it.
    status, document = onesuite_json(capsys, "diff", "--root", onesis_root, "group:compute",
                                     "node:n1", "/var")
    log = next(d for d in document["differences"] if d["path"] == "/var/log")
    assert log["fields"] == ["type"] and log["below"] == 1
    assert log["a"]["type"] == "dir" and log["b"]["layer"] == "onesis"
    assert not [d for d in document["differences"] if d["path"].startswith("/var/log/")]
    assert status == 1


# --------------------------------------------------------------------------------------------
# explain


def test_explain_a_class_linkback_lists_the_chain_tried(onesis_root, capsys):
    status, document = onesuite_json(capsys, "explain", "--root", onesis_root, "n3",
                                     "/etc/fstab")
    assert status == 0
    (trail,) = document["linkbacks"]
    assert trail["rule"].endswith("sysimage.conf:7") and trail["target_kind"] == "CLASS"
    assert trail["class"] == "compute.gpu"
    assert trail["class_chain"] == ["compute.gpu", "compute"]
    assert [(t["kind"], t["name"], t["found"]) for t in trail["tried"]] == [
        ("variant", "fstab.compute.gpu", False), ("variant", "fstab.compute", True),
        ("default", "fstab.default", True), ("own", "fstab", True)]
    assert trail["chosen"] == "fstab.compute" and trail["result"] == "linked"
    assert document["source"] == "/etc/fstab.compute"
    assert document["winner"]["layer"] == "image:img"
    assert document["winner"]["line"] == trail["rule"]


def test_explain_a_variant_from_a_host_override(onesis_root, capsys):
    _, document = onesuite_json(capsys, "explain", "--root", onesis_root, "n2", "/etc/fstab")
    winner = document["winner"]
    assert (winner["layer"], winner["source"], winner["rule"]) == (
        "override:n2", "/etc/fstab.compute", "last-wins")
    having = [(f["layer"], f["step"], f["wins"]) for f in document["layers"] if f["type"]]
    assert having == [("image:img", "laid", False), ("override:n2", "replaces", True)]
    assert document["entry"]["origin"].startswith("override:n2 /etc/fstab.compute (LINKBACK ")


def test_explain_node_over_class_and_dangling_linkbacks(onesis_root, capsys):
    _, document = onesuite_json(capsys, "explain", "--root", onesis_root, "n1", "/etc/fstab")
    (trail,) = document["linkbacks"]
    assert trail["target_kind"] == "NODE" and trail["rule"].endswith("sysimage.conf:8")
    assert trail["tried"][0] == {"kind": "variant", "name": "fstab.n1", "found": True,
                                 "source": "/etc/fstab.n1"}
    _, document = onesuite_json(capsys, "explain", "--root", onesis_root, "n3",
                                "/etc/mom.conf")
    (trail,) = document["linkbacks"]
    assert trail["target_kind"] == "PROPERTY" and trail["properties"] == ["ib"]
    assert trail["result"] == "dangling" and trail["chosen"] is None
    assert not any(t["found"] for t in trail["tried"])
    assert document["entry"]["type"] == "symlink"
    assert document["winner"]["layer"] == "onesis"


def test_explain_a_service_hidden_path(onesis_root, capsys):
    status, document = onesuite_json(capsys, "explain", "--root", onesis_root, "n1",
                                     "/etc/init.d/smartd")
    assert status == 1 and document["exists"] is False
    assert document["onesis"] == {"kind": "SERVICE", "services": ["smartd"]}
    assert [f["layer"] for f in document["layers"] if f["type"]] == ["image:img"]


def test_explain_names_a_service_only_where_its_rule_hides_the_path(tmp_path, capsys):
    # smartd is disabled on n1. /var/log is a LINKDIR (a link into /ram on the node), so
    # /var/log/smartd.log is missing because of that link, not because of smartd; a file
    # inside a start-script path that is a directory is missing because smartd hides it.
    root = onesis_site(tmp_path / "site")
    image = root / "var/lib/systemimager/images/img"
    (image / "var/log/smartd.log").write_text("log\n")
    (image / "etc/rc.d/init.d/smartd").mkdir(parents=True)
    (image / "etc/rc.d/init.d/smartd/helper").write_text("#!/bin/sh\n")
    status, document = onesuite_json(capsys, "explain", "--root", root, "n1",
                                     "/var/log/smartd.log")
    assert status == 1 and document["exists"] is False
    assert document["onesis"] is None
    assert document["near"]["parent"] == "/var/log"
    status, document = onesuite_json(capsys, "explain", "--root", root, "n1",
                                     "/etc/rc.d/init.d/smartd/helper")
    assert status == 1 and document["onesis"] == {"kind": "SERVICE", "services": ["smartd"]}
    status, document = onesuite_json(capsys, "explain", "--root", root, "n3",
                                     "/etc/rc.d/init.d/smartd/helper")
    assert status == 0 and document["onesis"] is None  # enabled on n3 (compute.gpu)


RULE_OF_CONFLICT = {  # sequential orders: the upper layer is applied after the lower one
    "file_over_nonempty_dir": "non-empty-directory-kept",
    "symlink_over_dir": "non-empty-directory-kept",
    "file_over_empty_dir": "replaces-empty-directory",
    "dir_over_file": "directory-replaces-non-directory",
    "dir_over_symlink": "directory-replaces-non-directory",
    "symlink_over_file": "last-wins",
    "fifo_over_file": "last-wins",
}


@pytest.mark.parametrize("seed", SEEDS)
def test_explain_names_the_rule_of_each_type_conflict(seed, tmp_path):
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    tree = cli_tree(spec.prefix)
    seen = set()
    for conflict in spec.conflicts:
        for host in spec.nodes():
            result = explain(tree, resolve_target(tree, f"node:{host}"), conflict.path)
            having = {layer_root(tree, fact.layer) for fact in result.layers if fact.meta}
            if having == {conflict.lower, conflict.upper}:
                assert result.winner is not None
                assert result.winner["rule"] == RULE_OF_CONFLICT[conflict.kind], (
                    conflict, host, result.winner)
                seen.add(conflict.kind)
    assert len(seen) >= 3


@pytest.mark.parametrize("order", oracle.ORDERS)
def test_the_merge_trace_names_the_entry_the_merge_built(order, tmp_path):
    # explain's per-layer account is Resolver.trace: the same code with a recorder. For
    # every entry of every node's merged root, its winner is the entry the merge built.
    spec = sitegen.generate_random_site(tmp_path / "site", 2)
    tree = cli_tree(spec.prefix, "--override-order", order)
    resolver, checked, rules = tree.resolver, 0, set()
    for entry in tree.entries["nodes"].values():
        root = resolver.root(entry.contribution)
        trace = resolver.trace("", entry.contribution)
        assert trace.winner is not None and trace.winner[1] == root.layer
        for parent, child in resolver.walk(root):
            trace = resolver.trace(parent.child_path(child.name), parent.contribution)
            assert trace.winner is not None and trace.winner[1] == child.layer, (
                parent.child_path(child.name), trace.steps)
            rules.add(trace.rule)
            checked += 1
    assert checked > 100 and {"only-layer", "directory-merge"} <= rules


def layer_root(tree, label):
    kind, _, name = label.partition(":")
    return next(layer.path for layer in tree.store.layers
                if layer.kind == kind and layer.name == name)


# --------------------------------------------------------------------------------------------
# Bad input and output conventions


def test_unknown_targets_list_close_matches(onesis_root):
    done = run_onesuite("preview", "--root", onesis_root, "n4", check=False)
    assert done.returncode == 2
    assert "no node, group or image named 'n4'" in done.stderr
    assert "close matches: node:n1" in done.stderr
    done = run_onesuite("diff", "--root", onesis_root, "group:compte", "n1", check=False)
    assert done.returncode == 2 and "group:compute" in done.stderr


def test_a_missing_path_says_which_layers_have_something_near(onesis_root):
    done = run_onesuite("preview", "--root", onesis_root, "n1", "/etc/fstb", check=False)
    assert done.returncode == 2
    assert "/etc/fstb does not exist in node:n1's root" in done.stderr
    assert "nearest existing parent /etc (in image:img)" in done.stderr
    assert "fstab (image:img)" in done.stderr
    done = run_onesuite("explain", "--root", onesis_root, "n1", "/etc/fstb", "--json",
                        check=False)
    assert done.returncode == 1
    near = json.loads(done.stdout)["near"]
    assert near["parent"] == "/etc" and "fstab" in [s["name"] for s in near["similar"]]


def test_plain_output_when_piped_and_colour_on_a_terminal(onesis_root, capsys, monkeypatch):
    done = run_onesuite("preview", "--root", onesis_root, "n1", "/etc", "--depth", "1")
    assert "\033[" not in done.stdout and "\033[" not in done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].startswith("node:n1  image img  groups compute")
    assert any("/etc/fstab" in row and "image:img /etc/fstab.n1" in row for row in rows)
    assert not any(row.endswith("/etc/profile.d/image.sh") for row in rows)  # depth 1
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    capsys.readouterr()
    main(["preview", "--root", str(onesis_root), "n1", "/etc", "--depth", "0"])
    assert "\033[" in capsys.readouterr().out
    monkeypatch.setenv("NO_COLOR", "1")
    main(["preview", "--root", str(onesis_root), "n1", "/etc", "--depth", "0"])
    assert "\033[" not in capsys.readouterr().out


def test_progress_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    piped, terminal = io.StringIO(), Terminal()
    for stream in (piped, terminal):
        progress = Progress("diff", stream=stream, transient=True)
        progress._next = 0  # as if the walk had been running for a while
        progress.tick(256)
        progress.close()
    assert piped.getvalue() == ""
    assert "diff: 256 entries" in terminal.getvalue()


def test_help_has_examples():
    for command in ("preview", "explain", "diff"):
        done = run_onesuite(command, "--help")
        assert "examples:" in done.stdout and "exit status:" in done.stdout
