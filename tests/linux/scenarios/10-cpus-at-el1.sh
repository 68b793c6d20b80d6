#!/bin/sh
# Every CPU entered the kernel at EL1 and all the CPUs QEMU has are online.
. /lib/warden.sh
dmesg | grep -q "CPU: All CPU(s) started at EL1" ||
    fail "no 'CPU: All CPU(s) started at EL1' in dmesg: $(dmesg | grep 'CPU: All CPU(s)' | tail -n 1)"
want=$(cmdline_arg warden.smp)
[ -n "$want" ] || fail "no warden.smp= on the kernel command line"
have=$(nproc)
[ "$have" = "$want" ] || fail "nproc is $have, expected $want"
