#!/bin/sh
# A device DMAs into a page the host then donates: the DMA after the donation must not land.
# QEMU's edu is handed to user space with VFIO (vfio-pci, type1 IOMMU: Linux's arm-smmu-v3
# driver gives it an IOMMU domain of its own on warden's virtual SMMU), and
# /bin/dma-after-donate (tests/linux/dma-after-donate) maps the last page P of the modem's
# carveout (through /dev/mem) at an IOVA, DMAs into it, DONATEs it to the modem, DMAs again
# through the same mapping and asks the modem for its checksum of P: unchanged is contained,
# changed is an escape (warden left the device's cached stage-1+2 translation of P alive). It
# gives P back (RELEASE, RECLAIM with CLEAR) whatever happened. Then edu goes back to no driver.
# Runs after iommu-groups, whose check of the kernel log must not see the SMMU event the
# refused DMA raises. See docs/linux-host.md.
. /lib/warden.sh
without_warden && skip "no warden, so no control page"
control_page_init || fail "$WARDEN_CONTROL_WHY"
# The peer checksums what it was given: without one this story cannot be told.
without_sim_peer && skip "$WARDEN_NO_PEER_WHY"

edu=
for dev in /sys/bus/pci/devices/*; do
    if [ "$(cat "$dev/vendor")" = 0x1234 ] && [ "$(cat "$dev/device")" = 0x11e8 ]; then
        edu=$dev
        break
    fi
done
[ -n "$edu" ] || fail "no edu PCI device (vendor 0x1234, device 0x11e8): QEMU needs -device edu"
bdf=$(basename "$edu")
[ -c /dev/vfio/vfio ] || fail "no /dev/vfio/vfio: the vfio module is not loaded"
[ -d /sys/bus/pci/drivers/vfio-pci ] || fail "no vfio-pci driver: the vfio-pci module is not loaded"
[ ! -e "$edu/driver" ] || fail "edu $bdf is already bound to $(basename "$(readlink -f "$edu/driver")")"

# Bind edu to vfio-pci. Linux gives a device its IOMMU group when a driver first probes it (edu
# has none until now); vfio-pci needs every device of the group bound to it, and edu is alone
# in its group.
echo vfio-pci > "$edu/driver_override" || fail "cannot set $edu/driver_override"
echo "$bdf" > /sys/bus/pci/drivers_probe
unbind() {
    if [ -e "$edu/driver" ]; then
        echo "$bdf" > "$edu/driver/unbind"
    fi
    echo > "$edu/driver_override"
}
driver=$(basename "$(readlink -f "$edu/driver")")
if [ "$driver" != vfio-pci ]; then
    unbind
    fail "edu $bdf did not bind to vfio-pci (driver: ${driver:-none})"
fi
if [ ! -e "$edu/iommu_group" ]; then
    unbind
    fail "edu $bdf is in no IOMMU group after binding to vfio-pci"
fi
group=$(basename "$(readlink -f "$edu/iommu_group")")
for _ in $(seq 1 50); do
    [ -c "/dev/vfio/$group" ] && break
    sleep 0.1
done
if [ ! -c "/dev/vfio/$group" ]; then
    unbind
    fail "no /dev/vfio/$group after binding $bdf to vfio-pci"
fi
echo "edu $bdf (IOMMU group $group) bound to vfio-pci"

/bin/dma-after-donate "$WARDEN_CONTROL" "$bdf" "$group" > /tmp/dma-after-donate.out 2>&1
status=$?
unbind
# P for the harness, which looks for warden's record of the refused DMA on the console.
page=$(sed -n 's/^dma-after-donate: P = \(0x[0-9a-f]*\),.*/\1/p' /tmp/dma-after-donate.out)
[ -n "$page" ] && echo "linux: dma-after-donate: DMA target page P = $page" > /dev/console
[ -e "$edu/driver" ] && fail "edu $bdf is still bound after the unbind"
cat /tmp/dma-after-donate.out
rm -f /tmp/dma-after-donate.out
case "$status" in
    0) ;;
    # 1: an escape or a failed check, 2: setup; either way its last line says which.
    1 | 2) exit 1 ;;
    *) fail "dma-after-donate ended with status $status (killed by a signal?)" ;;
esac

# Linux carries on: the shell still reads /proc, and the kernel did not complain.
[ -r /proc/self/stat ] || fail "the shell cannot read /proc after the scenario"
bad=$(dmesg | grep -E 'WARNING:|Oops|BUG:|Call trace' | head -n 1)
[ -z "$bad" ] || fail "kernel log: $bad"
state=$(range_state "$page") || fail "RANGE_QUERY($page) failed: status ${WARDEN_STATUS:-?}"
[ "$state" = "$WARDEN_STATE_HOST" ] || fail "P $page ends in state $state, not Host"
