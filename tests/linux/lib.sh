# Helpers for /init, /demo.sh and the scenarios (sourced; busybox ash).

# The value of NAME=VALUE on the kernel command line (empty if absent).
cmdline_arg() {
    for word in $(cat /proc/cmdline); do
        case "$word" in
            "$1"=*) echo "${word#*=}"; return 0 ;;
        esac
    done
    return 1
}

# /scenarios/10-cpus-at-el1.sh -> cpus-at-el1
scenario_name() {
    basename "$1" .sh | sed 's/^[0-9][0-9]*-//'
}

fail() {
    echo "$*"
    exit 1
}

# Exit status 77: /init reports `skip NAME: reason`.
skip() {
    echo "$*"
    exit 77
}

# True when xtask booted Linux without warden (`cargo xtask run --no-warden`).
without_warden() {
    [ "$(cmdline_arg warden.absent)" = 1 ]
}

# Waits up to 10 s for both virtio disks.
wait_for_disks() {
    for _ in $(seq 1 100); do
        if [ -n "$(disk_by_serial warden-ro)" ] && [ -n "$(disk_by_serial warden-scratch)" ]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# The block device (vda, vdb, ...) whose virtio serial is $1.
disk_by_serial() {
    for serial in /sys/block/*/serial; do
        [ -r "$serial" ] || continue
        if [ "$(cat "$serial")" = "$1" ]; then
            basename "$(dirname "$serial")"
            return 0
        fi
    done
    return 1
}

# A DT property as one hex string (big-endian bytes in order).
dt_hex() {
    od -An -tx1 -v "$1" | tr -d ' \n'
}

# warden's region from /proc/device-tree/reserved-memory/warden*/reg as
# "0xSTART 0xEND" (END inclusive), using /reserved-memory's cell counts.
warden_region() {
    node=$(ls -d /proc/device-tree/reserved-memory/warden* 2>/dev/null | head -n 1)
    [ -n "$node" ] || return 1
    acells=$((0x$(dt_hex /proc/device-tree/reserved-memory/#address-cells)))
    scells=$((0x$(dt_hex /proc/device-tree/reserved-memory/#size-cells)))
    reg=$(dt_hex "$node/reg")
    start_hex=$(echo "$reg" | cut -c1-$((acells * 8)))
    size_hex=$(echo "$reg" | cut -c$((acells * 8 + 1))-$(((acells + scells) * 8)))
    start=$((0x$start_hex))
    size=$((0x$size_hex))
    [ "$size" -gt 0 ] || return 1
    printf '0x%x 0x%x\n' "$start" $((start + size - 1))
}

# Lines "0xSTART 0xEND" of the top-level System RAM ranges in /proc/iomem.
system_ram() {
    grep ' : System RAM$' /proc/iomem | grep -v '^ ' | while read -r range _; do
        echo "0x${range%-*} 0x${range#*-}"
    done
}

# sha256 of the whole block device /dev/$1, read with O_DIRECT (no page cache: DMA).
disk_sha256() {
    dd if="/dev/$1" bs=65536 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1
}
