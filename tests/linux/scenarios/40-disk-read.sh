#!/bin/sh
# The whole read-only virtio-blk disk, read with O_DIRECT (virtio DMA through the SMMU),
# matches the sha256 xtask recorded when it generated the disk.
. /lib/warden.sh
disk=$(disk_by_serial warden-ro) || fail "no virtio disk with serial warden-ro"
expected=$(cmdline_arg warden.disk_sha256)
[ -n "$expected" ] || fail "no warden.disk_sha256= on the kernel command line"
bytes=$(($(cat "/sys/block/$disk/size") * 512))
want_bytes=$(cmdline_arg warden.disk_bytes)
[ "$bytes" = "$want_bytes" ] || fail "/dev/$disk has $bytes bytes, expected $want_bytes"
actual=$(disk_sha256 "$disk")
[ "$actual" = "$expected" ] || fail "/dev/$disk sha256 $actual, expected $expected"
