"""--whiteouts (core/whiteouts.py, docs/semantics.md "Whiteouts"): an override's list file
hides paths of the layers below it for its nodes. Off by default, where nothing changes.

The pure tests read the View the CLI builds; the mount tests read a real FUSE mount: a hidden
name is neither listed nor found by lookup, a list added while mounted hides after the
reload, and a handle a node kept from before that reload opens nothing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import oracle
import pytest
import sitegen
from conftest import needs_root_fuse, run_onesuite
from fhandle import drop_caches, name_to_handle, open_by_handle
from inspecttools import cli_tree, onesuite_json
from whiteouttools import add_random_whiteouts, listed, remove_below

from onesuite_fs.core import whiteouts
from onesuite_fs.core.errors import ConfigError
from onesuite_fs.inspect.targets import resolve_target
from onesuite_fs.inspect.walk import TreeView

OVERRIDES = "var/lib/systemimager/overrides"
OURS = ("user.onesuite.", "trusted.onesuite.")  # provenance the mount adds


def write_list(site: Path, override: str, *lines: str) -> Path:
    path = site / OVERRIDES / f"{override}{whiteouts.SUFFIX}"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def origins(site: Path, target: str, paths: list[str], *options: str) -> dict[str, str | None]:
    tree = cli_tree(site, *options)
    view = TreeView(tree, resolve_target(tree, target))
    found = {}
    for path in paths:
        record = view.stat(path)
        found[path] = record.origin if record is not None else None
    return found


def every_path(site: Path, target: str, *options: str) -> set[str]:
    tree = cli_tree(site, *options)
    view = TreeView(tree, resolve_target(tree, target))
    found, pending = set(), [view.stat("/")]
    while pending:
        record = pending.pop()
        assert record is not None
        found.add(record.path)
        if record.is_dir:
            pending.extend(view.children(record))
    return found


# ----- the list file -------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "problem"), [
    ("etc/motd", "is not absolute"),
    ("/", "root directory"),
    ("/etc/../etc/shadow", "'..'"),
    ("/etc/./motd", "'.'"),
    ("/etc//motd", "empty"),
    ("../../etc/shadow", "is not absolute"),
    ("/etc/mo\x01td", "control character"),
    ("/" + "a" * 256, "longer than 255 bytes"),
    ("/" + "/".join(["a" * 200] * 21), "longer than 4096 bytes"),
])
def test_a_bad_line_is_refused_with_its_file_and_line(line, problem, tmp_path):
    listed = tmp_path / "node001.whiteouts"
    listed.write_text(f"# comment\n\n/etc/fine\n{line}\n")
    with pytest.raises(ConfigError) as refused:
        whiteouts.read(tmp_path / "node001")
    assert refused.value.file == str(listed) and refused.value.line == 4
    assert problem in refused.value.message and refused.value.hint


def test_huge_or_binary_or_linked_lists_are_refused(tmp_path):
    layer = tmp_path / "node001"
    listed = tmp_path / "node001.whiteouts"
    listed.write_text("/etc/x\n" * (whiteouts.MAX_LINES + 1))
    with pytest.raises(ConfigError, match="more than 100,000 lines") as refused:
        whiteouts.read(layer)
    assert refused.value.line == whiteouts.MAX_LINES + 1
    with open(listed, "wb") as f:  # bigger than the bound: refused, and not read whole
        f.truncate(whiteouts.MAX_LIST_BYTES * 4)
    with pytest.raises(ConfigError, match="bytes, more than"):
        whiteouts.read(layer)
    listed.write_bytes(b"/etc/a\n/etc/b\x00c\n")
    with pytest.raises(ConfigError, match="NUL") as refused:
        whiteouts.read(layer)
    assert refused.value.line == 2
    listed.unlink()
    (tmp_path / "elsewhere").write_text("/etc/motd\n")
    listed.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="symlink; not followed"):
        whiteouts.read(layer)
    listed.unlink()
    os.mkfifo(listed)
    with pytest.raises(ConfigError, match="not a regular file"):
        whiteouts.read(layer)  # and does not wait for a writer
    listed.unlink()
    listed.mkdir()  # an override named NAME.whiteouts, not a list
    assert whiteouts.read(layer) is None
    listed.rmdir()
    assert whiteouts.read(layer) is None  # no list: nothing hidden


def test_a_bad_list_refuses_the_site_through_the_cli(example_site, capsys):
    listed = write_list(example_site, "compute", "/etc/motd", "/etc/../shadow")
    status = __import__("onesuite_fs.cli", fromlist=["main"]).main(
        ["preview", "--root", str(example_site), "--whiteouts", "node001", "/etc"])
    err = capsys.readouterr().err
    assert status == 2 and f"{listed}:2:" in err and "Traceback" not in err
    # Without the option the list is not even read.
    assert origins(example_site, "node:node001", ["/etc/motd"])["/etc/motd"] is not None


# ----- the merge -----------------------------------------------------------------------------

def test_off_by_default_a_list_and_whiteout_looking_names_change_nothing(example_site):
    """SystemImager semantics stay exact without --whiteouts: a list beside an override is
    not read, and a file named like an aufs whiteout is an ordinary file of the override,
    with the option as without it (only lists are whiteouts here)."""
    before = {host: every_path(example_site, f"node:{host}") for host in ("node001", "login01")}
    write_list(example_site, "compute", "/etc/motd", "/usr")
    write_list(example_site, "all", "/etc")
    aufs = example_site / OVERRIDES / "compute/etc/.wh.fstab"
    aufs.write_text("an ordinary file\n")
    (example_site / OVERRIDES / "compute/etc/.wh..wh..opq").write_text("")
    for host, paths in before.items():
        now = every_path(example_site, f"node:{host}")
        extra = {"/etc/.wh.fstab", "/etc/.wh..wh..opq"} if host == "node001" else set()
        assert now == paths | extra, host
    for options in ((), ("--whiteouts",)):
        shown = origins(example_site, "node:node001", ["/etc/.wh.fstab", "/etc/fstab"],
                        *options)
        assert shown["/etc/.wh.fstab"] == "override:compute /etc/.wh.fstab"
        if not options:
            assert shown["/etc/fstab"] == "override:compute /etc/fstab"


def test_a_list_hides_files_links_and_subtrees_for_its_nodes_only(example_site):
    # node001: image, all, compute-tuning, compute, node001 (autoinstall).
    write_list(example_site, "compute", "# group-wide", "/etc/motd   # a comment",
               "  /etc/localtime", "/etc/ssh/", "/etc/security/limits.conf", "/nothing/here")
    write_list(example_site, "node001", "/usr/share", "/etc/chrony.conf")
    paths = ["/etc/motd", "/etc/localtime", "/etc/ssh", "/etc/ssh/sshd_config",
             "/etc/security/limits.conf", "/etc/security", "/usr/share", "/usr",
             "/etc/chrony.conf", "/etc/hostname"]
    plain = {host: origins(example_site, f"node:{host}", paths)
             for host in ("node001", "node002", "login01")}
    shown = {host: origins(example_site, f"node:{host}", paths, "--whiteouts")
             for host in ("node001", "node002", "login01")}
    for host in ("node001", "node002"):
        for gone in ("/etc/motd", "/etc/localtime", "/etc/ssh", "/etc/ssh/sshd_config",
                     "/etc/security/limits.conf"):  # a file, a symlink, a subtree
            assert plain[host][gone] is not None and shown[host][gone] is None, (host, gone)
        assert shown[host]["/etc/security"] == plain[host]["/etc/security"]
    # The host's own list hides what the layers below have, and only for that host ...
    assert shown["node001"]["/usr/share"] is None and shown["node002"]["/usr/share"]
    assert shown["node001"]["/usr"] == plain["node001"]["/usr"]
    # ... but not its own copy: the layer that lists a path may lay it again.
    assert shown["node001"]["/etc/chrony.conf"] == "override:node001 /etc/chrony.conf"
    assert shown["node002"]["/etc/chrony.conf"] == plain["node002"]["/etc/chrony.conf"]
    assert shown["login01"] == plain["login01"]  # Login has neither override
    # The group's own view follows its overrides' lists too, and the image stays as it is.
    group = origins(example_site, "group:Compute", ["/etc/motd", "/usr/share"], "--whiteouts")
    assert group == {"/etc/motd": None, "/usr/share": "image:rocky9 /usr/share"}
    image = origins(example_site, "image:rocky9", ["/etc/motd"], "--whiteouts")
    assert image["/etc/motd"] == "image:rocky9 /etc/motd"


def test_a_higher_layer_lays_a_hidden_path_again(example_site):
    """compute-tuning hides /etc/motd and /etc/ssh; compute (applied after it) has its own
    /etc/ssh with one file: that directory holds only compute's file (an opaque directory is
    the same thing within one override)."""
    write_list(example_site, "compute-tuning", "/etc/motd", "/etc/ssh")
    ssh = example_site / OVERRIDES / "compute/etc/ssh"
    ssh.mkdir()
    (ssh / "ssh_config").write_text("Host *\n")
    (example_site / OVERRIDES / "compute/etc/motd").write_text("compute\n")
    found = every_path(example_site, "node:node001", "--whiteouts")
    assert {p for p in found if p.startswith("/etc/ssh")} == {"/etc/ssh", "/etc/ssh/ssh_config"}
    shown = origins(example_site, "node:node001", ["/etc/motd", "/etc/ssh"], "--whiteouts")
    assert shown == {"/etc/motd": "override:compute /etc/motd",
                     "/etc/ssh": "override:compute /etc/ssh"}
    # The same with one override: it lists /etc/ssh and has it, an opaque directory.
    write_list(example_site, "compute-tuning")
    write_list(example_site, "compute", "/etc/ssh")
    found = every_path(example_site, "node:node001", "--whiteouts")
    assert {p for p in found if p.startswith("/etc/ssh")} == {"/etc/ssh", "/etc/ssh/ssh_config"}


def test_pushoverrides_a_source_hides_later_sources_and_the_installed_tree(example_site):
    """One multi-source copy (host, groups, global; the first wins): node001's list hides
    the same path in the group sources after it and below; an earlier source keeps it."""
    write_list(example_site, "node001", "/etc/fstab", "/etc/security")
    write_list(example_site, "all", "/etc/hostname")
    order = ("--override-order", "pushoverrides", "--whiteouts")
    shown = origins(example_site, "node:node001",
                    ["/etc/fstab", "/etc/security", "/etc/hostname"], *order)
    assert shown["/etc/fstab"] is None and shown["/etc/security"] is None
    # all is the last source: node001 (first) keeps its hostname over all's list.
    assert shown["/etc/hostname"] == "override:node001 /etc/hostname"
    other = origins(example_site, "node:node002", ["/etc/hostname", "/etc/fstab"], *order)
    assert other == {"/etc/hostname": None, "/etc/fstab": "override:compute /etc/fstab"}


def test_a_non_directory_replaces_a_directory_whose_entries_are_all_hidden(example_site):
    """rsync replaces an empty directory with a file: with whiteouts, a directory whose
    every entry is hidden is empty."""
    write_list(example_site, "compute", "/etc/ssh/sshd_config")
    image_ssh = example_site / "var/lib/systemimager/images/rocky9/etc/ssh"
    assert os.listdir(image_ssh) == ["sshd_config"]
    (example_site / OVERRIDES / "node001/etc/ssh").write_text("a file\n")
    shown = origins(example_site, "node:node001", ["/etc/ssh"], "--whiteouts")
    assert shown == {"/etc/ssh": "override:node001 /etc/ssh"}
    plain = origins(example_site, "node:node001", ["/etc/ssh"])
    assert plain == {"/etc/ssh": "image:rocky9 /etc/ssh"}  # rsync: non-empty, kept


def test_explain_and_preview_name_the_hiding_line(example_site, capsys):
    listed = write_list(example_site, "compute", "# hidden for Compute", "/etc/motd",
                        "/etc/ssh")
    status, document = onesuite_json(capsys, "explain", "--root", example_site,
                                     "--whiteouts", "node001", "/etc/ssh/sshd_config")
    assert status == 1 and not document["exists"]
    assert document["whiteout"]["hidden"] is True
    assert document["whiteout"]["path"] == "/etc/ssh"
    assert document["whiteout"]["line"] == f"{listed}:3"
    assert document["whiteout"]["layer"] == "override:compute"
    status, document = onesuite_json(capsys, "explain", "--root", example_site,
                                     "--whiteouts", "node001", "/etc/motd")
    steps = {layer["layer"]: layer["step"] for layer in document["layers"]}
    assert steps["override:compute"] == "hides" and steps["override:all"] == "replaces"
    assert document["winner"] is None and document["whiteout"]["line"] == f"{listed}:2"
    status, document = onesuite_json(capsys, "preview", "--root", example_site,
                                     "--whiteouts", "node001", "/etc")
    assert [(h["path"], h["line"]) for h in document["hidden"]] == [
        ("/etc/motd", f"{listed}:2"), ("/etc/ssh", f"{listed}:3")]
    assert document["hidden"][0]["origin"] == \
        f"hidden by override:compute (whiteout /etc/motd, {listed}:2)"
    assert not [e for e in document["entries"] if e["path"].startswith(("/etc/motd",
                                                                          "/etc/ssh"))]
    done = run_onesuite("preview", "--root", example_site, "--whiteouts", "node001", "/etc")
    assert "(hidden)  /etc/ssh" in done.stdout and "compute.whiteouts:3" in done.stdout
    done = run_onesuite("explain", "--root", example_site, "--whiteouts", "node001",
                        "/etc/motd", check=False)
    assert f"hidden: override:compute lists /etc/motd [{listed}:2]" in done.stdout
    _, document = onesuite_json(capsys, "preview", "--root", example_site, "node001", "/etc")
    assert document["hidden"] == []  # without the option


def test_diff_sees_the_hidden_paths_as_removed(example_site, capsys):
    write_list(example_site, "node001", "/etc/fstab")
    status, document = onesuite_json(capsys, "diff", "--root", example_site, "--whiteouts",
                                     "node:node002", "node:node001", "/etc/fstab")
    assert status == 1
    assert [(d["path"], d["status"]) for d in document["differences"]] == [
        ("/etc/fstab", "removed")]


# ----- on a mount ----------------------------------------------------------------------------

@needs_root_fuse()
@pytest.mark.mount
def test_on_the_mount_a_hidden_name_is_neither_listed_nor_found(example_site, mount_site):
    write_list(example_site, "compute", "/etc/motd", "/etc/ssh", "/etc/localtime")
    # A name like an aufs whiteout is an ordinary file, with the option as without it.
    (example_site / OVERRIDES / "compute/etc/.wh.fstab").write_text("ordinary\n")
    plain = mount_site(example_site, "--no-watch", name="plain")
    assert (plain.node("node001") / "etc/motd").exists()
    assert (plain.node("node001") / "etc/.wh.fstab").read_text() == "ordinary\n"
    assert not [p for p in (plain.mountpoint / "nodes").rglob("*whiteouts*")]
    plain.stop()
    mount = mount_site(example_site, "--whiteouts", "--no-watch")
    etc = mount.node("node001") / "etc"
    assert (etc / ".wh.fstab").read_text() == "ordinary\n" and (etc / "fstab").is_file()
    names = os.listdir(etc)
    assert "motd" not in names and "ssh" not in names and "localtime" not in names
    assert "fstab" in names
    for hidden in ("motd", "ssh", "ssh/sshd_config", "localtime"):
        with pytest.raises(FileNotFoundError):
            os.lstat(etc / hidden)
    with pytest.raises(FileNotFoundError):
        os.open(etc / "ssh/sshd_config", os.O_RDONLY)
    login = mount.node("login01") / "etc"
    assert (login / "ssh/sshd_config").is_file() and os.path.islink(login / "localtime")
    assert os.getxattr(mount.mountpoint / "images/rocky9/etc/motd", "user.onesuite.origin")


@needs_root_fuse()
@pytest.mark.mount
def test_a_list_added_while_mounted_hides_after_the_reload(example_site, mount_site):
    """The reload a changed list makes (the watcher sees overrides/, so `onesuite reload`
    and the watch both work; the explicit reload is tested for determinism), and a handle of
    the now hidden file and directory, issued before, is stale afterwards even once the
    kernel has forgotten them (the daemon is asked to recover the number)."""
    mount = mount_site(example_site, "--whiteouts", "--no-watch")
    node = mount.node("node001")
    assert (node / "etc/motd").read_text() and (node / "etc/ssh/sshd_config").is_file()
    handles = {name: name_to_handle(node / name)
               for name in ("etc/motd", "etc/ssh", "etc/ssh/sshd_config", "etc/fstab")}
    write_list(example_site, "compute", "/etc/motd", "/etc/ssh")
    done = run_onesuite("reload", mount.mountpoint, "--json")
    assert '"error": null' in done.stdout
    assert not (node / "etc/motd").exists() and not (node / "etc/ssh").exists()
    assert "motd" not in os.listdir(node / "etc")
    assert (mount.node("login01") / "etc/motd").exists()
    drop_caches()
    mount_fd = os.open(mount.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in ("etc/motd", "etc/ssh", "etc/ssh/sshd_config"):
            with pytest.raises(OSError) as stale:
                os.close(open_by_handle(mount_fd, handles[name]))
            assert stale.value.errno == errno.ESTALE, name
        fd = open_by_handle(mount_fd, handles["etc/fstab"])  # not hidden: still opens
        os.close(fd)
    finally:
        os.close(mount_fd)
    # A bad list keeps the serving generation and names its line.
    bad = write_list(example_site, "compute", "/etc/motd", "/etc/../shadow")
    done = run_onesuite("reload", mount.mountpoint, "--json", check=False)
    assert f"{bad}:2" in done.stdout + done.stderr
    assert not (node / "etc/motd").exists() and (node / "etc/fstab").exists()
    # Removing the list shows the paths again.
    write_list(example_site, "compute")
    run_onesuite("reload", mount.mountpoint)
    assert (node / "etc/motd").exists() and (node / "etc/ssh/sshd_config").is_file()


@needs_root_fuse()
@pytest.mark.mount
def test_the_watch_notices_a_new_list(example_site, mount_site):
    import time

    mount = mount_site(example_site, "--whiteouts")
    motd = mount.node("node003") / "etc/motd"
    assert motd.exists()
    write_list(example_site, "compute", "/etc/motd")
    deadline = time.monotonic() + 30
    while os.path.lexists(motd):
        assert time.monotonic() < deadline, "the list was not noticed"
        time.sleep(0.1)
    assert (mount.node("login01") / "etc/motd").exists()


def build_with_whiteouts(spec, host: str, order: str, built: Path, work: Path) -> bool:
    """The oracle: real rsync passes as tests/oracle.py makes them, each override's listed
    paths removed (`rm -rf`) from the tree just before its pass, as if it deleted them. For
    pushoverrides' one multi-source copy: every source's listed paths removed from the
    installed tree first, and each source copied without what the sources before it list
    (rsync --exclude into a copy). True if some listed path was there to remove."""
    overrides = spec.prefix / sitegen.OVERRIDES_DIR
    built.mkdir(parents=True)
    image = oracle.image_dir(spec, oracle.node_image(spec, host))
    oracle._rsync([*oracle.IMAGE_RSYNC, f"{image}/", f"{built}/"])
    removed = False
    for name in oracle.override_sequence(spec, host, "autoinstall"):
        if (overrides / name).is_dir():
            for path in listed(overrides, name):
                removed |= os.path.lexists(built / path.strip("/"))
                remove_below(built, path)
            oracle._rsync([*oracle.OVERRIDE_RSYNC, f"{overrides / name}/", f"{built}/"])
    if order == "autoinstall":
        return removed
    sources = oracle.override_sequence(spec, host, "pushoverrides")[0]
    copies, above = [], []
    for number, name in enumerate(sources):
        for path in listed(overrides, name):
            removed |= os.path.lexists(built / path.strip("/"))
            remove_below(built, path)
        copy = work / f"{host}-source{number}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        oracle._rsync(["rsync", "-aHSX", "--numeric-ids",
                       *(f"--exclude=/{p.strip('/')}" for p in above),
                       f"{overrides / name}/", f"{copy}/"])
        copies.append(f"{copy}/")
        above += listed(overrides, name)
    if copies:
        oracle._rsync([*oracle.OVERRIDE_RSYNC, *copies, f"{built}/"])
    return removed


@needs_root_fuse()
@pytest.mark.mount
@pytest.mark.parametrize("order", ["autoinstall", "pushoverrides"])
@pytest.mark.parametrize("seed", range(3))
def test_with_whiteouts_the_mount_equals_rsync_with_each_list_removed_first(seed, order,
                                                                          tmp_path,
                                                                          mount_site):
    """An independent oracle (build_with_whiteouts, real rsync and rm): every node's
    mounted root equals it, for random sites with random lists."""
    spec = sitegen.generate_random_site(tmp_path / "site", seed)
    overrides = spec.prefix / sitegen.OVERRIDES_DIR
    assert add_random_whiteouts(overrides, list(spec.images.values()), seed)
    mount = mount_site(spec.prefix, "--whiteouts", "--override-order", order)
    hidden_somewhere = False
    for host in spec.nodes():
        built = tmp_path / "oracle" / host
        hidden_somewhere |= build_with_whiteouts(spec, host, order, built,
                                                 tmp_path / "sources")
        mounted = oracle.snapshot(mount.node(host), ignore_xattr_prefixes=OURS)
        differences = oracle.compare(oracle.snapshot(built), mounted)
        assert not differences, f"seed {seed}, {order}, {host}:\n" + "\n".join(differences)
    assert hidden_somewhere


def test_a_warewulf_overlay_lists_its_whiteouts_beside_its_rootfs(tmp_path, capsys):
    """An overlay NAME/rootfs/ has its list in NAME/whiteouts (Warewulf builds the overlay
    from rootfs only): gpu's hides the image's /etc/os-release and /usr for n2 only."""
    from warewulftools import make_warewulf_site, write_config

    root = make_warewulf_site(tmp_path / "ww")
    config = write_config(root, tmp_path / "cache")
    listed = root / "usr/share/warewulf/overlays/gpu/whiteouts"
    listed.write_text("# gpu nodes\n/etc/os-release\n/usr\n")
    shown = {}
    for host in ("n1", "n2"):
        _, document = onesuite_json(capsys, "preview", "--config", config, "--whiteouts",
                                    host)
        shown[host] = {e["path"] for e in document["entries"]}, document["hidden"]
    assert "/etc/os-release" in shown["n1"][0] and "/usr/bin/tool" in shown["n1"][0]
    assert "/etc/os-release" not in shown["n2"][0] and "/usr" not in shown["n2"][0]
    assert [(h["path"], h["line"]) for h in shown["n2"][1]] == [
        ("/etc/os-release", f"{listed}:2"), ("/usr", f"{listed}:3")]
    assert shown["n1"][1] == []
    _, document = onesuite_json(capsys, "preview", "--config", config, "n2")
    assert "/etc/os-release" in {e["path"] for e in document["entries"]}  # option off


# ----- convert -------------------------------------------------------------------------------

@needs_root_fuse()
@pytest.mark.mount
def test_convert_carries_whiteouts_as_absence_and_warns_for_onesis(example_site, tmp_path,
                                                                   mount_site):
    """convert reads the served roots, so a hidden path is in no layer the hidden nodes
    get: the Warewulf site serves the same roots without any list (wwctl would build them
    too). oneSIS cannot hide a path: the path becomes LINKBACK lines limited to the other
    nodes, and the warning names it."""
    from transformtools import OURS as TRANSFORM_OURS
    from transformtools import serving_site
    from warewulftools import write_config

    write_list(example_site, "compute", "/etc/motd", "/etc/ssh")
    write_list(example_site, "node001", "/etc/fstab")
    hosts = ["login01", "login02", *(f"node00{n}" for n in range(1, 9))]
    ww = tmp_path / "ww"
    run_onesuite("convert", "to-warewulf", "--root", example_site, "--whiteouts", ww,
                 "--no-progress")
    assert not list(ww.rglob("whiteouts")) and not list(ww.rglob("*.whiteouts"))
    original = mount_site(example_site, "--whiteouts", name="mnt-si")
    converted = mount_site(tmp_path, "--config", str(write_config(ww, tmp_path / "cache")),
                           name="mnt-ww")
    for host in hosts:
        want = oracle.snapshot(original.node(host), ignore_xattr_prefixes=TRANSFORM_OURS)
        got = oracle.snapshot(converted.node(host), ignore_xattr_prefixes=TRANSFORM_OURS)
        assert not oracle.compare(want, got), host
    assert not (converted.node("node002") / "etc/motd").exists()
    assert (converted.node("login01") / "etc/motd").exists()
    assert not (converted.node("node001") / "etc/fstab").exists()

    onesis = tmp_path / "onesis-image"  # not the mount point below
    done = run_onesuite("convert", "to-onesis", "--root", example_site, "--whiteouts",
                        "--image", "rocky9", onesis)
    warning = done.stderr[done.stderr.index("warning:"):]
    assert "oneSIS cannot hide a path" in warning
    assert all(f"  {p}\n" in warning for p in ("/etc/motd", "/etc/ssh", "/etc/fstab"))
    conf = (onesis / "etc/sysimage.conf").read_text()
    assert any(line.startswith("LINKBACK /etc/motd ") and " -c " in line
               for line in conf.splitlines())
    site = serving_site(tmp_path / "served", "rocky9", onesis, hosts)
    served = mount_site(site, "--config", str(site / "onesuite.toml"), name="onesis")
    assert not os.path.lexists(served.node("node002") / "etc/motd")
    assert (served.node("login01") / "etc/motd").read_text() == \
        (original.node("login01") / "etc/motd").read_text()
    plain = run_onesuite("convert", "to-onesis", "--root", example_site, "--image", "rocky9",
                         tmp_path / "onesis-plain")
    assert "warning:" not in plain.stderr  # without the option nothing is hidden


def test_the_served_fingerprint_covers_the_lists(example_site):
    """Servers compare fingerprints (onesuite status): one with another list serves other
    roots and numbers, so its fingerprint differs; without the option a list changes
    nothing."""
    from onesuite_fs.core.inodes import Numbering
    from onesuite_fs.core.onesis_config import OnesisSource
    from onesuite_fs.core.view import View
    from onesuite_fs.settings import Settings
    from onesuite_fs.sources.systemimager import load_site

    key = Numbering.ephemeral()

    def served(whiteouts: bool) -> str:
        view = View(load_site(Settings(root=example_site)), "autoinstall", OnesisSource(),
                    numbering=key, whiteouts=whiteouts)
        view.prescan()
        assert view.fingerprint is not None
        return view.fingerprint

    before = served(True), served(False)
    write_list(example_site, "compute", "/etc/motd")
    assert served(True) != before[0] and served(False) == before[1]
