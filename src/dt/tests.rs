use super::*;
const FIXTURE: &[u8] = include_bytes!("../../boards/qemu-virt/qemu-virt.dtb");
#[test]
fn dump() {
    let info = parse(FIXTURE).unwrap();
    println!("{info:#?}");
    println!("size {}", core::mem::size_of::<PlatformInfo>());
}
