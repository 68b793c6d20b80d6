//! PAS (Peripheral Authentication Service, SCM service PIL 0x02): loading, authenticating and
//! starting a remote processor's firmware, as Linux's `qcom_q6v5_pas` / `qcom_mdt_loader` drive
//! it, with a state machine per peripheral:
//!
//! ```text
//! Idle --init_image--> Initialized --mem_setup--> MemSetup --auth_and_reset--> Running
//!   ^                   |  (init_image again restarts)  |                         |
//!   +------ shutdown ---+-------------------------------+------------ shutdown ---+
//! ```
//!
//! - `is_supported(id)` (0x07): x1 = 1 for the peripherals below, 0 for any other;
//! - `init_image(id, metadata)` (0x01): the metadata (an MDT's ELF header and program headers)
//!   must be RAM (EINVAL_ADDR) and start with an ELF header with program headers (EINVAL_ARG);
//!   refused while the peripheral runs (V2_EBUSY);
//! - `mem_setup(id, addr, size)` (0x02): only after init_image (ERROR otherwise; V2_EBUSY
//!   while running); the region non-empty, page aligned, not wrapping (EINVAL_ARG), RAM, owned
//!   by HLOS alone or by the peripheral's VM alone, and overlapping no other peripheral's
//!   region (EINVAL_ADDR);
//! - `auth_and_reset(id)` (0x05): only after mem_setup (ERROR; V2_EBUSY while running); the
//!   region still owned as mem_setup accepted it (EINVAL_ADDR). A region HLOS owns is taken
//!   from it here, so the XPU witness runs first (`XPU: violation ...` and ERROR if the host
//!   can still reach it); then the region is the peripheral VM's and the peripheral runs;
//! - `shutdown(id)` (0x06): of a running peripheral, its region returns to HLOS; of one being
//!   loaded, the load is abandoned; of an idle one, ERROR.
//!
//! Every call's `arginfo` must be Linux's (EINVAL_ARG), and an unknown peripheral is
//! EINVAL_ARG. Success is x0 = 0, x1 = 0 (Linux returns x1 as the result of these calls).

use crate::ownership::HLOS_ONLY;
use crate::scm::{Answer, PAGE, Platform, Scm, ScmCall, VmSet, answer, status, vmid, witness};
use warden_abi::qcom_scm::pas_id;
pub use warden_abi::qcom_scm::pil::expected_arginfo;

/// PIL commands ([`warden_abi::qcom_scm::pil`]).
pub mod cmd {
    pub use warden_abi::qcom_scm::pil::{
        AUTH_AND_RESET, INIT_IMAGE, IS_SUPPORTED, MEM_SETUP, SHUTDOWN,
    };
}

/// The peripherals this TZ can start (Linux `qcom_q6v5_pas.c` `pas_id`) and the VM that owns a
/// running one's memory.
pub const PERIPHERALS: [(u64, u32, &str); 4] = [
    (pas_id::ADSP, vmid::ADSP_Q6, "ADSP"),
    (pas_id::MPSS, vmid::MSS_MSA, "MPSS"),
    (pas_id::SLPI, vmid::SSC_Q6, "SLPI"),
    (pas_id::CDSP, vmid::CDSP, "CDSP"),
];

/// The PIL commands this TZ answers (every other is `NOT_SUPPORTED`; `mss_reset` too).
pub fn implemented(command: u8) -> bool {
    use cmd::*;
    matches!(command, INIT_IMAGE | MEM_SETUP | AUTH_AND_RESET | SHUTDOWN | IS_SUPPORTED)
}

/// One peripheral's progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PasState {
    #[default]
    Idle,
    Initialized,
    MemSetup {
        base: u64,
        size: u64,
    },
    Running {
        base: u64,
        size: u64,
    },
}

/// Every peripheral's state, indexed like [`PERIPHERALS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pas {
    states: [PasState; PERIPHERALS.len()],
}

impl Pas {
    pub const fn new() -> Self {
        Self { states: [PasState::Idle; PERIPHERALS.len()] }
    }

    pub fn state(&self, id: u64) -> Option<PasState> {
        PERIPHERALS.iter().position(|p| p.0 == id).map(|i| self.states[i])
    }

    /// Whether `[base, base + size)` overlaps the region of a peripheral other than `index`.
    fn overlaps_another(&self, index: usize, base: u64, size: u64) -> bool {
        self.states.iter().enumerate().any(|(i, s)| match *s {
            PasState::MemSetup { base: b, size: s } | PasState::Running { base: b, size: s } => {
                i != index && base < b + s && b < base + size
            }
            _ => false,
        })
    }

    /// Whether `[base, base + size)` overlaps a region PAS holds (set up or running): such
    /// memory changes hands only through PAS (auth_and_reset, shutdown), never assign_mem.
    pub fn holds(&self, base: u64, size: u64) -> bool {
        self.overlaps_another(usize::MAX, base, size)
    }
}

/// Answers one PAS call ([`implemented`] is true of its command).
pub fn handle(scm: &mut Scm, call: &ScmCall, p: &dyn Platform) -> Answer {
    if expected_arginfo(call.cmd) != Some(call.arginfo) {
        return answer(status::EINVAL_ARG);
    }
    let id = call.args[0];
    let index = PERIPHERALS.iter().position(|per| per.0 == id);
    if call.cmd == cmd::IS_SUPPORTED {
        return [0, u64::from(index.is_some()), 0, 0];
    }
    let Some(index) = index else { return answer(status::EINVAL_ARG) };
    let (_, vm, name) = PERIPHERALS[index];
    let result = match call.cmd {
        cmd::INIT_IMAGE => init_image(scm, index, call.args[1], p),
        cmd::MEM_SETUP => mem_setup(scm, index, call.args[1], call.args[2], p),
        cmd::AUTH_AND_RESET => auth_and_reset(scm, index, vm, name, p),
        _ => shutdown(scm, index, name, p),
    };
    match result {
        Ok(()) => answer(status::SUCCESS),
        Err(code) => {
            p.log(format_args!(
                "tz-sim: SCM PAS {} {name} refused ({code}) in state {:?}\n",
                command_name(call.cmd),
                scm.pas.states[index]
            ));
            answer(code)
        }
    }
}

fn command_name(command: u8) -> &'static str {
    match command {
        cmd::INIT_IMAGE => "init_image",
        cmd::MEM_SETUP => "mem_setup",
        cmd::AUTH_AND_RESET => "auth_and_reset",
        _ => "shutdown",
    }
}

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";

fn init_image(scm: &mut Scm, index: usize, metadata: u64, p: &dyn Platform) -> Result<(), i64> {
    if matches!(scm.pas.states[index], PasState::Running { .. }) {
        return Err(status::V2_EBUSY);
    }
    // The ELF header (64 bytes for ELF64, 52 for ELF32): magic, class, program headers.
    let mut header = [0u8; 64];
    p.read(metadata, &mut header).map_err(|_| status::EINVAL_ADDR)?;
    let phnum_at = match header[4] {
        1 => 44,
        2 => 56,
        _ => return Err(status::EINVAL_ARG),
    };
    let phnum = u16::from_le_bytes([header[phnum_at], header[phnum_at + 1]]);
    if header[..4] != ELF_MAGIC || phnum == 0 {
        return Err(status::EINVAL_ARG);
    }
    scm.pas.states[index] = PasState::Initialized;
    Ok(())
}

fn mem_setup(
    scm: &mut Scm,
    index: usize,
    base: u64,
    size: u64,
    p: &dyn Platform,
) -> Result<(), i64> {
    match scm.pas.states[index] {
        PasState::Running { .. } => return Err(status::V2_EBUSY),
        PasState::Initialized => {}
        PasState::Idle | PasState::MemSetup { .. } => return Err(status::ERROR),
    }
    if size == 0 || !base.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) {
        return Err(status::EINVAL_ARG);
    }
    let end = base.checked_add(size).ok_or(status::EINVAL_ARG)?;
    if !p.ram().contains(base, size) || scm.pas.overlaps_another(index, base, size) {
        return Err(status::EINVAL_ADDR);
    }
    let vm = 1u64 << PERIPHERALS[index].1;
    if !matches!(scm.owners.owners(base, end), Some(o) if o == HLOS_ONLY || o == vm) {
        return Err(status::EINVAL_ADDR);
    }
    scm.pas.states[index] = PasState::MemSetup { base, size };
    Ok(())
}

fn auth_and_reset(
    scm: &mut Scm,
    index: usize,
    vm: u32,
    name: &str,
    p: &dyn Platform,
) -> Result<(), i64> {
    let (base, size) = match scm.pas.states[index] {
        PasState::Running { .. } => return Err(status::V2_EBUSY),
        PasState::MemSetup { base, size } => (base, size),
        PasState::Idle | PasState::Initialized => return Err(status::ERROR),
    };
    let end = base + size;
    let vm_set = 1u64 << vm;
    let owners = scm.owners.owners(base, end);
    if owners == Some(HLOS_ONLY) {
        let mut after = scm.owners.clone();
        after.set(base, end, vm_set).map_err(|_| status::ENOMEM)?;
        witness(p, "auth_and_reset", base, end, VmSet(HLOS_ONLY), VmSet(vm_set))?;
        scm.owners = after;
        p.log(format_args!(
            "XPU: auth_and_reset {name} {base:#x}..{end:#x} HLOS -> {} ok\n",
            VmSet(vm_set)
        ));
    } else if owners != Some(vm_set) {
        return Err(status::EINVAL_ADDR);
    }
    scm.pas.states[index] = PasState::Running { base, size };
    Ok(())
}

fn shutdown(scm: &mut Scm, index: usize, name: &str, p: &dyn Platform) -> Result<(), i64> {
    match scm.pas.states[index] {
        PasState::Idle => Err(status::ERROR),
        PasState::Initialized | PasState::MemSetup { .. } => {
            scm.pas.states[index] = PasState::Idle;
            Ok(())
        }
        PasState::Running { base, size } => {
            scm.owners.set(base, base + size, HLOS_ONLY).map_err(|_| status::ENOMEM)?;
            scm.pas.states[index] = PasState::Idle;
            p.log(format_args!(
                "tz-sim: PAS shutdown {name}: {base:#x}..{:#x} back to HLOS\n",
                base + size
            ));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scm::tests::{BUF, FakePlatform, RAM, assign_call, call};

    const MPSS: u64 = 4;
    const REGION: (u64, u64) = (RAM + 0x8_0000, 0x4_0000);

    fn pas(scm: &mut Scm, p: &FakePlatform, command: u8, args: [u64; 3]) -> i64 {
        let fid = 0x4200_0200 | u64::from(command);
        let info = u64::from(expected_arginfo(command).unwrap());
        call(scm, p, [fid, info, args[0], args[1], args[2], 0])[0] as i64
    }

    fn elf(p: &mut FakePlatform, at: u64) {
        p.ram.write(at, b"\x7fELF\x02\x01\x01");
        p.ram.write(at + 56, &3u16.to_le_bytes());
    }

    #[test]
    fn is_supported() {
        let p = FakePlatform::new();
        let mut scm = Scm::new();
        let ask = |scm: &mut Scm, id| call(scm, &p, [0x4200_0207, 1, id, 0, 0, 0]);
        for id in [1, 4, 12, 18] {
            assert_eq!(ask(&mut scm, id), [0, 1, 0, 0], "{id}");
        }
        assert_eq!(ask(&mut scm, 99), [0, 0, 0, 0]);
    }

    /// A modem boot and shutdown as `qcom_q6v5_pas` makes it: the region leaves HLOS at
    /// auth_and_reset (witnessed) and comes back at shutdown.
    #[test]
    fn boot_and_shutdown() {
        let mut p = FakePlatform::new();
        let mut scm = Scm::new();
        elf(&mut p, BUF);
        assert_eq!(pas(&mut scm, &p, cmd::INIT_IMAGE, [MPSS, BUF, 0]), 0);
        assert_eq!(pas(&mut scm, &p, cmd::MEM_SETUP, [MPSS, REGION.0, REGION.1]), 0);
        // Set up for PAS: not assignable either.
        p.unmap_pages(REGION.0 + REGION.1 - 0x1000, 0x1000);
        let x = assign_call(
            &mut p,
            &[(REGION.0 + REGION.1 - 0x1000, 0x1000)],
            &[vmid::HLOS],
            &[(vmid::MSS_MSA, 6)],
        );
        assert_eq!(call(&mut scm, &p, x)[0] as i64, status::EINVAL_ADDR);
        // The host still maps the region: refused by the witness, the peripheral not started.
        assert_eq!(pas(&mut scm, &p, cmd::AUTH_AND_RESET, [MPSS, 0, 0]), status::ERROR);
        assert!(p.log_has("XPU: violation: auth_and_reset 0x40080000..0x400c0000 HLOS -> MSS_MSA"));
        assert_eq!(
            scm.pas.state(MPSS),
            Some(PasState::MemSetup { base: REGION.0, size: REGION.1 })
        );
        p.unmap_pages(REGION.0, REGION.1);
        assert_eq!(pas(&mut scm, &p, cmd::AUTH_AND_RESET, [MPSS, 0, 0]), 0);
        assert!(p.log_has("XPU: auth_and_reset MPSS 0x40080000..0x400c0000 HLOS -> MSS_MSA ok"));
        assert_eq!(scm.owners.owners(REGION.0, REGION.0 + REGION.1), Some(1 << vmid::MSS_MSA));
        // The running modem's region cannot be assigned back behind PAS's back.
        let x = assign_call(&mut p, &[(REGION.0, 0x1000)], &[vmid::MSS_MSA], &[(vmid::HLOS, 7)]);
        assert_eq!(call(&mut scm, &p, x)[0] as i64, status::EINVAL_ADDR);
        assert_eq!(pas(&mut scm, &p, cmd::SHUTDOWN, [MPSS, 0, 0]), 0);
        assert_eq!(call(&mut scm, &p, x)[0] as i64, status::EINVAL_ARG, "HLOS's again");
        assert_eq!(scm.owners.ranges().count(), 0, "back to HLOS");
        assert_eq!(scm.pas.state(MPSS), Some(PasState::Idle));
    }

    #[test]
    fn a_region_assigned_to_the_modem_first_needs_no_witness() {
        let mut p = FakePlatform::new();
        let mut scm = Scm::new();
        elf(&mut p, BUF);
        scm.owners.set(REGION.0, REGION.0 + REGION.1, 1 << vmid::MSS_MSA).unwrap();
        assert_eq!(pas(&mut scm, &p, cmd::INIT_IMAGE, [MPSS, BUF, 0]), 0);
        assert_eq!(pas(&mut scm, &p, cmd::MEM_SETUP, [MPSS, REGION.0, REGION.1]), 0);
        assert_eq!(pas(&mut scm, &p, cmd::AUTH_AND_RESET, [MPSS, 0, 0]), 0);
        // ... but another VM's region is refused.
        let mut scm = Scm::new();
        scm.owners.set(REGION.0, REGION.0 + REGION.1, 1 << vmid::CDSP).unwrap();
        assert_eq!(pas(&mut scm, &p, cmd::INIT_IMAGE, [MPSS, BUF, 0]), 0);
        assert_eq!(
            pas(&mut scm, &p, cmd::MEM_SETUP, [MPSS, REGION.0, REGION.1]),
            status::EINVAL_ADDR
        );
    }

    #[test]
    fn out_of_order_and_bad_arguments() {
        let mut p = FakePlatform::new();
        let mut scm = Scm::new();
        elf(&mut p, BUF);
        p.unmap_pages(REGION.0, REGION.1);
        let r = REGION;
        assert_eq!(
            pas(&mut scm, &p, cmd::MEM_SETUP, [MPSS, r.0, r.1]),
            status::ERROR,
            "before init"
        );
        assert_eq!(pas(&mut scm, &p, cmd::AUTH_AND_RESET, [MPSS, 0, 0]), status::ERROR, "idle");
        assert_eq!(pas(&mut scm, &p, cmd::SHUTDOWN, [MPSS, 0, 0]), status::ERROR, "idle");
        assert_eq!(pas(&mut scm, &p, cmd::INIT_IMAGE, [99, BUF, 0]), status::EINVAL_ARG, "unknown");
        assert_eq!(pas(&mut scm, &p, cmd::INIT_IMAGE, [MPSS, 0x1000, 0]), status::EINVAL_ADDR);
        assert_eq!(
            pas(&mut scm, &p, cmd::INIT_IMAGE, [MPSS, BUF + 0x100, 0]),
            status::EINVAL_ARG,
            "not ELF"
        );
        // Linux's arginfo only.
        assert_eq!(
            call(&mut scm, &p, [0x4200_0201, 2, MPSS, BUF, 0, 0])[0] as i64,
            status::EINVAL_ARG
        );
        assert_eq!(pas(&mut scm, &p, cmd::INIT_IMAGE, [MPSS, BUF, 0]), 0);
        assert_eq!(
            pas(&mut scm, &p, cmd::AUTH_AND_RESET, [MPSS, 0, 0]),
            status::ERROR,
            "before mem_setup"
        );
        for (what, base, size, code) in [
            ("empty", r.0, 0, status::EINVAL_ARG),
            ("unaligned", r.0 + 0x800, r.1, status::EINVAL_ARG),
            ("wraps", 0xffff_ffff_ffff_f000, 0x2000, status::EINVAL_ARG),
            ("outside RAM", 0x1000_0000, 0x1000, status::EINVAL_ADDR),
        ] {
            assert_eq!(pas(&mut scm, &p, cmd::MEM_SETUP, [MPSS, base, size]), code, "{what}");
        }
        assert_eq!(pas(&mut scm, &p, cmd::MEM_SETUP, [MPSS, r.0, r.1]), 0);
        assert_eq!(pas(&mut scm, &p, cmd::MEM_SETUP, [MPSS, r.0, r.1]), status::ERROR, "twice");
        // Another peripheral may not set up over it.
        assert_eq!(pas(&mut scm, &p, cmd::INIT_IMAGE, [1, BUF, 0]), 0);
        assert_eq!(
            pas(&mut scm, &p, cmd::MEM_SETUP, [1, r.0 + 0x1000, 0x1000]),
            status::EINVAL_ADDR
        );
        // The region changed hands since mem_setup: refused.
        scm.owners.set(r.0, r.0 + 0x1000, 1 << vmid::WLAN).unwrap();
        assert_eq!(pas(&mut scm, &p, cmd::AUTH_AND_RESET, [MPSS, 0, 0]), status::EINVAL_ADDR);
        scm.owners.set(r.0, r.0 + 0x1000, HLOS_ONLY).unwrap();
        assert_eq!(pas(&mut scm, &p, cmd::AUTH_AND_RESET, [MPSS, 0, 0]), 0);
        assert_eq!(pas(&mut scm, &p, cmd::INIT_IMAGE, [MPSS, BUF, 0]), status::V2_EBUSY, "running");
        assert_eq!(pas(&mut scm, &p, cmd::MEM_SETUP, [MPSS, r.0, r.1]), status::V2_EBUSY);
        assert_eq!(pas(&mut scm, &p, cmd::AUTH_AND_RESET, [MPSS, 0, 0]), status::V2_EBUSY);
        // Shutting down one being loaded abandons the load.
        assert_eq!(pas(&mut scm, &p, cmd::SHUTDOWN, [1, 0, 0]), 0);
        assert_eq!(scm.pas.state(1), Some(PasState::Idle));
        assert_eq!(pas(&mut scm, &p, cmd::SHUTDOWN, [MPSS, 0, 0]), 0);
        assert!(p.log_has("SCM PAS mem_setup MPSS refused (-1) in state Idle"));
    }
}
