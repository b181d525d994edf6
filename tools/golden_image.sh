#!/usr/bin/env bash
# golden_image.sh - a real golden image for the diskless-boot test: Debian `debootstrap
# --variant=minbase`, from the Debian mirror this machine's apt is configured with.
#
# usage: golden_image.sh [--print-dir]
#   Prints the image directory (a plain Debian root tree) on stdout. The image is cached under
#   ONESUITE_CACHE (default /var/cache/onesuite-fs)/golden/<key>, where <key> hashes the whole
#   recipe (suite, variant, architecture, mirror, this script), and is built only when that
#   directory is missing: about 2-4 minutes and 200 MB the first time, nothing afterwards.
#   A half-built image is never used: it is built next to the cache entry and renamed into place.
# env: ONESUITE_CACHE   cache root
#      GOLDEN_SUITE     Debian suite (default: bookworm)
# Needs root, debootstrap, and apt's mirror reachable (no other host is contacted).
set -euo pipefail
CACHE=${ONESUITE_CACHE:-/var/cache/onesuite-fs}
SUITE=${GOLDEN_SUITE:-bookworm}
ARCH=$(dpkg --print-architecture)

# The mirror apt uses for the main archive (not -security): deb822 .sources first, then
# one-line sources.list entries. Never a hard-coded host.
mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^URIs:/ {u=$2} /^Suites:/ {s=$0} /^$/ {if (u && s !~ /-security/) {print u; exit} u=""; s=""}
             END {if (u && s !~ /-security/) print u}' "$f" | head -1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" && $0 !~ /-security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$f"
    done
}
MIRROR=$(mirror | head -1)
[ -n "$MIRROR" ] || { echo "golden_image: no Debian mirror found in /etc/apt/sources.list*" >&2; exit 1; }

KEY=$( { echo "$SUITE minbase $ARCH $MIRROR"; cat "$0"; } | sha256sum | cut -c1-16)
DEST=$CACHE/golden/$SUITE-minbase-$ARCH-$KEY
if [ ! -d "$DEST" ]; then
    command -v debootstrap > /dev/null || {
        echo "golden_image: debootstrap is missing (bash tools/setup.sh installs it)" >&2; exit 1; }
    mkdir -p "$CACHE/golden"
    TMP=$DEST.building.$$
    trap 'rm -rf "$TMP"' EXIT
    echo "golden_image: debootstrap --variant=minbase $SUITE from the apt mirror into $DEST" >&2
    debootstrap --variant=minbase --arch="$ARCH" "$SUITE" "$TMP" "$MIRROR" > "$TMP.log" 2>&1 || {
        tail -20 "$TMP.log" >&2; echo "golden_image: debootstrap failed (log above)" >&2; exit 1; }
    # What the image server would not serve: apt's downloaded .debs and lists.
    rm -rf "$TMP/var/cache/apt/archives/"*.deb "$TMP/var/lib/apt/lists/"*
    rm -f "$TMP.log"
    mv "$TMP" "$DEST"
    trap - EXIT
fi
echo "$DEST"
