//! `warden.bench` on the command line (`cargo xtask bench`): cost figures instead of
//! scenarios. Run under QEMU `-icount shift=0`, the 1 GHz counter advances one tick per
//! instruction executed by any CPU, so counter deltas are instruction counts, warden's work at
//! EL2 on the guest's behalf included.
//!
//! Every figure is printed as one line the harness parses:
//! `bench <row> <unit> <sample> <sample> ...` (raw samples; the harness takes min/median/max).

use core::arch::asm;

use warden_abi::handoff::{PeerId, Policy, Request, Return, Transfer};
use warden_abi::hyp;

use crate::console::println;
use crate::cpu;
use crate::edu::{Edu, RESULT_PAGE};
use crate::exceptions;
use crate::handoff::{self, Span};
use crate::mmu500::{Mmu500, S2CR_TRANSLATE};
use crate::platform::{BenchMode, Platform};
use crate::report::Reason;
use crate::smccc::{self, Conduit};
use crate::vsmmu::Stage1Pool;

/// Samples per row, and operations per sample for the per-operation rows.
struct Plan {
    samples: usize,
    ops: u64,
    handoff_samples: usize,
}

impl Plan {
    fn for_mode(mode: BenchMode) -> Self {
        match mode {
            BenchMode::Full | BenchMode::Traps | BenchMode::Handoffs => {
                Plan { samples: 9, ops: 200, handoff_samples: 5 }
            }
            BenchMode::Quick | BenchMode::Profile(_) => {
                Plan { samples: 1, ops: 10, handoff_samples: 1 }
            }
        }
    }
}

/// Sizes of the handoff rows (each needs a donate-policy carveout at least that large).
const HANDOFF_SIZES: [u64; 4] = [64 << 10, 1 << 20, 16 << 20, 256 << 20];

pub fn run_all(platform: &Platform, mode: BenchMode) {
    let plan = Plan::for_mode(mode);
    println!("guest: bench mode ({mode:?}); counter at {} Hz", cpu::counter_frequency());
    match mode {
        BenchMode::Profile(size) => profile_cycles(size),
        BenchMode::Traps => trap_rows(platform, &plan),
        BenchMode::Handoffs => handoff_rows(&plan),
        BenchMode::Full | BenchMode::Quick => {
            trap_rows(platform, &plan);
            handoff_rows(&plan);
        }
    }
    println!("guest: bench done");
}

/// Prints one row.
fn emit(row: &str, unit: &str, samples: &[u64]) {
    crate::console::print(format_args!("bench {row} {unit}"));
    for s in samples {
        crate::console::print(format_args!(" {s}"));
    }
    crate::console::print(format_args!("\n"));
}

/// Per-operation cost: `ops` runs of `op` timed together, minus the same loop around `empty`.
fn per_op(plan: &Plan, mut op: impl FnMut(), mut empty: impl FnMut()) -> [u64; 16] {
    let mut out = [0u64; 16];
    for slot in out.iter_mut().take(plan.samples) {
        let t0 = cpu::counter();
        for _ in 0..plan.ops {
            op();
        }
        let t1 = cpu::counter();
        for _ in 0..plan.ops {
            empty();
        }
        let t2 = cpu::counter();
        let with = t1 - t0;
        let without = t2 - t1;
        *slot = with.saturating_sub(without) / plan.ops;
    }
    out
}

fn trap_rows(platform: &Platform, plan: &Plan) {
    let n = plan.samples;
    let hvc = per_op(
        plan,
        || {
            smccc::call(Conduit::Hvc, hyp::ABI_VERSION, [0; 3]);
        },
        || core::hint::black_box(()),
    );
    emit("trap/hvc_abi_version", "instructions", &hvc[..n]);
    let smc = per_op(
        plan,
        || {
            smccc::call(Conduit::Smc, hyp::ABI_VERSION, [0; 3]);
        },
        || core::hint::black_box(()),
    );
    emit("trap/smc_abi_version", "instructions", &smc[..n]);
    // A load warden refuses at stage 2: the trap, the violation record, the injected abort,
    // the guest's vector skipping the load, and back. Baseline: the same probe around a load
    // of ordinary RAM.
    let warden = match &platform.warden_regions {
        Ok(regions) => regions.as_slice().first().map(|r| r.base),
        Err(_) => None,
    };
    let ram = core::ptr::addr_of!(PLAIN_WORD) as u64;
    if let Some(addr) = warden {
        let fault = per_op(
            plan,
            || {
                // SAFETY: the probe catches the injected abort and skips the load.
                let _ = exceptions::catch(|| unsafe { (addr as *const u32).read_volatile() });
            },
            || {
                // SAFETY: an ordinary static, always readable.
                let _ = exceptions::catch(|| unsafe { (ram as *const u32).read_volatile() });
            },
        );
        emit("trap/stage2_fault_injected_abort", "instructions", &fault[..n]);
    }
    if let Some(smmu) = platform.smmu {
        // A register read of warden's virtual SMMU: trapped, decoded, emulated, resumed.
        let read = per_op(
            plan,
            // SAFETY: IDR0 of the SMMU the DT names; reading it has no side effect.
            || unsafe {
                (smmu as *const u32).read_volatile();
            },
            || core::hint::black_box(()),
        );
        emit("trap/vsmmu_register_read", "instructions", &read[..n]);
        // A register write: IRQ_CTRL = 0 (no interrupts), which the SMMU acknowledges in
        // IRQ_CTRLACK; harmless at any time.
        let write = per_op(
            plan,
            // SAFETY: IRQ_CTRL (offset 0x50) of the SMMU the DT names; 0 keeps interrupts off.
            || unsafe {
                ((smmu + 0x50) as *mut u32).write_volatile(0);
            },
            || core::hint::black_box(()),
        );
        emit("trap/vsmmu_register_write", "instructions", &write[..n]);
        // A CMD_SYNC: the command written to the queue in RAM, the CMDQ_PROD write (warden
        // copies and runs the command, syncing the real SMMU if anything is pending) and the
        // CMDQ_CONS read that sees it done.
        match crate::vsmmu::Smmu::enable(smmu) {
            Ok(mut q) => {
                let sync = per_op(
                    plan,
                    || {
                        let _ = q.sync();
                    },
                    || core::hint::black_box(()),
                );
                emit("trap/vsmmu_cmd_sync", "instructions", &sync[..n]);
                // The same with MSI-signalled completion, as Linux issues it when the SMMU
                // has IDR0.MSI: the queue write, the CMDQ_PROD write (warden completes the
                // sync and writes its completion word into the slot), the poll on memory.
                // One checked first: a completion word never written is a failure to report,
                // not a row of timeouts.
                match q.has_msi().then(|| q.sync_msi()) {
                    Some(Ok(())) => {
                        let msi = per_op(
                            plan,
                            || {
                                let _ = q.sync_msi();
                            },
                            || core::hint::black_box(()),
                        );
                        emit("trap/vsmmu_cmd_sync_msi", "instructions", &msi[..n]);
                    }
                    Some(Err(why)) => println!("guest: bench vSMMU MSI CMD_SYNC failed: {why}"),
                    None => println!("guest: bench vSMMU has no IDR0.MSI"),
                }
            }
            Err(why) => println!("guest: bench vSMMU not usable: {why}"),
        }
    }
    if let Some(mmu500) = platform.mmu500 {
        mmu500_rows(platform, plan, mmu500);
        scm_rows(plan);
    }
    if let Some(uart) = platform.console {
        // PL011 UARTFR: emulated by QEMU directly, no exit to EL2.
        let mmio = per_op(
            plan,
            // SAFETY: reading the UART flag register has no side effect.
            || unsafe {
                ((uart + 0x18) as *const u32).read_volatile();
            },
            || core::hint::black_box(()),
        );
        emit("mmio/untrapped_uart_read", "instructions", &mmio[..n]);
    }
}

static PLAIN_WORD: u32 = 0;

/// The MMU-500 face (Snapdragon persona): a register read and write, and the TLB maintenance
/// Linux's `arm_smmu_tlb_inv_context_s1` does on a live context bank (TLBIASID, then TLBSYNC
/// polled through TLBSTATUS), which warden turns into a real CMD_TLBI_NH_ASID and CMD_SYNC.
fn mmu500_rows(platform: &Platform, plan: &Plan, base: u64) {
    const SIDR0: u64 = 0x020;
    const SGFSR: u64 = 0x048;
    const BANK: u32 = 2;
    const GROUP: u32 = 0;
    const ASID: u16 = 0x5e;
    const IOVA: u64 = 0x10_0000;
    let n = plan.samples;
    let read = per_op(
        plan,
        // SAFETY: sIDR0 of the MMU-500 the DT names; reading it has no side effect.
        || unsafe {
            ((base + SIDR0) as *const u32).read_volatile();
        },
        || core::hint::black_box(()),
    );
    emit("trap/mmu500_register_read", "instructions", &read[..n]);
    let write = per_op(
        plan,
        // SAFETY: sGFSR is write-one-to-clear: writing 0 changes nothing.
        || unsafe {
            ((base + SGFSR) as *mut u32).write_volatile(0);
        },
        || core::hint::black_box(()),
    );
    emit("trap/mmu500_register_write", "instructions", &write[..n]);
    // A live bank: edu's stream translated by it over one mapped page, so that the ASID has a
    // real ASID on the back end to invalidate.
    let setup = || -> Result<(Mmu500, Edu), Reason> {
        let edu = Edu::set_up(platform)?;
        let smmu = Mmu500::enable(base)?;
        let mut pool = Stage1Pool::take();
        let space = pool.space()?;
        pool.map(space, IOVA, RESULT_PAGE.address())?;
        smmu.write_bank(BANK, ASID, pool.root(space));
        smmu.map_stream(GROUP, u32::from(edu.function.requester_id()), S2CR_TRANSLATE | BANK);
        Ok((smmu, edu))
    };
    match setup() {
        Ok((smmu, _edu)) => {
            let mut failed = None;
            let tlbi = per_op(
                plan,
                || {
                    smmu.tlbi_asid(BANK, ASID);
                    if let Err(why) = smmu.tlb_sync(BANK) {
                        failed = Some(why);
                    }
                },
                || core::hint::black_box(()),
            );
            smmu.unmap_stream(GROUP);
            smmu.disable_bank(BANK);
            smmu.tlbi_asid(BANK, ASID);
            let _ = smmu.tlb_sync(BANK);
            match failed {
                None => emit("trap/mmu500_tlbiasid_tlbsync", "instructions", &tlbi[..n]),
                Some(why) => println!("guest: bench MMU-500 TLBSYNC failed: {why}"),
            }
        }
        Err(why) => println!("guest: bench MMU-500 not usable: {why}"),
    }
}

/// The modem-style (donate-policy) carveouts, largest first.
fn donate_carveouts() -> [(u64, u64, PeerId); 4] {
    let mut out = [(0, 0, PeerId::MODEM); 4];
    let count = handoff::carveout_count().unwrap_or(0);
    let mut n = 0;
    for index in 0..count {
        if let Ok(info) = handoff::carveout_info(index)
            && info.policy == Policy::Donate
            && n < out.len()
        {
            out[n] = (info.base, info.size, info.peer);
            n += 1;
        }
    }
    out.sort_unstable_by_key(|c| core::cmp::Reverse(c.1));
    out
}

fn dminline() -> u64 {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    4 << ((ctr >> 16) & 0xf)
}

/// `DC CIVAC` over every line of the range at EL1, then `DSB SY`: the lower bound of what any
/// handoff must do.
fn dc_civac(span: Span) {
    let line = dminline();
    let mut va = span.base;
    while va < span.end() {
        // SAFETY: cache maintenance of memory the host owns and may access.
        unsafe { asm!("dc civac, {}", in(reg) va, options(nostack, preserves_flags)) };
        va += line;
    }
    cpu::dsb_sy();
}

/// Sizes of the assign_mem rows (the modem carveout is 16 MiB).
const SCM_SIZES: [u64; 3] = [64 << 10, 1 << 20, 16 << 20];

/// Qualcomm's assign_mem on the Snapdragon persona, per call, on the modem carveout: HLOS →
/// MSS_MSA (the carveout's DONATE), MSS_MSA → HLOS (take-back, scrubbed: a donate carveout),
/// HLOS → HLOS + MSS_MSA (share) and back (unshare). Compared in the report with the virt
/// run's DONATE and EL1 `DC CIVAC` loop of the same size.
fn scm_rows(plan: &Plan) {
    use crate::scm_scenarios::{HLOS, MSS_MSA, RW, assign_mem};
    let modem = donate_carveouts().into_iter().find(|c| c.1 > 0 && c.2 == PeerId::MODEM);
    let Some((base, size, _)) = modem else {
        println!("guest: bench scm: no modem carveout, rows skipped");
        return;
    };
    let timed = |span: Span, src: &[u32], dest: &[(u32, u32)], what: &str| {
        let t0 = cpu::counter();
        let (status, _) = assign_mem(span, src, dest);
        let t1 = cpu::counter();
        if status != 0 {
            println!("guest: bench scm {what} of {span} failed: x0 = {status}");
            return None;
        }
        Some(t1 - t0)
    };
    for bytes in SCM_SIZES.into_iter().filter(|b| *b <= size) {
        let span = Span { base, size: bytes };
        let mut rows = [[0u64; 16]; 4];
        let mut n = 0;
        for sample in 0..plan.handoff_samples {
            let costs = [
                timed(span, &[HLOS], &[(MSS_MSA, RW)], "HLOS -> MSS"),
                timed(span, &[MSS_MSA], &[(HLOS, RW)], "MSS -> HLOS"),
                timed(span, &[HLOS], &[(HLOS, RW), (MSS_MSA, RW)], "share"),
                timed(span, &[HLOS, MSS_MSA], &[(HLOS, RW)], "unshare"),
            ];
            if costs.iter().any(Option::is_none) {
                break;
            }
            for (row, cost) in rows.iter_mut().zip(costs) {
                row[sample] = cost.unwrap_or(0);
            }
            n += 1;
        }
        for (name, row) in ["assign_exclusive", "assign_back", "share", "unshare"].iter().zip(&rows)
        {
            let mut row_name = Row { buf: [0; 48], len: 0 };
            let _ = core::fmt::Write::write_fmt(&mut row_name, format_args!("scm/{name}/{bytes}"));
            emit(row_name.as_str(), "instructions", &row[..n]);
        }
    }
}

/// Ticks of one warden call; `None` (after printing why) if it failed.
fn timed_call(regs: [u64; 8], what: &str) -> Option<u64> {
    let t0 = cpu::counter();
    let out = smccc::call_regs(Conduit::Hvc, regs);
    let t1 = cpu::counter();
    if out[0] != 0 {
        println!("guest: bench {what} failed: x0 = {}", out[0] as i64);
        return None;
    }
    Some(t1 - t0)
}

fn handoff_rows(plan: &Plan) {
    let carveouts = donate_carveouts();
    for size in HANDOFF_SIZES {
        let Some(&(base, _, peer)) = carveouts.iter().find(|c| c.1 >= size) else {
            println!(
                "guest: bench handoff/{size}: no donate carveout of {size} bytes, row skipped"
            );
            continue;
        };
        let span = Span { base, size };
        let mut rows = [[0u64; 16]; 5];
        let mut n = 0;
        for sample in 0..plan.handoff_samples {
            let t0 = cpu::counter();
            dc_civac(span);
            rows[4][sample] = cpu::counter() - t0;
            let Some(costs) = one_cycle(span, peer) else { break };
            for (row, cost) in rows.iter_mut().zip(costs) {
                row[sample] = cost;
            }
            n += 1;
        }
        let names = ["donate", "reclaim", "donate_clear", "reclaim_clear", "el1_dc_civac"];
        for (name, row) in names.iter().zip(rows.iter()) {
            let row_name = Row::new(name, size);
            emit(row_name.as_str(), "instructions", &row[..n]);
        }
    }
}

/// Donate/reclaim cycles (without CLEAR) in a profile run.
pub const PROFILE_CYCLES: usize = 10;

/// Only DONATE, peer RELEASE and RECLAIM of `size` bytes, so that warden's per-phase profile
/// (logged at power-down) describes exactly those transfers.
fn profile_cycles(size: u64) {
    let Some(&(base, _, peer)) = donate_carveouts().iter().find(|c| c.1 >= size) else {
        println!("guest: bench profile: no donate carveout");
        return;
    };
    let span = Span { base, size };
    let target = span.target();
    let mut done = 0;
    for _ in 0..PROFILE_CYCLES {
        let donate = Request::Donate(Transfer { target, peer, clear: false }).encode();
        if timed_call(donate, "donate").is_none() || handoff::peer_release(peer, span).is_err() {
            break;
        }
        let reclaim = Request::Reclaim(Return { target, clear: false }).encode();
        if timed_call(reclaim, "reclaim").is_none() {
            break;
        }
        done += 1;
    }
    println!("guest: bench profile: {done} cycles of {size} bytes");
}

/// DONATE, peer RELEASE, RECLAIM; then the same with CLEAR. Returns the four call costs.
fn one_cycle(span: Span, peer: PeerId) -> Option<[u64; 4]> {
    let target = span.target();
    let mut costs = [0u64; 4];
    for (i, clear) in [false, true].into_iter().enumerate() {
        let donate = Request::Donate(Transfer { target, peer, clear }).encode();
        costs[2 * i] = timed_call(donate, "donate")?;
        if handoff::peer_release(peer, span).is_err() {
            println!("guest: bench peer release of {span} failed");
            return None;
        }
        let reclaim = Request::Reclaim(Return { target, clear }).encode();
        costs[2 * i + 1] = timed_call(reclaim, "reclaim")?;
    }
    Some(costs)
}

/// `handoff/<name>/<bytes>` in a fixed buffer (no heap).
struct Row {
    buf: [u8; 48],
    len: usize,
}

impl Row {
    fn new(name: &str, size: u64) -> Row {
        use core::fmt::Write;
        let mut row = Row { buf: [0; 48], len: 0 };
        let _ = write!(row, "handoff/{name}/{size}");
        row
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("handoff/?")
    }
}

impl core::fmt::Write for Row {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let bytes = s.as_bytes();
        let end = self.len + bytes.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}
