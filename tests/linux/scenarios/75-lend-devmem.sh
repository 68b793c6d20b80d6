#!/bin/sh
# Lending a page of the DSP carveout (policy lend, clear-on-reclaim) with busybox devmem and
# warden's control page: while lent only the DSP may touch it (the host gets SIGBUS), the peer
# checksums and rewrites it, releases it, and the host's RECLAIM without FLAG_CLEAR still
# returns it zeroed; then a peer access to memory it was not given is contained.
. /lib/warden.sh
without_warden && skip "no warden, so no control page"
control_page_init || fail "$WARDEN_CONTROL_WHY"
# The peer checksums what it was given: without one this story cannot be told.
without_sim_peer && skip "$WARDEN_NO_PEER_WHY"

# The first page of the DSP carveout, wherever the board put it in this machine's RAM.
page=$(warden_carveout dsp) || fail "no /reserved-memory/dsp@* in the DT"
size=0x1000
fill=0x5a5aa5a5c3c33c3c

state=$(range_state "$page") || fail "RANGE_QUERY($page) failed: status ${WARDEN_STATUS:-?}"
[ "$state" = "$WARDEN_STATE_HOST" ] || fail "DSP page $page starts in state $state, not Host"
fnv_init
write_pattern_page "$page" 2 || fail "devmem write into $page failed"
sum=$(fnv_value)

warden_call "$WARDEN_LEND" "$page" "$size" "$WARDEN_PEER_DSP" 0 || fail "devmem failed"
[ "$WARDEN_STATUS" = 0 ] || fail "LEND($page, $size, dsp) returned $WARDEN_STATUS"
state=$(range_state "$page") || fail "RANGE_QUERY after LEND failed: $WARDEN_STATUS"
[ "$state" = "$WARDEN_STATE_LENT_DSP" ] ||
    fail "state after LEND is $state, expected $WARDEN_STATE_LENT_DSP (Lent(dsp))"
echo "lent: state $state"

# The host still owns it but may not access it while lent.
out=$(devmem_child "$page" 64)
case "$out" in
    *"Bus error"*"status 135"*) ;;
    *) fail "devmem $page while lent: expected Bus error and status 135, got: $out" ;;
esac

peer_command() {
    warden_call "$WARDEN_PEER_COMMAND" "$WARDEN_PEER_DSP" "$@" || fail "devmem failed"
}
peer_command "$WARDEN_OP_CHECKSUM" "$page" "$size"
[ "$WARDEN_STATUS" = 0 ] || fail "PEER_COMMAND(dsp, Checksum) returned $WARDEN_STATUS"
hex64_eq "$RET1" "$sum" || fail "peer checksum $RET1 of the lent page, host computed $sum"
peer_command "$WARDEN_OP_FILL" "$page" "$size" "$fill"
[ "$WARDEN_STATUS" = 0 ] || fail "PEER_COMMAND(dsp, Fill) returned $WARDEN_STATUS"
fnv_init
count=0
while [ "$count" -lt 512 ]; do
    fnv_add "$fill"
    count=$((count + 1))
done
filled=$(fnv_value)
peer_command "$WARDEN_OP_CHECKSUM" "$page" "$size"
hex64_eq "$RET1" "$filled" || fail "peer checksum $RET1 after its Fill, expected $filled"
echo "peer checksummed and refilled the page"

peer_command "$WARDEN_OP_RELEASE" "$page" "$size" 0
[ "$WARDEN_STATUS" = 0 ] || fail "PEER_COMMAND(dsp, Release) returned $WARDEN_STATUS"
[ "$(hex64_int "$RET1")" = 0 ] || fail "the peer's RELEASE returned $(hex64_int "$RET1")"
warden_call "$WARDEN_RECLAIM" "$page" "$size" 0 || fail "devmem failed"
[ "$WARDEN_STATUS" = 0 ] || fail "RECLAIM($page, $size) returned $WARDEN_STATUS"
state=$(range_state "$page") || fail "RANGE_QUERY after RECLAIM failed: $WARDEN_STATUS"
[ "$state" = "$WARDEN_STATE_HOST" ] || fail "state after RECLAIM is $state, not Host"
# Every 8th word: the carveout is clear-on-reclaim, so the peer's fill must be gone.
fnv_init
read_page_words "$page" 8 || fail "devmem cannot read $page after RECLAIM"
[ "$(fnv_value)" = "$(zeros_checksum 64)" ] ||
    fail "page $page still holds data after RECLAIM of a clear-on-reclaim carveout"
echo "reclaimed: state Host, page reads zeros"

# The peer touching host memory (the page it just gave back) is contained.
violations_before=$(violation_accesses) || fail "VIOLATION_COUNT failed: status $WARDEN_STATUS"
peer_command "$WARDEN_OP_TOUCH" "$page"
[ "$WARDEN_STATUS" = "$WARDEN_PEER_FAULT" ] ||
    fail "PEER_COMMAND(dsp, Touch $page) returned $WARDEN_STATUS, expected PEER_FAULT"
violations_after=$(violation_accesses) || fail "VIOLATION_COUNT failed: status $WARDEN_STATUS"
[ "$violations_after" -gt "$violations_before" ] ||
    fail "violation accesses $violations_before -> $violations_after after the peer's access"
echo "peer access to host memory contained: PEER_FAULT"
