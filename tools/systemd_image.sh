#!/usr/bin/env bash
# systemd_image.sh - the golden image (tools/golden_image.sh: debootstrap --variant=minbase)
# plus systemd-sysv, so that it boots to systemd: the image bench/boot_record.py boots to record
# a real boot set, and the image of the NFS boot-storm sites (bench/nfs_storm.py).
#
# usage: systemd_image.sh
#   Prints the image directory on stdout. Cached under ONESUITE_CACHE (default
#   /var/cache/onesuite-fs)/golden/<golden image's name>+systemd-sysv-<key>, built only when
#   missing (about a minute: apt-get in a chroot, from the mirror the image's sources.list names,
#   which golden_image.sh took from this machine's apt); a half-built image is never used.
# Needs root and apt's mirror reachable (no other host is contacted).
set -euo pipefail
CACHE=${ONESUITE_CACHE:-/var/cache/onesuite-fs}
HERE=$(cd "$(dirname "$0")" && pwd)
GOLDEN=$(bash "$HERE/golden_image.sh" | tail -1)
KEY=$( { echo "$GOLDEN"; cat "$0"; } | sha256sum | cut -c1-12)
DEST=$CACHE/golden/$(basename "$GOLDEN")+systemd-sysv-$KEY
if [ ! -d "$DEST" ]; then
    TMP=$DEST.building.$$
    MOUNTED=()
    cleanup() {
        local m
        for m in "${MOUNTED[@]}"; do umount -l "$m" 2> /dev/null || true; done
        rm -rf "$TMP"
    }
    trap cleanup EXIT
    echo "systemd_image: $GOLDEN + systemd-sysv into $DEST" >&2
    cp -a "$GOLDEN" "$TMP"
    for fs in proc sys dev; do
        mount --rbind "/$fs" "$TMP/$fs" && MOUNTED=("$TMP/$fs" "${MOUNTED[@]}")
    done
    cp /etc/resolv.conf "$TMP/etc/resolv.conf"
    chroot "$TMP" env DEBIAN_FRONTEND=noninteractive sh -c \
        'apt-get -q update && apt-get -q install -y --no-install-recommends systemd-sysv' \
        > "$TMP.log" 2>&1 || { tail -20 "$TMP.log" >&2; echo "systemd_image: apt-get failed" >&2; exit 1; }
    for m in "${MOUNTED[@]}"; do umount -l "$m"; done
    MOUNTED=()
    # What the image server would not serve, as golden_image.sh leaves it.
    rm -rf "$TMP/var/cache/apt/archives/"*.deb "$TMP/var/lib/apt/lists/"* "$TMP.log"
    : > "$TMP/etc/resolv.conf"
    mv "$TMP" "$DEST"
    trap - EXIT
fi
echo "$DEST"
