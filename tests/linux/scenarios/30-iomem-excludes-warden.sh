#!/bin/sh
# /proc/iomem has no System RAM over warden's region (read from the DT warden patched).
. /lib/warden.sh
if ! region=$(warden_region); then
    without_warden && skip "no warden (booted with --no-warden)"
    fail "no usable /proc/device-tree/reserved-memory/warden*/reg"
fi
set -- $region
wstart=$(($1))
wend=$(($2))
ram=$(system_ram)
[ -n "$ram" ] || fail "no System RAM in /proc/iomem"
overlaps=$(echo "$ram" | while read -r rstart rend; do
    if [ $((rstart)) -le "$wend" ] && [ $((rend)) -ge "$wstart" ]; then
        echo "$rstart-$rend"
    fi
done)
[ -z "$overlaps" ] || fail "System RAM $(echo $overlaps) overlaps warden's region $1-$2"
echo "warden's region $1-$2; System RAM: $(echo $ram)"
