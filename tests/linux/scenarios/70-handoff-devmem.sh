#!/bin/sh
# Donating a page of the modem carveout from an unmodified kernel with busybox devmem and
# warden's control page: the host fills the page and checksums it, DONATEs it to the modem,
# is refused access (SIGBUS in a child, contained: the shell, Linux and warden carry on), the
# peer checksums the page, releases it, and the host RECLAIMs it cleared.
. /lib/warden.sh
without_warden && skip "no warden, so no control page"
control_page_init || fail "$WARDEN_CONTROL_WHY"
# The peer checksums what it was given: without one this story cannot be told.
without_sim_peer && skip "$WARDEN_NO_PEER_WHY"

# The first page of the modem carveout, wherever the board put it in this machine's RAM.
page=$(warden_carveout modem) || fail "no /reserved-memory/modem@* in the DT"
size=0x1000

# a) Host memory: devmem reads it before donation.
state=$(range_state "$page") || fail "RANGE_QUERY($page) failed: status ${WARDEN_STATUS:-?}"
[ "$state" = "$WARDEN_STATE_HOST" ] || fail "modem page $page starts in state $state, not Host"
out=$(devmem "$page" 64 2>&1) || fail "devmem cannot read $page before donation: $out"
echo "before donation: $page reads $out"

# b) A pattern in all 512 words, and its checksum computed here.
fnv_init
write_pattern_page "$page" 1 || fail "devmem write into $page failed"
sum=$(fnv_value)
first=$(devmem "$page" 64)
hex64_eq "$first" "$(pattern_word 1 0)" || fail "word 0 reads $first after writing the pattern"
last=$(devmem $((page + 0xff8)) 64)
hex64_eq "$last" "$(pattern_word 1 511)" || fail "word 511 reads $last after writing the pattern"
echo "pattern written, host checksum $sum"

# c) DONATE(range, peer 1, no flags); RANGE_QUERY says Donated(modem).
violations_before=$(violation_accesses) || fail "VIOLATION_COUNT failed: status $WARDEN_STATUS"
warden_call "$WARDEN_DONATE" "$page" "$size" "$WARDEN_PEER_MODEM" 0 || fail "devmem failed"
[ "$WARDEN_STATUS" = 0 ] || fail "DONATE($page, $size, modem) returned $WARDEN_STATUS"
hex64_eq "$RET1" "$page" && hex64_eq "$RET2" "$size" ||
    fail "DONATE answered range $RET1 size $RET2, expected $page $size"
state=$(range_state "$page") || fail "RANGE_QUERY after DONATE failed: $WARDEN_STATUS"
[ "$state" = "$WARDEN_STATE_DONATED_MODEM" ] ||
    fail "state after DONATE is $state, expected $WARDEN_STATE_DONATED_MODEM (Donated(modem))"
echo "donated: state $state"

# d) The host may not touch it: a child's devmem read and write die of SIGBUS; we carry on.
for access in "$page 64" "$((page + 0x10)) 64 0x1234"; do
    # shellcheck disable=SC2086 # $access is the devmem arguments
    out=$(devmem_child $access)
    case "$out" in
        *"Bus error"*"status 135"*) ;;
        *) fail "devmem $access after DONATE: expected Bus error and status 135, got: $out" ;;
    esac
done
echo "host access refused: $(echo "$out" | tr '\n' ' ')"
[ -r /proc/self/stat ] || fail "the shell cannot read /proc after the SIGBUS"
violations_after=$(violation_accesses) || fail "VIOLATION_COUNT after the abort failed"
[ "$violations_after" -ge $((violations_before + 2)) ] ||
    fail "violation accesses $violations_before -> $violations_after, expected at least +2"
echo "violations $violations_before -> $violations_after"

# e) The peer checksums the page it now owns: the pattern the host wrote, unchanged by the
#    refused write.
warden_call "$WARDEN_PEER_COMMAND" "$WARDEN_PEER_MODEM" "$WARDEN_OP_CHECKSUM" "$page" "$size" ||
    fail "devmem failed"
[ "$WARDEN_STATUS" = 0 ] || fail "PEER_COMMAND(modem, Checksum) returned $WARDEN_STATUS"
hex64_eq "$RET1" "$sum" || fail "peer checksum $RET1, host computed $sum"
echo "peer checksum $RET1 matches"

# f) The peer releases it, the host reclaims it with FLAG_CLEAR, and reads zeros again.
warden_call "$WARDEN_PEER_COMMAND" "$WARDEN_PEER_MODEM" "$WARDEN_OP_RELEASE" "$page" "$size" 0 ||
    fail "devmem failed"
[ "$WARDEN_STATUS" = 0 ] || fail "PEER_COMMAND(modem, Release) returned $WARDEN_STATUS"
[ "$(hex64_int "$RET1")" = 0 ] || fail "the peer's RELEASE returned $(hex64_int "$RET1")"
warden_call "$WARDEN_RECLAIM" "$page" "$size" "$WARDEN_FLAG_CLEAR" || fail "devmem failed"
[ "$WARDEN_STATUS" = 0 ] || fail "RECLAIM($page, $size, CLEAR) returned $WARDEN_STATUS"
state=$(range_state "$page") || fail "RANGE_QUERY after RECLAIM failed: $WARDEN_STATUS"
[ "$state" = "$WARDEN_STATE_HOST" ] || fail "state after RECLAIM is $state, not Host"
fnv_init
read_page_words "$page" || fail "devmem cannot read $page after RECLAIM"
zeros=$(zeros_checksum 512)
[ "$(fnv_value)" = "$zeros" ] || fail "page $page is not all zeros after RECLAIM with CLEAR"
echo "reclaimed: state Host, page reads zeros"
