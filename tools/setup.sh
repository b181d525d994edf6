#!/usr/bin/env bash
# setup.sh - install what onesuite-fs needs on Debian 12, idempotently.
#
# Debian packages: libfuse3 (mount + pyfuse3 build), rsync (the SystemImager oracle in tests),
# attr (getfattr), nfs-ganesha + libnfs (NFS export and its tests), keepalived (floating server
# addresses for several NFS servers, docs/nfs.md), qemu-system-x86 + cpio +
# debootstrap (the diskless-boot test: guest initramfs, golden image from the apt mirror),
# squashfs-tools + xorriso + isolinux + syslinux-common (export formats), grub-efi-amd64-bin
# + grub-common + mtools + dosfstools + syslinux + fdisk + qemu-utils (UEFI boot of the ISO,
# the raw and qcow2 disk images), ovmf (the UEFI firmware the boot tests run),
# systemd + systemd-container + logrotate (the service tests: systemd-analyze verify, units
# booted in a systemd-nspawn container, the logrotate snippet checked), fuse-overlayfs +
# mergerfs (the walk benchmark's FUSE peers) and tcpdump (bench/boot_record.py records a boot's
# NFS traffic).
# A virtualenv in .venv built from Debian's python3 (the interpreter a fresh Debian 12 machine
# has), with onesuite-fs installed in editable mode. Re-running does nothing unless something
# is missing or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv attr rsync
              nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils libnfs-dev keepalived
              qemu-system-x86 cpio debootstrap squashfs-tools xorriso isolinux syslinux-common
              grub-efi-amd64-bin grub-common mtools dosfstools syslinux fdisk e2fsprogs
              qemu-utils ovmf systemd systemd-container logrotate
              fuse-overlayfs mergerfs tcpdump)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${ONESUITE_PYTHON:-/usr/bin/python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $PYTHON" >&2
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.onesuite-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing onesuite-fs and its Python dependencies into .venv" >&2
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v 'is ignored' >&2 || true
    .venv/bin/python -c 'import pyfuse3, trio, xattr, regex, yaml, pytest, hypothesis, libnfs' # fail here, not later
    echo "$want" > "$stamp"
fi
