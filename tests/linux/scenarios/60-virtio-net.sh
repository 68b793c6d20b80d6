#!/bin/sh
# virtio-net (DMA through the SMMU both ways): ping QEMU's user-mode gateway.
. /lib/warden.sh
iface=""
for dev in /sys/class/net/*; do
    [ "$(basename "$dev")" = lo ] && continue
    iface=$(basename "$dev")
    break
done
[ -n "$iface" ] || fail "no network interface besides lo (virtio_net not loaded?)"
ip link set "$iface" up || fail "ip link set $iface up failed"
ip addr add 10.0.2.15/24 dev "$iface" || fail "ip addr add on $iface failed"
ping -c 3 -W 5 10.0.2.2 >/tmp/ping.out 2>&1 || fail "ping 10.0.2.2 via $iface: $(tail -n 1 /tmp/ping.out)"
