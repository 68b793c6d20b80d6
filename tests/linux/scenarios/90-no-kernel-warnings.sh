#!/bin/sh
# No kernel warning, oops or BUG in the whole kernel log of this boot.
. /lib/warden.sh
bad=$(dmesg | grep -E 'WARNING:|Oops|BUG:|Call trace' | head -n 1)
[ -z "$bad" ] || fail "kernel log: $bad"
