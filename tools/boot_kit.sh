#!/usr/bin/env bash
# boot_kit.sh - the Debian kernel and busybox a diskless test node boots with under QEMU.
#
# usage: boot_kit.sh
#   Prints a directory holding boot/vmlinuz-*, lib/modules/<version>/ and bin/busybox,
#   unpacked (not installed) from the .debs of the kernel linux-image-cloud-amd64 depends on and
#   of busybox-static, fetched with `apt-get download` from the configured mirror (about
#   30 MB). Cached under ONESUITE_CACHE (default /var/cache/onesuite-fs)/bootkit/<packages>
#   and fetched only when that directory is missing; a new kernel version is a new entry.
# Why the cloud kernel: it is small and has virtio-net and the NFS client as modules. It has
# no CONFIG_ROOT_NFS/IP_PNP, so the initramfs mounts the root itself (tests/guest/init).
set -euo pipefail
CACHE=${ONESUITE_CACHE:-/var/cache/onesuite-fs}

kernel_pkg() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1
}
busybox_version() {
    apt-cache policy busybox-static 2>/dev/null | sed -n 's/.*Candidate: \(.*\)/\1/p' | head -1
}
KPKG=$(kernel_pkg)
BBVER=$(busybox_version)
if [ -z "$KPKG" ] || [ -z "$BBVER" ] || [ "$BBVER" = "(none)" ]; then
    apt-get update -qq
    KPKG=$(kernel_pkg); BBVER=$(busybox_version)
fi
[ -n "$KPKG" ] || { echo "boot_kit: no package for linux-image-cloud-amd64 in apt" >&2; exit 1; }

DEST=$CACHE/bootkit/$KPKG+busybox-${BBVER//[^A-Za-z0-9.+-]/_}
if [ ! -d "$DEST" ]; then
    mkdir -p "$CACHE/bootkit"
    TMP=$DEST.fetching.$$
    trap 'rm -rf "$TMP"' EXIT
    mkdir -p "$TMP/debs" "$TMP/x"
    echo "boot_kit: apt-get download $KPKG busybox-static" >&2
    # apt warns that the download is unsandboxed as root: harmless here.
    (cd "$TMP/debs" && apt-get download -q "$KPKG" busybox-static) > "$TMP/apt.log" 2>&1 || {
        cat "$TMP/apt.log" >&2; exit 1; }
    for deb in "$TMP"/debs/*.deb; do dpkg-deb -x "$deb" "$TMP/x"; done
    mv "$TMP/x" "$DEST"
    rm -rf "$TMP"
    trap - EXIT
fi
echo "$DEST"
