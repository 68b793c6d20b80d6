# Helpers for /init, /demo.sh and the scenarios (sourced; busybox ash).

# The parameters the kernel command line gives module $1 (`module.param=value` words, as
# modprobe would pass them; insmod does not read the command line), one per line, dashes in the
# module's name as underscores.
module_params() {
    prefix=$(echo "$1" | tr - _).
    for word in $(cat /proc/cmdline); do
        case "$word" in
            "$prefix"*=*) echo "${word#"$prefix"}" ;;
        esac
    done
}

# The value of NAME=VALUE on the kernel command line (empty if absent).
cmdline_arg() {
    for word in $(cat /proc/cmdline); do
        case "$word" in
            "$1"=*) echo "${word#*=}"; return 0 ;;
        esac
    done
    return 1
}

# /scenarios/10-cpus-at-el1.sh -> cpus-at-el1
scenario_name() {
    basename "$1" .sh | sed 's/^[0-9][0-9]*-//'
}

# Whether scenario $1 runs when the command line says warden.only=$2 (a comma-separated list
# of names; empty: every scenario runs).
scenario_selected() {
    [ -z "$2" ] && return 0
    case ",$2," in
        *",$1,"*) return 0 ;;
    esac
    return 1
}

# The step (0..3: identity, DMA, DMA-FQ, DMA) of IOMMU-group cycle $1 after which the whole
# disk is read, with a whole-disk read every $2-th cycle (0: never, prints -1). The step
# rotates from one such cycle to the next, so every domain type gets whole-disk reads.
whole_disk_step() {
    if [ "$2" -gt 0 ] && [ $(($1 % $2)) -eq 0 ]; then
        echo $((($1 / $2) % 4))
    else
        echo -1
    fi
}

fail() {
    echo "$*"
    exit 1
}

# Exit status 77: /init reports `skip NAME: reason`.
skip() {
    echo "$*"
    exit 77
}

# True when xtask booted Linux without warden (`cargo xtask run --no-warden`).
without_warden() {
    [ "$(cmdline_arg warden.absent)" = 1 ]
}

# Waits up to 10 s for both virtio disks.
wait_for_disks() {
    for _ in $(seq 1 100); do
        if [ -n "$(disk_by_serial warden-ro)" ] && [ -n "$(disk_by_serial warden-scratch)" ]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# The block device (vda, vdb, ...) whose virtio serial is $1.
disk_by_serial() {
    for serial in /sys/block/*/serial; do
        [ -r "$serial" ] || continue
        if [ "$(cat "$serial")" = "$1" ]; then
            basename "$(dirname "$serial")"
            return 0
        fi
    done
    return 1
}

# A DT property as one hex string (big-endian bytes in order).
dt_hex() {
    od -An -tx1 -v "$1" | tr -d ' \n'
}

# warden's region from /proc/device-tree/reserved-memory/warden*/reg as
# "0xSTART 0xEND" (END inclusive), using /reserved-memory's cell counts.
warden_region() {
    node=$(ls -d /proc/device-tree/reserved-memory/warden* 2>/dev/null | head -n 1)
    [ -n "$node" ] || return 1
    acells=$((0x$(dt_hex /proc/device-tree/reserved-memory/#address-cells)))
    scells=$((0x$(dt_hex /proc/device-tree/reserved-memory/#size-cells)))
    reg=$(dt_hex "$node/reg")
    start_hex=$(echo "$reg" | cut -c1-$((acells * 8)))
    size_hex=$(echo "$reg" | cut -c$((acells * 8 + 1))-$(((acells + scells) * 8)))
    start=$((0x$start_hex))
    size=$((0x$size_hex))
    [ "$size" -gt 0 ] || return 1
    printf '0x%x 0x%x\n' "$start" $((start + size - 1))
}

# Lines "0xSTART 0xEND" of the top-level System RAM ranges in /proc/iomem.
system_ram() {
    grep ' : System RAM$' /proc/iomem | grep -v '^ ' | while read -r range _; do
        echo "0x${range%-*} 0x${range#*-}"
    done
}

# Sets the IOMMU domain type of the PCI device at sysfs path $1 to $2 (identity, DMA, DMA-FQ),
# its driver unbound around the change (Linux refuses it while bound), and prints what the
# group's type reads afterwards. Fails if a step does.
set_iommu_type() {
    type_bdf=$(basename "$1")
    type_group=$(readlink -f "$1/iommu_group")
    type_driver=$(basename "$(readlink -f "$1/driver")")
    echo "$type_bdf" > "/sys/bus/pci/drivers/$type_driver/unbind" || return 1
    type_status=0
    echo "$2" > "$type_group/type" || type_status=1
    echo "$type_bdf" > "/sys/bus/pci/drivers/$type_driver/bind" || return 1
    [ "$type_status" -eq 0 ] || return 1
    cat "$type_group/type"
}

# Waits up to 10 s for the virtio disk with serial $1 (after a rebind) and prints its name.
wait_disk_by_serial() {
    for _ in $(seq 1 100); do
        disk_by_serial "$1" && return 0
        sleep 0.1
    done
    return 1
}

# sha256 of the whole block device /dev/$1, read with O_DIRECT (no page cache: DMA).
disk_sha256() {
    dd if="/dev/$1" bs=65536 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1
}

# ---- warden's control page (docs/abi.md, "Control page"), driven with busybox devmem ----
# Values are passed around as hex strings; 64-bit ones are handled as two 32-bit halves, so
# nothing depends on how the shell's arithmetic treats values above 2^63.

# warden call IDs and constants (warden_abi; docs/abi.md).
# shellcheck disable=SC2034 # used by the scripts that source this file
{
    WARDEN_RANGE_QUERY=0xc6000012
    WARDEN_DONATE=0xc6000020
    WARDEN_LEND=0xc6000021
    WARDEN_RECLAIM=0xc6000022
    WARDEN_VIOLATION_COUNT=0xc6000030
    WARDEN_PEER_COMMAND=0xc6000040
    WARDEN_TRAP_STATS=0xc6000050
    WARDEN_SMMU_STATS=0xc6000051
    WARDEN_FLAG_CLEAR=1
    WARDEN_PEER_MODEM=1
    WARDEN_PEER_DSP=2
    WARDEN_OP_CHECKSUM=1
    WARDEN_OP_FILL=2
    WARDEN_OP_RELEASE=3
    WARDEN_OP_TOUCH=4
    WARDEN_STATE_HOST=0x0
    WARDEN_STATE_DONATED_MODEM=0x102
    WARDEN_STATE_LENT_DSP=0x204
    WARDEN_STATE_SHARED_MODEM=0x107
    WARDEN_PEER_FAULT=-10
    WARDEN_NOT_SUPPORTED=-1
    # Register offsets in the page.
    WARDEN_REG_MAGIC=0x0
    WARDEN_REG_ARG1=0x8
    WARDEN_REG_CALL=0x40
    WARDEN_REG_RET0=0x80
    # "WRDN" as a little-endian 32-bit word.
    WARDEN_CONTROL_MAGIC=0x4e445257
}

# Sets SPLIT_HI and SPLIT_LO to the 32-bit halves of the 64-bit hex value $1 (0x optional, up
# to 16 digits, any case).
split64() {
    split_digits=${1#0[xX]}
    while [ ${#split_digits} -lt 16 ]; do
        split_digits=0$split_digits
    done
    SPLIT_HI=$((0x${split_digits%????????}))
    SPLIT_LO=$((0x${split_digits#????????}))
}

# The 64-bit hex value $1 as 0x + 16 lower-case digits.
hex64() {
    split64 "$1"
    printf '0x%08x%08x\n' "$SPLIT_HI" "$SPLIT_LO"
}

# A small integer (ash arithmetic, may be negative down to -2^31) as a 64-bit hex value.
int_hex64() {
    if [ "$1" -lt 0 ]; then
        printf '0xffffffff%08x\n' $(($1 & 0xffffffff))
    else
        printf '0x%016x\n' "$1"
    fi
}

# Whether the 64-bit hex values $1 and $2 are equal.
hex64_eq() {
    split64 "$1"
    eq_hi=$SPLIT_HI
    eq_lo=$SPLIT_LO
    split64 "$2"
    [ "$eq_hi" -eq "$SPLIT_HI" ] && [ "$eq_lo" -eq "$SPLIT_LO" ]
}

# The 64-bit hex value $1 as a signed number, when it fits in 32 bits (status codes, counts);
# else the hex value itself.
hex64_int() {
    split64 "$1"
    if [ "$SPLIT_HI" -eq 0 ] && [ "$SPLIT_LO" -lt 2147483648 ]; then
        echo "$SPLIT_LO"
    elif [ "$SPLIT_HI" -eq 4294967295 ] && [ "$SPLIT_LO" -ge 2147483648 ]; then
        echo $((SPLIT_LO - 4294967296))
    else
        hex64 "$1"
    fi
}

# FNV-1a over 64-bit words, as warden_abi::peer::Checksum: fnv_init, fnv_add WORD..., then
# fnv_value prints 0x + 16 digits. The state is kept in 32-bit halves: with the FNV prime
# 2^40 + 0x1b3, h * prime mod 2^64 = h * 0x1b3 + (lo << 40), and every partial product stays
# below 2^42.
fnv_init() {
    FNV_HI=0xcbf29ce4
    FNV_LO=0x84222325
}

fnv_add() {
    for fnv_word in "$@"; do
        split64 "$fnv_word"
        FNV_HI=$((FNV_HI ^ SPLIT_HI))
        FNV_LO=$((FNV_LO ^ SPLIT_LO))
        fnv_low_product=$((FNV_LO * 0x1b3))
        FNV_HI=$(((FNV_HI * 0x1b3 + (fnv_low_product >> 32) + ((FNV_LO & 0xffffff) << 8)) & 0xffffffff))
        FNV_LO=$((fnv_low_product & 0xffffffff))
    done
}

fnv_value() {
    printf '0x%08x%08x\n' "$FNV_HI" "$FNV_LO"
}

# Word $2 (0..511) of the test pattern with seed $1 (0..255): distinct words, no zero word.
pattern_word() {
    printf '0x%08x%08x\n' \
        $((((($2 * 0x9e3779b1) >> 7) ^ 0x5752444e ^ ($1 << 24)) & 0xffffffff)) \
        $((($2 * 0x85ebca6b + 0x27d4eb2f + $1) & 0xffffffff))
}

# Writes the 512 words of pattern $2 into the 4 KiB page at physical address $1 with devmem,
# folding each into the FNV state (call fnv_init first). Fails on the first failed write.
write_pattern_page() {
    pattern_index=0
    while [ "$pattern_index" -lt 512 ]; do
        pattern_value=$(pattern_word "$2" "$pattern_index")
        # devmem takes a decimal address too: one fork fewer per word.
        devmem $(($1 + 8 * pattern_index)) 64 "$pattern_value" || return 1
        fnv_add "$pattern_value"
        pattern_index=$((pattern_index + 1))
    done
}

# The control page's physical address (0x...), from the unit address of
# /proc/device-tree/warden-control@ADDR with compatible "warden,control-v1" (WARDEN_DEVICE_TREE
# replaces /proc/device-tree, for testing the scripts elsewhere). Fails without one.
control_page() {
    for control_node in "${WARDEN_DEVICE_TREE:-/proc/device-tree}"/warden-control@*; do
        [ -d "$control_node" ] || continue
        tr '\000' '\n' < "$control_node/compatible" | grep -qx 'warden,control-v1' || continue
        echo "0x${control_node##*@}"
        return 0
    done
    return 1
}

# Prints the base (0x...) of the board's carveout named $1 (modem, dsp) from the DT, wherever
# the board placed it in this machine's RAM: the unit address of
# /reserved-memory/$1@<base> (docs/carveouts.md). Fails if there is none.
warden_carveout() {
    for carveout_node in "${WARDEN_DEVICE_TREE:-/proc/device-tree}"/reserved-memory/"$1"@*; do
        [ -d "$carveout_node" ] || continue
        echo "0x${carveout_node##*@}"
        return 0
    done
    return 1
}

# Finds the control page and checks its MAGIC; sets WARDEN_CONTROL, or WARDEN_CONTROL_WHY to
# the reason it cannot be used.
# shellcheck disable=SC2034 # WARDEN_CONTROL_WHY is for the caller
control_page_init() {
    [ -n "${WARDEN_CONTROL:-}" ] && return 0
    if ! init_page=$(control_page); then
        WARDEN_CONTROL_WHY="no /proc/device-tree/warden-control@* node (compatible warden,control-v1)"
        return 1
    fi
    if ! init_magic=$(devmem $((init_page + WARDEN_REG_MAGIC)) 32 2>&1); then
        WARDEN_CONTROL_WHY="devmem cannot read the control page at $init_page: $init_magic"
        return 1
    fi
    if [ $((init_magic)) -ne $((WARDEN_CONTROL_MAGIC)) ]; then
        WARDEN_CONTROL_WHY="control page $init_page: MAGIC reads $init_magic, expected $WARDEN_CONTROL_MAGIC"
        return 1
    fi
    WARDEN_CONTROL=$init_page
}

# The ABI version in the control page's MAGIC register, as MAJOR.MINOR.
control_page_version() {
    control_page_init || return 1
    version=$(devmem $((WARDEN_CONTROL + WARDEN_REG_MAGIC + 4)) 32) || return 1
    echo "$(($((version)) >> 16)).$(($((version)) & 0xffff))"
}

# warden_call FID [A1..A7]: makes warden call FID with x1..x7 = A1..A7 (numbers or hex; missing
# ones 0) through the control page: 64-bit devmem writes of every ARG, the write of CALL, then
# 64-bit reads of RET0..RET7 into RET0..RET7 (hex strings 0x + 16 digits) and the status
# (RET0 as a signed number) into WARDEN_STATUS. Fails if devmem does.
# True when warden runs no simulated peer on this machine (a board that keeps no CPU for it:
# qemu-virt-tz, warden as the boot stage under tz-sim). PEER_COMMAND answers NOT_SUPPORTED
# before it looks at its arguments; with a peer, op 0 is INVALID_PARAMETERS and changes nothing
# (docs/abi.md, the order of checks).
without_sim_peer() {
    warden_call "$WARDEN_PEER_COMMAND" "$WARDEN_PEER_MODEM" 0 || return 1
    [ "$WARDEN_STATUS" = "$WARDEN_NOT_SUPPORTED" ]
}

# The reason a scenario that needs the simulated peer gives when there is none.
# shellcheck disable=SC2034 # used by the scripts that source this file
WARDEN_NO_PEER_WHY="no simulated peer on this machine (PEER_COMMAND: NOT_SUPPORTED)"

warden_call() {
    control_page_init || return 1
    call_fid=$1
    shift
    [ $# -le 7 ] || return 1
    call_n=1
    while [ "$call_n" -le 7 ]; do
        call_value=0
        if [ $# -gt 0 ]; then
            call_value=$1
            shift
        fi
        case "$call_value" in
            0x* | 0X*) ;;
            *) call_value=$(int_hex64 "$call_value") ;;
        esac
        devmem $((WARDEN_CONTROL + WARDEN_REG_ARG1 + 8 * (call_n - 1))) 64 \
            "$(hex64 "$call_value")" || return 1
        call_n=$((call_n + 1))
    done
    devmem $((WARDEN_CONTROL + WARDEN_REG_CALL)) 64 "$(hex64 "$call_fid")" ||
        return 1
    call_n=0
    while [ "$call_n" -le 7 ]; do
        call_value=$(devmem $((WARDEN_CONTROL + WARDEN_REG_RET0 + 8 * call_n)) 64) ||
            return 1
        eval "RET$call_n=\$(hex64 \"\$call_value\")"
        call_n=$((call_n + 1))
    done
    WARDEN_STATUS=$(hex64_int "$RET0")
}

# RANGE_QUERY(addr): prints the state word of the run around $1 (0x..., e.g. 0x102 for
# Donated(modem)); fails on an error status.
range_state() {
    warden_call "$WARDEN_RANGE_QUERY" "$1" || return 1
    [ "$WARDEN_STATUS" = 0 ] || return 1
    split64 "$RET3"
    printf '0x%x\n' "$SPLIT_LO"
}

# TRAP_STATS: prints `traps el2_ticks now calls data_aborts other` (x1..x6, hex), or fails
# (WARDEN_STATUS says why when the call itself was answered).
trap_stats() {
    warden_call "$WARDEN_TRAP_STATS" || return 1
    [ "$WARDEN_STATUS" = 0 ] || return 1
    echo "$RET1 $RET2 $RET3 $RET4 $RET5 $RET6"
}

# SMMU_STATS: sets SMMU_COMMANDS, SMMU_ASIDS_RETIRED, SMMU_ASIDS_FREED, SMMU_FORCED_FLUSHES
# (numbers) from x1, x3, x4, x5; fails on an error status (no virtual SMMU).
# shellcheck disable=SC2034 # the SMMU_* variables are for the scripts that source this file
smmu_stats() {
    warden_call "$WARDEN_SMMU_STATS" || return 1
    [ "$WARDEN_STATUS" = 0 ] || return 1
    SMMU_COMMANDS=$(hex64_int "$RET1")
    SMMU_ASIDS_RETIRED=$(hex64_int "$RET3")
    SMMU_ASIDS_FREED=$(hex64_int "$RET4")
    SMMU_FORCED_FLUSHES=$(hex64_int "$RET5")
}

# VIOLATION_COUNT: prints the number of refused accesses so far (x3).
violation_accesses() {
    warden_call "$WARDEN_VIOLATION_COUNT" || return 1
    [ "$WARDEN_STATUS" = 0 ] || return 1
    hex64_int "$RET3"
}

# Runs devmem with the arguments in a child shell and prints what that shell printed (devmem's
# output, or "Bus error" if it was killed by SIGBUS) followed by "(exit status N)".
devmem_child() {
    sh -c 'devmem "$@"; echo "(exit status $?)"' devmem "$@" 2>&1
}

# Reads the 512 words of the 4 KiB page at physical address $1 with devmem (every $2-th word
# if given), folding each into the FNV state (call fnv_init first). Fails if a read does.
read_page_words() {
    read_index=0
    while [ "$read_index" -lt 512 ]; do
        read_value=$(devmem $(($1 + 8 * read_index)) 64) || return 1
        fnv_add "$read_value"
        read_index=$((read_index + ${2:-1}))
    done
}

# The FNV checksum of $1 zero words.
zeros_checksum() {
    fnv_init
    zero_index=0
    while [ "$zero_index" -lt "$1" ]; do
        fnv_add 0
        zero_index=$((zero_index + 1))
    done
    fnv_value
}

# idle_ns [FILE]: ns this machine's CPUs spent idle, waiting for I/O included, from
# /proc/timer_list (or FILE). Under QEMU -icount shift=0,sleep=off that is the virtual time
# QEMU skipped while no CPU ran (ns = ticks), which the bench subtracts from counter ticks.
# The lines are `  .%-15s: %Lu nsecs`: `.idle_sleeptime : N nsecs`, but the longer name runs
# into the colon, `.iowait_sleeptime: N nsecs`, so the name is compared without it.
idle_ns() {
    awk '{ name = $1; sub(/:$/, "", name) }
         name == ".idle_sleeptime" || name == ".iowait_sleeptime" {
             for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) { sum += $i; break }
         }
         END { printf "%.0f\n", sum }' "${1:-/proc/timer_list}"
}
