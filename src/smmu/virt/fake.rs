//! Host-test doubles: host memory with ownership, and a recording real SMMU.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::Cell;

use crate::mm::{MemRange, PAGE_SIZE};

use super::cd::CD_WORDS;
use super::cmdq::RealCommand;
use super::ste::RealSte;
use super::{BackendError, GuestMemory, NestedBackend, Refused};

/// Sparse memory; accesses through [`GuestMemory`] succeed only inside the host ranges.
#[derive(Default)]
pub struct FakeMemory {
    host: Vec<MemRange>,
    pages: BTreeMap<u64, Box<[u8; PAGE_SIZE as usize]>>,
    reads: Cell<u64>,
}

impl FakeMemory {
    pub fn new(host: &[MemRange]) -> Self {
        Self { host: host.to_vec(), ..Self::default() }
    }

    /// Changes ownership (a handoff): later accesses to `range` are refused.
    pub fn take_from_host(&mut self, range: MemRange) {
        let mut kept = Vec::new();
        for r in &self.host {
            if !r.overlaps(&range) {
                kept.push(*r);
                continue;
            }
            if r.start < range.start {
                kept.push(MemRange::new(r.start, range.start));
            }
            if range.end < r.end {
                kept.push(MemRange::new(range.end, r.end));
            }
        }
        self.host = kept;
    }

    /// Successful and refused [`GuestMemory::read`] calls so far.
    pub fn reads(&self) -> u64 {
        self.reads.get()
    }

    fn byte(&self, addr: u64) -> u8 {
        let page = addr & !(PAGE_SIZE - 1);
        self.pages.get(&page).map_or(0, |p| p[(addr - page) as usize])
    }

    fn set_byte(&mut self, addr: u64, value: u8) {
        let page = addr & !(PAGE_SIZE - 1);
        let p = self.pages.entry(page).or_insert_with(|| Box::new([0; PAGE_SIZE as usize]));
        p[(addr - page) as usize] = value;
    }

    /// Backdoor accesses (test setup; no ownership check).
    pub fn write_u64(&mut self, addr: u64, value: u64) {
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            self.set_byte(addr + i as u64, b);
        }
    }

    pub fn read_u64(&self, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = self.byte(addr + i as u64);
        }
        u64::from_le_bytes(b)
    }

    pub fn write_words(&mut self, addr: u64, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            self.write_u64(addr + 8 * i as u64, *w);
        }
    }
}

impl GuestMemory for FakeMemory {
    fn read(&self, ipa: u64, buf: &mut [u8]) -> Result<(), Refused> {
        self.reads.set(self.reads.get() + 1);
        let range = MemRange::from_base_size(ipa, buf.len() as u64).ok_or(Refused)?;
        if !self.is_host_owned(range) {
            return Err(Refused);
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.byte(ipa + i as u64);
        }
        Ok(())
    }

    fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), Refused> {
        let range = MemRange::from_base_size(ipa, data.len() as u64).ok_or(Refused)?;
        if !self.is_host_owned(range) {
            return Err(Refused);
        }
        for (i, b) in data.iter().enumerate() {
            self.set_byte(ipa + i as u64, *b);
        }
        Ok(())
    }

    fn is_host_owned(&self, range: MemRange) -> bool {
        self.host.iter().any(|h| h.contains_range(&range))
    }
}

/// What the emulation asked of the real SMMU, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealOp {
    Install(u32, RealSte),
    /// A shadow CD written at this arena IPA.
    WriteCd(u64, [u64; CD_WORDS]),
    Command(RealCommand),
    Sync,
}

/// Records every real-SMMU request; can be told to fail the next syncs.
#[derive(Default)]
pub struct RecordingSmmu {
    pub log: Vec<RealOp>,
    pub fail_syncs: u32,
}

impl RecordingSmmu {
    pub fn take(&mut self) -> Vec<RealOp> {
        core::mem::take(&mut self.log)
    }
}

impl NestedBackend for RecordingSmmu {
    fn install_ste(&mut self, sid: u32, ste: RealSte) -> Result<(), BackendError> {
        self.log.push(RealOp::Install(sid, ste));
        Ok(())
    }

    fn write_cd(&mut self, ipa: u64, words: &[u64; CD_WORDS]) -> Result<(), BackendError> {
        self.log.push(RealOp::WriteCd(ipa, *words));
        Ok(())
    }

    fn submit(&mut self, cmd: RealCommand) -> Result<(), BackendError> {
        self.log.push(RealOp::Command(cmd));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), BackendError> {
        if self.fail_syncs > 0 {
            self.fail_syncs -= 1;
            return Err(BackendError);
        }
        self.log.push(RealOp::Sync);
        Ok(())
    }
}
