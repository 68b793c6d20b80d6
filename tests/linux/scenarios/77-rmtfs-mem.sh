#!/bin/sh
# Qualcomm's rmtfs region through warden's SCM (docs/qcom-scm.md). On the Snapdragon persona
# the modem carveout is a `qcom,rmtfs-mem` region (client 1, VM MSS_MSA): Debian's own
# qcom_rmtfs_mem module probes it, and its probe's assign_mem (HLOS -> HLOS + MSS_MSA) reaches
# warden, which records SHARE; /dev/qcom_rmtfs_mem1 reads and writes the region; the modem (the
# simulated peer) checksums what the host wrote; 20 unbind/bind cycles each give the region
# back to the host alone and share it again, the data surviving; rmmod leaves it the host's;
# the kernel log has no rmtfs or SCM complaint. (insmod rather than modprobe: busybox's
# modprobe needs a modules.dep, and rmtfs_mem depends on nothing.) On the virt persona there
# is no SCM and no rmtfs region: the module loads and binds to nothing.
. /lib/warden.sh
without_warden && skip "no warden, so no SCM and no control page"
module=/lib/modules/rmtfs_mem.ko
dev=/dev/qcom_rmtfs_mem1
driver=/sys/bus/platform/drivers/qcom_rmtfs_mem

if [ ! -d /proc/device-tree/firmware/scm ]; then
    insmod "$module" || fail "insmod rmtfs_mem failed on the virt persona"
    [ ! -e "$dev" ] || fail "$dev exists without an rmtfs region"
    rmmod rmtfs_mem || fail "rmmod rmtfs_mem failed"
    echo "virt persona: no qcom,scm, rmtfs_mem binds to nothing"
    exit 0
fi
control_page_init || fail "$WARDEN_CONTROL_WHY"
region=$(warden_carveout modem) || fail "no /reserved-memory/modem@* in the DT"
node=/proc/device-tree/reserved-memory/modem@${region#0x}
tr '\000' '\n' < "$node/compatible" | grep -qx 'qcom,rmtfs-mem' ||
    fail "$node is not a qcom,rmtfs-mem region"

state=$(range_state "$region") || fail "RANGE_QUERY($region) failed: ${WARDEN_STATUS:-?}"
[ "$state" = "$WARDEN_STATE_HOST" ] || fail "rmtfs region starts in state $state, not Host"

insmod "$module" || fail "insmod rmtfs_mem failed"
[ -c "$dev" ] || fail "no $dev after insmod: $(dmesg | grep -i rmtfs | tail -n 1)"
state=$(range_state "$region") || fail "RANGE_QUERY after probe failed: ${WARDEN_STATUS:-?}"
[ "$state" = "$WARDEN_STATE_SHARED_MODEM" ] ||
    fail "state after probe is $state, expected $WARDEN_STATE_SHARED_MODEM (Shared(modem))"
echo "probed: $dev, region $region shared with the modem (state $state)"

# Reads and writes through the device: 16 KiB of the read-only disk's known content.
ro=$(disk_by_serial warden-ro) || fail "no read-only disk"
want=$(dd if="/dev/$ro" bs=4096 count=4 2>/dev/null | sha256sum | cut -d' ' -f1)
dd if="/dev/$ro" of="$dev" bs=4096 count=4 2>/dev/null || fail "writing $dev failed"
device_sum() {
    dd if="$dev" bs=4096 count=4 2>/dev/null | sha256sum | cut -d' ' -f1
}
[ "$(device_sum)" = "$want" ] || fail "$dev reads back other data than was written"
first=$(dd if="/dev/$ro" bs=8 count=1 2>/dev/null | od -An -tx8 | tr -d ' ')
hex64_eq "$(devmem "$region" 64)" "0x$first" || fail "the region's first word is not what $dev wrote"

# The host writes a page the device did not, the modem checksums it: both see one memory.
page=$((region + 0x4000))
fnv_init
write_pattern_page "$page" 9 || fail "devmem write into the shared page failed"
sum=$(fnv_value)
warden_call "$WARDEN_PEER_COMMAND" "$WARDEN_PEER_MODEM" "$WARDEN_OP_CHECKSUM" "$page" 0x1000 ||
    fail "devmem failed"
[ "$WARDEN_STATUS" = 0 ] || fail "PEER_COMMAND(modem, Checksum) of the shared page: $WARDEN_STATUS"
hex64_eq "$RET1" "$sum" || fail "the modem's checksum $RET1, the host's $sum"
echo "read/write through $dev ok; the modem's checksum of a shared page matches ($sum)"

name=
for entry in "$driver"/*; do
    case "${entry##*/}" in
        *.*) name=${entry##*/} ;;
    esac
done
[ -n "$name" ] || fail "no device bound to $driver"
cycle=1
while [ "$cycle" -le 20 ]; do
    echo "$name" > "$driver/unbind" || fail "cycle $cycle: unbind failed"
    [ ! -e "$dev" ] || fail "cycle $cycle: $dev still there after unbind"
    state=$(range_state "$region") || fail "cycle $cycle: RANGE_QUERY failed"
    [ "$state" = "$WARDEN_STATE_HOST" ] || fail "cycle $cycle: state $state after unbind, not Host"
    echo "$name" > "$driver/bind" || fail "cycle $cycle: bind failed"
    [ -c "$dev" ] || fail "cycle $cycle: no $dev after bind"
    state=$(range_state "$region") || fail "cycle $cycle: RANGE_QUERY failed"
    [ "$state" = "$WARDEN_STATE_SHARED_MODEM" ] ||
        fail "cycle $cycle: state $state after bind, not Shared(modem)"
    [ "$(device_sum)" = "$want" ] || fail "cycle $cycle: $dev reads other data"
    cycle=$((cycle + 1))
done
echo "20 unbind/bind cycles: Host after each unbind, Shared(modem) after each bind, data kept"

rmmod rmtfs_mem || fail "rmmod rmtfs_mem failed"
state=$(range_state "$region") || fail "RANGE_QUERY after rmmod failed"
[ "$state" = "$WARDEN_STATE_HOST" ] || fail "state after rmmod is $state, not Host"
# (qcom_scm's probe-time `qseecom: scm call failed with error -95` is its QSEECOM version query,
# a Trusted-OS call answered NOT_SUPPORTED: docs/smmu-500.md. Not an SCM call of this scenario.)
bad=$(dmesg | grep -iE 'rmtfs|assign memory' | grep -iE 'fail|error|warn' | head -n 1)
[ -z "$bad" ] || fail "kernel log: $bad"
echo "rmmod: region back to the host; kernel log clean"
