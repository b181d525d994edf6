"""A Warewulf 4 site read, stacked and served: Warewulf's profile and overlay precedence
(docs/warewulf.md), its templates rendered into the nodes' roots, and the mount, preview and
explain agreeing on every entry of every node."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import needs_root_fuse, run_onesuite
from test_inspect_mount import (
    assert_explain_names_the_mounts_winner,
    assert_preview_matches_mount,
)
from warewulftools import NODES_CONF, make_warewulf_site, write, write_config

from onesuite_fs.core.errors import ConfigError
from onesuite_fs.core.limits import Limits
from onesuite_fs.sources.warewulf import clean_list, load_warewulf

HOSTS = ("n1", "n2", "n3")


@pytest.fixture
def ww(tmp_path: Path) -> tuple[Path, Path]:
    """(site root, onesuite.toml naming it and a render cache in tmp_path)."""
    root = make_warewulf_site(tmp_path / "ww")
    return root, write_config(root, tmp_path / "cache")


def test_profiles_and_overlays_in_warewulfs_order(ww):
    site = load_warewulf(ww[0], Limits())
    n2 = site.nodes["n2"]
    # gpu's own profiles first (getProfilesProfiles), then gpu; '~ifcfg' on the node
    # removes the profile's ifcfg (cleanList); the node's overlays come last (append).
    assert n2.profiles == ("default", "gpu")
    assert [(u.context, u.name, u.source) for u in n2.overlays] == [
        ("system", "wwinit", "profile default"), ("system", "hostname", "profile default"),
        ("system", "gpu", "profile gpu"), ("system", "site-motd", "node"),
        ("runtime", "hosts", "profile default"),
        ("runtime", "ssh.authorized_keys", "profile default")]
    # Network devices merge field by field: the profile's netmask, the node's address.
    assert n2.fields["network devices"]["default"] == {
        "netmask": "255.255.255.0", "gateway": "10.0.0.1", "device": "eth0",
        "ipaddr": "10.0.0.12"}
    assert n2.fields["tags"] == {"gpu": "a100"}
    assert site.overlays["site-motd"] == ww[0] / "var/lib/warewulf/overlays/site-motd/rootfs"


def test_clean_list_is_warewulfs():
    assert clean_list(["a", "b", "a", "~b", "c"]) == ["a", "a", "c"]


def test_site_overlay_wins_over_distribution_one(ww):
    root = ww[0]
    write(root / "var/lib/warewulf/overlays/hostname/rootfs/etc/hostname.ww", "site {{.Id}}\n")
    site = load_warewulf(root, Limits())
    assert site.overlays["hostname"] == root / "var/lib/warewulf/overlays/hostname/rootfs"


@pytest.mark.parametrize("change, message, line", [
    (("n1:\n", "n1: &x\n", "  n2:\n", "  n2: *x\n"), "aliases", None),
    (("      - hostname\n", "      - nosuch\n"), "overlay 'nosuch'", 4),
    (("    image name: rocky9\n    system", "    image name: gone\n    system"),
     "image 'gone'", None),
    (("      - wwinit\n", "      wwinit\n"), "must be a list", None),
    (("        ipaddr: 10.0.0.11", "        ipaddr: 10.0.0.999"), "not an IP address", 30),
])
def test_bad_nodes_conf_is_refused_with_its_line(ww, change, message, line):
    root = ww[0]
    text = NODES_CONF
    for old, new in zip(change[::2], change[1::2], strict=True):
        assert old in text
        text = text.replace(old, new, 1)
    (root / "etc/warewulf/nodes.conf").write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_warewulf(root, Limits())
    assert message in str(raised.value)
    assert raised.value.file == str(root / "etc/warewulf/nodes.conf")
    if line is not None:
        assert raised.value.line == line
    done = run_onesuite("nodes", "--config", ww[1], check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "nodes.conf" in done.stderr


def test_node_limit_applies(ww):
    with pytest.raises(ConfigError, match="max_nodes"):
        load_warewulf(ww[0], Limits(max_nodes=2))


def test_overlay_symlinked_out_of_the_site_is_refused(ww, tmp_path):
    root = ww[0]
    outside = tmp_path / "elsewhere" / "rootfs"
    (outside / "etc").mkdir(parents=True)
    target = root / "usr/share/warewulf/overlays/hostname"
    os.rename(target, tmp_path / "moved")
    target.symlink_to(outside.parent)
    with pytest.raises(ConfigError, match="outside --warewulf-root"):
        load_warewulf(root, Limits())


def test_preview_shows_rendered_templates_and_their_overlay(ww):
    done = run_onesuite("preview", "--config", ww[1], "n2", "/etc", "--json")
    import json
    entries = {e["path"]: e for e in json.loads(done.stdout)["entries"]}
    assert "/etc/motd.ww" not in entries and "/etc/gpu.conf.ww" not in entries
    assert entries["/etc/hostname"]["layer"].startswith("rendered:hostname@")
    assert entries["/etc/issue"]["layer"] == "overlay:site-motd"
    assert entries["/etc/os-release"]["layer"] == "image:rocky9"
    # site-motd's template replaces gpu's output: Warewulf keeps the old one as .wwbackup;
    # gpu's own nobackup kept wwinit's plain motd from being backed up.
    assert entries["/etc/motd.wwbackup"]["layer"].startswith("rendered:site-motd@")
    explained = run_onesuite("explain", "--config", ww[1], "n2", "/etc/motd").stdout
    assert "system overlay (node)" in explained and "profile gpu" in explained


@needs_root_fuse()
@pytest.mark.mount
def test_mounted_warewulf_nodes_equal_preview_and_explain(ww, tmp_path, mount_site, capsys):
    root, config = ww
    mount = mount_site(tmp_path / "unused-si-root", "--config", str(config))
    n1, n2, n3 = (mount.node(h) for h in HOSTS)
    assert (n1 / "etc/hostname").read_text() == "n1\n"
    assert (n2 / "etc/gpu.conf").read_text() == "model=a100\n"
    assert (n2 / "etc/motd").read_text() == "site motd for n2\n"
    assert (n2 / "etc/motd.wwbackup").read_text() == "GPU node n2 (a100)\n"
    assert (n1 / "etc/motd").read_text() == "plain motd from wwinit\n"
    assert (n3 / "etc/motd").read_text() == "site motd for n3\n"
    # ifcfg's file(): one output per network device; n2 removed ifcfg with ~ifcfg.
    ifcfg = n1 / "etc/sysconfig/network-scripts"
    assert sorted(os.listdir(ifcfg)) == ["ifcfg-default.conf"]
    assert "IPADDR=10.0.0.11\nNETMASK=255.255.255.0\nONBOOT=true" in \
        (ifcfg / "ifcfg-default.conf").read_text()
    assert "ONBOOT=false" in (n3 / "etc/sysconfig/network-scripts/ifcfg-default.conf") \
        .read_text()
    assert not (n2 / "etc/sysconfig").exists()
    assert (n1 / "root/.ssh/authorized_keys").read_text() == \
        "ssh-ed25519 AAAAtest admin@server\n"
    hosts = (n3 / "etc/hosts").read_text()
    assert "10.0.0.12 n2 n2-default n2-eth0\n10.1.0.12  n2-ib n2-ib0\n" in hosts
    origin = os.getxattr(n2 / "etc/issue", "user.onesuite.origin").decode()
    assert origin == "overlay:site-motd /etc/issue"
    options = ("--config", str(config))
    assert_preview_matches_mount(capsys, tmp_path, options,
                                 [(f"node:{h}", mount.node(h)) for h in HOSTS])
    assert_explain_names_the_mounts_winner(tmp_path, options, mount, HOSTS)


def test_render_cache_is_closed_to_local_users(ww, tmp_path):
    run_onesuite("nodes", "--config", ww[1])
    cache = tmp_path / "cache"
    assert (os.stat(cache).st_mode & 0o077) == 0
    layers = sorted(p for p in cache.iterdir() if not p.name.startswith("."))
    # Equal output is one directory: every node's authorized_keys and hosts are shared.
    assert len(layers) == len({p.name for p in layers})
    again = sorted(cache.iterdir())
    run_onesuite("nodes", "--config", ww[1])
    assert sorted(cache.iterdir()) == again


@pytest.mark.parametrize("template, message", [
    ("{{ file \"../../../../tmp/escaped\" }}x", "leaves the overlay"),
    ("{{ file \"hostname\" }}a{{ file \"hostname/below\" }}b", "written below"),
    ("line one\n{{ .Nope }}\n", "can't evaluate field Nope"),
    ("{{ Include \"../../../../../etc/shadow\" }}", "'..'"),
])
def test_hostile_template_stops_the_load_with_its_file_and_line(ww, template, message):
    root, config = ww
    bad = root / "usr/share/warewulf/overlays/hostname/rootfs/etc/hostname.ww"
    bad.write_text(template)
    done = run_onesuite("preview", "--config", config, "n1", "/etc", check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert message in done.stderr and f"{bad}:" in done.stderr
    assert not (root.parent / "tmp/escaped").exists()


@needs_root_fuse()
@pytest.mark.mount
def test_the_bundled_example_serves_its_warewulf_nodes(example_site, tmp_path, mount_site,
                                                       capsys):
    config = tmp_path / "cache.toml"
    config.write_text(f'[warewulf]\nrender_cache = "{tmp_path / "cache"}"\n')
    options = ("--warewulf-root", str(example_site), "--config", str(config))
    mount = mount_site(tmp_path, *options, name="mnt-ww")
    assert sorted(os.listdir(mount.mountpoint / "nodes")) == ["ww001", "ww002"]
    ww002 = mount.node("ww002")
    assert (ww002 / "etc/hostname").read_text() == "ww002\n"
    assert (ww002 / "etc/issue").read_text() == \
        "Warewulf node ww002 (rocky9, profiles gpu)\n"
    assert "DEVICE=ib0\nNAME=ib\n" in \
        (ww002 / "etc/sysconfig/network-scripts/ifcfg-ib").read_text()
    assert "10.3.0.2 ww002-ib\n" in (mount.node("ww001") / "etc/hosts").read_text()
    assert not (mount.node("ww001") / "etc/modprobe.d/nvidia.conf").exists()
    assert_preview_matches_mount(capsys, tmp_path, options,
                                 [(f"node:{h}", mount.node(h)) for h in ("ww001", "ww002")])


@needs_root_fuse()
@pytest.mark.mount
def test_reload_renders_again_what_nodes_conf_changed(ww, tmp_path, mount_site):
    root, config = ww
    mount = mount_site(tmp_path / "unused", "--config", str(config), "--no-watch")
    n1, n3 = mount.node("n1"), mount.node("n3")
    hostname_ino = os.lstat(n3 / "etc/hostname").st_ino
    assert "IPADDR=10.0.0.11\n" in \
        (n1 / "etc/sysconfig/network-scripts/ifcfg-default.conf").read_text()
    nodes_conf = root / "etc/warewulf/nodes.conf"
    nodes_conf.write_text(nodes_conf.read_text().replace("ipaddr: 10.0.0.11",
                                                         "ipaddr: 10.0.0.111"))
    import json
    report = json.loads(run_onesuite("reload", mount.mountpoint, "--json").stdout)
    assert report["last_reload"]["error"] is None
    assert "IPADDR=10.0.0.111\n" in \
        (n1 / "etc/sysconfig/network-scripts/ifcfg-default.conf").read_text()
    # Every node's /etc/hosts lists n1's address: all changed; n3's hostname did not.
    assert "10.0.0.111 n1 n1-default" in (n3 / "etc/hosts").read_text()
    assert os.lstat(n3 / "etc/hostname").st_ino == hostname_ino
    # A template broken on the server keeps the old generation serving.
    (root / "usr/share/warewulf/overlays/hostname/rootfs/etc/hostname.ww").write_text(
        "{{ .Broken }}")
    report = json.loads(run_onesuite("reload", mount.mountpoint, "--json",
                                     check=False).stdout)
    assert "can't evaluate field Broken" in report["last_reload"]["error"]
    assert (n3 / "etc/hostname").read_text() == "n3\n"


def test_diff_and_export_work_on_warewulf_nodes(ww, tmp_path):
    import tarfile
    root, config = ww
    done = run_onesuite("diff", "--config", config, "node:n1", "node:n3", "/etc", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "/etc/hostname" in done.stdout and "/etc/motd" in done.stdout
    out = tmp_path / "n2.tar"
    run_onesuite("export", "--config", config, "n2", "--format", "tar", out, "--no-progress")
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert tar.extractfile("./etc/gpu.conf" if "./etc/gpu.conf" in names
                               else "etc/gpu.conf").read() == b"model=a100\n"
    assert not any(name.endswith(".ww") for name in names)


def test_override_order_is_refused_for_a_warewulf_site(ww):
    done = run_onesuite("nodes", "--config", ww[1], "--override-order", "pushoverrides",
                        check=False)
    assert done.returncode == 2 and "Warewulf site is layered as Warewulf does" in done.stderr


def test_hostile_files_and_yaml(ww, tmp_path):
    root, config = ww
    conf = root / "etc/warewulf/nodes.conf"
    # Nesting that would exhaust the YAML composer's recursion, refused before composing.
    conf.write_text("nodes:\n  n1:\n    tags:\n      x: " + "[" * 200 + "]" * 200 + "\n")
    done = run_onesuite("nodes", "--config", config, check=False)
    assert done.returncode == 2 and "nested deeper" in done.stderr
    assert "Traceback" not in done.stderr
    conf.write_text(NODES_CONF)
    # A fifo named like a template is refused, never opened (it would block the load).
    fifo = root / "usr/share/warewulf/overlays/hostname/rootfs/etc/block.ww"
    os.mkfifo(fifo)
    done = run_onesuite("nodes", "--config", config, check=False, timeout=30)
    assert done.returncode != 0 and "not a regular file" in done.stderr
    fifo.unlink()
    # A render cache someone else could write into, or a symlink, is refused.
    cache = tmp_path / "cache"
    run_onesuite("nodes", "--config", config)
    os.chmod(cache, 0o777)
    done = run_onesuite("nodes", "--config", config, check=False)
    assert done.returncode == 2 and "mode 0700" in done.stderr
    os.chmod(cache, 0o700)
    os.rename(cache, tmp_path / "real-cache")
    cache.symlink_to(tmp_path / "real-cache")
    done = run_onesuite("nodes", "--config", config, check=False)
    assert done.returncode == 2 and "not a symlink" in done.stderr


def test_resources_keep_yaml_types_quoted_scalars_stay_text(ww):
    from onesuite_fs.sources.warewulf_build import node_struct
    root = ww[0]
    conf = root / "etc/warewulf/nodes.conf"
    conf.write_text(NODES_CONF.replace("  n3:\n", "  n3:\n    resources:\n      users:\n"
                                       "        - {uid: 1001, name: '1002', admin: true}\n"))
    site = load_warewulf(root, Limits())
    users = node_struct(site.nodes["n3"]).fields["Resources"]["users"]
    assert users == [{"uid": 1001, "name": "1002", "admin": True}]


def test_nfs_exports_go_to_each_nodes_primary_address(ww):
    from onesuite_fs.cli import build_parser
    from onesuite_fs.cli.common import load
    from onesuite_fs.nfs.addresses import node_addresses
    args = build_parser().parse_args(["nodes", "--config", str(ww[1])])
    _, site = load(args)
    book = node_addresses(site)
    assert {n: a.address for n, a in book.found.items()} == {
        "n1": "10.0.0.11", "n2": "10.0.0.12", "n3": "10.0.0.13"}
    assert book.found["n2"].source.endswith("nodes.conf:31")
    mnt = ww[0].parent / "mnt"
    kernel = run_onesuite("exports", "--config", ww[1], "--format", "exports", mnt).stdout
    lines = sorted(line for line in kernel.splitlines() if not line.startswith("#"))
    assert [line.split(" ")[0] for line in lines] == [f"{mnt}/nodes/{h}" for h in HOSTS]
    assert lines[1].split(" ")[1].startswith("10.0.0.12(ro,")


def test_absolute_file_output_makes_its_directories_like_the_templates(ww):
    import json
    root, config = ww
    etc = root / "usr/share/warewulf/overlays/hostname/rootfs/etc"
    (etc / "hostname.ww").write_text('{{ .Id }}\n{{ file "/opt/site/marker" }}for {{ .Id }}\n')
    os.chmod(etc, 0o750)
    done = run_onesuite("preview", "--config", config, "n1", "/opt", "--json")
    entries = {e["path"]: e for e in json.loads(done.stdout)["entries"]}
    assert entries["/opt/site/marker"]["size"] == len("for n1\n")
    assert entries["/opt"]["mode"] == entries["/opt/site"]["mode"] == "0750"
    # Text before the first file() is dropped: no /etc/hostname from this template.
    done = run_onesuite("preview", "--config", config, "n1", "/etc/hostname", "--json")
    assert json.loads(done.stdout)["entries"][0]["layer"] == "image:rocky9"
