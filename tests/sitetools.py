"""Small hand-written SystemImager server trees for unit tests."""

from __future__ import annotations

from pathlib import Path

from onesuite_fs.settings import Settings

DATA = Path(__file__).resolve().parent / "data"


def make_site(root: Path, cluster_xml: str | None, *, images: tuple[str, ...] = (),
              overrides: tuple[str, ...] = (), stubs: bool = True) -> Path:
    """A server tree under root: cluster.xml, an empty image dir and stub per image, and an
    override dir per name (each with a marker file naming it)."""
    config = root / "etc/systemimager"
    (config / "rsync_stubs").mkdir(parents=True, exist_ok=True)
    if cluster_xml is not None:
        (config / "cluster.xml").write_text(cluster_xml)
    for image in images:
        path = root / "var/lib/systemimager/images" / image
        (path / "etc").mkdir(parents=True, exist_ok=True)
        (path / "etc/image").write_text(image)
        if stubs:
            (config / "rsync_stubs" / f"40{image}").write_text(
                f"[{image}]\n\tpath=/var/lib/systemimager/images/{image}\n\n")
    for name in overrides:
        path = root / "var/lib/systemimager/overrides" / name
        path.mkdir(parents=True, exist_ok=True)
        (path / f"from-{name}").write_text(name)
    return root


def shipped_site(root: Path) -> Settings:
    """The shipped cluster.xml with every image and override directory present."""
    make_site(root, (DATA / "cluster-shipped.xml").read_text(),
              images=("SuSE10", "RHEL4", "Local"),
              overrides=("all", "SuSE10", "SuSE10_frontend", "Storage", "Local", "node001"))
    return Settings(root=root)


ONESIS_CONF = """\
# oneSIS rules for the test site (both syntaxes on purpose)
NODECLASS_REGEXP: n\\d+ compute
NODECLASS_MAP n3 compute.gpu
NODECLASS_RANGE login[1-2] login
PROPERTY: fc -n n2
PROPERTY ib -c compute.gpu
LINKBACK /etc/fstab CLASS
LINKBACK /etc/fstab NODE -n n1
LINKBACK /etc/motd PROPERTY
LINKBACK /etc/sysconfig/network-scripts/ifcfg-eth0 CLASS -h
LINKBACK /etc/profile.d CLASS
LINKBACK /etc/app.conf /opt/conf/$CLASS/app.conf
LINKBACK /etc/forced /mnt/nowhere/$NODE -f
LINKBACK /etc/nothing CLASS
# properties trump classes by order (the NCI pattern)
LINKBACK /etc/mom.conf CLASS
LINKBACK /etc/mom.conf PROPERTY -p fc,ib
SERVICE smartd -c compute.gpu
LINKDIR /var/log
LINKFILE /etc/adjtime -d
RAMDIR /var/lib/nfs -d
RAMFILE /etc/resolv.conf -d -m 0600
LINKFILE /etc/ssh/ssh_host_*_key
RAMFILE /etc/{hosts,hostname} -d -u chrony -g 996
DISKMOUNT /dev/sda 100% /scratch
"""

ONESIS_FILES = {
    "etc/sysimage.conf": ONESIS_CONF,
    "etc/fstab": "fstab: the image's own\n",
    "etc/fstab.default": "fstab: default\n",
    "etc/fstab.compute": "fstab: class compute\n",
    "etc/fstab.n1": "fstab: node n1\n",
    "etc/motd": "motd: the image's own\n",
    "etc/motd.fc": "motd: property fc\n",
    "etc/motd.ib": "motd: property ib\n",
    "etc/sysconfig/network-scripts/.ifcfg-eth0.compute": "DEVICE=eth0 # compute\n",
    "etc/sysconfig/network-scripts/.ifcfg-eth0.default": "DEVICE=eth0 # default\n",
    "etc/sysconfig/network-scripts/ifcfg-lo": "DEVICE=lo\n",
    "etc/profile.d/image.sh": "# the image's profile.d\n",
    "etc/profile.d.compute/compute.sh": "# compute's profile.d\n",
    "opt/conf/compute/app.conf": "app: compute\n",
    "etc/mom.conf.compute": "mom: class compute\n",
    "etc/mom.conf.fc": "mom: property fc\n",
    "etc/adjtime": "0.0 0 0.0\n",
    "etc/resolv.conf": "nameserver 10.0.0.1\n",
    "var/lib/nfs/statd/state": "statd\n",
    "var/log/messages": "image log\n",
    "etc/init.d/smartd": "#!/bin/sh\n# smartd\n",
    "etc/ssh/ssh_host_rsa_key": "rsa\n",
    "etc/ssh/ssh_host_ed25519_key": "ed25519\n",
    "etc/ssh/ssh_config": "Host *\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    "etc/hostname": "golden\n",
    "etc/passwd": "root:x:0:0::/root:/bin/sh\nchrony:x:998:996::/:/bin/false\n",
}


def onesis_site(root: Path) -> Path:
    """Nodes n1-n3 (compute; n3 is compute.gpu) and login1 (login), one image carrying a
    sysimage.conf with every kind of rule, variants for them, and a host override for n2."""
    import os

    make_site(root, "<xml><name>all</name><override>all</override>"
              "<group><name>compute</name><image>img</image><node>n1-n3</node></group>"
              "<group><name>login</name><image>img</image><node>login1</node></group></xml>",
              images=("img",), overrides=("all", "n2"))
    image = root / "var/lib/systemimager/images/img"
    for path, text in ONESIS_FILES.items():
        (image / path).parent.mkdir(parents=True, exist_ok=True)
        (image / path).write_text(text)
    for rc in ("etc/rc3.d", "etc/systemd/system/multi-user.target.wants"):
        (image / rc).mkdir(parents=True)
    os.symlink("../init.d/smartd", image / "etc/rc3.d/S40smartd")
    os.symlink("/usr/lib/systemd/system/smartd.service",
               image / "etc/systemd/system/multi-user.target.wants/smartd.service")
    os.symlink("../init.d/other", image / "etc/rc3.d/S50other")
    (root / "var/lib/systemimager/overrides/n2/etc").mkdir(parents=True)
    (root / "var/lib/systemimager/overrides/n2/etc/fstab.compute").write_text(
        "fstab: class compute, from n2's host override\n")
    return root
