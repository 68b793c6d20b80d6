//! Qualcomm SCM over SMCCC, as a Qualcomm TrustZone answers it (Linux
//! `drivers/firmware/qcom/qcom_scm-smc.c`, `qcom_scm.c`).
//!
//! **The convention** ("ARM SMC", what Linux settles on): the function ID is an SMCCC SiP
//! (owner 2) ID, `svc << 8 | cmd`, fast or yielding, SMC32 or SMC64. x1 is `arginfo`: the
//! argument count in bits [3:0], two type bits per argument above (0 value, 1 read-only
//! buffer, 2 read-write buffer, 3 buffer value). x2..x5 hold the first four arguments; with
//! more than four, x2..x4 hold the first three and x5 the physical address of a buffer with
//! the rest (le64 words for SMC64, le32 for SMC32). The answer: x0 a status (0 success,
//! negative errors as `qcom_scm.h` lists them), x1..x3 results.
//!
//! **Implemented** (IS_CALL_AVAIL says 1 for exactly these):
//! - INFO / IS_CALL_AVAIL (0x06 / 0x01): one value argument, `owner << 24 | svc << 8 | cmd`;
//! - MP / ASSIGN (0x0C / 0x16, `assign_mem`): see [`Scm::assign_mem`];
//! - PIL / PAS (0x02): `init_image` 0x01, `mem_setup` 0x02, `auth_and_reset` 0x05, `shutdown`
//!   0x06, `is_supported` 0x07: see [`crate::pas`].
//!
//! Every other SiP function is `NOT_SUPPORTED` (-1), as SMCCC requires of an unknown function.
//! Errors are `qcom_scm.h`'s codes (Linux's `qcom_scm_remap_error` turns them into errnos);
//! a refused call changes nothing.

use core::fmt;

use warden_abi::qcom_scm::{le32, le64, split_call_avail_id, split_function_id};
use warden_abi::smccc;

use crate::mem::PhysMem;
use crate::ownership::Ownership;
use crate::pas::Pas;
use crate::witness::Violation;

pub use warden_abi::qcom_scm::{
    ASSIGN_ARGINFO, ArgType, INFO_IS_CALL_AVAIL, MP_ASSIGN, OWNER_SIP, arginfo, status, svc,
};

/// Qualcomm VM IDs ([`warden_abi::qcom_scm::vmid`]): the ones this TZ knows. Any other is
/// refused.
pub mod vmid {
    pub use warden_abi::qcom_scm::vmid::*;

    pub fn is_known(vm: u32) -> bool {
        name(vm).is_some()
    }
}

/// A set of VM IDs (bit n: VM n; every known VM is below 64), shown as Qualcomm names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSet(pub u64);

impl fmt::Display for VmSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for vm in 0..64u32 {
            if self.0 & (1 << vm) == 0 {
                continue;
            }
            if !first {
                f.write_str("+")?;
            }
            first = false;
            match vmid::name(vm) {
                Some(name) => f.write_str(name)?,
                None => write!(f, "VM{vm:#x}")?,
            }
        }
        if first {
            f.write_str("nobody")?;
        }
        Ok(())
    }
}

/// `qcom_scm_mem_map_info`'s size.
pub const MEM_ENTRY: u64 = warden_abi::qcom_scm::MEM_ENTRY as u64;
/// `qcom_scm_current_perm_info`'s size.
pub const DEST_ENTRY: u64 = warden_abi::qcom_scm::DEST_ENTRY as u64;
/// Memory ranges one assign_mem may move.
pub const MAX_MEM_ENTRIES: usize = 16;
/// Source VM IDs (le32 each): the set bits of Linux's 64-bit bitmap.
pub const MAX_SOURCES: usize = warden_abi::qcom_scm::MAX_SOURCES;
pub const MAX_DESTINATIONS: usize = 16;
pub use warden_abi::qcom_scm::perm::RWX as PERM_RWX;
/// The granule of an assignment (what an XPU partition is on Qualcomm's SoCs, at least).
pub const PAGE: u64 = 0x1000;

/// One decoded SCM call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScmCall {
    pub svc: u8,
    pub cmd: u8,
    pub smc64: bool,
    pub fast: bool,
    pub arginfo: u32,
    /// x2..x5 (w2..w5 for SMC32).
    pub args: [u64; 4],
}

impl ScmCall {
    /// The SCM call in x0..x5, if x0 is a SiP function in the ARM SMC convention (function
    /// number bits [15:0], bits [23:16] zero); the upper half of x0 is ignored (SMCCC).
    pub fn decode(x: &[u64; 6]) -> Option<Self> {
        let fid = x[0] as u32;
        let (svc, cmd) = split_function_id(fid)?;
        let smc64 = smccc::is_64(fid);
        let narrow = |v: u64| if smc64 { v } else { v & 0xffff_ffff };
        Some(Self {
            svc,
            cmd,
            smc64,
            fast: fid & smccc::FAST_CALL != 0,
            arginfo: narrow(x[1]) as u32,
            args: [narrow(x[2]), narrow(x[3]), narrow(x[4]), narrow(x[5])],
        })
    }
}

/// x0..x3 of an answer.
pub type Answer = [u64; 4];

pub const fn answer(status: i64) -> Answer {
    [status as u64, 0, 0, 0]
}

/// What the SCM calls need of the machine beyond RAM.
pub trait Platform: PhysMem {
    /// The XPU witness ([`crate::witness::check`]) over PA `[base, end)`, on the calling CPU's
    /// stage 2 and the SMMU as they are now.
    fn witness(&self, base: u64, end: u64) -> Result<(), Violation>;
    /// One line to the console.
    fn log(&self, args: fmt::Arguments<'_>);
}

/// The SCM firmware's state: who owns what, and each PAS peripheral's progress. All zeroes
/// is a valid value (it can live in BSS).
#[derive(Clone, Debug, Default)]
pub struct Scm {
    pub owners: Ownership,
    pub pas: Pas,
}

/// Which calls IS_CALL_AVAIL says 1 for.
pub fn implemented(svc_id: u8, cmd: u8) -> bool {
    match svc_id {
        svc::INFO => cmd == INFO_IS_CALL_AVAIL,
        svc::MP => cmd == MP_ASSIGN,
        svc::PIL => crate::pas::implemented(cmd),
        _ => false,
    }
}

/// A validated assign_mem request (copied out of the caller's buffers once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssignRequest {
    pub ranges: [(u64, u64); MAX_MEM_ENTRIES],
    pub count: usize,
    pub sources: u64,
    pub destinations: u64,
}

impl AssignRequest {
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges[..self.count]
    }
}

/// Whether `[a, a + a_size)` and `[b, b + b_size)` share a byte (neither wraps).
fn overlaps(a: u64, a_size: u64, b: u64, b_size: u64) -> bool {
    a < b + b_size && b < a + a_size
}

impl Scm {
    pub const fn new() -> Self {
        Self { owners: Ownership::new(), pas: Pas::new() }
    }

    /// Answers one SCM call.
    pub fn handle(&mut self, call: &ScmCall, p: &dyn Platform) -> Answer {
        match (call.svc, call.cmd) {
            (svc::INFO, INFO_IS_CALL_AVAIL) => is_call_available(call),
            (svc::MP, MP_ASSIGN) => self.assign_mem(call, p),
            (svc::PIL, cmd) if crate::pas::implemented(cmd) => crate::pas::handle(self, call, p),
            _ => answer(status::NOT_SUPPORTED),
        }
    }

    /// Copies assign_mem's lists once and checks them; an error is the status to answer.
    ///
    /// In order: `arginfo` (EINVAL_ARG); the argument buffer at x5 in RAM (EINVAL_ADDR); the
    /// spare argument 0, list sizes whole entries, non-empty and within bounds (EINVAL_ARG);
    /// the lists in RAM (EINVAL_ADDR); VM IDs known and none listed twice, permissions a
    /// non-empty subset of RWX, context fields 0 (EINVAL_ARG); each range non-empty, page
    /// aligned, not wrapping (EINVAL_ARG), in RAM (EINVAL_ADDR), the ranges disjoint
    /// (EINVAL_ARG) and none overlapping the lists that describe the call (EINVAL_ADDR).
    pub fn copy_request(call: &ScmCall, mem: &dyn PhysMem) -> Result<AssignRequest, i64> {
        use status::{EINVAL_ADDR, EINVAL_ARG};
        if call.arginfo != ASSIGN_ARGINFO {
            return Err(EINVAL_ARG);
        }
        let [mem_list, mem_size, src_list, ext] = call.args;
        let word = if call.smc64 { 8 } else { 4 };
        let mut ext_buf = [0u8; 32];
        let ext_buf = &mut ext_buf[..4 * word];
        mem.read(ext, ext_buf).map_err(|_| EINVAL_ADDR)?;
        let ext_arg = |i: usize| {
            if call.smc64 { le64(ext_buf, 8 * i) } else { u64::from(le32(ext_buf, 4 * i)) }
        };
        let (src_size, dest_list, dest_size, spare) =
            (ext_arg(0), ext_arg(1), ext_arg(2), ext_arg(3));
        let whole = |size: u64, entry: u64, max: usize| {
            size != 0 && size.is_multiple_of(entry) && size / entry <= max as u64
        };
        if spare != 0
            || !whole(mem_size, MEM_ENTRY, MAX_MEM_ENTRIES)
            || !whole(src_size, 4, MAX_SOURCES)
            || !whole(dest_size, DEST_ENTRY, MAX_DESTINATIONS)
        {
            return Err(EINVAL_ARG);
        }
        let mut mem_buf = [0u8; MEM_ENTRY as usize * MAX_MEM_ENTRIES];
        let mut src_buf = [0u8; 4 * MAX_SOURCES];
        let mut dest_buf = [0u8; DEST_ENTRY as usize * MAX_DESTINATIONS];
        let mem_buf = &mut mem_buf[..mem_size as usize];
        let src_buf = &mut src_buf[..src_size as usize];
        let dest_buf = &mut dest_buf[..dest_size as usize];
        mem.read(mem_list, mem_buf).map_err(|_| EINVAL_ADDR)?;
        mem.read(src_list, src_buf).map_err(|_| EINVAL_ADDR)?;
        mem.read(dest_list, dest_buf).map_err(|_| EINVAL_ADDR)?;

        let mut sources = 0u64;
        for i in 0..src_buf.len() / 4 {
            let vm = le32(src_buf, 4 * i);
            if !vmid::is_known(vm) || sources & (1 << vm) != 0 {
                return Err(EINVAL_ARG);
            }
            sources |= 1 << vm;
        }
        let mut destinations = 0u64;
        for e in dest_buf.chunks_exact(DEST_ENTRY as usize) {
            let (vm, perm, ctx, ctx_size) = (le32(e, 0), le32(e, 4), le64(e, 8), le32(e, 16));
            if !vmid::is_known(vm)
                || destinations & (1 << vm) != 0
                || perm == 0
                || perm & !PERM_RWX != 0
                || ctx != 0
                || ctx_size != 0
            {
                return Err(EINVAL_ARG);
            }
            destinations |= 1 << vm;
        }
        let mut req =
            AssignRequest { ranges: [(0, 0); MAX_MEM_ENTRIES], count: 0, sources, destinations };
        let lists = [
            (ext, 4 * word as u64),
            (mem_list, mem_size),
            (src_list, src_size),
            (dest_list, dest_size),
        ];
        for e in mem_buf.chunks_exact(MEM_ENTRY as usize) {
            let (base, size) = (le64(e, 0), le64(e, 8));
            if size == 0
                || !base.is_multiple_of(PAGE)
                || !size.is_multiple_of(PAGE)
                || base.checked_add(size).is_none()
            {
                return Err(EINVAL_ARG);
            }
            if !mem.ram().contains(base, size) {
                return Err(EINVAL_ADDR);
            }
            if req.ranges().iter().any(|&(b, s)| overlaps(base, size, b, s)) {
                return Err(EINVAL_ARG);
            }
            if lists.iter().any(|&(b, s)| overlaps(base, size, b, s)) {
                return Err(EINVAL_ADDR);
            }
            req.ranges[req.count] = (base, size);
            req.count += 1;
        }
        Ok(req)
    }

    /// assign_mem: moves each range from the source VMs to the destination VMs.
    ///
    /// After [`Self::copy_request`]: no range may touch a region PAS holds (set up or running:
    /// EINVAL_ADDR); every range must be owned by exactly the source VMs now (EINVAL_ARG); the ownership table must have room for the result (ENOMEM);
    /// when the assignment takes a range away from HLOS, the XPU witness must find nothing of
    /// the host's that still reaches it (`XPU: violation ...` logged and ERROR otherwise).
    /// All of it is decided before anything changes. Success: x0 = 0 and x1 = 0 (Linux's
    /// `__qcom_scm_assign_mem` returns x1 as its result).
    pub fn assign_mem(&mut self, call: &ScmCall, p: &dyn Platform) -> Answer {
        match self.try_assign(call, p) {
            Ok(()) => answer(status::SUCCESS),
            Err(code) => {
                p.log(format_args!(
                    "tz-sim: SCM assign_mem refused ({code}): x2 {:#x} x3 {:#x} x4 {:#x} x5 {:#x}\n",
                    call.args[0], call.args[1], call.args[2], call.args[3]
                ));
                answer(code)
            }
        }
    }

    fn try_assign(&mut self, call: &ScmCall, p: &dyn Platform) -> Result<(), i64> {
        let req = Self::copy_request(call, p)?;
        if req.ranges().iter().any(|&(base, size)| self.pas.holds(base, size)) {
            return Err(status::EINVAL_ADDR);
        }
        for &(base, size) in req.ranges() {
            if self.owners.owners(base, base + size) != Some(req.sources) {
                return Err(status::EINVAL_ARG);
            }
        }
        let mut after = self.owners.clone();
        for &(base, size) in req.ranges() {
            after.set(base, base + size, req.destinations).map_err(|_| status::ENOMEM)?;
        }
        let hlos = 1u64 << vmid::HLOS;
        let takes_from_hlos = req.sources & hlos != 0 && req.destinations & hlos == 0;
        let (from, to) = (VmSet(req.sources), VmSet(req.destinations));
        if takes_from_hlos {
            for &(base, size) in req.ranges() {
                witness(p, "assign", base, base + size, from, to)?;
            }
        }
        self.owners = after;
        for &(base, size) in req.ranges() {
            if takes_from_hlos {
                p.log(format_args!(
                    "XPU: assign {base:#x}..{:#x} {from} -> {to} ok\n",
                    base + size
                ));
            } else {
                p.log(format_args!(
                    "tz-sim: SCM assign_mem {base:#x}..{:#x} {from} -> {to}\n",
                    base + size
                ));
            }
        }
        Ok(())
    }
}

/// Runs the witness for a range about to leave HLOS; a violation is logged and answered ERROR.
pub fn witness(
    p: &dyn Platform,
    what: &str,
    base: u64,
    end: u64,
    from: VmSet,
    to: VmSet,
) -> Result<(), i64> {
    p.witness(base, end).map_err(|v| {
        p.log(format_args!("XPU: violation: {what} {base:#x}..{end:#x} {from} -> {to}: {v}\n"));
        status::ERROR
    })
}

/// IS_CALL_AVAIL(fnid): 1 for the calls this TZ implements, 0 for any other.
fn is_call_available(call: &ScmCall) -> Answer {
    if call.arginfo & 0xf != 1 {
        return answer(status::EINVAL_ARG);
    }
    let yes = split_call_avail_id(call.args[0]).is_some_and(|(s, c)| implemented(s, c));
    [0, u64::from(yes), 0, 0]
}

#[cfg(test)]
pub mod tests {
    extern crate std;
    use core::cell::RefCell;
    use std::string::String;
    use std::vec::Vec;

    use super::*;
    use crate::mem::fake::FakeRam;
    use crate::mem::{OutsideRam, RamMap};
    use crate::witness::{self, HCR_VM, Hardware};

    pub const RAM: u64 = 0x4000_0000;
    pub const RAM_SIZE: usize = 32 << 20;
    /// The caller's buffers.
    pub const BUF: u64 = RAM + 0x1_0000;
    /// A host stage 2 (4 KiB, 40-bit IPA, start at level 1) mapping RAM's first 2 MiB with
    /// pages (L3 at TABLES + 0x3000) and the next 30 MiB with blocks.
    pub const TABLES: u64 = RAM + 0x10_0000;
    pub const L3: u64 = TABLES + 0x3000;
    pub const VTCR: u64 = 24 | (1 << 6) | (2 << 16);

    /// RAM, a host stage 2 and a log.
    pub struct FakePlatform {
        pub ram: FakeRam,
        pub hw: Hardware,
        pub lines: RefCell<Vec<String>>,
        /// Test switch: the witness is skipped (to show the tests catch its removal).
        pub no_witness: bool,
    }

    impl FakePlatform {
        pub fn new() -> Self {
            let mut ram = FakeRam::new(RAM, RAM_SIZE);
            ram.write_u64(TABLES + 8, (TABLES + 0x2000) | 3);
            ram.write_u64(TABLES + 0x2000, L3 | 3);
            for i in 1..16 {
                ram.write_u64(TABLES + 0x2000 + 8 * i, (RAM + (i << 21)) | 0x401);
            }
            for i in 0..512 {
                ram.write_u64(L3 + 8 * i, (RAM + (i << 12)) | 0x403);
            }
            Self {
                ram,
                hw: Hardware { hcr: HCR_VM, vtcr: VTCR, vttbr: TABLES, smmu: None },
                lines: RefCell::new(Vec::new()),
                no_witness: false,
            }
        }

        /// Unmaps `[base, base + size)` in the first 2 MiB (pages).
        pub fn unmap_pages(&mut self, base: u64, size: u64) {
            for pa in (base..base + size).step_by(PAGE as usize) {
                self.ram.write_u64(L3 + 8 * ((pa - RAM) >> 12), 0);
            }
        }

        pub fn log_has(&self, needle: &str) -> bool {
            self.lines.borrow().iter().any(|l| l.contains(needle))
        }
    }

    impl Default for FakePlatform {
        fn default() -> Self {
            Self::new()
        }
    }

    impl PhysMem for FakePlatform {
        fn ram(&self) -> &RamMap {
            self.ram.ram()
        }
        fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
            self.ram.read(pa, buf)
        }
    }

    impl Platform for FakePlatform {
        fn witness(&self, base: u64, end: u64) -> Result<(), Violation> {
            if self.no_witness {
                return Ok(());
            }
            witness::check(&self.hw, &self.ram, base, end)
        }
        fn log(&self, args: fmt::Arguments<'_>) {
            self.lines.borrow_mut().push(std::format!("{args}"));
        }
    }

    pub const ASSIGN_FID: u64 = 0x4200_0c16;

    /// Writes an assign_mem's lists at BUF as Linux lays them out and returns x0..x5.
    pub fn assign_call(
        p: &mut FakePlatform,
        ranges: &[(u64, u64)],
        src: &[u32],
        dst: &[(u32, u32)],
    ) -> [u64; 6] {
        let (mem_at, src_at, dst_at, ext_at) = (BUF, BUF + 0x400, BUF + 0x800, BUF + 0xc00);
        for (i, &(b, s)) in ranges.iter().enumerate() {
            p.ram.write_u64(mem_at + 16 * i as u64, b);
            p.ram.write_u64(mem_at + 16 * i as u64 + 8, s);
        }
        for (i, &vm) in src.iter().enumerate() {
            p.ram.write_u32(src_at + 4 * i as u64, vm);
        }
        for (i, &(vm, perm)) in dst.iter().enumerate() {
            let e = dst_at + 24 * i as u64;
            p.ram.write_u32(e, vm);
            p.ram.write_u32(e + 4, perm);
            p.ram.write_u64(e + 8, 0);
            p.ram.write_u64(e + 16, 0);
        }
        p.ram.write_u64(ext_at, 4 * src.len() as u64);
        p.ram.write_u64(ext_at + 8, dst_at);
        p.ram.write_u64(ext_at + 16, 24 * dst.len() as u64);
        p.ram.write_u64(ext_at + 24, 0);
        [ASSIGN_FID, u64::from(ASSIGN_ARGINFO), mem_at, 16 * ranges.len() as u64, src_at, ext_at]
    }

    pub fn call(scm: &mut Scm, p: &FakePlatform, x: [u64; 6]) -> Answer {
        scm.handle(&ScmCall::decode(&x).expect("an SCM call"), p)
    }

    const HLOS: u32 = vmid::HLOS;
    const MSS: u32 = vmid::MSS_MSA;
    const RW: u32 = 0b110;
    const EINVAL_ARG: u64 = status::EINVAL_ARG as u64;
    const EINVAL_ADDR: u64 = status::EINVAL_ADDR as u64;
    const ERROR: u64 = status::ERROR as u64;

    #[test]
    fn decoding() {
        let c = ScmCall::decode(&[0xdead_0000_4200_0c16, 0x1117, 1, 2, 3, 4]).unwrap();
        assert_eq!((c.svc, c.cmd, c.smc64, c.fast), (0x0c, 0x16, true, false));
        assert_eq!(c.args, [1, 2, 3, 4]);
        let c = ScmCall::decode(&[0x8200_0601, 1, 0xffff_ffff_0200_0601, 0, 0, 0]).unwrap();
        assert!(!c.smc64 && c.fast);
        assert_eq!(c.args[0], 0x0200_0601);
        assert_eq!(ScmCall::decode(&[0x8400_0000, 0, 0, 0, 0, 0]), None, "PSCI");
        assert_eq!(ScmCall::decode(&[0x4201_0c16, 0, 0, 0, 0, 0]), None, "bits 23:16");
        assert_eq!(ASSIGN_ARGINFO, 0x1117);
    }

    #[test]
    fn is_call_available_and_unknown_calls() {
        let p = FakePlatform::new();
        let mut scm = Scm::new();
        let ask = |scm: &mut Scm, fnid: u64| call(scm, &p, [0x4200_0601, 1, fnid, 0, 0, 0]);
        for (svc, cmd) in [(6, 1), (0xc, 0x16), (2, 1), (2, 2), (2, 5), (2, 6), (2, 7)] {
            let fnid = (2 << 24) | (svc << 8) | cmd;
            assert_eq!(ask(&mut scm, fnid), [0, 1, 0, 0], "{fnid:#x}");
        }
        for fnid in [0x0200_0110, 0x0200_020a, 0x0200_0c17, 0x0300_0601, 0x0201_0601] {
            assert_eq!(ask(&mut scm, fnid), [0, 0, 0, 0], "{fnid:#x}");
        }
        // Linux's convention detection: fast SMC64 about itself.
        assert_eq!(call(&mut scm, &p, [0xc200_0601, 1, 0x0200_0601, 0, 0, 0]), [0, 1, 0, 0]);
        assert_eq!(call(&mut scm, &p, [0x4200_0601, 2, 0x0200_0601, 0, 0, 0])[0], EINVAL_ARG);
        assert_eq!(call(&mut scm, &p, [0x4200_0110, 2, 1, 0, 0, 0])[0], u64::MAX, "NOT_SUPPORTED");
    }

    #[test]
    fn assign_to_modem_and_back_with_the_witness() {
        let mut p = FakePlatform::new();
        let mut scm = Scm::new();
        let range = (RAM + 0x8_0000, 0x4000);
        let x = assign_call(&mut p, &[range], &[HLOS], &[(MSS, RW)]);
        // Still mapped by the host's stage 2: refused, nothing changes.
        assert_eq!(call(&mut scm, &p, x), answer(status::ERROR));
        assert!(p.log_has(
            "XPU: violation: assign 0x40080000..0x40084000 HLOS -> MSS_MSA: host stage 2"
        ));
        assert_eq!(scm.owners.ranges().count(), 0);
        p.unmap_pages(range.0, range.1);
        assert_eq!(call(&mut scm, &p, x), [0; 4]);
        assert!(p.log_has("XPU: assign 0x40080000..0x40084000 HLOS -> MSS_MSA ok"));
        assert_eq!(scm.owners.owners(range.0, range.0 + range.1), Some(1 << MSS));
        // Again from HLOS: the sources no longer match.
        assert_eq!(call(&mut scm, &p, x)[0], EINVAL_ARG);
        // Back to HLOS: no witness needed (HLOS gains access).
        let back = assign_call(&mut p, &[range], &[MSS], &[(HLOS, 7)]);
        assert_eq!(call(&mut scm, &p, back), [0; 4]);
        assert!(p.log_has("tz-sim: SCM assign_mem 0x40080000..0x40084000 MSS_MSA -> HLOS"));
        assert_eq!(scm.owners.ranges().count(), 0);
        // Sharing keeps HLOS: no witness either, even though the host maps it.
        let share =
            assign_call(&mut p, &[(RAM + 0x40_0000, 0x1000)], &[HLOS], &[(HLOS, 7), (MSS, RW)]);
        assert_eq!(call(&mut scm, &p, share), [0; 4]);
        assert_eq!(
            scm.owners.owners(RAM + 0x40_0000, RAM + 0x40_1000),
            Some((1 << MSS) | (1 << HLOS))
        );
    }

    #[test]
    fn the_witness_is_what_refuses() {
        // With the witness switched off the mapped range would be accepted: the test above
        // depends on it.
        let mut p = FakePlatform::new();
        p.no_witness = true;
        let x = assign_call(&mut p, &[(RAM + 0x8_0000, 0x4000)], &[HLOS], &[(MSS, RW)]);
        assert_eq!(call(&mut Scm::new(), &p, x), [0; 4]);
    }

    #[test]
    fn a_block_mapping_and_several_ranges() {
        let mut p = FakePlatform::new();
        let mut scm = Scm::new();
        p.unmap_pages(RAM, 0x1000);
        // The second range lies in a 2 MiB block: the whole call is refused.
        let x =
            assign_call(&mut p, &[(RAM, 0x1000), (RAM + 0x30_0000, 0x1000)], &[HLOS], &[(MSS, RW)]);
        assert_eq!(call(&mut scm, &p, x)[0], ERROR);
        assert!(p.log_has("(level 2 block)"));
        assert_eq!(scm.owners.ranges().count(), 0, "nothing assigned");
    }

    /// Every refusal before the witness, with its code; none changes ownership.
    #[test]
    fn assign_refusals() {
        let hlos_mss = |p: &mut FakePlatform| {
            assign_call(p, &[(RAM + 0x8_0000, 0x1000)], &[HLOS], &[(MSS, RW)])
        };
        type Edit = fn(&mut FakePlatform, &mut [u64; 6]);
        let cases: &[(&str, Edit, u64)] = &[
            ("arginfo", |_, x| x[1] = 0x1116, EINVAL_ARG),
            ("argument buffer outside RAM", |_, x| x[5] = 0x0e00_0000, EINVAL_ADDR),
            ("spare argument", |p, x| p.ram.write_u64(x[5] + 24, 1), EINVAL_ARG),
            ("memory list size 0", |_, x| x[3] = 0, EINVAL_ARG),
            ("memory list not whole entries", |_, x| x[3] = 24, EINVAL_ARG),
            ("17 memory entries", |_, x| x[3] = 17 * 16, EINVAL_ARG),
            ("no source", |p, x| p.ram.write_u64(x[5], 0), EINVAL_ARG),
            ("65 sources", |p, x| p.ram.write_u64(x[5], 65 * 4), EINVAL_ARG),
            ("no destination", |p, x| p.ram.write_u64(x[5] + 16, 0), EINVAL_ARG),
            ("destination list not whole", |p, x| p.ram.write_u64(x[5] + 16, 20), EINVAL_ARG),
            ("memory list outside RAM", |_, x| x[2] = 0x1000, EINVAL_ADDR),
            ("source list past RAM's end", |_, x| x[4] = RAM + RAM_SIZE as u64 - 2, EINVAL_ADDR),
            (
                "destination list outside RAM",
                |p, x| p.ram.write_u64(x[5] + 8, 0x8000_0000),
                EINVAL_ADDR,
            ),
            ("unknown source VM", |p, _| p.ram.write_u32(BUF + 0x400, 0x7), EINVAL_ARG),
            ("unknown destination VM", |p, _| p.ram.write_u32(BUF + 0x800, 0x3f), EINVAL_ARG),
            ("source VM 64", |p, _| p.ram.write_u32(BUF + 0x400, 64), EINVAL_ARG),
            ("permission 0", |p, _| p.ram.write_u32(BUF + 0x804, 0), EINVAL_ARG),
            ("permission 8", |p, _| p.ram.write_u32(BUF + 0x804, 8), EINVAL_ARG),
            ("context set", |p, _| p.ram.write_u64(BUF + 0x808, 1), EINVAL_ARG),
            ("size 0", |p, _| p.ram.write_u64(BUF + 8, 0), EINVAL_ARG),
            ("base unaligned", |p, _| p.ram.write_u64(BUF, RAM + 0x8_0800), EINVAL_ARG),
            ("size unaligned", |p, _| p.ram.write_u64(BUF + 8, 0x1800), EINVAL_ARG),
            ("range wraps", |p, _| p.ram.write_u64(BUF, 0xffff_ffff_ffff_f000), EINVAL_ARG),
            ("range outside RAM", |p, _| p.ram.write_u64(BUF, 0x2000_0000), EINVAL_ADDR),
            (
                "range past RAM's end",
                |p, _| {
                    p.ram.write_u64(BUF, RAM + RAM_SIZE as u64 - 0x1000);
                    p.ram.write_u64(BUF + 8, 0x2000);
                },
                EINVAL_ADDR,
            ),
            ("range holds the lists", |p, _| p.ram.write_u64(BUF, BUF), EINVAL_ADDR),
            ("source mismatch", |p, _| p.ram.write_u32(BUF + 0x400, MSS), EINVAL_ARG),
        ];
        for &(what, edit, code) in cases {
            let mut p = FakePlatform::new();
            p.unmap_pages(RAM + 0x8_0000, 0x1000);
            let mut x = hlos_mss(&mut p);
            edit(&mut p, &mut x);
            let mut scm = Scm::new();
            assert_eq!(call(&mut scm, &p, x), answer(code as i64), "{what}");
            assert_eq!(scm.owners.ranges().count(), 0, "{what}");
            assert!(p.log_has("SCM assign_mem refused"), "{what}");
        }
        // Listed twice; overlapping ranges.
        let mut p = FakePlatform::new();
        let x = assign_call(&mut p, &[(RAM + 0x8_0000, 0x1000)], &[HLOS, HLOS], &[(MSS, RW)]);
        assert_eq!(call(&mut Scm::new(), &p, x)[0], EINVAL_ARG, "source twice");
        let x = assign_call(&mut p, &[(RAM + 0x8_0000, 0x1000)], &[HLOS], &[(MSS, RW), (MSS, 4)]);
        assert_eq!(call(&mut Scm::new(), &p, x)[0], EINVAL_ARG, "destination twice");
        let x = assign_call(
            &mut p,
            &[(RAM + 0x8_0000, 0x2000), (RAM + 0x8_1000, 0x1000)],
            &[HLOS],
            &[(MSS, RW)],
        );
        assert_eq!(call(&mut Scm::new(), &p, x)[0], EINVAL_ARG, "overlapping ranges");
    }

    #[test]
    fn smc32_lists_and_a_full_table() {
        let mut p = FakePlatform::new();
        let mut scm = Scm::new();
        p.unmap_pages(RAM + 0x8_0000, 0x1000);
        let mut x = assign_call(&mut p, &[(RAM + 0x8_0000, 0x1000)], &[HLOS], &[(MSS, RW)]);
        // SMC32: le32 words in the argument buffer, upper halves of x2..x5 ignored.
        let ext = x[5];
        for (i, v) in [4u32, (BUF + 0x800) as u32, 24, 0].into_iter().enumerate() {
            p.ram.write_u32(ext + 4 * i as u64, v);
        }
        x[0] = 0x0200_0c16;
        x[2] |= 0xffff_ffff_0000_0000;
        assert_eq!(call(&mut scm, &p, x), [0; 4]);
        // Fill the table with alternating pages given to WLAN, then one more: ENOMEM.
        let mut scm = Scm::new();
        for i in 0..crate::ownership::MAX_RANGES as u64 {
            let r = (RAM + 0x40_0000 + 0x2000 * i, 0x1000);
            let x = assign_call(&mut p, &[r], &[HLOS], &[(HLOS, 7), (vmid::WLAN, RW)]);
            assert_eq!(call(&mut scm, &p, x), [0; 4], "{i}");
        }
        let x = assign_call(
            &mut p,
            &[(RAM + 0x60_0000, 0x1000)],
            &[HLOS],
            &[(HLOS, 7), (vmid::WLAN, RW)],
        );
        assert_eq!(call(&mut scm, &p, x)[0], status::ENOMEM as u64);
    }
}
