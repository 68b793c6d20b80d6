#!/bin/sh
# Linux drives the SMMU (warden's virtual one; its own with --no-warden): the arm-smmu-v3 probe
# line (with warden.persona=snapdragon: arm-smmu's MMU-500 probe, "probing hardware
# configuration" and "stage 1 translation") is in the kernel log and every virtio PCI device
# is in an IOMMU group. Then the read-only
# disk's group cycles through identity, DMA, DMA-FQ, DMA (each change frees the domain's ASID
# and allocates another), the driver unbound around each change, with an O_DIRECT read checked
# against the disk's sha256 after every step (see below).
#
# Command-line words (`cargo xtask soak` sets them; the test run uses the defaults):
#   warden.iommu_cycles=N       cycles (default 50)
#   warden.iommu_whole_every=K  also read the whole disk every K-th cycle (default 0: only
#                               before and after the cycles)
. /lib/warden.sh
persona=$(cmdline_arg warden.persona) || persona=virt
if [ "$persona" = snapdragon ]; then
    probe=$(dmesg | grep -E 'arm-smmu [^ ]+: probing hardware configuration' | head -n 1)
    [ -n "$probe" ] || fail "no arm-smmu 'probing hardware configuration' line in the kernel log"
    dmesg | grep -qE 'arm-smmu [^ ]+:[[:space:]]+stage 1 translation' ||
        fail "arm-smmu did not find stage 1 translation"
    dmesg | grep -qE 'qcom_scm: convention: smc arm 64' ||
        fail "qcom_scm did not settle on the SMC64 convention"
    trouble='WARNING:|Oops|BUG:|Call trace|arm-smmu .*(context fault|Blocked unknown Stream|global fault)'
else
    probe=$(dmesg | grep -E 'arm-smmu-v3 .*: ias [0-9]+-bit, oas [0-9]+-bit' | head -n 1)
    [ -n "$probe" ] || fail "no arm-smmu-v3 'ias .. oas ..' probe line in the kernel log"
    trouble='WARNING:|Oops|BUG:|Call trace|arm-smmu-v3.*event'
fi
echo "linux: iommu: ${probe#*] }"
virtio=0
for dev in /sys/bus/pci/devices/*; do
    [ "$(cat "$dev/vendor")" = 0x1af4 ] || continue
    virtio=$((virtio + 1))
    [ -e "$dev/iommu_group" ] || fail "virtio device $(basename "$dev") is in no IOMMU group"
done
[ "$virtio" -ge 3 ] || fail "expected 3 virtio PCI devices (2 disks, 1 NIC), found $virtio"

expected=$(cmdline_arg warden.disk_sha256)
[ -n "$expected" ] || fail "no warden.disk_sha256= on the kernel command line"
disk=$(disk_by_serial warden-ro) || fail "no virtio disk with serial warden-ro"
pci=$(dirname "$(readlink -f "/sys/block/$disk/device")")
bdf=$(basename "$pci")
group=$(readlink -f "$pci/iommu_group")
[ -w "$group/type" ] || fail "$group/type is not writable"
driver=$(basename "$(readlink -f "$pci/driver")")
echo "linux: iommu: cycling $group (device $bdf, driver $driver, type $(cat "$group/type"))"

# The whole disk is checked (against xtask's sha256) before and after the cycles, and with
# warden.iommu_whole_every=K after one step of every K-th cycle (the step rotates, so each
# domain type gets whole-disk reads); every step reads the first 256 KiB (still DMA through the
# new domain) and compares with the same prefix of the verified disk, which keeps the test run's
# 200 steps inside the boot's time box.
prefix_sha256() {
    dd if="/dev/$1" bs=65536 count=4 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1
}
actual=$(disk_sha256 "$disk")
[ "$actual" = "$expected" ] || fail "before cycling: /dev/$disk sha256 $actual, expected $expected"
prefix=$(prefix_sha256 "$disk")
whole_checks=1
cycles=$(cmdline_arg warden.iommu_cycles) || cycles=50
whole_every=$(cmdline_arg warden.iommu_whole_every) || whole_every=0
case "$cycles$whole_every" in
    *[!0-9]* | "") fail "warden.iommu_cycles=$cycles / warden.iommu_whole_every=$whole_every: not numbers" ;;
esac
[ "$cycles" -ge 1 ] || fail "warden.iommu_cycles=$cycles: need at least 1"
# Long runs report progress straight to the console every this many cycles (the scenario's
# own output is only shown if it fails).
progress_every=50

step() {
    now=$(set_iommu_type "$pci" "$1") ||
        fail "cycle $2: unbinding $bdf ($driver), writing $1 to $group/type or binding it failed"
    [ "$now" = "$1" ] || fail "cycle $2: $group/type reads $now after writing $1"
    disk=$(wait_disk_by_serial warden-ro) || fail "cycle $2 ($1): the disk did not come back"
    actual=$(prefix_sha256 "$disk")
    [ "$actual" = "$prefix" ] || fail "cycle $2 ($1): /dev/$disk first 256 KiB sha256 $actual, expected $prefix"
}

whole_disk() {
    actual=$(disk_sha256 "$disk")
    [ "$actual" = "$expected" ] || fail "cycle $1 (after $2): /dev/$disk sha256 $actual, expected $expected"
    whole_checks=$((whole_checks + 1))
}

retired_before=0
if ! without_warden; then
    smmu_stats || fail "SMMU_STATS failed (status ${WARDEN_STATUS:-none})"
    retired_before=$SMMU_ASIDS_RETIRED
fi
started=$(date +%s)
cycle=1
while [ "$cycle" -le "$cycles" ]; do
    whole_step=$(whole_disk_step "$cycle" "$whole_every")
    index=0
    for type in identity DMA DMA-FQ DMA; do
        step "$type" "$cycle"
        [ "$index" -ne "$whole_step" ] || whole_disk "$cycle" "$type"
        index=$((index + 1))
    done
    if [ $((cycle % progress_every)) -eq 0 ] && [ "$cycle" -lt "$cycles" ]; then
        # The kernel's ring buffer holds only the last ~100 cycles: look at it as we go.
        bad=$(dmesg | grep -E "$trouble" | head -n 1)
        [ -z "$bad" ] || fail "kernel log after cycle $cycle: $bad"
        echo "linux: iommu: cycle $cycle of $cycles, $whole_checks whole-disk checks, $(($(date +%s) - started)) s" > /dev/console
    fi
    cycle=$((cycle + 1))
done
whole_disk "$cycles" "the last cycle"
bad=$(dmesg | grep -E "$trouble" | head -n 1)
[ -z "$bad" ] || fail "kernel log after $((4 * cycles)) domain changes: $bad"
# Straight to the console as well: `cargo xtask soak` reads the figures from this line.
summary="linux: iommu: $cycles cycles ($((4 * cycles)) domain changes), $whole_checks whole-disk checks, every read matched, $(($(date +%s) - started)) s"
echo "$summary"
echo "$summary" > /dev/console
# Under warden, its G3 book-keeping saw the domains come and go: each cycle leaves two DMA
# domains (DMA -> identity, DMA-FQ -> DMA; DMA -> DMA-FQ is an in-place upgrade), whose ASIDs
# retire (measured: 2 per cycle).
if ! without_warden; then
    smmu_stats || fail "SMMU_STATS failed (status ${WARDEN_STATUS:-none})"
    retired=$((SMMU_ASIDS_RETIRED - retired_before))
    stats="linux: iommu: warden's SMMU_STATS: $SMMU_COMMANDS commands, ASIDs $SMMU_ASIDS_RETIRED retired ($retired while cycling), $SMMU_ASIDS_FREED freed, $SMMU_FORCED_FLUSHES forced flushes"
    echo "$stats"
    echo "$stats" > /dev/console
    [ "$retired" -ge "$cycles" ] ||
        fail "warden counted $retired ASID retirements over $cycles cycles of DMA domain changes"
fi
