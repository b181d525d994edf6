"""preview and explain against real mounts: for random sites and all three override orders,
`onesuite preview --json` of every node equals a walk of the mounted `nodes/<host>/`, entry
for entry, and `explain` names the winner the mount's origin attribute names."""

from __future__ import annotations

import json
import os

import oracle
import pytest
import sitegen
from conftest import needs_root_fuse, run_onesuite
from inspecttools import cli_tree, mounted_entries, onesuite_json, preview_entries
from sitetools import onesis_site
from whiteouttools import add_random_whiteouts

from onesuite_fs.inspect.explain import explain
from onesuite_fs.inspect.targets import resolve_target
from onesuite_fs.inspect.walk import TreeView

pytestmark = [needs_root_fuse(), pytest.mark.mount]

SEEDS = range(4)


def assert_preview_matches_mount(capsys, root, options, views, unmade=False):
    """`views`: (target, its directory in the mount) pairs. `unmade`: preview runs before
    the mount has made the nodes' persistent paths (their directories' sizes are the store's
    file system's, known once made, so not compared)."""
    for target, mounted_root in views:
        status, document = onesuite_json(capsys, "preview", "--root", root, *options, target)
        assert status == 0
        mounted = mounted_entries(mounted_root)
        previewed = preview_entries(document)
        if unmade:
            for path, entry in mounted.items():
                if entry["type"] == "dir" and entry["origin"].startswith("state:") \
                        and path in previewed:
                    assert previewed[path]["size"] == 0, (target, path)
                    previewed[path]["size"] = entry["size"]
        layers = {e["path"]: e["layer"] for e in document["entries"]}
        assert previewed.keys() == mounted.keys(), (
            target, sorted(previewed.keys() ^ mounted.keys())[:20])
        for path, entry in mounted.items():
            if entry["type"] == "file" and os.lstat(mounted_root / path[1:]).st_nlink > 1:
                # One inode for all links of a file: its origin names the link the Tree met
                # first, which depends on the order of lookups. Compare the layer only (an
                # origin text begins with it).
                for side in (entry, previewed[path]):
                    if side["origin"].startswith(f"{layers[path]} /"):
                        side["origin"] = layers[path]
        wrong = [(path, previewed[path], mounted[path]) for path in mounted
                 if previewed[path] != mounted[path]]
        assert not wrong, f"{target}: {wrong[:5]}"


def assert_explain_names_the_mounts_winner(root, options, mount, hosts):
    tree = cli_tree(root, *options)
    for host in hosts:
        target = resolve_target(tree, f"node:{host}")
        view = TreeView(tree, target)
        for path, entry in mounted_entries(mount.node(host)).items():
            result = explain(tree, target, path)
            # The provenance the mount's origin text renders (the same value: same text).
            origin = view.stat(path).provenance
            assert result.winner is not None, (host, path)
            winner = (result.winner["layer"], result.winner["source"])
            expected = (origin.layer, origin.source)
            if entry["type"] == "file" and os.lstat(mount.node(host) / path[1:]).st_nlink > 1:
                # A hard-linked file is one inode in the Tree: its origin names whichever of
                # its links was looked up first, so only the layer is comparable.
                assert entry["origin"].startswith(f"{origin.layer} /"), (host, path)
                winner, expected = winner[:1], expected[:1]
            else:
                assert entry["origin"] == origin.xattr_text(), (host, path)
            assert winner == expected, (host, path, result.winner, entry["origin"])


@pytest.mark.parametrize("seed", SEEDS)
def test_preview_equals_the_mount_and_explain_names_its_winner(seed, tmp_path, mount_site,
                                                               capsys):
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    for order in oracle.ORDERS:
        options = ("--override-order", order)
        mount = mount_site(spec.prefix, *options, name=f"mnt-{order}")
        views = [(f"node:{host}", mount.node(host)) for host in spec.nodes()]
        # Groups and images are views too.
        views += [(f"group:{g.name}", mount.mountpoint / "groups" / g.name)
                  for g in spec.groups if g.image]
        views += [(f"image:{name}", mount.mountpoint / "images" / name) for name in spec.images]
        assert_preview_matches_mount(capsys, spec.prefix, options, views)
        assert_explain_names_the_mounts_winner(spec.prefix, options, mount, spec.nodes())
        mount.stop()


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_with_whiteouts_preview_equals_the_mount_and_explain_names_its_winner(
        seed, tmp_path, mount_site, capsys):
    """--whiteouts: random lists beside the random overrides hide files, links and
    subtrees, some laid again above; the mount, preview and explain still agree entry for
    entry in every order, and every path a list hides is absent from the mount."""
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    lists = add_random_whiteouts(spec.prefix / sitegen.OVERRIDES_DIR,
                                 list(spec.images.values()), seed)
    assert lists
    for order in oracle.ORDERS:
        options = ("--override-order", order, "--whiteouts")
        mount = mount_site(spec.prefix, *options, name=f"mnt-{order}")
        views = [(f"node:{host}", mount.node(host)) for host in spec.nodes()]
        views += [(f"group:{g.name}", mount.mountpoint / "groups" / g.name)
                  for g in spec.groups if g.image]
        assert_preview_matches_mount(capsys, spec.prefix, options, views)
        assert_explain_names_the_mounts_winner(spec.prefix, options, mount, spec.nodes())
        hidden = 0
        for target, mounted_root in views:
            _, document = onesuite_json(capsys, "preview", "--root", spec.prefix, *options,
                                        target)
            for gone in document["hidden"]:
                hidden += 1
                assert not os.path.lexists(mounted_root / gone["path"][1:]), (target, gone)
        assert hidden, order  # the lists hid something in every order
        mount.stop()


# Every option that changes what a root holds (the override orders are covered above, with
# random sites): both link policies, no oneSIS at all, one sysimage.conf for every node.
ROOT_OPTIONS = {
    "ram": (),
    "persistent": ("--link-policy", "persistent"),
    "persistent-updateclient": ("--link-policy", "persistent", "--override-order",
                                "updateclient"),
    "no-onesis": ("--no-onesis",),
    "onesis-config": ("--onesis-config", "{root}/var/lib/systemimager/images/img/etc/"
                                         "sysimage.conf"),
}


@pytest.mark.parametrize("variant", ROOT_OPTIONS)
def test_preview_and_explain_with_onesis_rules(variant, tmp_path, mount_site, capsys):
    root = onesis_site(tmp_path / "site")
    conf = root / "var/lib/systemimager/images/img/etc/sysimage.conf"
    # A persistent directory no layer has, and one copied with -d from a layer.
    conf.write_text(conf.read_text() + "RAMDIR /var/lib/state\nLINKDIR /etc/profile.d -d\n")
    options = tuple(o.format(root=root) for o in ROOT_OPTIONS[variant])
    if "persistent" in variant:
        options += ("--persistent-dir", str(tmp_path / "state"))
    mount = mount_site(root, *options)
    hosts = ["n1", "n2", "n3", "login1"]
    views = [(host, mount.node(host)) for host in hosts]
    if "persistent" in variant:
        # Before any node has used its persistent paths: preview shows what the mount will
        # make of them (all but a new directory's size, which the store's file system
        # decides), then the same once the mount has made them.
        assert_preview_matches_mount(capsys, root, options, views, unmade=True)
    assert_preview_matches_mount(capsys, root, options, views)
    assert_explain_names_the_mounts_winner(root, options, mount, hosts)


def test_preview_through_the_real_cli(tmp_path, mount_site):
    spec = sitegen.generate_random_site(tmp_path / "site", 7)
    host = spec.nodes()[0]
    mount = mount_site(spec.prefix)

    done = run_onesuite("preview", "--root", spec.prefix, host, "/etc", "--json")
    document = json.loads(done.stdout)
    mounted = mounted_entries(mount.node(host))
    assert document["path"] == "/etc" and document["entries"][0]["path"] == "/etc"
    assert preview_entries(document) == {
        path: entry for path, entry in mounted.items() if path.startswith("/etc")}
    assert "entries," not in done.stderr  # no progress line when stderr is not a terminal


@pytest.mark.parametrize("fidelity", ["intent", "install"])
def test_preview_flags_what_an_install_keeps_and_equals_the_mount(fidelity, tmp_path,
                                                                   mount_site, capsys):
    """Sites where an override's file has the size and mtime of the file below it: preview
    --json and explain flag each such entry in both fidelities, and with --fidelity install
    preview still equals the mount (which then shows the lower layer's bytes)."""
    spec = sitegen.generate_random_site(tmp_path / "site", 1)
    options = ("--fidelity", fidelity)
    mount = mount_site(spec.prefix, *options)
    hosts = spec.nodes()
    assert_preview_matches_mount(capsys, spec.prefix, options,
                                 [(f"node:{h}", mount.node(h)) for h in hosts])
    assert_explain_names_the_mounts_winner(spec.prefix, options, mount, hosts)
    flagged = written = 0
    for host in hosts:
        status, document = onesuite_json(capsys, "preview", "--root", spec.prefix, *options,
                                         host, "/etc")
        # What the install writes itself is in the roots compared (install only).
        written += sum(e["layer"].startswith("generated:") for e in document["entries"])
        for entry in document["entries"]:
            keeps = entry["install_keeps"]
            if keeps is None:
                continue
            flagged += 1
            assert entry["path"] in spec.quick_checks, (host, entry)
            assert keeps["layer"].startswith("image:") or keeps["layer"].startswith("override:")
            assert "same size and mtime" in keeps["why"]
            shown = (mount.node(host) / entry["path"][1:]).read_bytes()
            kept_layer = keeps["layer"]
            assert (entry["layer"] == kept_layer) == (fidelity == "install"), entry
            kind, _, name = kept_layer.partition(":")
            kept_file = (spec.images[name] if kind == "image" else spec.override_dir(name)) \
                / entry["path"][1:]
            assert (shown == kept_file.read_bytes()) == (fidelity == "install"), entry
    assert flagged >= len(hosts)  # every image's pair file, at least, on every node
    assert (written >= len(hosts)) == (fidelity == "install"), written
    done = run_onesuite("explain", "--root", spec.prefix, *options, hosts[0], "/etc/qc-chain")
    assert "note: an install keeps image:" in done.stdout, done.stdout
