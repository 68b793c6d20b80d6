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

if [ -d /sys/class/iommu ] && [ -n "$(ls /sys/class/iommu 2>/dev/null)" ]; then
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

echo "linux: +------------------------------------------------------------------------"
echo "linux: | warden demo: Linux $(uname -r) as the host"
echo "linux: | CPUs:   $el"
echo "linux: | memory: $mem"
echo "linux: | SMMU:   $iommu"
echo "linux: | DMA:    $dma"
echo "linux: +------------------------------------------------------------------------"
