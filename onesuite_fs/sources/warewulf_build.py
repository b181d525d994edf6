"""A Warewulf site as layers: each node's image, then its overlays in Warewulf's order, each
overlay a stage of (its rendered templates, its files); docs/warewulf.md.

Warewulf builds a node's overlays by walking each overlay in list order into one directory
(overlay.go BuildOverlayIndir): files are copied, ``.ww`` templates rendered (the output
loses ``.ww``; ``file`` writes other names; a file it replaces is kept as ``.wwbackup``
unless ``nobackup``), later overlays winning; the system image, then the runtime one, is
unpacked over the node image. Here an overlay's own directory is a layer with its ``.ww``
files hidden, and what its templates render for a node is another layer, written once into
a content-addressed directory of the render cache (same content, same directory: every
process, the mount and preview alike, serves the same files). The stage (rendered, overlay)
lets the rendered file win over the overlay's own file of the same name, as Warewulf's walk
does ("x" before "x.ww").
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..core.layers import Layer
from ..core.model import Cluster, Group, Image, Node, Site, SiteLayout
from ..core.stack import StackEntry, Stages
from .gotemplate import parse
from .warewulf import PlainScalar, WarewulfSite, WWNode
from .wwtemplate import (
    IP,
    Context,
    GoStruct,
    RenderedFile,
    StringMap,
    TemplateError,
    WWBool,
    node_independent,
    render_template,
)

DEFAULT_RENDER_CACHE = Path("/var/cache/onesuite-fs/warewulf")
MAX_TEMPLATE_FILE = 1 << 20


# ----- template data (overlay/datastructure.go InitStruct) ----------------------------------
def _ip(value: object) -> IP:
    if value in (None, ""):
        return IP(None)
    return IP(ipaddress.ip_address(str(value).split("/")[0]))


def _string_map(value: object) -> StringMap:
    out = StringMap()
    if isinstance(value, dict):
        out.update({str(k): "" if v is None else str(v) for k, v in value.items()})
    return out


def _netdev(name: str, raw: dict, primary: bool) -> GoStruct:
    fields = {
        "Type": str(raw.get("type") or ""), "OnBoot": WWBool(raw.get("onboot") or ""),
        "Device": str(raw.get("device") or ""), "Hwaddr": str(raw.get("hwaddr") or ""),
        "Ipaddr": _ip(raw.get("ipaddr")), "Netmask": _ip(raw.get("netmask")),
        "Gateway": _ip(raw.get("gateway")), "Ipaddr6": _ip(raw.get("ipaddr6")),
        "PrefixLen6": str(raw.get("prefixlen6") or ""), "Gateway6": _ip(raw.get("gateway6")),
        "MTU": str(raw.get("mtu") or ""), "Tags": _string_map(raw.get("tags")),
    }

    def ip_cidr() -> str:
        ip, mask = fields["Ipaddr"], fields["Netmask"]
        if not ip or not mask:
            return ""
        net = ipaddress.ip_network(f"{ip}/{mask}", strict=False)
        return f"{ip}/{net.prefixlen}"

    def ip_cidr6() -> str:
        ip, prefix = fields["Ipaddr6"], fields["PrefixLen6"]
        return f"{ip}/{prefix}" if ip and prefix else ""

    return GoStruct("node.NetDev", fields, {"Primary": lambda: primary, "IpCIDR": ip_cidr,
                                            "IpCIDR6": ip_cidr6})


def node_struct(node: WWNode) -> GoStruct:
    """node.Node after Expand(): what `.` fields and $.AllNodes entries are."""
    raw = node.fields
    netdevs_raw = raw.get("network devices") or {}
    primary = str(raw.get("primary network") or "")
    if primary not in netdevs_raw and netdevs_raw:
        primary = sorted(netdevs_raw)[0]  # methods.go updatePrimaryNetDev
    netdevs = {name: _netdev(name, dev or {}, name == primary)
               for name, dev in netdevs_raw.items()}
    kernel = raw.get("kernel") or {}
    ipmi = raw.get("ipmi") or {}
    filesystems = {
        device: GoStruct("node.FileSystem", {
            "Format": str(fs.get("format") or ""), "Path": str(fs.get("path") or ""),
            "Label": str(fs.get("label") or ""), "Uuid": str(fs.get("uuid") or ""),
            "Options": [str(o) for o in fs.get("options") or []],
            "MountOptions": str(fs.get("mount_options") or "")},
            {"WipeFileSystem": lambda fs=fs: str(fs.get("wipe_filesystem")).lower() == "true"})
        for device, fs in (raw.get("filesystems") or {}).items() if isinstance(fs, dict)}
    fields: dict[str, object] = {
        "Discoverable": WWBool(raw.get("discoverable") or ""),
        "AssetKey": str(raw.get("asset key") or ""),
        "Profiles": list(raw.get("profiles") or []),
        "Comment": str(raw.get("comment") or ""),
        "ClusterName": str(raw.get("cluster name") or ""),
        "ImageName": node.image,
        "Ipxe": str(raw.get("ipxe template") or ""),
        "RuntimeOverlay": list(raw.get("runtime overlay") or []),
        "SystemOverlay": list(raw.get("system overlay") or []),
        "Kernel": GoStruct("node.KernelConf", {
            "Version": str(kernel.get("version") or ""),
            "Args": [str(a) for a in kernel.get("args") or []]}),
        "Ipmi": GoStruct("node.IpmiConf", {
            "UserName": str(ipmi.get("username") or ""),
            "Password": str(ipmi.get("password") or ""),
            "Ipaddr": _ip(ipmi.get("ipaddr")), "Gateway": _ip(ipmi.get("gateway")),
            "Netmask": _ip(ipmi.get("netmask")), "Port": str(ipmi.get("port") or ""),
            "Interface": str(ipmi.get("interface") or ""),
            "EscapeChar": str(ipmi.get("escapechar") or ""),
            "Write": WWBool(ipmi.get("write") or ""),
            "Template": str(ipmi.get("template") or ""),
            "Tags": _string_map(ipmi.get("tags"))}),
        "Init": str(raw.get("init") or ""),
        "Root": str(raw.get("root") or ""),
        "NetDevs": netdevs,
        "Tags": _string_map(raw.get("tags")),
        "PrimaryNetDev": primary,
        "Disks": dict(raw.get("disks") or {}),
        "FileSystems": filesystems,
        "Resources": _plain(raw.get("resources") or {}),
    }
    methods = {"Id": lambda: node.name, "ContainerName": lambda: node.image}
    return GoStruct("node.Node", fields, methods)


def _plain(value: object) -> object:
    """Resources are interface{} in Warewulf: YAML's own types (ints, bools) kept."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.typed() if isinstance(value, PlainScalar) else value


def _conf_struct(type_name: str, raw: object, known: dict[str, tuple[str, object]]) -> GoStruct:
    raw = raw if isinstance(raw, dict) else {}
    fields = {go: raw.get(key, default) if raw.get(key) is not None else default
              for go, (key, default) in known.items()}
    return GoStruct(type_name, fields)


def controller_addresses(conf: dict) -> dict[str, object]:
    """The server's address fields as config/root.go Parse and its methods compute them."""
    ipaddr = str(conf.get("ipaddr") or "")
    netmask = str(conf.get("netmask") or "")
    network = str(conf.get("network") or "")
    if "/" in ipaddr:
        try:
            interface = ipaddress.ip_interface(ipaddr)
            ipaddr = str(interface.ip)
            network = network or str(interface.network.network_address)
            netmask = netmask or str(interface.network.netmask)
        except ValueError:
            pass
    ipaddr6 = str(conf.get("ipaddr6") or "")
    prefix6 = str(conf.get("prefixlen6") or "")
    if "/" in ipaddr6:
        try:
            interface6 = ipaddress.ip_interface(ipaddr6)
            ipaddr6, prefix6 = str(interface6.ip), str(interface6.network.prefixlen)
        except ValueError:
            pass

    def cidr(address: str) -> str:
        try:
            ipaddress.ip_address(address)
            bits = ipaddress.ip_network(f"0.0.0.0/{netmask}").prefixlen
        except ValueError:
            return ""
        return f"{address}/{bits}"

    try:
        net6 = ipaddress.ip_network(f"{ipaddr6}/{prefix6}", strict=False)
        network6, network_cidr6 = str(net6.network_address), str(net6)
    except ValueError:
        network6 = network_cidr6 = ""
    return {
        "Ipaddr": ipaddr, "IpCIDR": cidr(ipaddr) if ipaddr and netmask else "",
        "Netmask": netmask, "Network": network,
        "NetworkCIDR": cidr(network) if network and netmask else "",
        "Ipaddr6": ipaddr6, "PrefixLen6": prefix6,
        "IpCIDR6": f"{ipaddr6}/{prefix6}" if network6 else "",
        "Network6": network6, "NetworkCIDR6": network_cidr6,
        "Ipv6": bool(ipaddr6 and prefix6),
    }


def _flag(raw: dict, key: str, default: bool) -> bool:
    value = raw.get(key)
    return default if value in (None, "") else str(value).lower() in ("true", "yes", "1")


def shared_data(site: WarewulfSite, all_nodes: list[GoStruct], build_host: str
                ) -> dict[str, object]:
    """The TemplateStruct fields that are the same for every node, made once."""
    conf = site.conf
    warewulf = conf.get("warewulf") if isinstance(conf.get("warewulf"), dict) else {}
    nfs = conf.get("nfs") if isinstance(conf.get("nfs"), dict) else {}
    return {
        "BuildHost": build_host,
        "BuildTime": time.strftime("%m-%d-%Y %H:%M:%S UTC",
                                   time.gmtime(site.mtime_ns // 10**9)),
        "BuildTimeUnix": str(site.mtime_ns // 10**9),
        **controller_addresses(conf),
        "Warewulf": GoStruct("config.WarewulfConf", {
            "Port": int(warewulf.get("port") or 9873),
            "TLSPort": int(warewulf.get("tls port") or 9874),
            "UpdateInterval": int(warewulf.get("update interval") or 60),
            "SystemdName": str(warewulf.get("systemd name") or "")}, {
            "Secure": lambda: _flag(warewulf, "secure", True),
            "SecureFiles": lambda: _flag(warewulf, "secure files",
                                         _flag(warewulf, "secure", True)),
            "TLSEnabled": lambda: _flag(warewulf, "tls", False),
            "AutobuildOverlays": lambda: _flag(warewulf, "autobuild overlays", True),
            "EnableHostOverlay": lambda: _flag(warewulf, "host overlay", True),
            "GrubBoot": lambda: _flag(warewulf, "grubboot", False)}),
        "Nfs": GoStruct("config.NFSConf", {
            "ExportsExtended": [GoStruct("config.NFSExportConf", {
                "Path": str(e.get("path") or "/dev/null"),
                "ExportOptions": str(e.get("export options") or "rw,sync,no_subtree_check")})
                for e in (nfs.get("export paths") or []) if isinstance(e, dict)],
            "SystemdName": str(nfs.get("systemd name") or "nfsd")},
            {"Enabled": lambda: _flag(nfs, "enabled", True)}),
        "Ssh": _conf_struct("config.SSHConf", conf.get("ssh"), {
            "KeyTypes": ("key types", ["ed25519", "ecdsa", "rsa"])}),
        "Dhcp": _conf_struct("config.DHCPConf", conf.get("dhcp"), {
            "Enabled": ("enabled", "true"), "Template": ("template", "default"),
            "RangeStart": ("range start", ""), "RangeEnd": ("range end", ""),
            "SystemdName": ("systemd name", "")}),
        "Tftp": _conf_struct("config.TFTPConf", conf.get("tftp"), {
            "TftpRoot": ("tftproot", "/var/lib/tftpboot"),
            "SystemdName": ("systemd name", "tftp")}),
        "Paths": GoStruct("config.BuildConfig", {
            k.capitalize() if not k.startswith("ww") else "WW" + k[2:].capitalize(): v
            for k, v in site.paths.items()}),
        "AllNodes": all_nodes,
    }


def template_data(site: WarewulfSite, node: WWNode, overlay: str, source: str,
                  all_nodes: list[GoStruct], this: GoStruct, build_host: str,
                  shared: dict[str, object] | None = None) -> GoStruct:
    """overlay/datastructure.go InitStruct: the node's fields, the server's, the overlay's."""
    fields: dict[str, object] = dict(this.fields)
    fields.update(shared if shared is not None else
                  shared_data(site, all_nodes, build_host))
    fields.update({
        "Id": node.name, "Hostname": node.name, "BuildSource": source, "Overlay": overlay,
        "Container": node.image, "ContainerName": node.image, "ThisNode": this,
    })
    return GoStruct("overlay.TemplateStruct", fields, dict(this.methods) | {
        "Id": lambda: node.name})


# ----- rendering one overlay for one node -----------------------------------------------------
@dataclass
class _Output:
    relpath: str
    content: bytes | None  # None for a symlink
    target: str | None
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    template: str  # the template that wrote it (its path), for messages


def _read_template(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_TEMPLATE_FILE + 1)
    if len(data) > MAX_TEMPLATE_FILE:
        raise ConfigError(f"template larger than {MAX_TEMPLATE_FILE} bytes", file=str(path))
    return data.decode(errors="surrogateescape")


def _walk(rootfs: Path) -> list[tuple[str, os.stat_result]]:
    """filepath.Walk order (lexical, depth first), symlinks not followed; iterative, so a
    deep overlay is no recursion limit."""
    found: list[tuple[str, os.stat_result]] = []
    stack = [("", sorted(os.listdir(rootfs), reverse=True))]
    while stack:
        relative, names = stack[-1]
        if not names:
            stack.pop()
            continue
        name = names.pop()
        path = f"{relative}/{name}" if relative else name
        st = os.lstat(rootfs / path)
        found.append((path, st))
        if stat.S_ISDIR(st.st_mode):
            stack.append((path, sorted(os.listdir(rootfs / path), reverse=True)))
    return found


def render_overlay(site: WarewulfSite, node: WWNode, overlay: str,
                   data_for: Callable[[str, str], GoStruct],
                   build_dir: dict[str, tuple[str, object]],
                   templates: dict[Path, list] | None = None) -> list[_Output]:
    """What overlay `overlay`'s templates write for `node`, in walk order, tracking the
    build directory (`build_dir`: path -> (kind, backing)) for .wwbackup copies."""
    rootfs = site.overlays[overlay]
    outputs: dict[str, _Output] = {}
    # template -> [parse, node-independent, its output when independent]: shared by nodes;
    # (overlay,) -> its walk, read once
    templates = {} if templates is None else templates
    walked = templates.get(rootfs)
    if walked is None:
        walked = templates[rootfs] = _walk(rootfs)  # type: ignore[assignment]
    for relpath, st in walked:  # type: ignore[union-attr]
        if stat.S_ISDIR(st.st_mode):
            build_dir.setdefault(relpath, ("dir", None))
            continue
        if not relpath.endswith(".ww") or not stat.S_ISREG(st.st_mode):
            if relpath.endswith(".ww"):
                raise TemplateError(f"{relpath} ends in .ww but is not a regular file",
                                    file=str(rootfs / relpath),
                                    hint="Warewulf would render it as a template; make it a "
                                         "regular file or rename it")
            if stat.S_ISLNK(st.st_mode) and build_dir.get(relpath, ("",))[0] == "file":
                _backup(outputs, build_dir, relpath, st, f"{relpath} (symlink over a file)")
            outputs.pop(relpath, None)  # the overlay's own file comes later in the walk: wins
            kind = "file" if stat.S_ISREG(st.st_mode) else \
                "link" if stat.S_ISLNK(st.st_mode) else "other"  # only files are backed up
            build_dir[relpath] = (kind, ("overlay", rootfs / relpath))
            continue
        source = rootfs / relpath
        shown = str(source)
        context = Context(filename=str(source), warewulf_root=site.root,
                          sysconfdir=site.paths["sysconfdir"],
                          image_rootfs=lambda name: site.images.get(name))
        template = templates.get(source)
        if template is None:
            text = _read_template(source)
            tree = parse(text, str(source))
            template = templates[source] = [tree, node_independent(tree), None]
        rendered = template[2]
        if rendered is None:
            rendered = render_template(source, "", data_for(overlay, str(source)), context,
                                       template[0])
            if template[1]:
                template[2] = rendered  # the same for every node: rendered once
        if not rendered.write:
            continue
        default = relpath[:-3]
        files = rendered.files
        for item in files:
            if item.name == "":
                if len(files) > 1 and item.symlink is None:
                    continue
                target = default
            elif item.name.startswith("/"):
                target = os.path.normpath(item.name).lstrip("/")
            else:
                target = os.path.normpath(f"{os.path.dirname(relpath)}/{item.name}")
            if target.startswith("..") or target in ("", ".") or "\0" in target:
                raise TemplateError(f"file({item.name!r}) leaves the overlay", file=str(source),
                                    hint="Warewulf refuses it too ('escapes output directory')")
            outputs.pop(target, None)
            if item.symlink is not None:
                outputs[target] = _Output(target, None, item.symlink, stat.S_IFLNK | 0o777,
                                          st.st_uid, st.st_gid, st.st_mtime_ns, shown)
                build_dir[target] = ("link", ("rendered", outputs[target]))
                continue
            mode = st.st_mode
            earlier = build_dir.get(target)
            if earlier is not None and earlier[0] == "file":
                # CarefulWriteBuffer: O_TRUNC keeps the existing file's mode; backup first.
                mode = _earlier_mode(earlier[1], mode)
                if rendered.backup:
                    _backup(outputs, build_dir, target, st, shown)
            outputs[target] = _Output(target, _encode(item), None, mode, st.st_uid, st.st_gid,
                                      st.st_mtime_ns, shown)
            build_dir[target] = ("file", ("rendered", outputs[target]))
    for path in outputs:
        parent = path.rpartition("/")[0]
        while parent:
            if parent in outputs:
                raise TemplateError(f"{overlay}: {path} is written below {parent}, which a "
                                    "template wrote as a file", file=outputs[path].template,
                                    hint="Warewulf fails to build this overlay too")
            parent = parent.rpartition("/")[0]
    return list(outputs.values())


def _encode(item: RenderedFile) -> bytes:
    return item.text.encode(errors="surrogateescape")


def _earlier_mode(backing: object, default: int) -> int:
    kind, value = backing  # type: ignore[misc]
    if kind == "rendered":
        return value.mode
    try:
        return os.lstat(value).st_mode
    except OSError:
        return default


def _backup(outputs: dict[str, _Output], build_dir: dict, target: str, st: os.stat_result,
            shown: str) -> None:
    backup = f"{target}.wwbackup"
    if build_dir.get(backup, ("",))[0] == "file":
        return  # an existing backup is kept
    kind, value = build_dir[target][1]
    if kind == "rendered":
        content, mode, uid, gid, mtime = value.content, value.mode, value.uid, value.gid, \
            value.mtime_ns
    else:
        with open(value, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as handle:
            content = handle.read()
        old = os.lstat(value)
        mode, uid, gid, mtime = old.st_mode, old.st_uid, old.st_gid, old.st_mtime_ns
    outputs[backup] = _Output(backup, content, None, mode, uid, gid, mtime, f"{shown} (backup)")
    build_dir[backup] = ("file", ("rendered", outputs[backup]))


# ----- writing rendered layers, content-addressed ----------------------------------------------
def _digest(outputs: list[_Output], dirs: dict[str, tuple[int, int, int, int]]) -> str:
    h = hashlib.sha256()
    for path, meta in sorted(dirs.items()):
        h.update(f"d\0{path}\0{meta}\n".encode())
    for out in sorted(outputs, key=lambda o: o.relpath):
        h.update(f"f\0{out.relpath}\0{out.mode}\0{out.uid}\0{out.gid}\0{out.mtime_ns}\0"
                 f"{out.target}\0".encode(errors="surrogateescape"))
        h.update(hashlib.sha256(out.content or b"").digest())
    return h.hexdigest()[:40]


def _dir_metas(rootfs: Path, outputs: list[_Output]) -> dict[str, tuple[int, int, int, int]]:
    """The rendered layer's directories: each as the overlay's own (merged metadata then
    comes out the same), or, for one only an absolute file() names, as the template's
    directory (overlay.go:1017-1026 makes it with that mode)."""
    top = os.lstat(rootfs)
    metas: dict[str, tuple[int, int, int, int]] = {
        "": (top.st_mode, top.st_uid, top.st_gid, top.st_mtime_ns)}
    for out in outputs:
        parts = out.relpath.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            if path in metas:
                continue
            try:
                st = os.lstat(rootfs / path)
                if not stat.S_ISDIR(st.st_mode):
                    raise OSError
            except OSError:  # made for an absolute file(): the template directory's mode
                st = os.lstat(os.path.dirname(out.template.removesuffix(" (backup)")))
            metas[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    return metas


def check_cache(cache: Path) -> None:
    """The render cache: made 0700 when missing; else it must be our own directory, not a
    symlink, closed to others. Nothing rendered (keys, setuid modes) may be reachable by a
    local user, and nobody else may plant a directory under a content name."""
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(cache)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise ConfigError(f"render cache {cache} must be a directory of uid {os.geteuid()} "
                          "with mode 0700 (not a symlink)",
                          hint="remove it (onesuite-fs makes it), or name another with "
                               "[warewulf] render_cache")


def write_layer(cache: Path, rootfs: Path, outputs: list[_Output]) -> Path:
    """The directory holding `outputs` (made once; same outputs, same directory)."""
    dirs = _dir_metas(rootfs, outputs)
    final = cache / _digest(outputs, dirs)
    if final.is_dir():
        return final
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    for path in sorted(dirs, key=lambda p: p.count("/") if p else -1):
        if path:
            (work / path).mkdir()
    for out in outputs:
        target = work / out.relpath
        if out.content is None:
            os.symlink(out.target or "", target)
            os.lchown(target, out.uid, out.gid)
        else:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(out.content)
            os.chown(target, out.uid, out.gid)
            os.chmod(target, stat.S_IMODE(out.mode))
        os.utime(target, ns=(out.mtime_ns, out.mtime_ns), follow_symlinks=False)
    for path, (mode, uid, gid, mtime) in sorted(dirs.items(), key=lambda kv: -kv[0].count("/")
                                                if kv[0] else 1):
        target = work / path if path else work
        os.chown(target, uid, gid)
        os.chmod(target, stat.S_IMODE(mode))
        os.utime(target, ns=(mtime, mtime))
    try:
        os.rename(work, final)
    except OSError:
        if not final.is_dir():
            raise
    return final


# ----- the site -----------------------------------------------------------------------------------
@dataclass
class WarewulfStacks:
    """What stack.py asks a Warewulf site for: each view's stages."""

    site: WarewulfSite
    node_stages: dict[str, Stages]
    group_stages: dict[str, Stages]
    render_cache: Path


def _overlay_layer(site: WarewulfSite, name: str) -> Layer:
    path = site.overlays[name]
    return Layer("overlay", name, path, Path(os.path.realpath(path)), None, ".ww")


def build_stacks(site: WarewulfSite, cache: Path, build_host: str = "warewulf"
                 ) -> WarewulfStacks:
    """Render every node's templates (into `cache`) and make every view's stages."""
    structs = {name: node_struct(node) for name, node in site.nodes.items()}
    all_nodes = [structs[name] for name in sorted(structs)]
    memo: dict[object, object] = {}

    def intern(value: object) -> object:
        return memo.setdefault(value, value)

    def image_entry(name: str) -> StackEntry:
        path = site.images[name]
        return intern(StackEntry(Layer("image", name, path, Path(os.path.realpath(path))),
                                 "image", True))  # type: ignore[return-value]

    node_stages: dict[str, Stages] = {}
    templates: dict[Path, list] = {}
    check_cache(cache)
    overlay_layers = {name: _overlay_layer(site, name) for name in site.overlays}
    shared = shared_data(site, all_nodes, build_host)
    for name, node in site.nodes.items():
        this = structs[name]

        def data_for(overlay: str, source: str, node: WWNode = node,
                     this: GoStruct = this) -> GoStruct:
            return template_data(site, node, overlay, source, all_nodes, this, build_host,
                                 shared)

        stages: list[tuple[StackEntry, ...]] = [(image_entry(node.image),)]
        build_dirs: dict[str, dict] = {"system": {}, "runtime": {}}
        for use in node.overlays:
            role = f"{use.context} overlay ({use.source})"
            outputs = render_overlay(site, node, use.name, data_for, build_dirs[use.context],
                                     templates)
            stage: list[StackEntry] = []
            if outputs:
                layer_dir = write_layer(cache, site.overlays[use.name], outputs)
                stage.append(intern(StackEntry(
                    Layer("rendered", f"{use.name}@{layer_dir.name[:12]}", layer_dir,
                          layer_dir), f"templates of {role} for {name}",
                    True)))  # type: ignore[arg-type]
            stage.append(intern(StackEntry(overlay_layers[use.name], role,
                                           True)))  # type: ignore[arg-type]
            stages.append(tuple(stage))
        node_stages[name] = intern(tuple(intern(s) for s in stages))  # type: ignore[assignment]
    group_stages: dict[str, Stages] = {}
    for name, profile in site.profiles.items():
        if not profile.image or profile.image not in site.images:
            continue
        stages = [(image_entry(profile.image),)]
        stages += [(intern(StackEntry(_overlay_layer(site, use.name),
                                      f"{use.context} overlay (profile {name}; templates "
                                      "not rendered: no node)", True)),)
                   for use in profile.overlays if use.name in site.overlays]
        group_stages[name] = tuple(stages)  # type: ignore[assignment]
    return WarewulfStacks(site, node_stages, group_stages, cache)


def to_site(ww: WarewulfSite, cache: Path) -> Site:
    """The Site the rest of onesuite-fs serves: profiles as groups, images, nodes."""
    stacks = build_stacks(ww, cache)
    members: dict[str, list[str]] = {}
    for node in ww.nodes.values():
        for profile in node.profiles:
            members.setdefault(profile, []).append(node.name)
    groups = tuple(Group(name, None, profile.image, (), tuple(members.get(name, ())),
                         source=f"{ww.nodes_conf}:{profile.line}")
                   for name, profile in sorted(ww.profiles.items()))
    cluster = Cluster("warewulf", (), groups, str(ww.nodes_conf))
    images = {name: Image(name, path, "warewulf image", Path(os.path.realpath(path)))
              for name, path in ww.images.items()}
    nodes = {name: Node(name, node.profiles, node.image) for name, node in ww.nodes.items()}
    layout = SiteLayout(root=ww.root, config_dir=ww.nodes_conf.parent,
                        cluster_xml=ww.nodes_conf, rsync_stubs_dir=ww.nodes_conf.parent,
                        images_dir=ww.under_root(ww.paths["wwchrootdir"]),
                        overrides_dir=ww.under_root(ww.paths["wwoverlaydir"]),
                        scripts_dir=ww.nodes_conf.parent)
    return Site(layout=layout, cluster=cluster, images=images, nodes=nodes,
                warnings=ww.warnings, warewulf=stacks)
