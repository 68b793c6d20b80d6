//! Which interrupt controller warden works with: the one the DT describes, among those the
//! board may have, checked against what the CPU implements.
//!
//! The two differ for warden in three places:
//! - **GICv3**: the CPU interface is system registers (ICC_*), which EL2 must open to EL1
//!   (ICC_SRE_EL2.{SRE,Enable}); the ITS and the redistributors write memory and are emulated
//!   (`crate::gic::its`, `crate::gic::redist`).
//! - **GICv2**: the CPU interface is MMIO (GICC), passed through to the host with the
//!   distributor; ICC_SRE_EL2 does not exist (UNDEFINED without a GICv3 CPU interface); nothing
//!   in it writes memory. Its virtualization frames (GICH, GICV) are a hypervisor's and are
//!   left out of the host's stage 2 and DT (`crate::dt::GicV2Info`).
//!
//! The DT names the GIC; `ID_AA64PFR0_EL1.GIC` says whether the CPU has the system-register
//! interface. A DT that claims a GICv3 on a CPU without it is refused at boot (the host's first
//! ICC access would be UNDEFINED); a GICv2 on a CPU that has it (a GICv3 in legacy mode) is
//! used as a GICv2, and ICC_SRE_EL2 is left as the firmware set it.

use core::fmt;

use crate::dt::PlatformInfo;

/// An interrupt controller architecture warden supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    V2,
    V3,
}

impl fmt::Display for GicVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GicVersion::V2 => "GICv2",
            GicVersion::V3 => "GICv3",
        })
    }
}

/// Why no interrupt controller could be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectError {
    /// The DT has no enabled GICv2 or GICv3 node.
    NoGic,
    /// The DT has an enabled GICv2 and an enabled GICv3.
    Both,
    /// The DT's GIC is one the board does not have.
    NotOnBoard(GicVersion),
    /// The DT says GICv3 but the CPU has no GICv3 system-register interface.
    NoSystemRegisters,
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectError::NoGic => f.write_str("the DT has no enabled GICv2 or GICv3 node"),
            SelectError::Both => f.write_str("the DT has both an enabled GICv2 and a GICv3 node"),
            SelectError::NotOnBoard(v) => write!(f, "the DT names a {v}, which this board does not have"),
            SelectError::NoSystemRegisters => f.write_str(
                "the DT names a GICv3 but ID_AA64PFR0_EL1.GIC says the CPU has no GICv3 system-register interface",
            ),
        }
    }
}

/// The interrupt controller for this boot: the DT's, if `board` lists it and the CPU can use
/// it (`cpu_sysreg_interface`: ID_AA64PFR0_EL1.GIC != 0).
pub fn select(
    dt: &PlatformInfo,
    board: &[GicVersion],
    cpu_sysreg_interface: bool,
) -> Result<GicVersion, SelectError> {
    let version = match (dt.gicv3.is_some(), dt.gicv2.is_some()) {
        (true, true) => return Err(SelectError::Both),
        (true, false) => GicVersion::V3,
        (false, true) => GicVersion::V2,
        (false, false) => return Err(SelectError::NoGic),
    };
    if !board.contains(&version) {
        return Err(SelectError::NotOnBoard(version));
    }
    if version == GicVersion::V3 && !cpu_sysreg_interface {
        return Err(SelectError::NoSystemRegisters);
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GICV3_DT: &[u8] = include_bytes!("../../boards/qemu-virt/qemu-virt.dtb");
    const GICV2_DT: &[u8] = include_bytes!("../../boards/qemu-virt/qemu-virt-gicv2.dtb");
    const BOTH: &[GicVersion] = &[GicVersion::V2, GicVersion::V3];

    fn dt(blob: &[u8]) -> PlatformInfo {
        crate::dt::parse(blob).expect("fixture parses")
    }

    #[test]
    fn qemu_virt_gic_versions_are_told_apart() {
        assert_eq!(select(&dt(GICV3_DT), BOTH, true), Ok(GicVersion::V3));
        assert_eq!(select(&dt(GICV2_DT), BOTH, false), Ok(GicVersion::V2));
    }

    /// A GICv3 in legacy mode: the CPU has the system registers, the DT describes a GICv2.
    #[test]
    fn gicv2_dt_on_a_cpu_with_gicv3_registers_is_a_gicv2() {
        assert_eq!(select(&dt(GICV2_DT), BOTH, true), Ok(GicVersion::V2));
    }

    /// QEMU `gic-version=2`'s CPU (ID_AA64PFR0_EL1.GIC = 0) with a DT claiming a GICv3: the
    /// host's first ICC_* access, and warden's ICC_SRE_EL2 write, would be UNDEFINED.
    #[test]
    fn gicv3_dt_without_the_cpu_interface_is_refused() {
        assert_eq!(select(&dt(GICV3_DT), BOTH, false), Err(SelectError::NoSystemRegisters));
    }

    #[test]
    fn the_board_must_have_the_dts_gic() {
        assert_eq!(
            select(&dt(GICV2_DT), &[GicVersion::V3], false),
            Err(SelectError::NotOnBoard(GicVersion::V2))
        );
        assert_eq!(
            select(&dt(GICV3_DT), &[GicVersion::V2], true),
            Err(SelectError::NotOnBoard(GicVersion::V3))
        );
    }

    #[test]
    fn no_gic_or_two_gics_are_refused() {
        let mut none = dt(GICV3_DT);
        none.gicv3 = None;
        assert_eq!(select(&none, BOTH, true), Err(SelectError::NoGic));
        let mut both = dt(GICV3_DT);
        both.gicv2 = dt(GICV2_DT).gicv2;
        assert_eq!(select(&both, BOTH, true), Err(SelectError::Both));
    }

    /// qemu-virt may have either (`-machine virt,gic-version=2|3`).
    #[test]
    fn qemu_virt_board_has_both() {
        let board = crate::boards::CURRENT.interrupt_controllers;
        assert!(board.contains(&GicVersion::V2) && board.contains(&GicVersion::V3));
    }
}
