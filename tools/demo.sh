#!/usr/bin/env bash
# demo.sh - the main job on the bundled example cluster: build the example SystemImager
# server tree, mount every node's root, and show how two nodes' roots differ; then the same
# tree's Warewulf 4 site, one of its nodes with its templates rendered.
# The mounts stay up afterwards so you can explore them; the last lines say how to stop them.
# ONESUITE_DEMO_DIR (default /var/tmp/onesuite-demo) holds the site, the mount and the log.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
W=${ONESUITE_DEMO_DIR:-/var/tmp/onesuite-demo}
ONESUITE=$PWD/.venv/bin/onesuite
mkdir -p "$W/mnt" "$W/mnt-warewulf"
for m in "$W/mnt" "$W/mnt-warewulf"; do
    if grep -q " $m fuse" /proc/mounts; then "$ONESUITE" umount "$m"; fi
done
.venv/bin/python tools/example_site.py "$W/site" >/dev/null
"$ONESUITE" mount --root "$W/site" --log "$W/onesuite.log" "$W/mnt"
R=$W/mnt/nodes
section() { printf '\n== %s\n' "$*"; }
origin() { getfattr --absolute-names --only-values -n user.onesuite.origin "$1"; }

section "the layer stacks of two nodes (lowest first; the last layer wins)"
"$ONESUITE" nodes --root "$W/site" | awk '/^(node001|login01) /{p=1; print; next} /^[^ ]/{p=0} p'
section "$R: one root per node"
ls "$R"
for node in node001 login01; do
    section "nodes/$node: where a few files come from"
    for f in /etc/hostname /etc/motd /etc/fstab /etc/issue /usr/bin/passwd; do
        printf '  %-16s %-40s %s\n' "$f" "$(origin "$R/$node$f" | cut -c1-40)" "$(stat -c '%A %u:%g' "$R/$node$f")"
    done
done
section "/etc/issue is a oneSIS LINKBACK: each node sees its class's variant"
for node in node001 node007 login01; do
    printf '  %-8s %s\n      (%s)\n' "$node" "$(cat "$R/$node/etc/issue")" "$(origin "$R/$node/etc/issue")"
done
section "diff -r nodes/login01 nodes/node001"
diff -r --no-dereference "$R/login01" "$R/node001" || true

section "the same tree's Warewulf 4 site: image rocky9, overlays in Warewulf's order"
WW=(--warewulf-root "$W/site")
"$ONESUITE" mount "${WW[@]}" --log "$W/onesuite-warewulf.log" "$W/mnt-warewulf"
"$ONESUITE" nodes "${WW[@]}" | awk '/^ww002 /{p=1; print; next} /^[^ ]/{p=0} p'
R=$W/mnt-warewulf/nodes
section "nodes/ww002: templates rendered for the node, and which overlay made each file"
for f in /etc/hostname /etc/issue /etc/hosts /etc/modprobe.d/nvidia.conf \
         /etc/sysconfig/network-scripts/ifcfg-ib /etc/os-release; do
    printf '  %-40s %s\n' "$f" "$(origin "$R/ww002$f")"
done
section "nodes/ww002/etc/sysconfig/network-scripts/ifcfg-ib (ifcfg.ww, one file per device)"
sed 's/^/  /' "$R/ww002/etc/sysconfig/network-scripts/ifcfg-ib"
section "onesuite explain ww002 /etc/issue"
"$ONESUITE" explain "${WW[@]}" ww002 /etc/issue
section "done"
echo "The mounts stay up at $W/mnt and $W/mnt-warewulf (logs: $W/onesuite*.log)."
echo "Stop them with: $ONESUITE umount $W/mnt; $ONESUITE umount $W/mnt-warewulf"
