#!/bin/sh
# What warden does so far, seen from the Linux host; ends with a one-screen summary.
. /lib/warden.sh

cpus=$(nproc)
if dmesg | grep -q "CPU: All CPU(s) started at EL1"; then
    el="all $cpus CPUs started at EL1 (the kernel says so)"
else
    el="NOT all CPUs at EL1: $(dmesg | grep 'CPU: All CPU(s) started' | sed 's/^\[[^]]*\] //')"
fi

if region=$(warden_region); then
    set -- $region
    wstart=$1
    wend=$2
    overlap=""
    for ram in $(system_ram | tr ' ' ','); do
        rstart=$((${ram%,*}))
        rend=$((${ram#*,}))
        if [ "$rstart" -le $((wend)) ] && [ "$rend" -ge $((wstart)) ]; then
            overlap="$overlap ${ram%,*}-${ram#*,}"
        fi
    done
    if [ -z "$overlap" ]; then
        mem="warden's memory $wstart-$wend is not System RAM to Linux"
    else
        mem="warden's memory $wstart-$wend OVERLAPS System RAM:$overlap"
    fi
elif without_warden; then
    mem="no warden (booted with --no-warden)"
else
    mem="no /reserved-memory/warden* node in the DT"
fi

probe=$(dmesg | grep -E 'arm-smmu-v3 .*: ias [0-9]+-bit, oas [0-9]+-bit' | head -n 1)
groups=$(ls /sys/kernel/iommu_groups 2>/dev/null | wc -l)
if [ -n "$probe" ]; then
    if without_warden; then
        whose="the real SMMU"
    else
        whose="warden's virtual SMMU (nested over warden's stage 2)"
    fi
    iommu="Linux drives $whose, $groups IOMMU groups: ${probe#*] }"
elif [ -d /sys/class/iommu ] && [ -n "$(ls /sys/class/iommu 2>/dev/null)" ]; then
    iommu="Linux drives an IOMMU itself: $(ls /sys/class/iommu | tr '\n' ' ')"
else
    iommu="Linux sees no IOMMU (the SMMU belongs to warden)"
fi

disk=$(disk_by_serial warden-ro)
expected=$(cmdline_arg warden.disk_sha256)
if [ -z "$disk" ]; then
    dma="no virtio disk with serial warden-ro"
elif [ "$(disk_sha256 "$disk")" = "$expected" ]; then
    dma="/dev/$disk read by DMA matches its sha256 ${expected%"${expected#????????????}"}..."
else
    dma="/dev/$disk read by DMA does NOT match its sha256"
fi

# G3 at work: the read-only disk's group goes DMA -> DMA-FQ (Linux upgrades the domain in
# place) -> DMA (a new domain: the old one's ASID retires); warden counts the retirement and
# frees the ASID once a TLBI + CMD_SYNC is on record.
if [ -n "$probe" ] && [ -n "$disk" ]; then
    pci=$(dirname "$(readlink -f "/sys/block/$disk/device")")
    for type in DMA-FQ DMA; do
        set_iommu_type "$pci" "$type" > /dev/null || echo "linux: demo: changing to $type failed"
    done
    wait_disk_by_serial warden-ro > /dev/null || echo "linux: demo: the disk did not come back"
fi
if without_warden; then
    asids="no warden (booted with --no-warden)"
elif smmu_stats; then
    asids="$SMMU_COMMANDS SMMU commands; ASIDs $SMMU_ASIDS_RETIRED retired, $SMMU_ASIDS_FREED freed after TLBI+CMD_SYNC, $SMMU_FORCED_FLUSHES flushed by warden on early reuse"
else
    asids="SMMU_STATS failed (status ${WARDEN_STATUS:-none})"
fi

# Handoff with nothing but busybox devmem and warden's control page, on the second page of the
# modem carveout (the handoff-devmem scenario uses the first): fill it, donate it, watch the
# host's own access die of SIGBUS while Linux carries on, let the modem checksum it, release,
# reclaim cleared.
handoff_demo() {
    if ! modem=$(warden_carveout modem); then
        handoff="no modem carveout in the DT"
        return
    fi
    page=$(printf '0x%x' $((modem + 0x1000)))
    size=0x1000
    say() { echo "linux: handoff: $*"; }
    if ! control_page_init; then
        handoff="no control page: $WARDEN_CONTROL_WHY"
        return
    fi
    # The story ends with the modem checksumming and releasing the page: without a
    # simulated peer (the chain's board) the page could not come back, so it is not told.
    if without_sim_peer; then
        handoff="not shown: $WARDEN_NO_PEER_WHY"
        return
    fi
    say "control page at $WARDEN_CONTROL (ABI $(control_page_version)); writing a pattern into $page"
    fnv_init
    write_pattern_page "$page" 3 || { handoff="devmem cannot write $page"; return; }
    sum=$(fnv_value)
    say "host checksum of the page: $sum"
    before=$(violation_accesses)
    warden_call "$WARDEN_DONATE" "$page" "$size" "$WARDEN_PEER_MODEM" 0
    [ "$WARDEN_STATUS" = 0 ] || { handoff="DONATE returned $WARDEN_STATUS"; return; }
    say "DONATE to the modem: ok, RANGE_QUERY says state $(range_state "$page") (Donated(modem))"
    out=$(devmem_child "$page" 64 | tr '\n' ' ' | sed 's/ $//')
    say "host reads it again with devmem: $out"
    after=$(violation_accesses)
    say "Linux carries on; warden counted refused accesses: $before -> $after"
    warden_call "$WARDEN_PEER_COMMAND" "$WARDEN_PEER_MODEM" "$WARDEN_OP_CHECKSUM" "$page" "$size"
    peer_sum=$RET1
    say "the modem checksums the page: $(hex64 "$peer_sum") (status $WARDEN_STATUS)"
    warden_call "$WARDEN_PEER_COMMAND" "$WARDEN_PEER_MODEM" "$WARDEN_OP_RELEASE" "$page" "$size" 0
    release=$WARDEN_STATUS
    warden_call "$WARDEN_RECLAIM" "$page" "$size" "$WARDEN_FLAG_CLEAR"
    reclaim=$WARDEN_STATUS
    word=$(devmem "$page" 64)
    say "modem releases (status $release), host reclaims with CLEAR (status $reclaim): $page reads $word"
    if hex64_eq "$peer_sum" "$sum" && [ "$release" = 0 ] && [ "$reclaim" = 0 ] &&
        hex64_eq "$word" 0 && [ "${out#*Bus error}" != "$out" ]; then
        handoff="donated $page, modem checksum = host's, host access contained (SIGBUS), reclaimed zeroed"
    else
        handoff="donate/checksum/contain/reclaim story did NOT go as expected (see above)"
    fi
}
if without_warden; then
    handoff="no warden (booted with --no-warden)"
else
    handoff_demo
fi

echo "linux: +------------------------------------------------------------------------"
echo "linux: | warden demo: Linux $(uname -r) as the host"
echo "linux: | CPUs:   $el"
echo "linux: | memory: $mem"
echo "linux: | SMMU:   $iommu"
echo "linux: | G3:     $asids"
echo "linux: | DMA:    $dma"
echo "linux: | handoff: $handoff"
echo "linux: +------------------------------------------------------------------------"
