#!/bin/sh
# /bench.sh: the Linux part of `cargo xtask bench` (xtask/src/bench_linux.rs, docs/bench.md).
# /init runs it instead of the scenarios when the command line has warden.bench=linux. It prints
# `bench-linux: ...` lines for the harness, then powers off. Under QEMU -icount shift=0 the
# counter (CNTVCT, 1 GHz) advances one tick per instruction: every figure is virtual time.
. /lib/warden.sh

# 1. warden's TRAP_STATS first, so its figures cover the boot up to /init and little else.
#    (Called in this shell, not in $(...), so WARDEN_STATUS survives a refused call.)
if without_warden; then
    echo "bench-linux: trap-stats unavailable: no warden"
elif trap_stats > /tmp/trap-stats; then
    echo "bench-linux: trap-stats $(cat /tmp/trap-stats)"
elif [ -n "${WARDEN_STATUS:-}" ]; then
    echo "bench-linux: trap-stats unavailable: status $WARDEN_STATUS"
else
    echo "bench-linux: trap-stats unavailable: ${WARDEN_CONTROL_WHY:-warden_call failed}"
fi

# 2. The counter next to a printk timestamp: /warden-counter reads CNTVCT, writes a mark to
#    fd 3 (/dev/kmsg: the kernel timestamps it), reads CNTVCT again and prints both (raw
#    64-bit words). printk time starts when sched_clock is registered, not at power-on; the
#    mark converts it to the counter, which does.
#    With one CPU, the time it spent idle or waiting for I/O (idle_ns, lib.sh) is the time
#    QEMU skipped while nothing ran: ticks minus that is the instructions executed.
# shellcheck disable=SC2046 # two numbers, split on purpose
set -- $(/warden-counter 3>/dev/kmsg | od -An -tu8)
echo "bench-linux: counter-mark $1 $2 idle $(idle_ns)"

# The counter now (the first word; fd 3 closed, so no mark).
counter_now() {
    /warden-counter 3>&- | od -An -tu8 | {
        read -r counter_first _
        echo "$counter_first"
    }
}

# 2b. Linux's SMMU probe. Both SMMU drivers are built in and probe inside their initcalls,
#     which the command line's trace_event= brackets with initcall_start/finish events; their
#     timestamps (sched_clock, ns = ticks) print as seconds with 6 decimals, so the figure is
#     +-1000 ticks. arm-smmu-v3's initcall is arm_smmu_driver_init; arm-smmu's (the MMU-500 of
#     the Snapdragon persona) is arm_smmu_init (Linux 6.10+). The one whose driver has a
#     device bound is the probe. Every instruction counts, EL2's included (warden's trapped
#     SMMU accesses).
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
smmu_initcall=arm_smmu_driver_init
for bound in /sys/bus/platform/drivers/arm-smmu/*; do
    [ -L "$bound" ] && [ -e "$bound/driver" ] && smmu_initcall=arm_smmu_init
done
probe=$(awk -v f="func=$smmu_initcall+" '/initcall_(start|finish):/ && index($0, f) {
        for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+[.][0-9]+:$/) { sub(":", "", $i); printf " %s", $i }
    }' /sys/kernel/tracing/trace 2>/dev/null)
if [ -n "$probe" ]; then
    echo "bench-linux: smmu-probe$probe"
else
    echo "bench-linux: smmu-probe unavailable: no initcall events for $smmu_initcall"
fi

# 3. virtio-blk sequential reads (O_DIRECT: every byte is DMA through the SMMU).
echo 5 > /proc/sys/kernel/printk
for module in $(cat /etc/warden/modules); do
    insmod "/lib/modules/$module.ko" 2>/dev/null || echo "bench-linux: insmod $module failed"
done
disk=
for _ in $(seq 1 100); do
    disk=$(disk_by_serial warden-bench) && break
    sleep 0.1
done
dd_bytes=$(cmdline_arg warden.bench_dd_bytes)
dd_runs=$(cmdline_arg warden.bench_dd_runs)
if [ -z "$disk" ]; then
    echo "bench-linux: dd unavailable: no virtio disk with serial warden-bench"
elif [ -z "$dd_bytes" ] || [ -z "$dd_runs" ]; then
    echo "bench-linux: dd unavailable: no warden.bench_dd_bytes/warden.bench_dd_runs"
else
    # What reading the counter costs (two back to back), subtracted by the harness.
    t0=$(counter_now)
    t1=$(counter_now)
    echo "bench-linux: counter-overhead $((t1 - t0))"
    blocks=$((dd_bytes / 1048576))
    for _ in $(seq 1 "$dd_runs"); do
        echo 3 > /proc/sys/vm/drop_caches
        i0=$(idle_ns)
        t0=$(counter_now)
        dd if="/dev/$disk" of=/dev/null bs=1048576 count="$blocks" iflag=direct 2> /tmp/dd.err
        status=$?
        t1=$(counter_now)
        i1=$(idle_ns)
        if [ "$status" -ne 0 ]; then
            echo "bench-linux: dd failed: $(tail -n 1 /tmp/dd.err)"
            break
        fi
        echo "bench-linux: dd $((t1 - t0)) $((i1 - i0)) $(tail -n 1 /tmp/dd.err)"
    done
    # warden's share of the DMA path: TRAP_STATS again, the difference is the dd loop's.
    if ! without_warden && trap_stats > /tmp/trap-stats-after; then
        echo "bench-linux: trap-stats-after-dd $(cat /tmp/trap-stats-after)"
    fi
fi
echo "bench-linux: done"
sync
poweroff -f
