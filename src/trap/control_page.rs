//! The control page's register file: warden's calls made with plain loads and stores (busybox
//! `devmem` on an unmodified Linux). The layout and semantics are `warden_abi::control`'s;
//! this is the state behind them and the emulation of one access.
//!
//! The page is never mapped in the host's stage-2, so every access traps; the trap path decodes
//! it with [`super::mmio::decode`], passes the offset within the page here, and either completes
//! the instruction with the value returned or injects a synchronous external abort for a
//! [`ControlFault`].

use core::fmt;

use warden_abi::control::{self, REG_ARG1, REG_CALL, REG_MAGIC, REG_RET0};

use super::mmio::MmioAccess;

/// Number of `ARGn` registers (`ARG1..ARG7`, `x1..x7` of a call).
pub const ARG_COUNT: usize = 7;
/// Number of `RETn` registers (`RET0..RET7`, `x0..x7` of a call's result).
pub const RET_COUNT: usize = 8;

/// The value of `MAGIC`: [`control::MAGIC`] in the low word, the packed ABI version in the high.
pub const fn magic() -> u64 {
    (warden_abi::hyp::packed_version() << 32) | control::MAGIC as u64
}

/// An access the control page refuses; the host gets a synchronous external abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlFault {
    /// The offset is not inside the page.
    OutsidePage { offset: u64 },
    /// Only 4- and 8-byte accesses are defined.
    Size { size: u8 },
    /// The access is not aligned to its size.
    Misaligned { offset: u64, size: u8 },
    /// No register at this offset.
    Unassigned { offset: u64 },
}

impl fmt::Display for ControlFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OutsidePage { offset } => write!(f, "offset {offset:#x} outside the page"),
            Self::Size { size } => write!(f, "{size}-byte access (only 4 and 8 are defined)"),
            Self::Misaligned { offset, size } => {
                write!(f, "{size}-byte access at unaligned offset {offset:#x}")
            }
            Self::Unassigned { offset } => write!(f, "no register at offset {offset:#x}"),
        }
    }
}

/// Which 64-bit register an offset falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Register {
    Magic,
    /// `ARG1..ARG7` as index 0..7.
    Arg(usize),
    Call,
    /// `RET0..RET7` as index 0..8.
    Ret(usize),
}

impl Register {
    /// The register containing the (8-byte aligned) `offset`.
    fn at(offset: u64) -> Option<Self> {
        let arg_end = REG_ARG1 + 8 * ARG_COUNT as u64;
        let ret_end = REG_RET0 + 8 * RET_COUNT as u64;
        let index = |base: u64| usize::try_from((offset - base) / 8).ok();
        match offset {
            REG_MAGIC => Some(Self::Magic),
            REG_CALL => Some(Self::Call),
            o if (REG_ARG1..arg_end).contains(&o) => index(REG_ARG1).map(Self::Arg),
            o if (REG_RET0..ret_end).contains(&o) => index(REG_RET0).map(Self::Ret),
            _ => None,
        }
    }
}

/// The registers of the (machine-wide) control page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlPage {
    args: [u64; ARG_COUNT],
    rets: [u64; RET_COUNT],
}

impl ControlPage {
    pub const fn new() -> Self {
        Self { args: [0; ARG_COUNT], rets: [0; RET_COUNT] }
    }

    /// `ARG1..ARG7` as they are now.
    pub const fn args(&self) -> [u64; ARG_COUNT] {
        self.args
    }

    /// `RET0..RET7`: `x0..x7` of the last call.
    pub const fn rets(&self) -> [u64; RET_COUNT] {
        self.rets
    }

    /// Emulates `access` at `offset` bytes into the page. A write to `CALL` makes the call:
    /// `call` gets `x0..x7` (the written function ID, then `ARG1..ARG7`) and returns the
    /// result's `x0..x7`, which become `RET0..RET7`; `ARG1..ARG7` are then cleared. `call` is
    /// not invoked for any other access.
    ///
    /// Returns what a load reads (to complete it with), 0 for a store.
    pub fn access(
        &mut self,
        offset: u64,
        access: &MmioAccess,
        call: impl FnOnce([u64; 8]) -> [u64; 8],
    ) -> Result<u64, ControlFault> {
        let size = access.size;
        if offset >= control::SIZE {
            return Err(ControlFault::OutsidePage { offset });
        }
        if size != 4 && size != 8 {
            return Err(ControlFault::Size { size });
        }
        if !offset.is_multiple_of(u64::from(size)) {
            return Err(ControlFault::Misaligned { offset, size });
        }
        let register = Register::at(offset & !7).ok_or(ControlFault::Unassigned { offset })?;
        // A 4-byte access is to the low (offset % 8 == 0) or high half of the register.
        let high_half = size == 4 && offset & 4 != 0;
        if !access.write {
            let whole = match register {
                Register::Magic => magic(),
                Register::Arg(n) => self.args.get(n).copied().unwrap_or(0),
                Register::Call => 0,
                Register::Ret(n) => self.rets.get(n).copied().unwrap_or(0),
            };
            return Ok(match (size, high_half) {
                (8, _) => whole,
                (_, true) => whole >> 32,
                (_, false) => whole & 0xffff_ffff,
            });
        }
        let value = access.value & if size == 8 { u64::MAX } else { 0xffff_ffff };
        match register {
            // Read-only registers ignore writes.
            Register::Magic | Register::Ret(_) => {}
            Register::Arg(n) => {
                if let Some(arg) = self.args.get_mut(n) {
                    *arg = match (size, high_half) {
                        (8, _) => value,
                        (_, true) => (*arg & 0xffff_ffff) | (value << 32),
                        // A 32-bit value needs one write: the high half is cleared.
                        (_, false) => value,
                    };
                }
            }
            // The function ID is in the low half; a write to the high half alone is no call.
            Register::Call if high_half => {}
            Register::Call => {
                let mut regs = [0u64; 8];
                regs[0] = value;
                regs[1..].copy_from_slice(&self.args);
                self.rets = call(regs);
                self.args = [0; ARG_COUNT];
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec::Vec;
    use core::cell::Cell;
    use warden_abi::control::{arg, ret};

    fn read(size: u8) -> MmioAccess {
        MmioAccess {
            ipa: 0x090c_0000,
            size,
            write: false,
            value: 0,
            srt: 0,
            sign_extend: false,
            reg_64: size == 8,
        }
    }

    fn write(size: u8, value: u64) -> MmioAccess {
        MmioAccess { write: true, value, ..read(size) }
    }

    fn no_call(_: [u64; 8]) -> [u64; 8] {
        panic!("no call expected")
    }

    fn rd(page: &mut ControlPage, offset: u64, size: u8) -> u64 {
        page.access(offset, &read(size), no_call).unwrap()
    }

    fn wr(page: &mut ControlPage, offset: u64, size: u8, value: u64) {
        assert_eq!(page.access(offset, &write(size, value), no_call), Ok(0));
    }

    #[test]
    fn magic_reads_wrdn_and_the_version() {
        let mut page = ControlPage::new();
        assert_eq!(magic() & 0xffff_ffff, 0x4e44_5257);
        assert_eq!(magic() >> 32, warden_abi::hyp::packed_version());
        assert_eq!(rd(&mut page, REG_MAGIC, 8), magic());
        assert_eq!(rd(&mut page, REG_MAGIC, 4), u64::from(control::MAGIC));
        assert_eq!(rd(&mut page, REG_MAGIC + 4, 4), warden_abi::hyp::packed_version());
        // Writes are ignored.
        wr(&mut page, REG_MAGIC, 8, 0);
        wr(&mut page, REG_MAGIC + 4, 4, 0);
        assert_eq!(rd(&mut page, REG_MAGIC, 8), magic());
        assert_eq!(page, ControlPage::new());
    }

    #[test]
    fn args_are_read_write_in_whole_and_halves() {
        let mut page = ControlPage::new();
        for n in 1..=7 {
            wr(&mut page, arg(n), 8, 0x1000 * n as u64 + 0xdead_0000_0000_0000);
        }
        for n in 1..=7 {
            let v = 0x1000 * n as u64 + 0xdead_0000_0000_0000;
            assert_eq!(rd(&mut page, arg(n), 8), v);
            assert_eq!(rd(&mut page, arg(n), 4), v & 0xffff_ffff);
            assert_eq!(rd(&mut page, arg(n) + 4, 4), v >> 32);
        }
        assert_eq!(page.args()[6], 0xdead_0000_0000_7000);
        // A low-half write clears the high half; a high-half write keeps the low half.
        wr(&mut page, arg(2), 4, 0x8765_4321);
        assert_eq!(rd(&mut page, arg(2), 8), 0x8765_4321);
        wr(&mut page, arg(2) + 4, 4, 0xfeed_f00d);
        assert_eq!(rd(&mut page, arg(2), 8), 0xfeed_f00d_8765_4321);
        // A 4-byte store's value above 32 bits (cannot come from a decoded access) is ignored.
        wr(&mut page, arg(3), 4, 0xffff_ffff_0000_0001);
        assert_eq!(rd(&mut page, arg(3), 8), 1);
        wr(&mut page, arg(3) + 4, 4, 0x1_0000_0002);
        assert_eq!(rd(&mut page, arg(3), 8), 0x2_0000_0001);
        // Neighbours untouched.
        assert_eq!(rd(&mut page, arg(1), 8), 0xdead_0000_0000_1000);
        assert_eq!(rd(&mut page, arg(4), 8), 0xdead_0000_0000_4000);
    }

    #[test]
    fn call_passes_args_stores_rets_and_clears_args() {
        let mut page = ControlPage::new();
        for n in 1..=7 {
            wr(&mut page, arg(n), 8, n as u64 * 11);
        }
        let seen = Cell::new(None);
        let result = page.access(REG_CALL, &write(8, 0xc600_0020), |regs| {
            seen.set(Some(regs));
            [0, 0x7c00_0000, 0x1000, 3, 4, 5, 6, 7]
        });
        assert_eq!(result, Ok(0));
        assert_eq!(seen.get(), Some([0xc600_0020, 11, 22, 33, 44, 55, 66, 77]));
        assert_eq!(page.args(), [0; 7]);
        assert_eq!(page.rets(), [0, 0x7c00_0000, 0x1000, 3, 4, 5, 6, 7]);
        for n in 0..8 {
            assert_eq!(rd(&mut page, ret(n), 8), page.rets()[n]);
        }
        assert_eq!(rd(&mut page, ret(1), 4), 0x7c00_0000);
        assert_eq!(rd(&mut page, ret(1) + 4, 4), 0);
        // RET is read-only, CALL reads zero and calls nothing.
        wr(&mut page, ret(1), 8, 9);
        wr(&mut page, ret(1) + 4, 4, 9);
        assert_eq!(rd(&mut page, ret(1), 8), 0x7c00_0000);
        assert_eq!(rd(&mut page, REG_CALL, 8), 0);
        assert_eq!(rd(&mut page, REG_CALL + 4, 4), 0);

        // A negative status reads back sign-extended (as x0 carries it).
        page.access(REG_CALL, &write(8, 1), |_| [(-2i64) as u64, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(rd(&mut page, ret(0), 8), u64::MAX - 1);
        assert_eq!(rd(&mut page, ret(0) + 4, 4), 0xffff_ffff);
    }

    #[test]
    fn call_by_32_bit_write_and_high_half_is_no_call() {
        let mut page = ControlPage::new();
        wr(&mut page, arg(1), 4, 5);
        let seen = Cell::new(None);
        page.access(REG_CALL, &write(4, 0x8600_0001), |regs| {
            seen.set(Some(regs));
            [0x1, 0, 0, 0, 0, 0, 0, 0]
        })
        .unwrap();
        assert_eq!(seen.get(), Some([0x8600_0001, 5, 0, 0, 0, 0, 0, 0]));
        assert_eq!(page.rets()[0], 1);
        // The high half of CALL: ignored, ARGs kept.
        wr(&mut page, arg(1), 8, 6);
        wr(&mut page, REG_CALL + 4, 4, 0x8600_0001);
        assert_eq!(page.args()[0], 6);
        assert_eq!(page.rets()[0], 1);
    }

    #[test]
    fn faults() {
        let mut page = ControlPage::new();
        let fault = |page: &mut ControlPage, offset, a: MmioAccess| {
            page.access(offset, &a, no_call).unwrap_err()
        };
        for size in [1u8, 2] {
            assert_eq!(fault(&mut page, 0, read(size)), ControlFault::Size { size });
            assert_eq!(fault(&mut page, REG_CALL, write(size, 1)), ControlFault::Size { size });
        }
        assert_eq!(fault(&mut page, 3, read(16)), ControlFault::Size { size: 16 });
        assert_eq!(
            fault(&mut page, REG_CALL + 4, write(8, 1)),
            ControlFault::Misaligned { offset: 0x44, size: 8 }
        );
        assert_eq!(fault(&mut page, 2, read(4)), ControlFault::Misaligned { offset: 2, size: 4 });
        for offset in [0x48, 0x50, 0x7c, 0xc0, 0xc4, 0xff8, 0xffc] {
            assert_eq!(fault(&mut page, offset, read(4)), ControlFault::Unassigned { offset });
            assert_eq!(
                fault(&mut page, offset & !7, write(8, 1)),
                ControlFault::Unassigned { offset: offset & !7 }
            );
        }
        for offset in [0x1000, 0x1040, u64::MAX, u64::MAX - 7] {
            assert_eq!(fault(&mut page, offset, read(8)), ControlFault::OutsidePage { offset });
        }
        // A refused access changes nothing.
        assert_eq!(page, ControlPage::new());
        for f in [
            ControlFault::OutsidePage { offset: 1 },
            ControlFault::Size { size: 1 },
            ControlFault::Misaligned { offset: 2, size: 4 },
            ControlFault::Unassigned { offset: 0x48 },
        ] {
            assert!(!format!("{f}").is_empty());
        }
    }

    /// Every offset of the page with every size in both directions: exactly the registers'
    /// aligned 4- and 8-byte accesses succeed, and only a CALL write calls.
    #[test]
    fn whole_page_map() {
        let mut registers: Vec<u64> = Vec::new();
        registers.push(REG_MAGIC);
        registers.extend((1..=7).map(arg));
        registers.push(REG_CALL);
        registers.extend((0..8).map(ret));
        for offset in 0..control::SIZE + 16 {
            for size in [1u8, 2, 4, 8] {
                for is_write in [false, true] {
                    let mut page = ControlPage::new();
                    let a = if is_write { write(size, 0x1234) } else { read(size) };
                    let called = Cell::new(false);
                    let result = page.access(offset, &a, |_| {
                        called.set(true);
                        [0; 8]
                    });
                    let valid = offset < control::SIZE
                        && (size == 4 || size == 8)
                        && offset.is_multiple_of(u64::from(size))
                        && registers.contains(&(offset & !7));
                    assert_eq!(result.is_ok(), valid, "offset {offset:#x} size {size}");
                    let calls = is_write && offset == REG_CALL && valid;
                    assert_eq!(called.get(), calls, "offset {offset:#x} size {size}");
                    if is_write {
                        assert_eq!(result.unwrap_or(0), 0);
                    }
                }
            }
        }
    }
}
