#!/bin/sh
# CPU hotplug through sysfs: cpu1 off (PSCI CPU_OFF) and on again (PSCI CPU_ON).
. /lib/warden.sh
online=/sys/devices/system/cpu/cpu1/online
[ -w "$online" ] || fail "$online missing or not writable (fewer than 2 CPUs?)"
before=$(nproc)
echo 0 > "$online" || fail "writing 0 to $online failed"
[ "$(cat "$online")" = 0 ] || fail "cpu1 still online after writing 0"
[ "$(nproc)" = $((before - 1)) ] || fail "nproc $(nproc) after cpu1 off, expected $((before - 1))"
echo 1 > "$online" || fail "writing 1 to $online failed (CPU_ON refused?)"
[ "$(cat "$online")" = 1 ] || fail "cpu1 not online after writing 1"
[ "$(nproc)" = "$before" ] || fail "nproc $(nproc) after cpu1 on, expected $before"
# Once more, so a CPU that came back in a bad state is caught.
echo 0 > "$online" && echo 1 > "$online" || fail "second off/on cycle of cpu1 failed"
[ "$(nproc)" = "$before" ] || fail "nproc $(nproc) after the second cycle, expected $before"
