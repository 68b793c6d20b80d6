//! The G0 violation ring: every refused host access, grouped into incidents, queryable by the
//! `VIOLATION_COUNT`/`VIOLATION_INFO` calls.
//!
//! An *incident* is a (faulting IPA page, ELR) pair: a loop hammering one page from one
//! instruction is one incident with a growing count, not a flood of records. Incidents get
//! sequence numbers from 0 in the order first seen; the ring keeps the last [`RING_SIZE`] and
//! drops the oldest. One spin lock guards it: violations are rare and the critical section is
//! a scan of 64 entries.

use spin::Mutex;
use warden_abi::handoff::{Access, Owner, ViolationCount, ViolationInfo};

use super::esr::{AbortReport, Esr};

/// Incidents kept.
pub const RING_SIZE: usize = 64;
/// New incidents logged in full before rate limiting starts; after that, only the 2^k-th.
pub const LOG_FIRST_INCIDENTS: u64 = 16;

/// A refused access as the trap path records it: the `VIOLATION_INFO` reply itself, so the ring
/// stores exactly what the host can query (`count` is the incident's running count).
pub type Violation = ViolationInfo;

/// From a stage-2 abort's syndrome; `owner` is what the ownership tracker says of the IPA.
pub fn violation_from_abort(report: &AbortReport, elr: u64, owner: Owner, cpu: u32) -> Violation {
    let esr: Esr = report.esr;
    let access = match (esr.data_abort(), esr.instruction_abort()) {
        (Some(d), _) => {
            Access { size: d.isv().then(|| d.access_size()), write: d.write(), fetch: false }
        }
        (None, Some(_)) => Access { size: None, write: false, fetch: true },
        (None, None) => Access { size: None, write: false, fetch: false },
    };
    ViolationInfo {
        ipa: report.ipa(),
        va: report.va(),
        elr,
        esr: esr.0,
        access,
        owner,
        cpu,
        count: 1,
    }
}

/// Incidents are keyed by (IPA page, ELR).
fn incident_key(v: &Violation) -> (Option<u64>, u64) {
    (v.ipa.map(|ipa| ipa >> 12), v.elr)
}

/// What [`ViolationRing::record`] did with an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The incident's sequence number.
    pub seq: u64,
    /// Accesses counted for the incident, this one included (1: a new incident).
    pub count: u64,
    /// Refused accesses so far, all incidents.
    pub accesses: u64,
    /// Whether this access should be logged: the first of an incident (while fewer than
    /// [`LOG_FIRST_INCIDENTS`] incidents, then every 2^k-th incident), or the 2^k-th repeat.
    pub log: bool,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: u64,
    violation: Violation,
}

#[derive(Debug)]
struct Ring {
    entries: [Option<Entry>; RING_SIZE],
    /// Next sequence number = incidents so far.
    next_seq: u64,
    accesses: u64,
}

/// Bounded record of violations, shared by all CPUs.
#[derive(Debug)]
pub struct ViolationRing {
    ring: Mutex<Ring>,
}

impl Default for ViolationRing {
    fn default() -> Self {
        Self::new()
    }
}

impl ViolationRing {
    pub const fn new() -> Self {
        ViolationRing {
            ring: Mutex::new(Ring { entries: [None; RING_SIZE], next_seq: 0, accesses: 0 }),
        }
    }

    /// Records one refused access: counts a repeat of a held incident, else starts a new one
    /// (evicting the oldest when full).
    pub fn record(&self, violation: Violation) -> Recorded {
        let mut ring = self.ring.lock();
        ring.accesses = ring.accesses.saturating_add(1);
        let accesses = ring.accesses;
        let key = incident_key(&violation);
        if let Some(entry) =
            ring.entries.iter_mut().flatten().find(|e| incident_key(&e.violation) == key)
        {
            entry.violation.count = entry.violation.count.saturating_add(1);
            let count = entry.violation.count;
            return Recorded { seq: entry.seq, count, accesses, log: count.is_power_of_two() };
        }
        let seq = ring.next_seq;
        ring.next_seq = seq.saturating_add(1);
        if let Some(slot) = ring.entries.get_mut((seq % RING_SIZE as u64) as usize) {
            *slot = Some(Entry { seq, violation: Violation { count: 1, ..violation } });
        }
        let incidents = seq + 1;
        let log = incidents <= LOG_FIRST_INCIDENTS || incidents.is_power_of_two();
        Recorded { seq, count: 1, accesses, log }
    }

    /// The `VIOLATION_COUNT` reply.
    pub fn counts(&self) -> ViolationCount {
        let ring = self.ring.lock();
        let oldest = ring.next_seq.saturating_sub(RING_SIZE as u64);
        ViolationCount { incidents: ring.next_seq, oldest, accesses: ring.accesses }
    }

    /// Refused accesses so far, repeats included.
    pub fn accesses(&self) -> u64 {
        self.ring.lock().accesses
    }

    /// The `VIOLATION_INFO(seq)` reply; `None` (`NO_DATA`) when `seq` was dropped or not seen
    /// yet.
    pub fn get(&self, seq: u64) -> Option<ViolationInfo> {
        let ring = self.ring.lock();
        let entry = ring.entries.get((seq % RING_SIZE as u64) as usize)?.as_ref()?;
        (entry.seq == seq).then_some(entry.violation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use warden_abi::handoff::PeerId;

    fn violation(page: u64, elr: u64) -> Violation {
        Violation {
            ipa: Some((page << 12) | 0x8),
            va: Some(0xffff_0000_0000_0000 | (page << 12) | 0x8),
            elr,
            esr: 0x93c1_8047,
            access: Access { size: Some(8), write: true, fetch: false },
            owner: Owner::Peer(PeerId::MODEM),
            cpu: 0,
            count: 1,
        }
    }

    #[test]
    fn repeats_of_an_incident_are_counted_not_stored() {
        let ring = ViolationRing::new();
        let first = ring.record(violation(0x7e000, 0x1000));
        assert_eq!(first, Recorded { seq: 0, count: 1, accesses: 1, log: true });
        // Same page (other offset), same ELR: the same incident.
        let mut again = violation(0x7e000, 0x1000);
        again.ipa = Some(0x7e00_0ff0);
        again.cpu = 1;
        let logged: Vec<bool> = (2..=40).map(|_| ring.record(again).log).collect();
        // Repeats 2, 4, 8, 16, 32 are logged.
        let logged_counts: Vec<u64> =
            (2..=40u64).zip(&logged).filter(|(_, l)| **l).map(|(n, _)| n).collect();
        assert_eq!(logged_counts, [2, 4, 8, 16, 32]);
        let info = ring.get(0).unwrap();
        assert_eq!(info.count, 40);
        // The record keeps the first access's details.
        assert_eq!((info.ipa, info.cpu), (Some(0x7e00_0008), 0));
        // Other page or other ELR: new incidents.
        assert_eq!(ring.record(violation(0x7e001, 0x1000)).seq, 1);
        assert_eq!(ring.record(violation(0x7e000, 0x1004)).seq, 2);
        assert_eq!(ring.counts(), ViolationCount { incidents: 3, oldest: 0, accesses: 42 });
        assert_eq!(ring.get(3), None);
    }

    #[test]
    fn unknown_ipa_incidents_group_by_elr() {
        let ring = ViolationRing::new();
        let mut v = violation(1, 0x2000);
        v.ipa = None;
        v.va = None;
        assert_eq!(ring.record(v).seq, 0);
        assert_eq!(ring.record(v).count, 2);
        assert_eq!(ring.record(violation(1, 0x2000)).seq, 1);
        let info = ring.get(0).unwrap();
        assert_eq!((info.ipa, info.va, info.count), (None, None, 2));
    }

    #[test]
    fn wraps_dropping_the_oldest() {
        let ring = ViolationRing::new();
        let total = RING_SIZE as u64 * 2 + 5;
        for n in 0..total {
            assert_eq!(ring.record(violation(n, 0x1000)).seq, n);
        }
        let counts = ring.counts();
        assert_eq!(counts.incidents, total);
        assert_eq!(counts.oldest, total - RING_SIZE as u64);
        assert_eq!(counts.accesses, total);
        assert_eq!(ring.get(counts.oldest - 1), None);
        for seq in counts.oldest..total {
            assert_eq!(ring.get(seq).unwrap().ipa, Some((seq << 12) | 8), "seq {seq}");
        }
        assert_eq!(ring.get(total), None);
        assert_eq!(ring.get(u64::MAX), None);
        // A dropped incident that recurs is a new incident.
        assert_eq!(ring.record(violation(0, 0x1000)).seq, total);
    }

    #[test]
    fn new_incidents_are_rate_limited() {
        let ring = ViolationRing::new();
        let logged: Vec<u64> =
            (0..300).filter(|&n| ring.record(violation(n, 0)).log).map(|n| n + 1).collect();
        assert_eq!(logged[..16], (1..=16).collect::<Vec<_>>()[..]);
        assert_eq!(logged[16..], [32, 64, 128, 256]);
    }

    #[test]
    fn from_abort_decodes_the_syndrome() {
        // `str x1, [x0]`, stage-2 translation fault L3, ISV set, 8 bytes.
        let report =
            AbortReport { esr: Esr(0x93c1_8047), far: 0xffff_0000_7000_0008, hpfar: 0x70000 << 4 };
        let v = violation_from_abort(&report, 0x1234, Owner::Warden, 1);
        assert_eq!(v.ipa, Some(0x7000_0008));
        assert_eq!(v.va, Some(0xffff_0000_7000_0008));
        assert_eq!(v.access, Access { size: Some(8), write: true, fetch: false });
        assert_eq!((v.owner, v.cpu, v.elr), (Owner::Warden, 1, 0x1234));
        // Instruction abort, translation fault L3.
        let report = AbortReport { esr: Esr(0x8200_0007), ..report };
        let v = violation_from_abort(&report, 0, Owner::Unknown, 0);
        assert_eq!(v.access, Access { size: None, write: false, fetch: true });
        // Data abort with FnV (bit 10): no VA, no IPA.
        let report = AbortReport { esr: Esr(0x9200_0407), ..report };
        let v = violation_from_abort(&report, 0, Owner::Unknown, 0);
        assert_eq!((v.va, v.ipa, v.access.size), (None, None, None));
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let ring = Arc::new(ViolationRing::new());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for n in 0..500u64 {
                        ring.record(violation(t * 8 + n % 8, 0x1000));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let counts = ring.counts();
        assert_eq!(counts, ViolationCount { incidents: 32, oldest: 0, accesses: 2000 });
        let total: u64 = (0..32).map(|seq| ring.get(seq).unwrap().count).sum();
        assert_eq!(total, 2000);
    }
}
