"""What oneSIS boots, exactly (issue 16, oneSIS items): on a real mount, each case is built
next to the root oneSIS itself would give the node (the image with mk-sysimage's links and
the links rc.preinit makes in /ram, all as real symlinks the kernel follows), and what a
program on the node reads through both is compared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import needs_root_fuse
from inspecttools import mounted_entries, onesuite_json, preview_entries
from sitetools import make_site

pytestmark = [needs_root_fuse(), pytest.mark.mount]

IMAGE = "var/lib/systemimager/images/img"
CONF = """\
NODECLASS_MAP n2 compute
LINKBACK /etc/conf.d/foo /opt/conf/foo.$NODE
LINKBACK /etc/app /opt/apps/app.$CLASS
"""
FILES = {
    "etc/sysimage.conf": CONF,
    "etc/conf.d/foo": "the image's own foo\n",
    "opt/shared/foo": "shared foo (what oneSIS shows)\n",
    "etc/shared/foo": "a decoy: where the link text points from /etc/conf.d\n",
    "opt/apps/app.compute/bin/tool": "tool\n",
    "opt/apps/lib/libx": "libx (what oneSIS shows)\n",
    "etc/lib/libx": "a decoy\n",
}
LINKS = {  # a variant that is a relative symlink, and one inside a variant directory
    "opt/conf/foo.n2": "../shared/foo",
    "opt/apps/app.compute/lib": "../lib",
    "opt/apps/app.compute/bin/sibling": "tool",
}


def linkback_site(root: Path) -> Path:
    make_site(root, "<xml><name>all</name><override>all</override><group><name>c</name>"
                    "<image>img</image><node>n2</node></group></xml>", images=("img",))
    image = root / IMAGE
    for path, text in FILES.items():
        (image / path).parent.mkdir(parents=True, exist_ok=True)
        (image / path).write_text(text)
    for path, target in LINKS.items():
        (image / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, image / path)
    return root


def onesis_root(image: Path, node_root: Path) -> Path:
    """The node's root as oneSIS leaves it: mk-sysimage turns each LINKBACK path into a link
    to /ram/PATH (the original kept as .default), rc.preinit links /ram/PATH to the chosen
    target (B.2.1, B.2.2). The absolute links are written relative to `node_root`, so the
    kernel resolves them inside it as it would on the node."""
    os.system(f"cp -a {image}/. {node_root}/")
    for path, target in (("etc/conf.d/foo", "opt/conf/foo.n2"),
                         ("etc/app", "opt/apps/app.compute")):
        link = node_root / path
        if link.exists() or link.is_symlink():
            link.rename(link.with_name(link.name + ".default"))
        depth = path.count("/")
        os.symlink("../" * depth + "ram/" + path, link)
        ram = node_root / "ram" / path
        ram.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("../" * (depth + 1) + target, ram)
    return node_root


def test_relative_links_reached_through_a_linkback_resolve_as_onesis_resolves_them(
        tmp_path, mount_site, capsys):
    root = linkback_site(tmp_path / "site")
    reference = onesis_root(root / IMAGE, tmp_path / "onesis")
    node = mount_site(root).node("n2")
    for path in ("etc/conf.d/foo", "etc/app/lib/libx", "etc/app/bin/sibling",
                 "etc/app/bin/tool"):
        assert (node / path).read_text() == (reference / path).read_text(), path
    assert (node / "etc/conf.d/foo").read_text() == "shared foo (what oneSIS shows)\n"
    assert (node / "etc/app/lib/libx").read_text() == "libx (what oneSIS shows)\n"
    # The link texts: rebased only where the layer's text would point elsewhere.
    assert os.readlink(node / "etc/conf.d/foo") == "../../opt/shared/foo"
    assert os.readlink(node / "etc/app/lib") == "../../opt/apps/lib"
    assert os.readlink(node / "etc/app/bin/sibling") == "tool"
    assert os.lstat(node / "etc/conf.d/foo").st_size == len("../../opt/shared/foo")
    assert "LINKBACK" in os.getxattr(node / "etc/conf.d/foo", "trusted.onesuite.origin",
                                     follow_symlinks=False).decode()
    status, document = onesuite_json(capsys, "preview", "--root", root, "n2")
    assert status == 0 and preview_entries(document) == mounted_entries(node)
