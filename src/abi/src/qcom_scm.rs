//! Qualcomm's SCM interface as Linux speaks it (`drivers/firmware/qcom/qcom_scm.c`,
//! `qcom_scm-smc.c`, `qcom_scm.h`, `include/dt-bindings/firmware/qcom,scm.h`), defined once for
//! both sides that implement it: warden's dispatcher (`src/trap/scm.rs`, which mediates and
//! forwards the host's calls) and tz-sim (`boards/qemu-virt/tz-sim/src/scm.rs`, which answers
//! them as a Qualcomm TrustZone does). `no_std`, no allocation: encodings and constants only;
//! what each side decides stays with it.
//!
//! **The "ARM SMC" convention** (what Linux settles on): the function ID is an SMCCC SiP
//! (owner 2) ID whose function number is `svc << 8 | cmd` ([`function_id`]), fast or yielding,
//! SMC32 or SMC64. x1 is `arginfo` ([`arginfo`]): the argument count in bits [3:0], two type
//! bits per argument above ([`ArgType`]). x2..x5 hold the first four arguments; with more than
//! four, x2..x4 hold the first three and x5 the physical address of a buffer with the rest
//! (le64 words for SMC64, le32 for SMC32). The answer: x0 a status ([`status`]), x1..x3
//! results.

use crate::smccc;

/// SMCCC owner of the SiP service range (Qualcomm's SCM).
pub const OWNER_SIP: u32 = 2;

/// SCM services (`qcom_scm.h`: `QCOM_SCM_SVC_*`).
pub mod svc {
    pub const BOOT: u8 = 0x01;
    pub const PIL: u8 = 0x02;
    pub const INFO: u8 = 0x06;
    pub const MP: u8 = 0x0c;
}

/// INFO's IS_CALL_AVAIL (`QCOM_SCM_INFO_IS_CALL_AVAIL`).
pub const INFO_IS_CALL_AVAIL: u8 = 0x01;
/// MP's ASSIGN (`QCOM_SCM_MP_ASSIGN`): `qcom_scm_assign_mem`.
pub const MP_ASSIGN: u8 = 0x16;

/// PIL commands (`QCOM_SCM_PIL_PAS_*`).
pub mod pil {
    use super::{ArgType, arginfo};

    pub const INIT_IMAGE: u8 = 0x01;
    pub const MEM_SETUP: u8 = 0x02;
    pub const AUTH_AND_RESET: u8 = 0x05;
    pub const SHUTDOWN: u8 = 0x06;
    pub const IS_SUPPORTED: u8 = 0x07;
    pub const MSS_RESET: u8 = 0x0a;

    /// The `arginfo` Linux gives each PIL command (`qcom_scm.c`), `None` for one it never
    /// makes.
    pub const fn expected_arginfo(command: u8) -> Option<u32> {
        use ArgType::{Rw, Val};
        Some(match command {
            INIT_IMAGE => arginfo(&[Val, Rw]),
            MEM_SETUP => arginfo(&[Val, Val, Val]),
            AUTH_AND_RESET | SHUTDOWN | IS_SUPPORTED => arginfo(&[Val]),
            MSS_RESET => arginfo(&[Val, Val]),
            _ => return None,
        })
    }
}

/// PAS peripheral IDs (Linux `remoteproc/qcom_q6v5_pas.c`: each resource's `pas_id`).
pub mod pas_id {
    pub const ADSP: u64 = 1;
    pub const MPSS: u64 = 4;
    pub const SLPI: u64 = 12;
    pub const CDSP: u64 = 18;
}

/// Status codes in x0 (`qcom_scm.h`; negative ones sign-extended). Linux maps them to errnos
/// in `qcom_scm_remap_error`.
pub mod status {
    pub const SUCCESS: i64 = 0;
    pub const ERROR: i64 = -1;
    pub const EINVAL_ARG: i64 = -2;
    pub const EINVAL_ADDR: i64 = -3;
    pub const EOPNOTSUPP: i64 = -4;
    pub const ENOMEM: i64 = -5;
    pub const V2_EBUSY: i64 = -12;
    /// The call was interrupted; the caller resumes it.
    pub const INTERRUPTED: i64 = 1;
    /// The call waits; the caller sleeps, then resumes it.
    pub const WAITQ_SLEEP: i64 = 2;
    /// SMCCC's unknown function (-1, the same value as [`ERROR`]).
    pub const NOT_SUPPORTED: i64 = crate::smccc::NOT_SUPPORTED;
}

/// Qualcomm VM IDs (`include/dt-bindings/firmware/qcom,scm.h`, `qcom_scm.h`): the ones warden
/// or tz-sim name. Each is a bit number of Linux's 64-bit `srcvm` bitmap.
pub mod vmid {
    pub const HLOS: u32 = 0x3;
    pub const SSC_Q6: u32 = 0x5;
    pub const ADSP_Q6: u32 = 0x6;
    pub const MSS_MSA: u32 = 0xf;
    pub const WLAN: u32 = 0x18;
    pub const WLAN_CE: u32 = 0x19;
    pub const CDSP: u32 = 0x1e;
    pub const NAV: u32 = 0x2b;

    /// Every VM ID above with its name.
    pub const NAMED: [(u32, &str); 8] = [
        (HLOS, "HLOS"),
        (SSC_Q6, "SSC_Q6"),
        (ADSP_Q6, "ADSP_Q6"),
        (MSS_MSA, "MSS_MSA"),
        (WLAN, "WLAN"),
        (WLAN_CE, "WLAN_CE"),
        (CDSP, "CDSP"),
        (NAV, "NAV"),
    ];

    /// The name of a VM ID listed in [`NAMED`].
    pub fn name(vm: u32) -> Option<&'static str> {
        NAMED.iter().find(|&&(v, _)| v == vm).map(|&(_, n)| n)
    }
}

/// Permission bits of a destination entry (`QCOM_SCM_PERM_*`).
pub mod perm {
    pub const EXEC: u32 = 0x1;
    pub const WRITE: u32 = 0x2;
    pub const READ: u32 = 0x4;
    pub const RW: u32 = READ | WRITE;
    pub const RWX: u32 = READ | WRITE | EXEC;
}

/// An argument type in `arginfo` (`enum qcom_scm_arg_types`), two bits per argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ArgType {
    Val = 0,
    /// A buffer the firmware only reads.
    Ro = 1,
    /// A buffer the firmware reads and writes.
    Rw = 2,
    BufVal = 3,
}

/// Arguments an SCM call may have (`MAX_QCOM_SCM_ARGS`).
pub const MAX_ARGS: usize = 10;
/// Arguments passed in registers (x2..x5, `SCM_SMC_N_REG_ARGS`); with more, the last register
/// holds the address of a buffer with the rest.
pub const REG_ARGS: usize = 4;

/// Linux's `QCOM_SCM_ARGS(n, types...)`: the count in bits [3:0], argument i's type in bits
/// [5 + 2i : 4 + 2i]. At most [`MAX_ARGS`] types count.
pub const fn arginfo(types: &[ArgType]) -> u32 {
    let n = if types.len() < MAX_ARGS { types.len() } else { MAX_ARGS };
    let mut info = n as u32;
    let mut i = 0;
    while i < n {
        info |= (types[i] as u32) << (4 + 2 * i);
        i += 1;
    }
    info
}

/// The argument count an `arginfo` announces.
pub const fn arg_count(arginfo: u32) -> u32 {
    arginfo & 0xf
}

/// assign_mem's `arginfo`: `QCOM_SCM_ARGS(7, RO, VAL, RO, VAL, RO, VAL, VAL)` — memory list,
/// its size, source list, its size, destination list, its size, a spare value.
pub const ASSIGN_ARGINFO: u32 = {
    use ArgType::{Ro, Val};
    arginfo(&[Ro, Val, Ro, Val, Ro, Val, Val])
};

/// The SMCCC function ID of `svc`/`cmd` (`ARM_SMCCC_CALL_VAL(type, convention, SIP,
/// SCM_SMC_FNID(svc, cmd))`).
pub const fn function_id(svc: u8, cmd: u8, smc64: bool, fast: bool) -> u32 {
    let number = (svc as u32) << 8 | cmd as u32;
    let conv = if smc64 { smccc::CONV_64 } else { 0 };
    let kind = if fast { smccc::FAST_CALL } else { 0 };
    kind | conv | OWNER_SIP << 24 | number
}

/// `(svc, cmd)` of a function ID in the ARM SMC convention: a SiP ID whose bits [23:16] are
/// zero; the convention and call type bits are not looked at.
pub const fn split_function_id(fid: u32) -> Option<(u8, u8)> {
    if smccc::owner(fid) != OWNER_SIP || fid & 0x00ff_0000 != 0 {
        return None;
    }
    Some(((fid >> 8) as u8, fid as u8))
}

/// IS_CALL_AVAIL's argument naming `svc`/`cmd` (`SCM_SMC_FNID(svc, cmd) | ARM_SMCCC_OWNER_SIP
/// << ARM_SMCCC_OWNER_SHIFT`, `qcom_scm_is_call_available`).
pub const fn call_avail_id(svc: u8, cmd: u8) -> u64 {
    (OWNER_SIP as u64) << 24 | (svc as u64) << 8 | cmd as u64
}

/// `(svc, cmd)` IS_CALL_AVAIL's argument asks about, if it is a SiP call with nothing outside
/// the owner and function-number fields.
pub const fn split_call_avail_id(fnid: u64) -> Option<(u8, u8)> {
    if (fnid >> 24) & 0x3f != OWNER_SIP as u64 || fnid & !0x3f00_ffff != 0 {
        return None;
    }
    Some(((fnid >> 8) as u8, fnid as u8))
}

/// Bytes of one memory-list entry (`qcom_scm_mem_map_info`: le64 address, le64 size).
pub const MEM_ENTRY: usize = 16;
/// Bytes of one destination entry (`qcom_scm_current_perm_info`: le32 VM ID, le32 permissions,
/// le64 context, le32 context size, le32 unused).
pub const DEST_ENTRY: usize = 24;
/// Bytes of one source entry (a le32 VM ID).
pub const SRC_ENTRY: usize = 4;
/// Source VM IDs are bit numbers of the caller's 64-bit bitmap: at most 64 of them.
pub const MAX_SOURCES: usize = 64;

/// One `qcom_scm_mem_map_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemEntry {
    pub base: u64,
    pub size: u64,
}

impl MemEntry {
    pub fn decode(b: &[u8; MEM_ENTRY]) -> Self {
        MemEntry { base: le64(b, 0), size: le64(b, 8) }
    }

    pub fn encode(&self) -> [u8; MEM_ENTRY] {
        let mut b = [0; MEM_ENTRY];
        b[..8].copy_from_slice(&self.base.to_le_bytes());
        b[8..].copy_from_slice(&self.size.to_le_bytes());
        b
    }
}

/// One `qcom_scm_current_perm_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestEntry {
    pub vmid: u32,
    pub perm: u32,
    pub ctx: u64,
    pub ctx_size: u32,
}

impl DestEntry {
    pub fn decode(b: &[u8; DEST_ENTRY]) -> Self {
        DestEntry { vmid: le32(b, 0), perm: le32(b, 4), ctx: le64(b, 8), ctx_size: le32(b, 16) }
    }

    /// The entry as Linux writes it (the unused word zero).
    pub fn encode(&self) -> [u8; DEST_ENTRY] {
        let mut b = [0; DEST_ENTRY];
        b[..4].copy_from_slice(&self.vmid.to_le_bytes());
        b[4..8].copy_from_slice(&self.perm.to_le_bytes());
        b[8..16].copy_from_slice(&self.ctx.to_le_bytes());
        b[16..20].copy_from_slice(&self.ctx_size.to_le_bytes());
        b
    }
}

/// The little-endian u32 at `at` of `b` (which must hold it).
pub fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// The little-endian u64 at `at` of `b` (which must hold it).
pub fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values as Linux computes them (`qcom_scm.c`, `qcom_scm-smc.c`, `qcom_scm.h`).
    #[test]
    fn arginfo_matches_linuxs_qcom_scm_args() {
        use ArgType::{BufVal, Ro, Rw, Val};
        // assign_mem: QCOM_SCM_ARGS(7, RO, VAL, RO, VAL, RO, VAL, VAL).
        assert_eq!(ASSIGN_ARGINFO, 0x1117);
        // pas_init_image: QCOM_SCM_ARGS(2, VAL, RW); mem_setup: QCOM_SCM_ARGS(3).
        assert_eq!(arginfo(&[Val, Rw]), 0x82);
        assert_eq!(pil::expected_arginfo(pil::INIT_IMAGE), Some(0x82));
        assert_eq!(pil::expected_arginfo(pil::MEM_SETUP), Some(3));
        assert_eq!(pil::expected_arginfo(pil::AUTH_AND_RESET), Some(1));
        assert_eq!(pil::expected_arginfo(pil::MSS_RESET), Some(2));
        assert_eq!(pil::expected_arginfo(0x03), None);
        // Each type's two bits at their place, the count in bits [3:0].
        assert_eq!(arginfo(&[BufVal]), 0x31);
        assert_eq!(arginfo(&[Val, Val, Val, Ro]), 0x404);
        assert_eq!(arginfo(&[Val; 10]), 10);
        assert_eq!(arginfo(&[Rw; 10]), 0xaa_aaa0 | 10);
        assert_eq!(arg_count(0x1117), 7);
    }

    #[test]
    fn function_ids_match_linuxs() {
        // qcom_scm_assign_mem: yielding SMC64; convention detection: fast SMC64 IS_CALL_AVAIL.
        assert_eq!(function_id(svc::MP, MP_ASSIGN, true, false), 0x4200_0c16);
        assert_eq!(function_id(svc::INFO, INFO_IS_CALL_AVAIL, true, true), 0xc200_0601);
        assert_eq!(function_id(svc::PIL, pil::AUTH_AND_RESET, false, false), 0x0200_0205);
        assert_eq!(split_function_id(0x4200_0c16), Some((svc::MP, MP_ASSIGN)));
        assert_eq!(split_function_id(0x8200_0601), Some((svc::INFO, INFO_IS_CALL_AVAIL)));
        assert_eq!(split_function_id(0x8400_0000), None, "PSCI");
        assert_eq!(split_function_id(0x4201_0c16), None, "bits 23:16");
        // IS_CALL_AVAIL's argument: the SiP owner and the function number, nothing else.
        assert_eq!(call_avail_id(svc::INFO, INFO_IS_CALL_AVAIL), 0x0200_0601);
        assert_eq!(call_avail_id(svc::MP, MP_ASSIGN), 0x0200_0c16);
        assert_eq!(split_call_avail_id(0x0200_0c16), Some((svc::MP, MP_ASSIGN)));
        assert_eq!(split_call_avail_id(0x0300_0601), None, "another owner");
        assert_eq!(split_call_avail_id(0x0201_0601), None, "bits 23:16");
        assert_eq!(split_call_avail_id(0x4200_0601), None, "convention bits");
    }

    #[test]
    fn codes_and_ids_match_linuxs() {
        use status::*;
        assert_eq!(
            [SUCCESS, ERROR, EINVAL_ARG, EINVAL_ADDR, EOPNOTSUPP, ENOMEM, V2_EBUSY],
            [0, -1, -2, -3, -4, -5, -12]
        );
        assert_eq!((INTERRUPTED, WAITQ_SLEEP, NOT_SUPPORTED), (1, 2, -1));
        assert_eq!((svc::BOOT, svc::PIL, svc::INFO, svc::MP), (1, 2, 6, 0xc));
        assert_eq!((vmid::HLOS, vmid::MSS_MSA, vmid::ADSP_Q6, vmid::CDSP), (3, 0xf, 6, 0x1e));
        assert_eq!((perm::READ, perm::WRITE, perm::EXEC, perm::RW, perm::RWX), (4, 2, 1, 6, 7));
        assert_eq!((pas_id::ADSP, pas_id::MPSS, pas_id::SLPI, pas_id::CDSP), (1, 4, 12, 18));
        assert_eq!(vmid::name(vmid::MSS_MSA), Some("MSS_MSA"));
        assert_eq!(vmid::name(0x7), None);
    }

    /// The list entries' layout: `qcom_scm_mem_map_info` and `qcom_scm_current_perm_info`.
    #[test]
    fn list_entries_round_trip_in_linuxs_layout() {
        let m = MemEntry { base: 0x1_2345_6000, size: 0x4000 };
        let b = m.encode();
        assert_eq!(b[..8], 0x1_2345_6000u64.to_le_bytes());
        assert_eq!(b[8..], 0x4000u64.to_le_bytes());
        assert_eq!(MemEntry::decode(&b), m);
        let d = DestEntry { vmid: vmid::MSS_MSA, perm: perm::RW, ctx: 0, ctx_size: 0 };
        let b = d.encode();
        assert_eq!(b[..8], [0xf, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(b[8..], [0; 16]);
        assert_eq!(DestEntry::decode(&b), d);
        let odd = DestEntry { vmid: 1, perm: 2, ctx: 0x0304_0506_0708_090a, ctx_size: 11 };
        assert_eq!(DestEntry::decode(&odd.encode()), odd);
        assert_eq!(odd.encode()[20..], [0; 4], "unused");
    }
}
