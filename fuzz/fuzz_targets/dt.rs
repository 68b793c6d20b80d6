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
    // The board places its carveouts in the RAM the DT names (xtask does this on QEMU's DT):
    // from the parsed /memory when there is one, else qemu-virt's default 1 GiB.
    let mut ram = vec![MemRange::new(0x4000_0000, 0x8000_0000)];
    if let Ok(info) = parse(blob) {
        // Everything boot derives from a parsed DT must be total too.
        let _ = info.smmu();
        for c in info.carveouts.iter() {
            assert!(!c.range.is_empty(), "a carveout is never empty");
            // Banks never overlap, so the carveout is inside RAM when its overlaps add up.
            let in_ram: u64 = info
                .memory
                .iter()
                .map(|b| b.end.min(c.range.end).saturating_sub(b.start.max(c.range.start)))
                .sum();
            assert_eq!(in_ram, c.range.size(), "a carveout outside RAM is left out");
        }
        ram = info.memory.to_vec();
    }
    let specs = warden::boards::carveouts::for_ram(&ram).map(|s| s.to_vec()).unwrap_or_default();
    let edit = warden::boards::carveouts::add_to(
        DtEdit::new()
            .reserve_no_map("warden", MemRange::new(0x4020_0000, 0x40c0_0000))
            .remove_cpu(2)
            .add_device(
                "warden-control",
                "warden,control-v1",
                MemRange::new(0x090c_0000, 0x090c_1000),
            )
            .remove_node("/smmuv3@9050000")
            .set_chosen_bootargs("console=ttyAMA0 earlycon")
            .set_chosen_initrd(MemRange::new(0x4800_0000, 0x4900_0000)),
        &specs,
    );
    if let Ok(out) = apply(blob, &edit) {
        // The rewritten DT is what the host boots with: warden must be able to read it back.
        let _ = parse(&out);
    }
});
