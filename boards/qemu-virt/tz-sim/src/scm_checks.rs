//! tz-probe's SCM checks: Qualcomm SCM calls made from EL2 the way warden forwards them, with
//! the probe's own stage 2 and the real SMMU set up so tz-sim's XPU witness has something to
//! find (see tz-probe's documentation for the list).
//!
//! Memory the checks assign: pages of `ASSIGNED` (mapped by the probe's level-3 table),
//! a page of the 2 MiB block at `BLOCK_RANGE`, and the PAS region (a 2 MiB block): all RAM
//! nothing else uses in this scenario.

use core::arch::asm;

use super::{Reason, mpidr, wait_until};

const PAGE: u64 = 0x1000;
/// Mapped page by page (L3) in the probe's stage 2.
const ASSIGNED: u64 = 0x4800_0000;
const ASSIGNED_SIZE: u64 = 0x1_0000;
/// Inside a 2 MiB block of the probe's stage 2.
const BLOCK_RANGE: u64 = 0x4820_0000;
/// The modem's PAS region, inside another 2 MiB block.
const PAS_REGION: u64 = 0x4840_0000;
const PAS_SIZE: u64 = 0x4_0000;

const HLOS: u32 = 0x3;
const MSS_MSA: u32 = 0xf;
const RW: u32 = 0b110;
const RWX: u32 = 0b111;
const MPSS: u64 = 4;

const ERROR: i64 = -1;
const EINVAL_ARG: i64 = -2;
const EINVAL_ADDR: i64 = -3;
const V2_EBUSY: i64 = -12;

/// 4 KiB granule, T0SZ = 24 (40-bit IPA), SL0 = 1 (start at level 1: two concatenated tables),
/// inner/outer write-back, inner shareable, PS = 40 bits.
const VTCR: u64 = 24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (2 << 16);
const TABLE: u64 = 0b11;
/// Valid, AF, inner shareable, read-write, Normal write-back.
const PAGE_DESC: u64 = 0b11 | (0xf << 2) | (0b11 << 6) | (0b11 << 8) | (1 << 10);
const BLOCK_DESC: u64 = PAGE_DESC & !0b10;

/// The probe's stage-2 tables: its "host" stage 2, a second one for an SMMU stream, and a
/// fan-out that no walk can finish within tz-sim's budget.
#[repr(C, align(8192))]
struct Tables {
    root: [u64; 1024],
    l2: [u64; 512],
    l3: [u64; 512],
    smmu_root: [u64; 1024],
    smmu_l2: [u64; 512],
    _pad: [u64; 512],
    fan_root: [u64; 1024],
    fan_l2: [u64; 512],
    fan_l3: [u64; 512],
    /// Four STEs (a linear stream table, 64-byte aligned).
    streams: [u64; 32],
}

static mut TABLES: Tables = Tables {
    root: [0; 1024],
    l2: [0; 512],
    l3: [0; 512],
    smmu_root: [0; 1024],
    smmu_l2: [0; 512],
    _pad: [0; 512],
    fan_root: [0; 1024],
    fan_l2: [0; 512],
    fan_l3: [0; 512],
    streams: [0; 32],
};

/// assign_mem's lists (mem at 0, sources at 0x100, destinations at 0x200, the argument buffer
/// at 0x300) and an MDT header for PAS at 0x400.
#[repr(C, align(4096))]
struct Buffers([u64; 512]);
static mut BUFFERS: Buffers = Buffers([0; 512]);

fn tables() -> *mut Tables {
    &raw mut TABLES
}

fn addr<T>(p: *const T) -> u64 {
    p as u64
}

/// Writes word `i` of the table at `table` (a field of [`TABLES`]).
fn set(table: *mut u64, i: usize, v: u64) {
    // SAFETY: `table` is one of TABLES' arrays and `i` is within it (the callers' indices are
    // constants below the arrays' lengths); only the boot CPU runs these checks.
    unsafe { core::ptr::write_volatile(table.add(i), v) };
}

fn buffers() -> *mut u8 {
    (&raw mut BUFFERS).cast()
}

fn put32(offset: usize, v: u32) {
    // SAFETY: inside BUFFERS (callers keep offsets below 4096), 4-byte aligned.
    unsafe { core::ptr::write_volatile(buffers().add(offset).cast::<u32>(), v) };
}

fn put64(offset: usize, v: u64) {
    // SAFETY: inside BUFFERS, 8-byte aligned.
    unsafe { core::ptr::write_volatile(buffers().add(offset).cast::<u64>(), v) };
}

fn scm(x: [u64; 6]) -> [u64; 4] {
    let (mut r0, mut r1, mut r2, mut r3) = (x[0], x[1], x[2], x[3]);
    // SAFETY: an SMCCC call to tz-sim, which reads the buffers named (RAM) and writes x0..x3;
    // x4..x17 are preserved (SMCCC 1.1) but declared clobbered anyway.
    unsafe {
        asm!("dsb sy", "smc #0", inout("x0") r0, inout("x1") r1, inout("x2") r2,
            inout("x3") r3, inout("x4") x[4] => _, inout("x5") x[5] => _, out("x6") _,
            out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
            out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            options(nostack))
    };
    [r0, r1, r2, r3]
}

const ASSIGN: u64 = 0x4200_0c16;
const ASSIGN_ARGINFO: u64 = 0x1117;

/// Lays out an assign_mem's lists as Linux does and returns x0..x5 for it.
fn assign_args(ranges: &[(u64, u64)], src: &[u32], dst: &[(u32, u32)]) -> [u64; 6] {
    for (i, &(base, size)) in ranges.iter().enumerate() {
        put64(16 * i, base);
        put64(16 * i + 8, size);
    }
    for (i, &vm) in src.iter().enumerate() {
        put32(0x100 + 4 * i, vm);
    }
    for (i, &(vm, perm)) in dst.iter().enumerate() {
        put32(0x200 + 24 * i, vm);
        put32(0x204 + 24 * i, perm);
        put64(0x208 + 24 * i, 0);
        put64(0x210 + 24 * i, 0);
    }
    let base = addr(buffers());
    put64(0x300, 4 * src.len() as u64);
    put64(0x308, base + 0x200);
    put64(0x310, 24 * dst.len() as u64);
    put64(0x318, 0);
    [ASSIGN, ASSIGN_ARGINFO, base, 16 * ranges.len() as u64, base + 0x100, base + 0x300]
}

/// assign_mem's status (x0); a success must also say x1 = 0.
fn assign(range: (u64, u64), src: &[u32], dst: &[(u32, u32)]) -> i64 {
    let r = scm(assign_args(&[range], src, dst));
    if r[0] == 0 && r[1] != 0 { i64::MIN } else { r[0] as i64 }
}

fn to_modem(range: (u64, u64)) -> i64 {
    assign(range, &[HLOS], &[(MSS_MSA, RW)])
}

fn to_hlos(range: (u64, u64)) -> i64 {
    assign(range, &[MSS_MSA], &[(HLOS, RWX)])
}

fn expect(what: &str, got: i64, want: i64) -> Result<(), Reason> {
    if got != want {
        fail!("{what}: {got}, expected {want}");
    }
    Ok(())
}

fn tlbi() {
    // SAFETY: invalidates this VMID's stage-1&2 TLB entries after the probe changed its stage 2.
    unsafe { asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
}

fn write_el2(vtcr: u64, vttbr: u64, hcr: u64) {
    // SAFETY: stage 2 only governs EL1&0, and nothing runs there: the probe's own accesses at
    // EL2 are untouched.
    unsafe {
        asm!("msr vtcr_el2, {}", "msr vttbr_el2, {}", "msr hcr_el2, {}", "isb",
            in(reg) vtcr, in(reg) vttbr, in(reg) hcr, options(nostack));
    }
}

const HCR_VM: u64 = 1;
const VMID: u64 = 1 << 48;

/// The probe's stage 2: IPA 1..2 GiB through one L2 table; ASSIGNED's 2 MiB page by page, the
/// 2 MiB blocks at BLOCK_RANGE and PAS_REGION identity-mapped.
fn build_stage2() {
    let t = tables();
    // SAFETY: taking the addresses of TABLES' fields (no reference is created).
    let (root, l2, l3) = unsafe { (&raw mut (*t).root, &raw mut (*t).l2, &raw mut (*t).l3) };
    set(root.cast(), 1, addr(l2) | TABLE);
    set(l2.cast(), 64, addr(l3) | TABLE);
    for i in 0..512 {
        set(l3.cast(), i, (ASSIGNED + PAGE * i as u64) | PAGE_DESC);
    }
    set(l2.cast(), 65, BLOCK_RANGE | BLOCK_DESC);
    set(l2.cast(), 66, (PAS_REGION & !0x1f_ffff) | BLOCK_DESC);
    use_stage2(addr(root));
}

fn use_stage2(root: u64) {
    write_el2(VTCR, root | VMID, HCR_VM);
    tlbi();
}

fn host_root() -> u64 {
    // SAFETY: the address of a field, no reference.
    addr(unsafe { &raw const (*tables()).root })
}

fn unmap_l3(base: u64, size: u64) {
    // SAFETY: the address of a field, no reference.
    let l3 = unsafe { &raw mut (*tables()).l3 };
    for pa in (base..base + size).step_by(PAGE as usize) {
        set(l3.cast(), ((pa - ASSIGNED) / PAGE) as usize, 0);
    }
    tlbi();
}

fn unmap_l2(index: usize) {
    // SAFETY: the address of a field, no reference.
    let l2 = unsafe { &raw mut (*tables()).l2 };
    set(l2.cast(), index, 0);
    tlbi();
}

pub fn is_call_avail() -> Result<(), Reason> {
    // Linux's convention detection: fast SMC64 IS_CALL_AVAIL about itself.
    let r = scm([0xc200_0601, 1, 0x0200_0601, 0, 0, 0]);
    if r[..2] != [0, 1] {
        fail!("convention detection: {r:x?}");
    }
    for (fnid, want) in
        [(0x0200_0c16, 1), (0x0200_0201, 1), (0x0200_0205, 1), (0x0200_0207, 1), (0x0200_0110, 0)]
    {
        let r = scm([0x4200_0601, 1, fnid, 0, 0, 0]);
        if r[..2] != [0, want] {
            fail!("IS_CALL_AVAIL({fnid:#x}) = {r:x?}, expected x1 = {want}");
        }
    }
    expect("an unknown SiP call", scm([0x4200_0110, 2, 1, 0, 0, 0])[0] as i64, -1)
}

pub fn assign_errors() -> Result<(), Reason> {
    let range = (ASSIGNED, PAGE);
    let mut x = assign_args(&[range], &[HLOS], &[(MSS_MSA, RW)]);
    x[1] = 0x1116;
    expect("arginfo", scm(x)[0] as i64, EINVAL_ARG)?;
    // The argument buffer in the secure SRAM: refused, and tz-sim does not fault reading it.
    let mut x = assign_args(&[range], &[HLOS], &[(MSS_MSA, RW)]);
    x[5] = 0x0e00_0000;
    expect("argument buffer in secure memory", scm(x)[0] as i64, EINVAL_ADDR)?;
    expect("range outside RAM", to_modem((0x1000_0000, PAGE)), EINVAL_ADDR)?;
    expect("range beyond RAM", to_modem((0x8000_0000, PAGE)), EINVAL_ADDR)?;
    expect("range unaligned", to_modem((ASSIGNED + 0x800, PAGE)), EINVAL_ARG)?;
    expect("unknown VM", assign(range, &[HLOS], &[(0x7, RW)]), EINVAL_ARG)?;
    expect("permission 0", assign(range, &[HLOS], &[(MSS_MSA, 0)]), EINVAL_ARG)?;
    expect("source twice", assign(range, &[HLOS, HLOS], &[(MSS_MSA, RW)]), EINVAL_ARG)?;
    expect("source mismatch", to_hlos(range), EINVAL_ARG)?;
    let x = assign_args(&[range, (ASSIGNED, 2 * PAGE)], &[HLOS], &[(MSS_MSA, RW)]);
    expect("overlapping ranges", scm(x)[0] as i64, EINVAL_ARG)
}

/// The witness on the CPU's stage 2: stage 2 off, a mapped page range and a mapped block are
/// refused with `XPU: violation`; unmapped (with the TLBI), the same assigns pass.
pub fn witness_stage2() -> Result<(), Reason> {
    let range = (ASSIGNED, ASSIGNED_SIZE);
    write_el2(0, 0, 0);
    expect("stage 2 off (HCR_EL2.VM = 0)", to_modem(range), ERROR)?;
    smmu_gbpa(true);
    build_stage2();
    expect("pages still mapped", to_modem(range), ERROR)?;
    unmap_l3(range.0 + PAGE, PAGE);
    expect("one page of the range still mapped", to_modem(range), ERROR)?;
    unmap_l3(range.0, range.1);
    expect("unmapped", to_modem(range), 0)?;
    expect("again: the modem owns it now", to_modem(range), EINVAL_ARG)?;
    expect("back to HLOS", to_hlos(range), 0)?;
    let block = (BLOCK_RANGE + 0x10_0000, PAGE);
    expect("a page inside a mapped block", to_modem(block), ERROR)?;
    unmap_l2(65);
    expect("the block unmapped", to_modem(block), 0)?;
    expect("block page back to HLOS", to_hlos(block), 0)
}

/// QEMU virt's SMMUv3 (non-secure page 0).
const SMMU: u64 = 0x0905_0000;
const SMMU_CR0: u64 = 0x20;
const SMMU_CR0ACK: u64 = 0x24;
const SMMU_GBPA: u64 = 0x44;
const SMMU_STRTAB_BASE: u64 = 0x80;
const SMMU_STRTAB_BASE_CFG: u64 = 0x88;
const GBPA_UPDATE: u32 = 1 << 31;
const GBPA_ABORT: u32 = 1 << 20;

fn smmu_w32(off: u64, v: u32) {
    // SAFETY: an SMMU register (device memory, MMU off).
    unsafe { core::ptr::write_volatile((SMMU + off) as *mut u32, v) };
}
fn smmu_r32(off: u64) -> u32 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile((SMMU + off) as *const u32) }
}

/// GBPA: abort (or bypass) transactions while the SMMU is disabled.
fn smmu_gbpa(abort: bool) {
    smmu_w32(SMMU_GBPA, GBPA_UPDATE | if abort { GBPA_ABORT } else { 0 });
    wait_until(100, || smmu_r32(SMMU_GBPA) & GBPA_UPDATE == 0);
}

fn smmu_enable(on: bool) -> Result<(), Reason> {
    smmu_w32(SMMU_CR0, u32::from(on));
    if !wait_until(100, || smmu_r32(SMMU_CR0ACK) & 1 == u32::from(on)) {
        fail!("SMMU_CR0ACK.SMMUEN did not follow CR0 ({on})");
    }
    Ok(())
}

fn ste(sid: usize, words: [u64; 4]) {
    // SAFETY: the address of a field, no reference.
    let streams = unsafe { &raw mut (*tables()).streams };
    for (i, w) in words.into_iter().enumerate() {
        set(streams.cast(), 8 * sid + i, w);
    }
}

/// An STE translating through the stage 2 at `root` (Config = stage 2 only, S2AA64).
fn ste_stage2(root: u64) -> [u64; 4] {
    [1 | (0b110 << 1), 0, 1 | (VTCR << 32) | (1 << 51), root]
}

/// The witness on the SMMU: global bypass while disabled; a stream whose stage 2 maps the
/// range; a bypass stream; then the stream invalid and the range assignable.
pub fn witness_smmu() -> Result<(), Reason> {
    let range = (ASSIGNED, ASSIGNED_SIZE);
    smmu_gbpa(false);
    expect("SMMU disabled, global bypass", to_modem(range), ERROR)?;
    smmu_gbpa(true);
    // A second stage 2 that maps ASSIGNED's 2 MiB with a block.
    let t = tables();
    // SAFETY: the addresses of fields, no references.
    let (root, l2, streams) =
        unsafe { (&raw mut (*t).smmu_root, &raw mut (*t).smmu_l2, &raw mut (*t).streams) };
    set(root.cast(), 1, addr(l2) | TABLE);
    set(l2.cast(), 64, ASSIGNED | BLOCK_DESC);
    // Streams: 0 invalid, 1 abort, 2 the host's stage 2, 3 the other one.
    ste(0, [0; 4]);
    ste(1, [1, 0, 0, 0]);
    ste(2, ste_stage2(host_root()));
    ste(3, ste_stage2(addr(root)));
    smmu_w32(SMMU_STRTAB_BASE, addr(streams) as u32);
    smmu_w32(SMMU_STRTAB_BASE + 4, (addr(streams) >> 32) as u32);
    smmu_w32(SMMU_STRTAB_BASE_CFG, 2); // linear, 4 streams
    smmu_enable(true)?;
    let outcome = (|| {
        expect("stream 3's stage 2 maps the range", to_modem(range), ERROR)?;
        ste(3, [1 | (0b100 << 1), 0, 0, 0]);
        expect("stream 3 bypasses", to_modem(range), ERROR)?;
        ste(3, [0; 4]);
        expect("stream 3 invalid", to_modem(range), 0)?;
        expect("back to HLOS", to_hlos(range), 0)
    })();
    smmu_enable(false)?;
    outcome
}

/// Hostile stage-2 configurations: refused without faulting at EL3, and tz-sim still answers.
pub fn witness_hostile() -> Result<(), Reason> {
    let range = (ASSIGNED, PAGE);
    write_el2(VTCR, 0x0e00_0000 | VMID, HCR_VM);
    expect("VTTBR_EL2 in the secure SRAM", to_modem(range), ERROR)?;
    write_el2(VTCR, 0x4000 | VMID, HCR_VM);
    expect("VTTBR_EL2 in flash", to_modem(range), ERROR)?;
    write_el2(VTCR | (3 << 14), host_root() | VMID, HCR_VM);
    expect("reserved granule", to_modem(range), ERROR)?;
    write_el2(VTCR, (host_root() + PAGE) | VMID, HCR_VM);
    expect("misaligned root", to_modem(range), ERROR)?;
    // Every root entry -> one L2 whose every entry -> one empty L3: 2^28 descriptors.
    let t = tables();
    // SAFETY: the addresses of fields, no references.
    let (root, l2, l3) =
        unsafe { (&raw mut (*t).fan_root, &raw mut (*t).fan_l2, &raw mut (*t).fan_l3) };
    for i in 0..1024 {
        set(root.cast(), i, addr(l2) | TABLE);
    }
    for i in 0..512 {
        set(l2.cast(), i, addr(l3) | TABLE);
    }
    use_stage2(addr(root));
    expect("a fan-out beyond the walk budget", to_modem(range), ERROR)?;
    use_stage2(host_root());
    expect("the probe's own stage 2 again", to_modem(range), 0)?;
    expect("back to HLOS", to_hlos(range), 0)?;
    // Still the same CPU, still at EL2: tz-sim returned every time.
    let _ = mpidr();
    Ok(())
}

fn pas(command: u64, arginfo: u64, args: [u64; 3]) -> i64 {
    let r = scm([0x4200_0200 | command, arginfo, args[0], args[1], args[2], 0]);
    if r[0] == 0 && r[1] != 0 { i64::MIN } else { r[0] as i64 }
}
fn init_image(id: u64, metadata: u64) -> i64 {
    pas(0x01, 0x82, [id, metadata, 0])
}
fn mem_setup(id: u64, base: u64, size: u64) -> i64 {
    pas(0x02, 3, [id, base, size])
}
fn auth_and_reset(id: u64) -> i64 {
    pas(0x05, 1, [id, 0, 0])
}
fn shutdown(id: u64) -> i64 {
    pas(0x06, 1, [id, 0, 0])
}

/// An ELF64 header with one program header, as an MDT starts.
fn metadata() -> u64 {
    put32(0x400, u32::from_le_bytes(*b"\x7fELF"));
    put32(0x404, 0x0001_0102);
    put64(0x438, 1); // e_phnum (offset 56) = 1
    addr(buffers()) + 0x400
}

/// A modem boot as `qcom_q6v5_pas` makes it; the region still mapped by the probe's stage 2 at
/// auth_and_reset is refused by the witness.
pub fn pas_sequence() -> Result<(), Reason> {
    let r = scm([0x4200_0207, 1, MPSS, 0, 0, 0]);
    let unknown = scm([0x4200_0207, 1, 99, 0, 0, 0]);
    if r[..2] != [0, 1] || unknown[..2] != [0, 0] {
        fail!("is_supported: MPSS {r:x?}, 99 {unknown:x?}");
    }
    expect("init_image", init_image(MPSS, metadata()), 0)?;
    expect("mem_setup", mem_setup(MPSS, PAS_REGION, PAS_SIZE), 0)?;
    expect("auth_and_reset, region still mapped", auth_and_reset(MPSS), ERROR)?;
    unmap_l2(66);
    expect("auth_and_reset, region unmapped", auth_and_reset(MPSS), 0)?;
    expect("an assign of the running modem's region", to_hlos((PAS_REGION, PAGE)), EINVAL_ADDR)?;
    expect("shutdown", shutdown(MPSS), 0)?;
    expect("auth_and_reset after shutdown", auth_and_reset(MPSS), ERROR)
}

/// PAS calls out of order and with bad arguments.
pub fn pas_out_of_order() -> Result<(), Reason> {
    expect("mem_setup before init_image", mem_setup(MPSS, PAS_REGION, PAS_SIZE), ERROR)?;
    expect("auth_and_reset of an idle peripheral", auth_and_reset(MPSS), ERROR)?;
    expect("shutdown of an idle peripheral", shutdown(MPSS), ERROR)?;
    expect("unknown peripheral", init_image(99, metadata()), EINVAL_ARG)?;
    expect("metadata outside RAM", init_image(MPSS, 0x1000), EINVAL_ADDR)?;
    expect("metadata not ELF", init_image(MPSS, addr(buffers()) + 0x800), EINVAL_ARG)?;
    expect("init_image arginfo", pas(0x01, 2, [MPSS, metadata(), 0]), EINVAL_ARG)?;
    expect("init_image", init_image(MPSS, metadata()), 0)?;
    expect("auth_and_reset before mem_setup", auth_and_reset(MPSS), ERROR)?;
    expect("mem_setup unaligned", mem_setup(MPSS, PAS_REGION + 0x800, PAS_SIZE), EINVAL_ARG)?;
    expect("mem_setup outside RAM", mem_setup(MPSS, 0x1000_0000, PAS_SIZE), EINVAL_ADDR)?;
    expect("mem_setup", mem_setup(MPSS, PAS_REGION, PAS_SIZE), 0)?;
    expect("auth_and_reset", auth_and_reset(MPSS), 0)?;
    expect("init_image while running", init_image(MPSS, metadata()), V2_EBUSY)?;
    expect("shutdown", shutdown(MPSS), 0)
}
