//! Which hardware warden presents to the host: the `virt` persona (a virtual SMMUv3 and
//! warden's own ABI, what QEMU's virt board has) or the `snapdragon` persona (a virtual
//! Qualcomm MMU-500 and the SCM firmware interface, what Linux finds on a Snapdragon board),
//! chosen on QEMU by `warden.persona=snapdragon` on the packed command line (`cargo xtask run
//! --persona snapdragon`). The real SMMU below is warden's in both.

/// The host-facing persona.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Persona {
    /// Virtual SMMUv3 at the real SMMU's place; no SCM.
    #[default]
    Virt,
    /// Virtual MMU-500 (`qcom,sc7280-smmu-500`) at the real SMMU's place; `qcom,scm` answered.
    Snapdragon,
}

/// The command-line parameter.
pub const PARAM: &str = "warden.persona";

impl Persona {
    pub fn name(self) -> &'static str {
        match self {
            Persona::Virt => "virt",
            Persona::Snapdragon => "snapdragon",
        }
    }

    /// The persona a command line asks for (the last `warden.persona=` wins); `Err` with the
    /// value when it names none (warden then keeps the default and says so).
    pub fn from_cmdline(cmdline: &str) -> Result<Persona, &str> {
        let mut persona = Ok(Persona::Virt);
        for word in cmdline.split_ascii_whitespace() {
            let Some(value) = word.strip_prefix(PARAM).and_then(|r| r.strip_prefix('=')) else {
                continue;
            };
            persona = match value {
                "virt" => Ok(Persona::Virt),
                "snapdragon" => Ok(Persona::Snapdragon),
                other => Err(other),
            };
        }
        persona
    }

    /// Whether the host gets the SCM interface (SiP calls answered by [`crate::trap::scm`]).
    pub fn has_scm(self) -> bool {
        self == Persona::Snapdragon
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        assert_eq!(Persona::from_cmdline(""), Ok(Persona::Virt));
        assert_eq!(
            Persona::from_cmdline("console=ttyAMA0 warden.persona=snapdragon"),
            Ok(Persona::Snapdragon)
        );
        assert_eq!(
            Persona::from_cmdline("warden.persona=snapdragon warden.persona=virt"),
            Ok(Persona::Virt)
        );
        assert_eq!(Persona::from_cmdline("warden.persona=pixel"), Err("pixel"));
        assert_eq!(Persona::from_cmdline("warden.personality=snapdragon"), Ok(Persona::Virt));
    }
}
