#!/bin/sh
# Write-then-read round trip on the scratch disk, O_DIRECT both ways and page cache dropped in
# between, so the data really goes device <- memory -> device by DMA.
. /lib/warden.sh
disk=$(disk_by_serial warden-scratch) || fail "no virtio disk with serial warden-scratch"
count=32
dd if=/dev/urandom of=/tmp/pattern bs=65536 count=$count 2>/dev/null ||
    fail "cannot make the random pattern"
want=$(sha256sum /tmp/pattern | cut -d' ' -f1)
dd if=/tmp/pattern of="/dev/$disk" bs=65536 count=$count oflag=direct conv=fsync 2>/dev/null ||
    fail "writing /dev/$disk failed"
sync
echo 3 > /proc/sys/vm/drop_caches
got=$(dd if="/dev/$disk" bs=65536 count=$count iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "read back sha256 $got, wrote $want"
rm -f /tmp/pattern
