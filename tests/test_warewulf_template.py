"""The Go text/template renderer for Warewulf overlays: Go's semantics (trimming, missing
keys, range order, else-if chains, variables, file/softlink/abort/nobackup), and what an
attacker's template cannot do (read outside the site, follow symlinks, loop or write
without bound, use a function outside the subset)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from onesuite_fs.sources import wwtemplate
from onesuite_fs.sources.gotemplate import TemplateError
from onesuite_fs.sources.wwtemplate import (
    IP,
    Context,
    GoStruct,
    StringMap,
    WWBool,
    render_template,
)


def netdev(ip: str | None, device: str, primary: bool) -> GoStruct:
    return GoStruct("node.NetDev", {
        "Ipaddr": IP(ipaddress.ip_address(ip) if ip else None), "Device": device,
        "Tags": StringMap(), "Type": "", "OnBoot": WWBool("")}, {"Primary": lambda: primary})


NODE = GoStruct("node.Node", {
    "NetDevs": {"default": netdev("10.0.0.1", "eth0", True), "ib": netdev(None, "ib0", False)},
    "Tags": StringMap({"role": "compute"}), "Kernel": GoStruct("node.KernelConf", {
        "Version": "", "Args": ["quiet", "crashkernel=no"]}),
    "Resources": {"fstab": [{"spec": "srv:/home", "file": "/home"}]}}, {"Id": lambda: "n1"})
DATA = GoStruct("TemplateStruct", {**NODE.fields, "Id": "n1", "AllNodes": [NODE],
                                    "Ipaddr": "10.0.0.254", "ImageName": "rocky9"})


def render(text: str, tmp_path: Path | None = None, images: dict | None = None):
    root = tmp_path or Path("/nonexistent")
    context = Context("overlay/t.ww", root, "/etc",
                      lambda name: (images or {}).get(name))
    return render_template(Path("t.ww"), text, DATA, context)


def out(text: str, **kw) -> str:
    result = render(text, **kw)
    assert len(result.files) == 1
    return result.files[0].text


@pytest.mark.parametrize("template, expected", [
    ("a {{- \" b\" }} c", "a b c"),
    ("a\n  {{- .Id -}}  \n b", "an1b"),
    ("{{/* a comment */}}x{{- /* trimmed */ -}}  y", "xy"),
    ("{{ .Tags.role }} {{ .Tags.missing }} [{{ index .Tags \"missing\" }}]",
     "compute <no value> []"),
    ("{{ range $k, $v := .NetDevs }}{{ $k }}={{ $v.Ipaddr }};{{ end }}",
     "default=10.0.0.1;ib=<nil>;"),
    ("{{ if eq .Id \"n2\" }}two{{ else if eq .Id \"n1\" }}one{{ else }}other{{ end }}", "one"),
    ("{{ $x := 1 }}{{ range .Kernel.Args }}{{ $x = inc $x }}{{ end }}{{ $x }}", "3"),
    ("{{ .Kernel.Args | join \" \" }}|{{ len .Kernel.Args }}", "quiet crashkernel=no|2"),
    ("{{ range .Kernel.Args }}{{ if eq . \"quiet\" }}{{ continue }}{{ end }}{{ . }}"
     "{{ break }}{{ end }}", "crashkernel=no"),
    ("{{ with .Tags.role }}role {{ . }}{{ else }}none{{ end }}", "role compute"),
    ("{{ with .Tags.nothing }}x{{ else }}none{{ end }}", "none"),
    ("{{ range $e := index .Resources \"fstab\" }}{{ index $e \"spec\" }} {{ default \"nfs\" "
     "(index $e \"vfstype\") }}{{ end }}", "srv:/home nfs"),
    ("{{ printf \"%s-%03d-%v\" .Id 7 true }}", "n1-007-true"),
    ("{{ print \"{\" }}x{{ print \"}\" }}", "{x}"),
    ("{{ and .Id .Tags.missing }}|{{ or .Tags.missing \"z\" }}|{{ not .Id }}",
     "<no value>|z|false"),
    ("{{ (index .NetDevs \"default\").Device }} {{ .ImageName | upper }}", "eth0 ROCKY9"),
    ("{{ SystemdEscapePath \"/srv/home dir\" }} {{ basename \"/a/b.conf\" }}",
     "srv-home\\x20dir b.conf"),
    ("{{ regexMatch \"^n[0-9]+$\" .Id }} {{ splitList \",\" \"a,b\" }}", "true [a b]"),
])
def test_go_semantics(template, expected):
    assert out(template) == expected


def test_file_softlink_abort_nobackup():
    result = render("head{{ nobackup }}{{ file \"a.conf\" }}A\n{{ file \"/etc/b\" }}B"
                    "{{ file \"link\" }}{{ softlink \"/target\" }}")
    assert not result.backup and result.write
    assert [(f.name, f.text, f.symlink) for f in result.files] == [
        ("", "head", None), ("a.conf", "A\n", None), ("/etc/b", "B", None),
        ("link", "", "/target")]
    assert render("x{{ abort }}y").write is False


@pytest.mark.parametrize("template, message", [
    ("{{ define \"x\" }}{{ end }}", "not supported"),
    ("{{ template \"x\" }}", "not supported"),
    ("{{ readlink \"/etc/shadow\" }}", "function 'readlink' is not supported"),
    ("{{ ImportLink \"/etc/localtime\" }}", "not supported"),
    ("{{ env \"HOME\" }}", "not supported"),
    ("line1\n{{ .NoSuchField }}", "can't evaluate field NoSuchField"),
    ("{{ if .Id }}unclosed", "has no {{end}}"),
    ("{{ end }}", "unexpected {{end}}"),
    ("{{ range 100000000 }}x{{ end }}", "steps"),
    ("{{ $l := list }}{{ range 1000000 }}{{ $l = append $l 1 }}{{ end }}", "steps"),
    ("{{ $s := \"xx\" }}{{ range 64 }}{{ $s = printf \"%s%s\" $s $s }}{{ end }}", "steps"),
])
def test_refused_with_file_and_line(template, message):
    with pytest.raises(TemplateError) as raised:
        render(template)
    assert message in str(raised.value)
    assert raised.value.file == "overlay/t.ww"
    if template.startswith("line1"):
        assert raised.value.line == 2


def test_output_is_bounded(monkeypatch):
    monkeypatch.setattr(wwtemplate, "MAX_OUTPUT_BYTES", 1000)
    with pytest.raises(TemplateError, match="output larger"):
        render("{{ range 200 }}0123456789{{ end }}")


def test_nesting_is_bounded():
    with pytest.raises(TemplateError, match="nested deeper"):
        render("{{ if 1 }}" * 100 + "{{ end }}" * 100)
    with pytest.raises(TemplateError, match="nested deeper"):
        render("{{ " + "(" * 100 + "1" + ")" * 100 + " }}")


def test_include_reads_only_regular_files_inside_the_site(tmp_path):
    site = tmp_path / "site"
    (site / "etc/warewulf/keys").mkdir(parents=True)
    (site / "etc/warewulf/keys/k").write_text("KEY\n")
    (tmp_path / "secret").write_text("SECRET\n")
    assert out("{{ Include \"keys/k\" }}", tmp_path=site) == "KEY"
    # An absolute path is the site's, never the server's own /etc.
    assert out("{{ Include \"/etc/passwd\" }}", tmp_path=site) == ""
    with pytest.raises(TemplateError, match="'..'"):
        render("{{ Include \"../../../secret\" }}", tmp_path=site)
    (site / "etc/warewulf/keys/link").symlink_to(tmp_path / "secret")
    with pytest.raises(TemplateError, match="symlink"):
        render("{{ Include \"keys/link\" }}", tmp_path=site)
    os.symlink(tmp_path, site / "etc/warewulf/up")
    with pytest.raises(TemplateError, match="symlink"):
        render("{{ Include \"up/secret\" }}", tmp_path=site)
    os.mkfifo(site / "etc/warewulf/fifo")  # never opened for reading: no hang
    assert out("{{ Include \"fifo\" }}", tmp_path=site) == ""


def test_include_from_stays_in_the_image(tmp_path):
    image = tmp_path / "image"
    (image / "etc").mkdir(parents=True)
    (image / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (image / "etc/shadow").symlink_to("/etc/shadow")
    images = {"rocky9": image}
    assert out("{{ IncludeFrom .ImageName \"/etc/passwd\" }}", images=images) == \
        "root:x:0:0::/root:/bin/sh"
    assert out("{{ IncludeFrom \"other\" \"/etc/passwd\" }}", images=images) == ""
    with pytest.raises(TemplateError, match="symlink"):
        render("{{ IncludeFrom .ImageName \"/etc/shadow\" }}", images=images)
    with pytest.raises(TemplateError, match="'..'"):
        render("{{ IncludeFrom .ImageName \"/../../etc/shadow\" }}", images=images)


@pytest.mark.parametrize("template, independent", [
    ("{{ range $n := $.AllNodes }}{{ $n.Id }}{{ end }}{{ .Ipaddr }}", True),
    ("{{ range .AllNodes }}{{ .Id }}{{ end }}", True),
    ("{{ if .Ipv6 }}{{ $.Ipaddr6 }}{{ end }}{{ Include \"keys/k\" }}", True),
    ("{{ .Id }}", False),
    ("{{ range $.AllNodes }}{{ $.Id }}{{ end }}", False),
    ("{{ $me := $ }}{{ $me.Id }}", False),
    ("{{ $d := . }}{{ $d.Id }}", False),
    ("{{ with .Tags.x }}{{ . }}{{ end }}", False),
    ("{{ if .Ipv6 }}{{ .Tags }}{{ end }}", False),
    ("{{ print . }}", False),
    ("{{ IncludeFrom .ImageName \"/etc/passwd\" }}", False),
    ("{{ (index .NetDevs \"default\").Device }}", False),
])
def test_which_templates_are_the_same_for_every_node(template, independent):
    from onesuite_fs.sources.gotemplate import parse
    from onesuite_fs.sources.wwtemplate import node_independent
    assert node_independent(parse(template, "t.ww")) is independent
