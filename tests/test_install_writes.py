"""What a SystemImager 4.3 install writes itself after the image pass (issue 16, item 9):
`echo $IMAGENAME > /a/etc/systemimager/IMAGE_LAST_SYNCED_TO` (etc/autoinstallscript.template
line 317 at v4.3.0) and the fstab si_mkautoinstallscript bakes into the script from the
image's autoinstallscript.conf (Server.pm `_write_out_new_fstab_file`, lines 1589-1650).
With --fidelity install they are in the node's root, byte for byte, before the overrides
(which replace them) and, for si_updateclient, IMAGE_LAST_SYNCED_TO once more after every
pass. The rsync oracle runs the scripts' own lines on random sites (test_oracle_mount.py);
here: the renderings against the shell, and a hand-built site on real mounts."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import oracle
import pytest
from conftest import needs_root_fuse, run_onesuite
from sitetools import make_site
from test_inspect_mount import assert_explain_names_the_mounts_winner, assert_preview_matches_mount
from transformtools import OURS, extract, normalize, require

from onesuite_fs.sources.install_writes import (
    read_fstab_block,
    render_autoinstallscript_conf,
)

# A disk layout with every case of the renderer: a comment line, mount_dev over real_dev
# (and real_dev kept as a comment), Perl-false "0" and "" values, dump without pass, pass
# without dump, a line with no real_dev, lines out of numeric order, a repeated line (the
# later wins, as XMLin folds them), other elements around, entities. EXPECTED is what
# Server.pm's _write_out_new_fstab_file of v4.3.0 printed for it between its heredoc lines
# (run with XML::Simple 2.25 on Debian 12 while writing this test; SystemImager's code is
# not part of this project).
CONF = b"""<?xml version="1.0"?>
<config>
  <disk dev="/dev/sda" label_type="msdos" unit_of_measurement="MB">
    <part num="1" size="512" p_type="primary" flags="boot" />
  </disk>
  <fsinfo line="100" real_dev="devpts" mp="/dev/pts" fs="devpts" options="mode=0620,gid=5"
          dump="0" pass="0" />
  <fsinfo line="10" real_dev="/dev/sda1" mount_dev="LABEL=/" mp="/" fs="ext3"
          options="defaults" dump="1" pass="1" />
  <fsinfo line="5" comment="# made by si_prepareclient &amp; kept" />
  <fsinfo line="20" real_dev="/dev/sda2" mp="swap" fs="swap" options="0" dump="0" />
  <fsinfo line="30" real_dev="/dev/sda3" mount_dev="0" mp="/x" fs="xfs" pass="2" />
  <fsinfo line="40" real_dev="/dev/sda4" mount_dev="/dev/sda4" mp="/y" fs="ext4" options=""
          dump="" pass="" />
  <fsinfo line="2" mp="/z" fs="tmpfs" options="size=1g" />
  <fsinfo line="50" real_dev="/dev/old" mp="/old" fs="ext2" />
  <fsinfo line="50" real_dev="/dev/sdb1" mp="/data" fs="ext4" options="noatime" dump="0"
          pass="2" />
</config>
"""
EXPECTED = (b"\t/z\ttmpfs\tsize=1g\n"
            b"# made by si_prepareclient & kept\n"
            b"LABEL=/\t/\text3\tdefaults\t1\t1\t# /dev/sda1\n"
            b"/dev/sda2\tswap\tswap\t0\n"
            b"/dev/sda3\t/x\txfs\n"
            b"/dev/sda4\t/y\text4\t\t\n"
            b"/dev/sdb1\t/data\text4\tnoatime\t0\t2\n"
            b"devpts\t/dev/pts\tdevpts\tmode=0620,gid=5\t0\t0\n")


def test_autoinstallscript_conf_renders_as_server_pm_renders_it():
    assert render_autoinstallscript_conf(CONF) == EXPECTED


@pytest.mark.parametrize("conf,why", [
    (b'<!DOCTYPE c [<!ENTITY a "aaaa">]><c><fsinfo line="1" comment="&a;"/></c>',
     "DOCTYPE"),
    (b'<c><fsinfo mp="/" fs="ext4"/></c>', "not a number"),
    (b'<c><fsinfo line="ten" mp="/"/></c>', "not a number"),
    (b'<c><fsinfo line="10" mp="/"/><fsinfo line="010" mp="/x"/></c>', "written differently"),
    (b'<c><fsinfo line="1"><mp>/</mp></fsinfo></c>', "child element"),
    (b'<c><fsinfo line="1" comment="x&#10;EOF&#10;rm -rf /"/></c>', "heredoc"),
    (b'<c><disk dev="/dev/sda"/></c>', "no <fsinfo>"),
    (b'<c><fsinfo line="1"', "not well-formed"),
])
def test_a_conf_that_cannot_be_rendered_exactly_is_refused(conf, why):
    """Never a guess: what XMLin would not fold, Perl's sort would order by chance, or the
    script's heredoc would cut (and run the rest of) is refused with the reason."""
    found = render_autoinstallscript_conf(conf)
    assert isinstance(found, str) and why in found, found


def shell_writes(block: bytes, tmp_path) -> bytes:
    """What sh writes when it runs `block` (a script's heredoc onto /a/etc/fstab)."""
    (tmp_path / "a/etc").mkdir(parents=True, exist_ok=True)
    program = block.replace(b"/a/", f"{tmp_path}/a/".encode())
    subprocess.run(["sh", "-c", program], check=True)
    return (tmp_path / "a/etc/fstab").read_bytes()


@pytest.mark.parametrize("body", [
    b"LABEL=/\t/\text4\tdefaults\t1\t1\t# /dev/sda2\n/dev/sda1\tswap\tswap\tdefaults\t0\t0\n",
    b"a\rb \t \n$HOME `id` \\n \\\nEOFX\n EOF\n",  # CR, blanks, no expansion, near-EOFs
    b"",
])
def test_the_scripts_fstab_block_is_what_the_shell_writes(body, tmp_path):
    script = b"#!/bin/sh\nOVERRIDES=\"img\"\ncat <<'EOF' > /a/etc/fstab\n" + body + \
        b"EOF\necho after\n"
    line, found = read_fstab_block(script)
    assert line == 3
    assert found == shell_writes(script.split(b"\necho after")[0], tmp_path) == body


def test_an_unquoted_heredoc_is_read_only_when_the_shell_would_expand_nothing(tmp_path):
    plain = b"cat <<EOF > /a/etc/fstab\nproc /proc proc defaults 0 0\nEOF\n"
    assert read_fstab_block(plain) == (1, shell_writes(plain, tmp_path))
    expanding = b"cat <<EOF > /a/etc/fstab\n$ROOTDEV / ext4 defaults 0 0\nEOF\n"
    assert "expand" in read_fstab_block(expanding)


# ----- a site on real mounts ----------------------------------------------------------------
XML = ("<xml><name>all</name><override>all</override>"
       "<group><name>compute</name><image>img</image><override>cp</override>"
       "<node>n1-n4</node></group>"
       "<group><name>bare</name><image>bare</image><node>b1</node></group></xml>")
SCRIPT = ('#!/bin/sh\n[ -z $OVERRIDES ] && OVERRIDES="img $GROUP_OVERRIDES $HOSTNAME"\n'
          "# Leave notice of which image is installed on the client\n"
          "echo $IMAGENAME > /a/etc/systemimager/IMAGE_LAST_SYNCED_TO || shellout\n"
          "cat <<'EOF' > /a/etc/fstab\n{body}EOF\n")
N3_FSTAB = "LABEL=/\t/\text4\tdefaults\t1\t1\t# /dev/vda1\nproc\t/proc\tproc\tdefaults\t0\t0\n"
OLD = 1_600_000_000


def written_site(root):
    """img: /etc/fstab 0600 and /etc/systemimager 0750 (uid 7) with an autoinstallscript.conf
    and the updateclient exclude list; bare: /etc/fstab a symlink, no /etc/systemimager.
    n1: no script (the conf is rendered); n2: an override with both files; n3: a script
    with an fstab block; n4: a script with none (a hand-written one)."""
    make_site(root, XML, images=("img", "bare"), overrides=("all", "cp", "n2"))
    img = root / "var/lib/systemimager/images/img"
    (img / "etc/fstab").write_text("the image's fstab\n")
    os.chmod(img / "etc/fstab", 0o600)
    meta = img / "etc/systemimager"
    meta.mkdir()
    (meta / "autoinstallscript.conf").write_bytes(CONF)
    (meta / "updateclient.local.exclude").write_text("/etc/fstab\n")
    os.chown(meta, 7, 7)
    os.chmod(meta, 0o750)
    os.utime(meta, (OLD, OLD))
    bare = root / "var/lib/systemimager/images/bare"
    os.symlink("/ram/etc/fstab", bare / "etc/fstab")
    n2 = root / "var/lib/systemimager/overrides/n2"
    (n2 / "etc/systemimager").mkdir(parents=True)
    (n2 / "etc/fstab").write_text("n2's own fstab\n")
    (n2 / "etc/systemimager/IMAGE_LAST_SYNCED_TO").write_text("from an override\n")
    scripts = root / "var/lib/systemimager/scripts"
    scripts.mkdir()
    (scripts / "n3.sh").write_text(SCRIPT.format(body=N3_FSTAB))
    (scripts / "n4.sh").write_text(SCRIPT.split("cat <<")[0])
    return root


def origin(path):
    return os.getxattr(path, "user.onesuite.origin", follow_symlinks=False).decode()


@needs_root_fuse()
@pytest.mark.mount
def test_an_install_mount_shows_what_the_install_writes(tmp_path, mount_site):
    root = written_site(tmp_path / "site")
    key = tmp_path / "handle.key"
    mount = mount_site(root, "--fidelity", "install", "--handle-key", str(key))
    synced = "etc/systemimager/IMAGE_LAST_SYNCED_TO"
    n1, n2, n3, n4 = (mount.node(h) for h in ("n1", "n2", "n3", "n4"))
    # The image name and a newline (no image has the file: a new file, 0644 root).
    for node in (n1, n3, n4):
        assert (node / synced).read_bytes() == b"img\n"
        st = os.lstat(node / synced)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, 0, 0)
    assert "etc/autoinstallscript.template:317" in origin(n1 / synced)
    # The directory written into keeps the image's mode, owner and time.
    st = os.lstat(n1 / "etc/systemimager")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime) == (0o750, 7, OLD)
    assert origin(n1 / "etc/systemimager") == "image:img /etc/systemimager"
    # n1 runs no script: the image's autoinstallscript.conf as si_mkautoinstallscript
    # renders it, under the image's file's mode (a redirect keeps it).
    assert (n1 / "etc/fstab").read_bytes() == EXPECTED
    assert stat.S_IMODE(os.lstat(n1 / "etc/fstab").st_mode) == 0o600
    assert "autoinstallscript.conf" in origin(n1 / "etc/fstab")
    # n3: its script's block, byte for byte; its origin names the script's line.
    assert (n3 / "etc/fstab").read_text() == N3_FSTAB
    assert origin(n3 / "etc/fstab").endswith(f"{root}/var/lib/systemimager/scripts/n3.sh:5)")
    # n4's script writes no fstab: the image's stays.
    assert (n4 / "etc/fstab").read_text() == "the image's fstab\n"
    # An override of the same path wins (it is laid after).
    assert (n2 / "etc/fstab").read_text() == "n2's own fstab\n"
    assert (n2 / synced).read_text() == "from an override\n"
    # bare: /etc/fstab is a symlink (a redirect would write through it: not shown) and the
    # image has no /etc/systemimager (the echo fails: nothing written).
    b1 = mount.node("b1")
    assert os.readlink(b1 / "etc/fstab") == "/ram/etc/fstab"
    assert not (b1 / "etc/systemimager").exists()
    # Every node writing the same bytes onto the same image shares the file's inode.
    assert os.lstat(n1 / synced).st_ino == os.lstat(n3 / synced).st_ino

    # The same numbers on another server with the same key; new ones for new content.
    again = mount_site(root, "--fidelity", "install", "--handle-key", str(key), name="mnt2")
    for node, path in (("n1", synced), ("n1", "etc/fstab"), ("n3", "etc/fstab")):
        assert os.lstat(again.node(node) / path).st_ino == os.lstat(
            mount.node(node) / path).st_ino
    again.stop()

    # Without --fidelity install: listed by `onesuite nodes`, not in the root.
    intent = mount_site(root, name="intent")
    assert not (intent.node("n1") / synced).exists()
    assert (intent.node("n1") / "etc/fstab").read_text() == "the image's fstab\n"
    document = json.loads(run_onesuite("nodes", "--root", root, "--json", check=False).stdout)
    rows = {row["name"]: row for row in document["nodes"]}
    assert {w["path"]: w["content"] for w in rows["n1"]["written_after_image_pass"]} == {
        "/" + synced: "img\n", "/etc/fstab": EXPECTED.decode()}
    intent.stop()

    # A live reload follows the script: new bytes, a new number.
    old_ino = os.lstat(n3 / "etc/fstab").st_ino
    script = root / "var/lib/systemimager/scripts/n3.sh"
    script.write_text(SCRIPT.format(body="tmpfs\t/\ttmpfs\tdefaults\t0\t0\n"))
    deadline = time.monotonic() + 30
    while (n3 / "etc/fstab").read_text() == N3_FSTAB and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (n3 / "etc/fstab").read_text() == "tmpfs\t/\ttmpfs\tdefaults\t0\t0\n"
    assert os.lstat(n3 / "etc/fstab").st_ino != old_ino


@needs_root_fuse()
@pytest.mark.mount
def test_si_updateclient_writes_image_last_synced_to_after_every_pass(tmp_path, mount_site):
    """si_updateclient's graffiti (lines 620-628) comes after the overrides: it wins over
    n2's override; /etc/fstab is in the image's exclude list, so the node keeps what the
    install left (n2's override, n1's rendered conf)."""
    root = written_site(tmp_path / "site")
    mount = mount_site(root, "--fidelity", "install", "--override-order", "updateclient")
    n1, n2 = mount.node("n1"), mount.node("n2")
    synced = "etc/systemimager/IMAGE_LAST_SYNCED_TO"
    assert (n2 / synced).read_text() == "img\n"
    assert "sbin/si_updateclient:623" in origin(n2 / synced)
    assert (n2 / "etc/fstab").read_text() == "n2's own fstab\n"
    assert (n1 / "etc/fstab").read_bytes() == EXPECTED
    # pushoverrides pushes onto the installed node: the written files, then the overrides.
    push = mount_site(root, "--fidelity", "install", "--override-order", "pushoverrides",
                      name="push")
    assert (push.node("n1") / synced).read_text() == "img\n"
    assert (push.node("n2") / synced).read_text() == "from an override\n"


@needs_root_fuse()
@pytest.mark.mount
@pytest.mark.parametrize("order", oracle.ORDERS)
def test_preview_explain_diff_and_export_see_what_the_mount_shows(order, tmp_path,
                                                                  mount_site, capsys):
    root = written_site(tmp_path / "site")
    options = ("--fidelity", "install", "--override-order", order)
    mount = mount_site(root, *options)
    hosts = ["n1", "n2", "n3", "n4", "b1"]
    assert_preview_matches_mount(capsys, root, options, [(h, mount.node(h)) for h in hosts])
    assert_explain_names_the_mounts_winner(root, options, mount, hosts)
    for host in ("n1", "n3"):
        # diff against the mounted root itself: nothing differs.
        done = run_onesuite("diff", "--root", root, *options, f"node:{host}",
                            f"dir:{mount.node(host)}", check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    if order != "autoinstall":
        return
    require("tar", "cpio", "gzip")
    for fmt in ("tar", "cpio"):
        out = tmp_path / f"n1.{fmt}"
        run_onesuite("export", "--root", root, *options, "n1", "--format", fmt, out)
        back = oracle.snapshot(extract(fmt, out, tmp_path / f"x-{fmt}"))
        mounted = oracle.snapshot(mount.node("n1"), ignore_xattr_prefixes=OURS)
        assert not oracle.compare(normalize(mounted, fmt, ()), normalize(back, fmt, ()))
        assert (tmp_path / f"x-{fmt}/etc/fstab").read_bytes() == EXPECTED


@pytest.mark.parametrize("plant", ["symlink", "fifo", "huge", "dtd-bomb"])
def test_a_hostile_autoinstallscript_conf_is_not_read(plant, tmp_path):
    """The conf lies inside an image anyone with write access to it controls: a symlink
    out of the image (to a secret) is not followed, a fifo does not block the load, a huge
    file and entity expansion are refused; each is warned about and no fstab is shown."""
    from onesuite_fs.settings import Settings
    from onesuite_fs.sources.systemimager import load_site

    root = written_site(tmp_path / "site")
    conf = root / "var/lib/systemimager/images/img/etc/systemimager/autoinstallscript.conf"
    conf.unlink()
    secret = tmp_path / "secret"
    secret.write_bytes(CONF)
    if plant == "symlink":
        os.symlink(secret, conf)
    elif plant == "fifo":
        os.mkfifo(conf)
    elif plant == "huge":
        conf.write_bytes(CONF[:-10] + b" " * (2 << 20) + CONF[-10:])
    else:
        conf.write_bytes(b'<!DOCTYPE c [<!ENTITY a "' + b"x" * 1000 + b'"><!ENTITY b "'
                         + b"&a;" * 1000 + b'">]><c><fsinfo line="1" comment="&b;"/></c>')
    site = load_site(Settings(root=root))
    assert [w.path for w in site.install_writes["n1"]] == [
        "etc/systemimager/IMAGE_LAST_SYNCED_TO"]
    assert any("autoinstallscript.conf" in w and "not shown" in w for w in site.warnings), \
        site.warnings
