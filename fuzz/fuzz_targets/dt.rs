//! The device tree, as warden reads it before anything else exists (its own heap-free
//! validating parser, `warden::dt::parse`) and as it rewrites it for the host
//! (`warden::dt::apply`, the edits boot makes). On a board the DT is firmware's, but in
//! boot-stage mode it comes from the bootloader's side, and a wrong one must be an error
//! message, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::dt::{DtEdit, apply, parse};
use warden::mm::MemRange;

fuzz_target!(|blob: &[u8]| {
    if let Ok(info) = parse(blob) {
        // Everything boot derives from a parsed DT must be total too.
        let _ = info.smmu();
        for c in info.carveouts.iter() {
            assert!(!c.range.is_empty(), "a carveout is never empty");
        }
    }
    let edit = warden::boards::carveouts::add_to(
        DtEdit::new()
            .reserve_no_map("warden", MemRange::new(0x4020_0000, 0x40c0_0000))
            .remove_cpu("/cpus/cpu@2")
            .add_device(
                "warden-control",
                "warden,control-v1",
                MemRange::new(0x090c_0000, 0x090c_1000),
            )
            .remove_node("/smmuv3@9050000")
            .set_chosen_bootargs("console=ttyAMA0 earlycon")
            .set_chosen_initrd(MemRange::new(0x4800_0000, 0x4900_0000)),
    );
    if let Ok(out) = apply(blob, &edit) {
        // The rewritten DT is what the host boots with: warden must be able to read it back.
        let _ = parse(&out);
    }
});
