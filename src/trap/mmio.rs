//! Emulated MMIO: turning a host data abort on an unmapped IPA into a load or store warden can
//! carry out, and finishing the trapped instruction afterwards.
//!
//! Only single-register loads and stores that the hardware describes in the syndrome (ESR_EL2
//! ISS.ISV = 1) can be emulated: the syndrome then gives the size, the register, the direction
//! and the extension. Everything else (pairs, writeback forms, SIMD registers, cache
//! maintenance, stage-2 faults on the host's own page-table walks, A32/T32 code) is refused
//! with an [`MmioError`], and the caller treats the access like any other violation.
//!
//! The syndrome and the registers are the host's: [`decode`] and [`complete`] are total and
//! never panic, whatever the frame holds.

use core::fmt;

use super::TrapFrame;
use super::esr::{AbortReport, Esr, ExceptionClass};
use super::inject::spsr;

/// Length of every A64 instruction; [`decode`] accepts nothing else.
pub const A64_INSTRUCTION_LEN: u64 = 4;

/// SRT value naming the zero register (XZR/WZR) for loads and stores.
pub const SRT_ZERO_REGISTER: u8 = 31;

/// A decoded emulatable load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The accessed IPA: the page from HPFAR_EL2, the byte offset from FAR_EL2.
    pub ipa: u64,
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    pub write: bool,
    /// For a store: the data, `x[srt]` cut to `size` (0 when `srt` is the zero register).
    /// For a load: 0.
    pub value: u64,
    /// The transfer register, 0..=30, or [`SRT_ZERO_REGISTER`].
    pub srt: u8,
    /// A load that sign-extends (LDRSB, LDRSH, LDRSW).
    pub sign_extend: bool,
    /// The transfer register is 64 bits wide (Xn rather than Wn).
    pub reg_64: bool,
}

impl MmioAccess {
    /// Mask of the `size` low bytes.
    pub const fn size_mask(&self) -> u64 {
        size_mask(self.size)
    }

    /// What a load of `raw` (the device's answer; bits above `size` ignored) leaves in the
    /// transfer register: sign- or zero-extended to the register width, and a W register's
    /// upper 32 bits zero, as the architecture defines for loads into Wn.
    pub const fn load_value(&self, raw: u64) -> u64 {
        let value = raw & self.size_mask();
        let value = if self.sign_extend && self.size < 8 {
            let shift = 64 - 8 * self.size as u32;
            (((value << shift) as i64) >> shift) as u64
        } else {
            value
        };
        if self.reg_64 { value } else { value & 0xffff_ffff }
    }
}

impl fmt::Display for MmioAccess {
    /// `read 4B w3 sext at IPA 0x90c0080` / `write 8B x1 = 0x86000001 at IPA 0x90c0040`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.write { "write" } else { "read" })?;
        write!(f, " {}B ", self.size)?;
        let width = if self.reg_64 { 'x' } else { 'w' };
        match self.srt {
            SRT_ZERO_REGISTER => write!(f, "{width}zr")?,
            n => write!(f, "{width}{n}")?,
        }
        if self.sign_extend {
            f.write_str(" sext")?;
        }
        if self.write {
            write!(f, " = {:#x}", self.value)?;
        }
        write!(f, " at IPA {:#x}", self.ipa)
    }
}

/// Why a trapped access cannot be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// The exception is not a data abort from a lower EL.
    NotDataAbort(ExceptionClass),
    /// ISV = 0: the syndrome does not describe the access (load/store pair, writeback,
    /// SIMD/FP register, atomics, exclusive pairs...).
    NoSyndrome,
    /// S1PTW: the fault was on the host's own stage-1 table walk, not the access.
    StageOneWalk,
    /// CM: a cache maintenance or address translation instruction.
    CacheMaintenance,
    /// No trustworthy IPA: FnV set, or a fault kind for which HPFAR_EL2 is not valid.
    NoAddress,
    /// The host was in AArch32 state (its registers do not map onto the frame's x0..x30 in
    /// general; warden does not emulate A32/T32).
    Aarch32,
    /// A combination of syndrome bits no A64 load or store produces.
    Inconsistent(&'static str),
}

impl fmt::Display for MmioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotDataAbort(class) => write!(f, "not a data abort from a lower EL ({class})"),
            Self::NoSyndrome => f.write_str("no instruction syndrome (ISV = 0)"),
            Self::StageOneWalk => f.write_str("fault on a stage-1 table walk (S1PTW)"),
            Self::CacheMaintenance => f.write_str("cache maintenance instruction (CM)"),
            Self::NoAddress => f.write_str("no valid faulting IPA"),
            Self::Aarch32 => f.write_str("host in AArch32 state"),
            Self::Inconsistent(why) => write!(f, "inconsistent syndrome: {why}"),
        }
    }
}

const fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Decodes the data abort saved in `frame` (ESR, FAR, HPFAR, SPSR and, for a store, the data
/// register) into an access warden can emulate.
pub fn decode(frame: &TrapFrame) -> Result<MmioAccess, MmioError> {
    let esr = Esr(frame.esr);
    let class = esr.class();
    if class != ExceptionClass::DabtLow {
        return Err(MmioError::NotDataAbort(class));
    }
    let Some(iss) = esr.data_abort() else {
        return Err(MmioError::NotDataAbort(class));
    };
    if frame.spsr & spsr::M_AARCH32 != 0 {
        return Err(MmioError::Aarch32);
    }
    if !iss.isv() {
        return Err(MmioError::NoSyndrome);
    }
    if iss.s1ptw() {
        return Err(MmioError::StageOneWalk);
    }
    if iss.cache_maintenance() {
        return Err(MmioError::CacheMaintenance);
    }
    let Some(ipa) = (AbortReport { esr, far: frame.far, hpfar: frame.hpfar }).ipa() else {
        return Err(MmioError::NoAddress);
    };
    if !esr.il32() {
        return Err(MmioError::Inconsistent("16-bit instruction in AArch64 state"));
    }
    if iss.vncr() {
        return Err(MmioError::Inconsistent("VNCR_EL2-relative access"));
    }
    let size = iss.access_size();
    let write = iss.write();
    let sign_extend = iss.sign_extend();
    let reg_64 = iss.sixty_four();
    if size == 8 && !reg_64 {
        return Err(MmioError::Inconsistent("8-byte access to a W register"));
    }
    if sign_extend && (write || size == 8) {
        return Err(MmioError::Inconsistent("sign extension on a store or an 8-byte load"));
    }
    let srt = iss.srt();
    let value = if write {
        // x[31] does not exist in the frame: SRT 31 is the zero register.
        frame.x.get(usize::from(srt)).copied().unwrap_or(0) & size_mask(size)
    } else {
        0
    };
    Ok(MmioAccess { ipa, size, write, value, srt, sign_extend, reg_64 })
}

/// Finishes an emulated access: a load's result goes to the transfer register (extended per
/// [`MmioAccess::load_value`]; discarded for the zero register), and the host resumes after the
/// instruction. As after any completed instruction, PSTATE.BTYPE is cleared and a pending
/// software step (PSTATE.SS) advances, so a debugger stepping the host stops after it.
pub fn complete(frame: &mut TrapFrame, access: &MmioAccess, read_value: u64) {
    if !access.write
        && let Some(reg) = frame.x.get_mut(usize::from(access.srt))
    {
        *reg = access.load_value(read_value);
    }
    frame.elr = frame.elr.wrapping_add(A64_INSTRUCTION_LEN);
    frame.spsr &= !(spsr::BTYPE | spsr::SS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trap::esr::dabt;
    use alloc::format;

    const PAGE: u64 = 0x090c_0000;
    const ELR: u64 = 0xffff_8000_1000_0000;

    /// A lower-EL data abort with a syndrome: translation fault level 3, IL set.
    fn iss(size: u8, srt: u8, write: bool, sse: bool, sf: bool) -> u32 {
        let sas = size.trailing_zeros();
        let mut iss = dabt::ISV | (sas << dabt::SAS_SHIFT) | (u32::from(srt) << dabt::SRT_SHIFT);
        iss |= 0x07;
        if write {
            iss |= dabt::WNR;
        }
        if sse {
            iss |= dabt::SSE;
        }
        if sf {
            iss |= dabt::SF;
        }
        iss
    }

    fn frame_with(iss: u32, offset: u64) -> TrapFrame {
        let mut x = [0u64; 31];
        for (n, r) in x.iter_mut().enumerate() {
            *r = 0x1111_1111_1111_1111u64.wrapping_mul(n as u64 + 1) ^ 0x8070_6050_4030_2010;
        }
        TrapFrame {
            x,
            elr: ELR,
            spsr: spsr::M_EL0T | spsr::Z,
            esr: Esr::from_parts(ExceptionClass::DabtLow, true, iss).0,
            far: 0x0000_ffff_a000_0000 | offset,
            hpfar: (PAGE >> 12) << 4,
        }
    }

    #[test]
    fn literal_qemu_syndromes() {
        // `str x1, [x0]` at offset 0x40.
        let mut f = frame_with(0, 0x40);
        f.esr = 0x93c1_8047;
        f.x[1] = 0xc600_0020;
        let a = decode(&f).unwrap();
        assert_eq!(
            a,
            MmioAccess {
                ipa: PAGE + 0x40,
                size: 8,
                write: true,
                value: 0xc600_0020,
                srt: 1,
                sign_extend: false,
                reg_64: true,
            }
        );
        assert_eq!(format!("{a}"), "write 8B x1 = 0xc6000020 at IPA 0x90c0040");
        // `ldr w2, [x5]`, translation fault L2.
        let mut f = frame_with(0, 0x84);
        f.esr = 0x9382_0006;
        let a = decode(&f).unwrap();
        assert_eq!((a.ipa, a.size, a.write, a.srt, a.reg_64), (PAGE + 0x84, 4, false, 2, false));
        assert_eq!(a.value, 0);
        assert_eq!(format!("{a}"), "read 4B w2 at IPA 0x90c0084");
    }

    #[test]
    fn every_size_and_register_for_stores() {
        for size in [1u8, 2, 4, 8] {
            for srt in 0..=31u8 {
                for sf in [false, true] {
                    if size == 8 && !sf {
                        continue;
                    }
                    let f = frame_with(iss(size, srt, true, false, sf), 0x10);
                    let a = decode(&f).unwrap();
                    let want = if srt == 31 { 0 } else { f.x[usize::from(srt)] & a.size_mask() };
                    assert_eq!(a.value, want, "size {size} srt {srt}");
                    assert_eq!((a.size, a.srt, a.write, a.reg_64), (size, srt, true, sf));
                    assert_eq!(a.size_mask(), size_mask(size));
                    assert!(a.value <= a.size_mask());
                }
            }
        }
    }

    #[test]
    fn loads_complete_into_the_register_and_advance() {
        for srt in 0..31u8 {
            let mut f = frame_with(iss(8, srt, false, false, true), 0x80);
            let before = f;
            let a = decode(&f).unwrap();
            assert_eq!(a.value, 0);
            complete(&mut f, &a, 0x0123_4567_89ab_cdef);
            for n in 0..31 {
                let want = if n == usize::from(srt) { 0x0123_4567_89ab_cdef } else { before.x[n] };
                assert_eq!(f.x[n], want, "srt {srt} x{n}");
            }
            assert_eq!(f.elr, ELR + 4);
            assert_eq!(
                (f.spsr, f.esr, f.far, f.hpfar),
                (before.spsr, before.esr, before.far, before.hpfar)
            );
        }
    }

    #[test]
    fn load_into_the_zero_register_is_discarded() {
        let mut f = frame_with(iss(4, 31, false, false, false), 0);
        let before = f;
        let a = decode(&f).unwrap();
        complete(&mut f, &a, 0xffff_ffff);
        assert_eq!(f.x, before.x);
        assert_eq!(f.elr, ELR + 4);
    }

    #[test]
    fn store_completion_leaves_registers() {
        let mut f = frame_with(iss(8, 3, true, false, true), 0x40);
        let before = f;
        let a = decode(&f).unwrap();
        complete(&mut f, &a, 0xdead);
        assert_eq!(f.x, before.x);
        assert_eq!(f.elr, ELR + 4);
    }

    #[test]
    fn extension_rules() {
        // (size, sse, sf, raw, expected register value)
        let cases: &[(u8, bool, bool, u64, u64)] = &[
            // LDRB/LDRH/LDR Wt: zero-extended, high word zero.
            (1, false, false, 0xffff_ffff_ffff_ff80, 0x80),
            (2, false, false, 0xffff_ffff_ffff_8001, 0x8001),
            (4, false, false, 0xffff_ffff_8000_0001, 0x8000_0001),
            // LDRSB/LDRSH Wt: sign-extended to 32 bits only.
            (1, true, false, 0x80, 0xffff_ff80),
            (1, true, false, 0x7f, 0x7f),
            (2, true, false, 0x8001, 0xffff_8001),
            // LDRSB/LDRSH/LDRSW Xt: sign-extended to 64 bits.
            (1, true, true, 0x1_0000_0080, 0xffff_ffff_ffff_ff80),
            (2, true, true, 0xffff, u64::MAX),
            (4, true, true, 0x8000_0000, 0xffff_ffff_8000_0000),
            (4, true, true, 0x7fff_ffff, 0x7fff_ffff),
            // LDRB into Xt (how LDRB Wt is sometimes reported with SF) stays zero-extended.
            (1, false, true, 0xfff0, 0xf0),
            (8, false, true, u64::MAX, u64::MAX),
            (8, false, true, 0x8000_0000_0000_0000, 0x8000_0000_0000_0000),
        ];
        for &(size, sse, sf, raw, want) in cases {
            let mut f = frame_with(iss(size, 7, false, sse, sf), 0);
            let a = decode(&f).unwrap();
            assert_eq!(a.load_value(raw), want, "size {size} sse {sse} sf {sf} raw {raw:#x}");
            complete(&mut f, &a, raw);
            assert_eq!(f.x[7], want);
        }
    }

    #[test]
    fn completion_clears_btype_and_steps() {
        let mut f = frame_with(iss(4, 0, false, false, false), 0);
        f.spsr = spsr::M_EL1H | spsr::BTYPE | spsr::SS | spsr::DAIF | spsr::N | spsr::PAN;
        let a = decode(&f).unwrap();
        complete(&mut f, &a, 1);
        assert_eq!(f.spsr, spsr::M_EL1H | spsr::DAIF | spsr::N | spsr::PAN);
        // ELR wraps instead of overflowing.
        f.elr = u64::MAX - 1;
        complete(&mut f, &a, 1);
        assert_eq!(f.elr, 2);
    }

    #[test]
    fn ipa_is_page_from_hpfar_offset_from_far() {
        let mut f = frame_with(iss(4, 0, false, false, false), 0xabc);
        f.hpfar = ((0x0000_0008_1234_5000u64 >> 12) << 4) | (1 << 63);
        f.far = 0xffff_0000_dead_0abc;
        assert_eq!(decode(&f).unwrap().ipa, 0x0000_0008_1234_5abc);
    }

    #[test]
    fn refusals() {
        let good = iss(4, 1, false, false, false);
        let refused = |f: &TrapFrame| decode(f).unwrap_err();
        let mut f = frame_with(good, 0);
        f.esr = 0x5a00_0000;
        assert_eq!(refused(&f), MmioError::NotDataAbort(ExceptionClass::Hvc64));
        f.esr = Esr::from_parts(ExceptionClass::DabtCur, true, good).0;
        assert_eq!(refused(&f), MmioError::NotDataAbort(ExceptionClass::DabtCur));
        f.esr = Esr::from_parts(ExceptionClass::IabtLow, true, 0x07).0;
        assert_eq!(refused(&f), MmioError::NotDataAbort(ExceptionClass::IabtLow));

        let with = |iss: u32| frame_with(iss, 0);
        assert_eq!(refused(&with(good & !dabt::ISV)), MmioError::NoSyndrome);
        assert_eq!(refused(&with(0x0f)), MmioError::NoSyndrome);
        assert_eq!(refused(&with(good | dabt::S1PTW)), MmioError::StageOneWalk);
        assert_eq!(refused(&with(good | dabt::CM)), MmioError::CacheMaintenance);
        assert_eq!(refused(&with(good | dabt::FNV)), MmioError::NoAddress);
        // External abort, alignment fault, TLB conflict: HPFAR is not valid for them.
        for dfsc in [0x10, 0x21, 0x30, 0x18, 0x3f] {
            assert_eq!(refused(&with((good & !0x3f) | dfsc)), MmioError::NoAddress, "{dfsc:#x}");
        }
        // Permission, access flag and address size faults do give an IPA.
        for dfsc in [0x0f, 0x0b, 0x03, 0x2b] {
            assert!(decode(&with((good & !0x3f) | dfsc)).is_ok(), "{dfsc:#x}");
        }
        let mut f = with(good);
        f.spsr = spsr::M_AARCH32;
        assert_eq!(refused(&f), MmioError::Aarch32);
        let mut f = with(good);
        f.esr = Esr::from_parts(ExceptionClass::DabtLow, false, good).0;
        assert!(matches!(refused(&f), MmioError::Inconsistent(_)));
        assert!(matches!(refused(&with(good | dabt::VNCR)), MmioError::Inconsistent(_)));
        assert!(matches!(
            refused(&with(iss(8, 1, false, false, false))),
            MmioError::Inconsistent(_)
        ));
        assert!(matches!(refused(&with(iss(4, 1, true, true, false))), MmioError::Inconsistent(_)));
        assert!(matches!(refused(&with(iss(8, 1, false, true, true))), MmioError::Inconsistent(_)));
        for e in [
            MmioError::NotDataAbort(ExceptionClass::Other(0x3f)),
            MmioError::NoSyndrome,
            MmioError::StageOneWalk,
            MmioError::CacheMaintenance,
            MmioError::NoAddress,
            MmioError::Aarch32,
            MmioError::Inconsistent("x"),
        ] {
            assert!(!format!("{e}").is_empty());
        }
    }

    proptest::proptest! {
        /// Any frame decodes to an access or an error; an access is well-formed, and completing
        /// it changes only the transfer register, ELR and SPSR.BTYPE/SS.
        #[test]
        fn hostile_frames_never_panic(
            esr in proptest::prelude::any::<u64>(),
            iss_bits in proptest::prelude::any::<u32>(),
            far in proptest::prelude::any::<u64>(),
            hpfar in proptest::prelude::any::<u64>(),
            spsr_bits in proptest::prelude::any::<u64>(),
            elr in proptest::prelude::any::<u64>(),
            fill in proptest::prelude::any::<u64>(),
            read in proptest::prelude::any::<u64>(),
        ) {
            // A quarter of the cases: any value; a quarter: a lower-EL data abort with any ISS;
            // half: a plausible emulatable syndrome with random details, to reach completion.
            let (esr, spsr_bits) = match iss_bits & 3 {
                0 => (esr, spsr_bits),
                1 => {
                    let e = Esr::from_parts(ExceptionClass::DabtLow, esr & 1 != 0, iss_bits >> 2);
                    (e.0 | (esr & (0xff_ffff << 32)), spsr_bits)
                }
                _ => {
                    let odd = dabt::S1PTW | dabt::CM | dabt::FNV | dabt::VNCR | dabt::FSC_MASK;
                    let dfsc = 0x04 + (iss_bits >> 26) % 12;
                    let iss = ((iss_bits >> 2) & !odd) | dabt::ISV | dfsc;
                    let e = Esr::from_parts(ExceptionClass::DabtLow, true, iss);
                    (e.0, spsr_bits & !spsr::M_AARCH32)
                }
            };
            let mut f = TrapFrame { x: [fill; 31], elr, spsr: spsr_bits, esr, far, hpfar };
            if let Ok(a) = decode(&f) {
                proptest::prop_assert!(matches!(a.size, 1 | 2 | 4 | 8));
                proptest::prop_assert!(a.value <= a.size_mask());
                proptest::prop_assert!(a.srt <= 31);
                proptest::prop_assert_eq!(a.ipa & 0xfff, far & 0xfff);
                proptest::prop_assert!(a.ipa < 1 << 56);
                proptest::prop_assert!(!a.write || !a.sign_extend);
                let before = f;
                complete(&mut f, &a, read);
                proptest::prop_assert_eq!(f.elr, elr.wrapping_add(4));
                proptest::prop_assert_eq!(f.spsr, spsr_bits & !(spsr::BTYPE | spsr::SS));
                for n in 0..31 {
                    if a.write || n != usize::from(a.srt) {
                        proptest::prop_assert_eq!(f.x[n], before.x[n]);
                    } else {
                        proptest::prop_assert_eq!(f.x[n], a.load_value(read));
                    }
                }
                let _ = format!("{a}");
            }
        }
    }
}
