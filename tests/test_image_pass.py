"""What autoinstall's image pass copies (issue 16, item 4): `rsync -aHS --exclude=lost+found/
--exclude=/proc/* IMAGESERVER::IMAGE/ /a/` (etc/autoinstallscript.template, v4.3.0, line 292):
a node's root and a group's view lack every lost+found directory and everything in /proc;
images/<image> shows the image as it is. (The rsync oracle, tests/test_oracle_mount.py,
holds the same against real rsync on random sites that have these entries.)"""

from __future__ import annotations

import os

from sitetools import make_site

from onesuite_fs.core.view import View as Tree
from onesuite_fs.settings import Settings
from onesuite_fs.sources.systemimager import load_site
from onesuite_fs.transform.walk import named_root


def names(tree: Tree, view: str, name: str, path: str) -> list[str]:
    root = named_root(tree, name, namespace=view)
    found = root.lookup(path) if path else root.top()
    return sorted(child.name for child in root.children(found))


def test_image_pass_leaves_out_lost_found_and_proc(tmp_path):
    make_site(tmp_path, "<xml><name>all</name><override>all</override><group><name>g</name>"
                        "<image>img</image><node>n1</node></group></xml>", images=("img",),
              overrides=("all",))
    image = tmp_path / "var/lib/systemimager/images/img"
    for rel in ("lost+found", "usr/lost+found", "proc/sys", "var"):
        (image / rel).mkdir(parents=True)
    (image / "proc/cpuinfo").write_text("cpu\n")
    (image / "var/lost+found").write_text("a file: not excluded (lost+found/ is dirs only)")
    override = tmp_path / "var/lib/systemimager/overrides/all/usr/lost+found"
    override.mkdir(parents=True)  # an override's pass excludes nothing
    (override / "kept").write_text("x")
    os.mkdir(tmp_path / "var/lib/systemimager/overrides/all/proc")
    (tmp_path / "var/lib/systemimager/overrides/all/proc/version").write_text("v")
    tree = Tree(load_site(Settings(root=tmp_path)), "autoinstall")
    for view, name in (("nodes", "n1"), ("groups", "g")):
        assert "lost+found" not in names(tree, view, name, "")
        assert names(tree, view, name, "proc") == ["version"]
        assert names(tree, view, name, "usr/lost+found") == ["kept"]
        assert names(tree, view, name, "var") == ["lost+found"]
    assert "lost+found" in names(tree, "images", "img", "")
    assert names(tree, "images", "img", "proc") == ["cpuinfo", "sys"]
