use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use super::*;
use crate::arch::fake::Recorder;
use crate::mm::TableLayout;
use crate::mm::frame::test_support::HeapFrames;
use warden_abi::handoff::PA_LIMIT;

const MODEM: PeerId = PeerId::MODEM;
const DSP: PeerId = PeerId::DSP;

/// What the fake peer program does once its CPU is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Answers (status, result) and powers its CPU off (`PEER_DONE`).
    Answer(u64, u64),
    /// Never answers and never traps, until its windows are revoked: then its next fetch traps
    /// into warden, which powers the CPU off if the runner asks.
    Hang,
    /// Never answers and its CPU does not go off (stuck where warden cannot reach it) until the
    /// test lets go.
    HangForever,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Post(usize, u64),
    PowerOn(usize),
    Revoke(usize),
    Restore(usize),
}

/// A peer CPU and its mailboxes, advanced one step per poll of [`PeerCpu::wait`].
struct FakePeer<'a> {
    runner: &'a CommandRunner,
    behaviour: Cell<Behaviour>,
    on: Cell<bool>,
    revoked: Cell<bool>,
    /// `HangForever` lets go (the CPU finally powers off).
    let_go: Cell<bool>,
    power_on_error: Cell<Option<i64>>,
    mail: RefCell<[Mailbox; 2]>,
    events: RefCell<Vec<Event>>,
}

impl<'a> FakePeer<'a> {
    fn new(runner: &'a CommandRunner, behaviour: Behaviour) -> Self {
        Self {
            runner,
            behaviour: Cell::new(behaviour),
            on: Cell::new(false),
            revoked: Cell::new(false),
            let_go: Cell::new(false),
            power_on_error: Cell::new(None),
            mail: RefCell::new([Mailbox::default(); 2]),
            events: RefCell::new(Vec::new()),
        }
    }

    fn take_events(&self) -> Vec<Event> {
        core::mem::take(&mut *self.events.borrow_mut())
    }

    /// One step of the peer CPU.
    fn step(&self) {
        if !self.on.get() {
            return;
        }
        let identity = self.runner.current();
        match self.behaviour.get() {
            Behaviour::Answer(status, result) => {
                let mut mail = self.mail.borrow_mut();
                let m = &mut mail[identity];
                m.status = status;
                m.result = result;
                m.done_seq = m.seq;
                self.on.set(false);
            }
            Behaviour::Hang => {
                // Revoked: the next fetch traps; warden powers the CPU off if asked to.
                if self.revoked.get() && self.runner.stop_requested() {
                    self.on.set(false);
                }
            }
            Behaviour::HangForever => {
                if self.let_go.get() {
                    self.on.set(false);
                }
            }
        }
    }
}

impl PeerCpu for FakePeer<'_> {
    fn is_off(&self) -> bool {
        !self.on.get()
    }
    fn post(&self, identity: usize, mail: &Mailbox) {
        self.events.borrow_mut().push(Event::Post(identity, mail.seq));
        self.mail.borrow_mut()[identity] = *mail;
    }
    fn mailbox(&self, identity: usize) -> Mailbox {
        self.mail.borrow()[identity]
    }
    fn power_on(&self, identity: usize) -> Result<(), i64> {
        self.events.borrow_mut().push(Event::PowerOn(identity));
        assert!(!self.on.get(), "CPU_ON of a CPU that is on");
        assert!(!self.revoked.get(), "the peer runs without its windows");
        if let Some(e) = self.power_on_error.get() {
            return Err(e);
        }
        self.on.set(true);
        Ok(())
    }
    fn revoke(&self, identity: usize) -> Result<(), MapError> {
        self.events.borrow_mut().push(Event::Revoke(identity));
        assert!(self.runner.stop_requested(), "windows revoked before the stop flag is up");
        self.revoked.set(true);
        Ok(())
    }
    fn restore(&self, identity: usize) -> Result<(), MapError> {
        self.events.borrow_mut().push(Event::Restore(identity));
        assert!(!self.on.get(), "windows restored while the stopped CPU is still on");
        self.revoked.set(false);
        Ok(())
    }
    fn wait(&self, _ms: u64, done: &mut dyn FnMut() -> bool) -> bool {
        for _ in 0..8 {
            if done() {
                return true;
            }
            self.step();
        }
        done()
    }
}

const CHECKSUM: Op = Op::Checksum { base: 0x7c00_0000, size: 0x1000 };

#[test]
fn a_command_posts_powers_on_and_returns_the_answer() {
    let runner = CommandRunner::new();
    let cpu = FakePeer::new(&runner, Behaviour::Answer(abi::STATUS_OK, 0xfeed));
    assert_eq!(runner.run(&cpu, 1, DSP, CHECKSUM), Ok(0xfeed));
    assert_eq!(cpu.take_events(), [Event::Post(1, 1), Event::PowerOn(1)]);
    assert_eq!(cpu.mailbox(1).command, CHECKSUM.encode());
    assert_eq!(cpu.mailbox(1).peer, u64::from(DSP.get()));
    assert_eq!(runner.current(), 1);
    assert_eq!(runner.run(&cpu, 0, MODEM, Op::Spin), Ok(0xfeed));
    assert_eq!(cpu.take_events(), [Event::Post(0, 2), Event::PowerOn(0)]);
    assert_eq!(runner.stopped(), 0);
}

#[test]
fn a_peer_that_never_answers_is_stopped_and_later_commands_work() {
    let runner = CommandRunner::new();
    let cpu = FakePeer::new(&runner, Behaviour::Hang);
    assert_eq!(runner.run(&cpu, 0, MODEM, Op::Spin), Err(AbiError::Aborted));
    // Stop flag up, windows revoked, the CPU traps and goes off, windows back, flag down.
    assert_eq!(
        cpu.take_events(),
        [Event::Post(0, 1), Event::PowerOn(0), Event::Revoke(0), Event::Restore(0)]
    );
    assert!(cpu.is_off() && !runner.stop_requested());
    assert_eq!(runner.stopped(), 1);
    cpu.behaviour.set(Behaviour::Answer(abi::STATUS_OK, 7));
    assert_eq!(runner.run(&cpu, 1, DSP, CHECKSUM), Ok(7));
    assert_eq!(cpu.take_events(), [Event::Post(1, 2), Event::PowerOn(1)]);
}

#[test]
fn a_peer_cpu_that_does_not_go_off_holds_commands_back_until_it_does() {
    let runner = CommandRunner::new();
    let cpu = FakePeer::new(&runner, Behaviour::HangForever);
    assert_eq!(runner.run(&cpu, 0, MODEM, Op::Spin), Err(AbiError::Aborted));
    assert_eq!(cpu.take_events(), [Event::Post(0, 1), Event::PowerOn(0), Event::Revoke(0)]);
    assert!(runner.stop_requested(), "the CPU must still power off at its next trap");
    // Still on: nothing runs, the windows stay revoked.
    assert_eq!(runner.run(&cpu, 1, DSP, CHECKSUM), Err(AbiError::Retry));
    assert!(cpu.take_events().is_empty());
    // Once it is off, the next command restores the stopped peer's windows and runs.
    cpu.let_go.set(true);
    cpu.behaviour.set(Behaviour::Answer(abi::STATUS_OK, 9));
    assert_eq!(runner.run(&cpu, 1, DSP, CHECKSUM), Ok(9));
    assert_eq!(cpu.take_events(), [Event::Restore(0), Event::Post(1, 2), Event::PowerOn(1)]);
    assert!(!runner.stop_requested());
}

#[test]
fn faults_are_peer_fault_only_when_warden_injected_them() {
    let runner = CommandRunner::new();
    // Data abort from EL1, FSC 0x10: what warden injects after recording a violation.
    let cpu = FakePeer::new(&runner, Behaviour::Answer(abi::STATUS_FAULT, 0x9600_0010));
    assert_eq!(runner.run(&cpu, 0, MODEM, CHECKSUM), Err(AbiError::PeerFault));
    // Address size fault level 0 in the peer's own stage 1: warden saw nothing.
    cpu.behaviour.set(Behaviour::Answer(abi::STATUS_FAULT, 0x9600_0000));
    assert_eq!(runner.run(&cpu, 0, MODEM, CHECKSUM), Err(AbiError::Aborted));
    // An UNDEFINED (a trapped WFI answered by warden) is not a stage-2 fault either.
    cpu.behaviour.set(Behaviour::Answer(abi::STATUS_FAULT, 0x0200_0000));
    assert_eq!(runner.run(&cpu, 0, MODEM, CHECKSUM), Err(AbiError::Aborted));
    cpu.behaviour.set(Behaviour::Answer(abi::STATUS_BAD_COMMAND, 0));
    assert_eq!(runner.run(&cpu, 0, MODEM, CHECKSUM), Err(AbiError::InvalidParameters));
    cpu.behaviour.set(Behaviour::Answer(77, 0));
    assert_eq!(runner.run(&cpu, 0, MODEM, CHECKSUM), Err(AbiError::Aborted));
    cpu.power_on_error.set(Some(-2));
    assert_eq!(runner.run(&cpu, 0, MODEM, CHECKSUM), Err(AbiError::Aborted));
    assert!(is_injected_abort(0x8600_0010) && is_injected_abort(0x9200_0010));
    assert!(!is_injected_abort(0x9600_0011) && !is_injected_abort(0x5e00_0010));
}

fn tracker() -> OwnershipTracker {
    let mut t = OwnershipTracker::new();
    t.add(MemRange::new(0x4000_0000, 0x8000_0000), PageState::Host).unwrap();
    t
}

fn set(t: &mut OwnershipTracker, base: u64, pages: u64, to: PageState) {
    let r = MemRange::from_base_size(base, pages * PAGE_SIZE).unwrap();
    t.transition(r, PageState::Host, to).unwrap();
}

#[test]
fn commands_touch_only_what_the_peer_holds() {
    let mut t = tracker();
    set(&mut t, 0x7c00_0000, 4, PageState::Donated { peer: MODEM, released: false });
    set(&mut t, 0x7c01_0000, 1, PageState::Donated { peer: MODEM, released: true });
    set(&mut t, 0x7d00_0000, 2, PageState::Lent { peer: DSP, released: false });
    let sum = |base, size| Op::Checksum { base, size };
    let fill = |base, size| Op::Fill { base, size, pattern: 0x5a };
    let ok = Ok(());
    let denied = Err(AbiError::Denied);
    let cases = [
        (MODEM, sum(0x7c00_0000, 0x4000), ok),
        (MODEM, fill(0x7c00_1000, 0x1000), ok),
        (DSP, sum(0x7d00_0000, 0x2000), ok),
        (DSP, fill(0x7d00_0000, 0x1000), ok),
        // Another peer's, partly the peer's, released, the host's, untracked.
        (DSP, fill(0x7c00_0000, 0x1000), denied),
        (MODEM, sum(0x7c00_3000, 0x2000), denied),
        (MODEM, fill(0x7c01_0000, 0x1000), denied),
        (MODEM, fill(0x7c02_0000, 0x1000), denied),
        // The peer's own windows: its program, BSS and stack, mailbox (warden's memory).
        (MODEM, fill(abi::PROGRAM_IPA, 0x1000), denied),
        (MODEM, fill(abi::DATA_IPA, 0x1000), denied),
        (MODEM, fill(abi::MAILBOX_IPA, 0x1000), denied),
        (DSP, sum(abi::PROGRAM_IPA, abi::PROGRAM_SIZE), denied),
    ];
    for (peer, op, want) in cases {
        assert_eq!(check_command(&t, peer, &op, 48), want, "{peer} {op}");
    }
    // TOUCH reads anything the peer CPU can address (a stage-2 fault is contained and
    // recorded), never beyond its physical address size.
    for (addr, bits, want) in [
        (0x7c02_0000, 48, ok),
        (abi::PROGRAM_IPA, 40, ok),
        ((1 << 40) - 8, 40, ok),
        (1 << 40, 40, Err(AbiError::InvalidParameters)),
        (PA_LIMIT - 8, 52, ok),
        (PA_LIMIT, 52, Err(AbiError::InvalidParameters)),
    ] {
        assert_eq!(check_command(&t, MODEM, &Op::Touch { addr }, bits), want, "{addr:#x}");
    }
    let release = Op::Release { base: 0x7e00_0000, size: 0x1000, clear: true };
    assert_eq!(check_command(&t, MODEM, &release, 48), ok, "RELEASE is checked as a call");
    assert_eq!(check_command(&t, MODEM, &Op::Spin, 48), ok);
}

#[test]
fn the_program_is_read_only_and_the_rest_never_executable() {
    let mut frames = HeapFrames::new(32);
    let tlb = Recorder::new(64);
    let layout = TableLayout::new(32, 1, 1).unwrap();
    let mut table = PageTable::<Stage2>::new(layout, &mut frames).unwrap();
    let pages =
        PrivatePages { program_pa: 0x8000_0000, data_pa: 0x8100_0000, mailbox_pa: 0x8200_0000 };
    map_windows(&mut table, &pages, &mut frames, &tlb).unwrap();
    let span = windows_span();
    let mut seen = 0;
    table.for_each_mapping(|m| {
        seen += m.size;
        assert!(span.contains_range(&MemRange::new(m.va, m.va + m.size)), "{m:?}");
        let attrs = m.attrs;
        if (abi::PROGRAM_IPA..abi::PROGRAM_IPA + abi::PROGRAM_SIZE).contains(&m.va) {
            assert!(attrs.perms.read && attrs.perms.exec && !attrs.perms.write, "{m:?}");
            assert_eq!(m.pa - m.va, pages.program_pa - abi::PROGRAM_IPA);
        } else {
            assert!(attrs.perms.read && attrs.perms.write && !attrs.perms.exec, "{m:?}");
        }
    });
    assert_eq!(seen, abi::PROGRAM_SIZE + abi::DATA_SIZE + PAGE_SIZE);
    let at = |table: &PageTable<Stage2>, ipa| table.translate(ipa).map(|t| t.pa);
    assert_eq!(at(&table, abi::DATA_IPA + 0x10), Some(pages.data_pa + 0x10));
    assert_eq!(at(&table, abi::MAILBOX_IPA + 8), Some(pages.mailbox_pa + 8));
    assert_eq!(at(&table, abi::DATA_IPA + abi::DATA_SIZE), None, "a gap between data and mailbox");
    // Revoked: nothing of the peer's own is left, and each removal was invalidated.
    tlb.take();
    unmap_windows(&mut table, &mut frames, &tlb).unwrap();
    assert!(table.mappings().is_empty());
    let ops = tlb.take();
    assert!(ops.contains(&crate::arch::fake::HwOp::TlbiVmalle1is), "{ops:?}");
    // And back.
    map_windows(&mut table, &pages, &mut frames, &tlb).unwrap();
    assert_eq!(at(&table, abi::PROGRAM_IPA), Some(pages.program_pa));
}
