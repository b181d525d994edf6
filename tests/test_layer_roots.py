"""Nothing outside the layers, by configuration either (issue 14, section 6).

Each attack of the issue, done as the attacker or careless admin did it, against the real CLI
and real FUSE mounts: `onesuite nodes` and `onesuite mount` refuse it with file:line and what
to do, and nothing is mounted. With allow_layers_outside naming the place, a layer elsewhere is
served and shown with its real path. A layer root swapped for a symlink after the mount is
never followed.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest
from conftest import _is_mounted, needs_root_fuse, run_onesuite
from sitetools import make_site

from onesuite_fs.core.errors import ConfigError
from onesuite_fs.settings import Settings, load_settings
from onesuite_fs.sources.systemimager import load_site

pytestmark = [needs_root_fuse(), pytest.mark.mount]

CLUSTER = ("<xml><name>all</name><override>all</override><group><name>Login</name>"
           "<image>img</image><override>login</override><node>n1</node></group></xml>")
# The server's secrets, as a stand-in for /etc/shadow where a test cannot use the real one.
SECRET = "root:$6$server-secret:19000::::::\n"


def site(tmp_path: Path, cluster: str = CLUSTER, **kwargs) -> Path:
    root = make_site(tmp_path / "site", cluster, images=("img",), **kwargs)
    (root / "var/lib/systemimager/images/img/sub").mkdir()
    (root / "var/lib/systemimager/images/img/sub/file").write_text("image file\n")
    return root


def refused(root: Path, tmp_path: Path, *options: str) -> str:
    """Both commands refuse the site; returns the message. Nothing is mounted."""
    nodes = run_onesuite("nodes", "--root", root, *options, check=False)
    assert nodes.returncode == 2, nodes.stdout + nodes.stderr
    assert "Traceback" not in nodes.stderr
    mountpoint = tmp_path / "mnt-refused"
    mountpoint.mkdir(exist_ok=True)
    mount = run_onesuite("mount", "--root", root, *options, mountpoint, check=False)
    try:
        assert mount.returncode == 2, mount.stdout + mount.stderr
        assert mount.stderr == nodes.stderr
        assert not _is_mounted(mountpoint) and os.listdir(mountpoint) == []
    finally:
        if _is_mounted(mountpoint):
            run_onesuite("umount", mountpoint, check=False)
    return nodes.stderr


def broken_alone(root: Path, tmp_path: Path, *options: str, node: str = "n1") -> str:
    """The layer costs only `node` (upstream only its rsync fails): `onesuite nodes` lists it
    NOT SERVED with the reason and exits 1, --strict refuses the site, and the mount serves
    the others. Returns the text `onesuite nodes` printed for it."""
    nodes = run_onesuite("nodes", "--root", root, *options, check=False)
    assert nodes.returncode == 1, nodes.stdout + nodes.stderr
    assert "Traceback" not in nodes.stderr
    [line] = [x for x in nodes.stdout.splitlines() if x.startswith(f"{node}  NOT SERVED")]
    strict = run_onesuite("nodes", "--root", root, *options, "--strict", check=False)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    mountpoint = tmp_path / "mnt-broken"
    mountpoint.mkdir(exist_ok=True)
    run_onesuite("mount", "--root", root, "--no-watch", *options, mountpoint)
    try:
        served = os.listdir(mountpoint / "nodes")
        assert node not in served
        for other in served:  # nothing of the refused place reaches any view
            assert not (mountpoint / "nodes" / other / "shadow").exists()
    finally:
        run_onesuite("umount", mountpoint, check=False)
    return "\n".join((line, nodes.stdout, strict.stderr))


@pytest.mark.parametrize("server_path", [
    "/var/lib/systemimager/images/../../../../etc",
    "/var/lib/systemimager/images/../../../../../../../../../../../../etc",
    "/../../proc/self",
])
def test_a_stub_path_with_dotdot_is_refused(tmp_path, server_path):
    root = site(tmp_path)
    (root / "etc/shadow").parent.mkdir(exist_ok=True)
    (root / "etc/shadow").write_text(SECRET)
    stub = root / "etc/systemimager/rsync_stubs/40img"
    stub.write_text(f"# image img\n[img]\n\tpath={server_path}\n\n")
    message = refused(root, tmp_path)
    assert f"{stub}:3: image 'img': path={server_path} has '..'" in message
    assert "hint: write the image's directory without '..'" in message


@pytest.mark.parametrize("key, value, group", [
    # Images dir climbs to the server's /: the image 'etc' is the server's /etc.
    ("DEFAULT_IMAGE_DIR", "/var/lib/systemimager/images/" + "../" * 40, "image"),
    # Overrides dir climbs to the server's /: the override 'etc' lays /etc on the node.
    ("DEFAULT_OVERRIDE_DIR", "/var/lib/systemimager/" + "../" * 40, "override"),
])
def test_systemimager_conf_directories_with_dotdot_are_refused(tmp_path, key, value, group):
    cluster = CLUSTER.replace("<image>img</image>", "<image>etc</image>") if group == "image" \
        else CLUSTER.replace("<override>login</override>", "<override>etc</override>")
    root = site(tmp_path, cluster)
    conf = root / "etc/systemimager/systemimager.conf"
    conf.write_text(f"# where things are\n\n{key} = {value}\n")
    message = refused(root, tmp_path)
    assert f"{conf}:3: {key} = {value} leaves the server's tree" in message
    assert "without '..'" in message


def test_systemimager_conf_cannot_make_the_root_a_layer_directory(tmp_path):
    root = site(tmp_path, CLUSTER.replace("<override>login</override>",
                                          "<override>etc</override>"))
    conf = root / "etc/systemimager/systemimager.conf"
    conf.write_text("DEFAULT_OVERRIDE_DIR = /\n")
    assert f"{conf}:1: DEFAULT_OVERRIDE_DIR = / leaves the server's tree" in refused(
        root, tmp_path)


TWO_NODES = CLUSTER.replace("</xml>", "<group><name>Other</name><image>img</image>"
                                      "<node>n2</node></group></xml>")


def test_an_override_directory_that_is_a_symlink_to_etc_is_refused(tmp_path):
    # Issue 16 item 4: it costs only the nodes laying it (here n1), never the site.
    root = site(tmp_path, TWO_NODES)
    login = root / "var/lib/systemimager/overrides/login"
    login.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("/etc", login)
    message = broken_alone(root, tmp_path)
    assert f"override 'login' at {login} is a symlink to /etc" in message
    assert "replace the symlink by the directory" in message
    assert "allow_layers_outside" in message


@pytest.mark.parametrize("stub", [True, False])
def test_an_image_directory_that_is_a_symlink_is_refused(tmp_path, stub):
    root = site(tmp_path, stubs=stub)
    image = root / "var/lib/systemimager/images/img"
    image.rename(tmp_path / "moved-img")
    os.symlink("/etc", image)
    message = broken_alone(root, tmp_path)
    where = f"{root}/etc/systemimager/rsync_stubs/40img:2: image 'img'" if stub else \
        "image 'img' (images directory)"
    assert f"{where} at {image} is a symlink to /etc" in message


def test_an_unused_symlink_in_the_images_directory_is_skipped_not_served(tmp_path, mount_site):
    root = site(tmp_path)
    os.symlink("/etc", root / "var/lib/systemimager/images/etc")
    nodes = run_onesuite("nodes", "--root", root)
    assert "warning: image 'etc' (images directory)" in nodes.stderr
    assert "not served (no group uses it)" in nodes.stderr
    mount = mount_site(root)
    assert sorted(os.listdir(mount.mountpoint / "images")) == ["img"]


def test_a_symlinked_images_directory_is_a_layer_elsewhere(tmp_path, mount_site):
    """var/lib/systemimager/images -> another filesystem: refused until that place is
    allowed, then served and shown at its real place by nodes (text, --json) and status."""
    root = site(tmp_path)
    images = root / "var/lib/systemimager/images"
    data = tmp_path / "data"
    data.mkdir()
    images.rename(data / "images")
    os.symlink(data / "images", images)
    message = broken_alone(root, tmp_path)
    assert f"image 'img' at {images / 'img'} really is {data / 'images/img'}" in message

    allow = ("--allow-layers-outside", str(data / "images"))
    text = run_onesuite("nodes", "--root", root, *allow).stdout
    assert (f"really at {data / 'images/img'} (outside its directory, allowed by "
            f"allow_layers_outside {data / 'images'})") in text
    listed = json.loads(run_onesuite("nodes", "--root", root, *allow, "--json").stdout)
    image = listed["nodes"][0]["layers"][0]
    assert image["path"] == str(images / "img")
    assert image["real_path"] == str(data / "images/img")
    assert image["allowed_by"] == str(data / "images")

    mount = mount_site(root, *allow)
    assert (mount.node("n1") / "sub/file").read_text() == "image file\n"
    status = json.loads(run_onesuite("status", mount.mountpoint, "--json").stdout)
    assert status["layers_elsewhere"] == [
        {"kind": "image", "name": "img", "path": str(images / "img"),
         "real_path": str(data / "images/img"), "allowed_by": str(data / "images")}]
    assert f"image img really at {data / 'images/img'}" in run_onesuite(
        "status", mount.mountpoint).stdout


def test_allow_layers_outside_in_onesuite_toml_is_per_location(tmp_path, mount_site):
    """An override kept elsewhere (a symlink to /srv/shared/login) is served once its place
    is listed; a second symlink to somewhere not listed (/etc) is still refused."""
    root = site(tmp_path, CLUSTER.replace("<override>login</override>",
                                          "<override>login</override><override>more</override>"))
    overrides = root / "var/lib/systemimager/overrides"
    shared = tmp_path / "shared"
    (shared / "login/etc").mkdir(parents=True)
    (shared / "login/etc/motd").write_text("login motd\n")
    overrides.mkdir(parents=True)
    os.symlink(shared / "login", overrides / "login")
    config = tmp_path / "onesuite.toml"
    config.write_text(f'[paths]\nroot = "{root}"\nallow_layers_outside = ["{shared}"]\n')
    assert load_settings(config).allow_layers_outside_source == f"{config}:3"

    os.symlink("/etc", overrides / "more")
    message = broken_alone(root, tmp_path, "--config", str(config))
    assert f"override 'more' at {overrides / 'more'} is a symlink to /etc" in message
    # Through the allowed place and out again: judged by the real path, still refused.
    (overrides / "more").unlink()
    os.symlink("/etc", shared / "out")
    os.symlink(shared / "out", overrides / "more")
    message = broken_alone(root, tmp_path, "--config", str(config))
    assert f"override 'more' at {overrides / 'more'} is a symlink to /etc" in message

    (overrides / "more").unlink()
    mount = mount_site(root, "--config", str(config))
    assert (mount.node("n1") / "etc/motd").read_text() == "login motd\n"
    status = json.loads(run_onesuite("status", mount.mountpoint, "--json").stdout)
    assert status["layers_elsewhere"] == [
        {"kind": "override", "name": "login", "path": str(overrides / "login"),
         "real_path": str(shared / "login"), "allowed_by": str(shared)}]


@pytest.mark.parametrize("entry, message", [
    ("/", "is the whole filesystem"),
    ("/no/such/dir", "is not a directory"),
])
def test_allow_layers_outside_refuses_everything_and_nothing(tmp_path, entry, message):
    root = site(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_site(Settings(root=root, allow_layers_outside=(Path(entry),)))
    done = run_onesuite("nodes", "--root", root, "--allow-layers-outside", entry, check=False)
    assert done.returncode == 2 and message in done.stderr


def wait_prescanned(mountpoint: Path) -> None:
    deadline = time.monotonic() + 30
    while not json.loads(run_onesuite("status", mountpoint, "--json").stdout)["prescanned"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("swapped", ["image root", "images directory"])
def test_a_layer_root_swapped_for_a_symlink_after_the_mount_is_not_followed(
        tmp_path, mount_site, swapped):
    root = site(tmp_path)
    secret = tmp_path / "secret"
    (secret / "img/sub").mkdir(parents=True)
    (secret / "img/sub/file").write_text(SECRET)
    mount = mount_site(root, "--no-watch")
    wait_prescanned(mount.mountpoint)
    node = mount.node("n1")
    assert (node / "etc/image").read_text() == "img"

    images = root / "var/lib/systemimager/images"
    if swapped == "image root":
        (images / "img").rename(tmp_path / "old-img")
        os.symlink(secret / "img", images / "img")
    else:
        images.rename(tmp_path / "old-images")
        os.symlink(secret, images)
    with pytest.raises(OSError) as err:
        (node / "sub/file").read_text()
    assert err.value.errno == errno.EIO
    assert "not followed" in (tmp_path / "mnt.log").read_text()
    # The daemon keeps serving; a reload re-validates and refuses the symlinked root.
    assert os.listdir(mount.mountpoint / "nodes") == ["n1"]
    done = run_onesuite("reload", mount.mountpoint, check=False)
    assert done.returncode == 1
    # The image root alone swapped: the new load finds it a symlink; the whole images
    # directory swapped: the reload fails opening the moved layer, never following it.
    assert "symlink" in done.stdout or "not followed" in done.stdout, done.stdout
    with pytest.raises(OSError):
        (node / "sub/file").read_text()


@pytest.mark.parametrize("use_openat2", [True, False])
@pytest.mark.parametrize("swapped", ["root", "parent"])
def test_opening_a_layer_checks_its_root_on_every_open(tmp_path, monkeypatch, use_openat2,
                                                       swapped):
    """Both ways of opening (openat2, and the O_NOFOLLOW + /proc/self/fd check used where the
    kernel has no openat2) refuse a swapped root and keep a symlink inside the layer data."""
    from onesuite_fs.core import layers, openat2

    if use_openat2 and not openat2.available():
        pytest.fail("this kernel has no openat2: the test cannot check that path")
    monkeypatch.setattr(openat2, "_usable", use_openat2)
    (tmp_path / "images/img/etc").mkdir(parents=True)
    os.symlink("/etc", tmp_path / "images/img/link")
    (tmp_path / "secret/img/etc").mkdir(parents=True)
    layer = layers.Layer("image", "img", tmp_path / "images/img", tmp_path / "images/img")
    with layers.open_in_layer(layer, "etc") as fd:
        assert os.listdir(fd) == []
    with pytest.raises(OSError) as inside, layers.open_in_layer(layer, "link"):
        pass
    assert inside.value.errno in (errno.ELOOP, errno.ENOTDIR)  # data, not an error of the root
    assert not isinstance(inside.value, layers.LayerMoved)

    if swapped == "root":
        (tmp_path / "images/img").rename(tmp_path / "old")
        os.symlink(tmp_path / "secret/img", tmp_path / "images/img")
    else:
        (tmp_path / "images").rename(tmp_path / "old")
        os.symlink(tmp_path / "secret", tmp_path / "images")
    for relpath in ("", "etc"):
        with pytest.raises(layers.LayerMoved) as moved, layers.open_in_layer(layer, relpath):
            pass
        assert moved.value.errno == errno.EIO
    store = layers.LayerStore()
    with pytest.raises(layers.LayerMoved):
        store.lstat(store.add(layer), "")
