//! The fd table and the per-thread update lists.
//!
//! Every fd the proxy uses has an entry, kept by fd number (the kernel
//! reuses numbers lowest-free-first, so an entry outlives one use of its
//! number). Per fd:
//!
//! * `thread_mask`: the threads that own it (one, except the listener);
//! * `running_mask`: the threads working on it right now (an event report,
//!   a poller applying an update, a takeover); deletion must not pull the
//!   entry from under them;
//! * `update_mask`: the threads whose poller has an update to apply for it.
//!   A thread queues the fd on its update list only when it sets its bit,
//!   so a bit that is never consumed stops every later update of that fd
//!   on that thread;
//! * `state`: per direction, *active* (someone wants the I/O) and *ready*
//!   (no EAGAIN since the last report: try the syscall speculatively);
//! * `ev`: what the last poll reported (`IN`, `OUT`, `ERR`, `HUP`);
//! * which threads' pollers have it registered, and for what.
//!
//! "Threads" are tasks of one host; they interleave only where the code
//! awaits, and the race points in [`update_events`] and [`delete`] are
//! where a racing thread may slip in.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use faultline_harness::{Events, Fd, race_point};
use tokio::sync::Notify;

use crate::bugs::{Bugs, HAP_FDRACE};

/// One bit per proxy thread.
pub type ThreadMask = u64;

/// Most threads a proxy runs.
pub const MAX_THREADS: usize = 8;

/// The bit of thread `tid`.
pub fn bit(tid: usize) -> ThreadMask {
    assert!(tid < MAX_THREADS, "thread {tid} beyond {MAX_THREADS}");
    1 << tid
}

/// What handles an fd's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Listener,
    Conn(u64),
}

/// Direction state bits.
pub const ACTIVE_R: u8 = 0x01;
pub const READY_R: u8 = 0x02;
pub const ACTIVE_W: u8 = 0x10;
pub const READY_W: u8 = 0x20;

#[derive(Clone, Debug, Default)]
pub struct FdEntry {
    /// `None` once deleted: grabbing it fails from then on.
    pub owner: Option<Owner>,
    /// The incarnation: pollers carry it in their registrations, so a
    /// report about an earlier use of the number is recognised.
    pub generation: u64,
    pub thread_mask: ThreadMask,
    pub running_mask: ThreadMask,
    pub update_mask: ThreadMask,
    pub state: u8,
    pub ev: Events,
    /// Threads whose poller has the fd registered, and with what interest.
    pub registered: BTreeMap<usize, Events>,
}

/// What an event report decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// This thread owns the fd: run its handler, then [`FdTable::release`].
    Handle,
    /// The fd belongs to another thread now: an update was programmed so
    /// that this thread's poller forgets it.
    NotOurs,
    /// The fd was closed (or reused) meanwhile.
    Closed,
}

/// The table (see the module docs).
pub struct FdTable {
    entries: BTreeMap<Fd, FdEntry>,
    /// Per thread: fds whose polling this thread must update.
    updates: Vec<Vec<Fd>>,
    next_generation: u64,
    /// Woken whenever a thread stops working on an fd.
    left: Rc<Notify>,
    bugs: Bugs,
}

impl FdTable {
    pub fn new(threads: usize, bugs: Bugs) -> FdTable {
        assert!(
            (1..=MAX_THREADS).contains(&threads),
            "1..={MAX_THREADS} threads"
        );
        FdTable {
            entries: BTreeMap::new(),
            updates: vec![Vec::new(); threads],
            next_generation: 1,
            left: Rc::new(Notify::new()),
            bugs,
        }
    }

    pub fn threads(&self) -> usize {
        self.updates.len()
    }

    pub fn get(&self, fd: Fd) -> Option<&FdEntry> {
        self.entries.get(&fd)
    }

    fn entry(&mut self, fd: Fd) -> &mut FdEntry {
        self.entries
            .get_mut(&fd)
            .unwrap_or_else(|| panic!("fd {fd} is in the table"))
    }

    /// Whether `fd` is in use (inserted and not deleted).
    pub fn is_open(&self, fd: Fd) -> bool {
        self.entries.get(&fd).is_some_and(|e| e.owner.is_some())
    }

    /// Registers a new fd for `owner` on the threads of `thread_mask`.
    /// Both directions start ready: the first I/O is tried at once, before
    /// any poll. The update mask is left as it is (see the module docs).
    pub fn insert(&mut self, fd: Fd, owner: Owner, thread_mask: ThreadMask) -> u64 {
        assert!(thread_mask != 0, "an fd has an owning thread");
        let generation = self.next_generation;
        self.next_generation += 1;
        let entry = self.entries.entry(fd).or_default();
        assert!(entry.owner.is_none(), "fd {fd} inserted twice");
        entry.owner = Some(owner);
        entry.generation = generation;
        entry.thread_mask = thread_mask;
        entry.state = READY_R | READY_W;
        entry.ev = Events::NONE;
        generation
    }

    /// Starts working on `fd` from thread `tid` (fails once it is deleted).
    pub fn grab(&mut self, fd: Fd, tid: usize) -> bool {
        match self.entries.get_mut(&fd) {
            Some(e) if e.owner.is_some() => {
                e.running_mask |= bit(tid);
                true
            }
            _ => false,
        }
    }

    /// Stops working on `fd` from thread `tid`.
    pub fn release(&mut self, fd: Fd, tid: usize) {
        if let Some(e) = self.entries.get_mut(&fd) {
            e.running_mask &= !bit(tid);
        }
        self.left.notify_waiters();
    }

    /// Programs a polling update of `fd` for the threads that own it.
    pub fn updt_fd_polling(&mut self, fd: Fd, tid: usize) {
        let me = bit(tid);
        let entry = self.entry(fd);
        if entry.thread_mask == me {
            if entry.update_mask & me != 0 {
                // Already queued on our list (or so the bit says).
                if !self.updates[tid].contains(&fd) {
                    faultline_harness::probe("proxy:update-bit-set-but-not-queued");
                }
                return;
            }
            entry.update_mask |= me;
            self.updates[tid].push(fd);
            return;
        }
        let owners = entry.thread_mask;
        let missing = owners & !entry.update_mask;
        entry.update_mask |= missing;
        for t in 0..self.updates.len() {
            if missing & bit(t) != 0 {
                self.updates[t].push(fd);
            }
        }
    }

    fn set_state(&mut self, fd: Fd, tid: usize, set: u8, clear: u8) {
        let entry = self.entry(fd);
        let before = entry.state & (ACTIVE_R | ACTIVE_W);
        entry.state = (entry.state | set) & !clear;
        if entry.state & (ACTIVE_R | ACTIVE_W) != before {
            self.updt_fd_polling(fd, tid);
        }
    }

    pub fn want_recv(&mut self, fd: Fd, tid: usize) {
        self.set_state(fd, tid, ACTIVE_R, 0);
    }
    pub fn stop_recv(&mut self, fd: Fd, tid: usize) {
        self.set_state(fd, tid, 0, ACTIVE_R);
    }
    pub fn want_send(&mut self, fd: Fd, tid: usize) {
        self.set_state(fd, tid, ACTIVE_W, 0);
    }
    pub fn stop_send(&mut self, fd: Fd, tid: usize) {
        self.set_state(fd, tid, 0, ACTIVE_W);
    }
    pub fn stop_both(&mut self, fd: Fd, tid: usize) {
        self.set_state(fd, tid, 0, ACTIVE_R | ACTIVE_W);
    }
    /// A receive met EAGAIN: wait for the poller.
    pub fn cant_recv(&mut self, fd: Fd) {
        self.entry(fd).state &= !READY_R;
    }
    /// A short receive: the next one would very likely meet EAGAIN, so do
    /// not try it before the poller reports again.
    pub fn done_recv(&mut self, fd: Fd) {
        self.entry(fd).state &= !READY_R;
    }
    /// A send met EAGAIN (or could not start yet): wait for the poller.
    pub fn cant_send(&mut self, fd: Fd) {
        self.entry(fd).state &= !READY_W;
    }

    pub fn recv_ready(&self, fd: Fd) -> bool {
        self.entries
            .get(&fd)
            .is_some_and(|e| e.state & READY_R != 0)
    }

    pub fn send_ready(&self, fd: Fd) -> bool {
        self.entries
            .get(&fd)
            .is_some_and(|e| e.state & READY_W != 0)
    }

    /// What the last poll reported for `fd`.
    pub fn ev(&self, fd: Fd) -> Events {
        self.entries.get(&fd).map(|e| e.ev).unwrap_or_default()
    }

    /// Takes thread `tid`'s update list.
    pub fn take_updates(&mut self, tid: usize) -> Vec<Fd> {
        std::mem::take(&mut self.updates[tid])
    }

    /// Consumes thread `tid`'s update bit of `fd` (the poller, holding it)
    /// and answers the interest its poller must now have: `None` when the
    /// fd is not this thread's any more.
    pub fn consume_update(&mut self, fd: Fd, tid: usize) -> Option<Events> {
        let entry = self.entry(fd);
        entry.update_mask &= !bit(tid);
        if entry.thread_mask & bit(tid) == 0 {
            return None;
        }
        let mut interest = Events::NONE;
        if entry.state & ACTIVE_R != 0 {
            interest |= Events::IN | Events::RDHUP;
        }
        if entry.state & ACTIVE_W != 0 {
            interest |= Events::OUT;
        }
        Some(interest)
    }

    pub fn set_registered(&mut self, fd: Fd, tid: usize, interest: Option<Events>) {
        let entry = self.entry(fd);
        match interest {
            Some(i) => {
                entry.registered.insert(tid, i);
            }
            None => {
                entry.registered.remove(&tid);
            }
        }
    }

    /// Gives an idle fd owned by another thread to thread `tid`, if it
    /// still belongs to `expected` and nobody is working on it. Its polling
    /// is stopped: the new owner subscribes again. The old owner's poller
    /// still has it registered until a late report tells it otherwise.
    pub fn takeover(&mut self, fd: Fd, tid: usize, expected: Owner) -> bool {
        let Some(entry) = self.entries.get_mut(&fd) else {
            return false;
        };
        if entry.owner != Some(expected) || entry.running_mask != 0 {
            return false;
        }
        entry.running_mask = bit(tid);
        entry.thread_mask = bit(tid);
        self.stop_both(fd, tid);
        self.release(fd, tid);
        true
    }

    /// Update masks, for tests and traces.
    pub fn masks(&self, fd: Fd) -> Option<(ThreadMask, ThreadMask, ThreadMask)> {
        self.entries
            .get(&fd)
            .map(|e| (e.thread_mask, e.running_mask, e.update_mask))
    }

    /// Whether `fd` is queued on thread `tid`'s update list.
    pub fn is_queued(&self, fd: Fd, tid: usize) -> bool {
        self.updates[tid].contains(&fd)
    }
}

/// A poller's report for `fd` on thread `tid` (`generation` is the one its
/// registration carries). On [`Report::Handle`] the thread holds the fd
/// (running) until it calls [`FdTable::release`].
pub async fn update_events(
    table: &RefCell<FdTable>,
    fd: Fd,
    tid: usize,
    events: Events,
    generation: u64,
) -> Report {
    let ours = {
        let mut t = table.borrow_mut();
        if t.get(fd).is_none_or(|e| e.generation != generation) || !t.grab(fd, tid) {
            return Report::Closed;
        }
        t.entry(fd).thread_mask & bit(tid) != 0
    };
    if !ours {
        // A late report from a poller that still has the fd registered
        // after it moved to another thread: program an update so that this
        // poller stops polling it.
        faultline_harness::probe("proxy:late-report");
        race_point("proxy.fd-late-update").await;
        let mut t = table.borrow_mut();
        t.program_own_update(fd, tid);
        t.release(fd, tid);
        return Report::NotOurs;
    }
    let mut t = table.borrow_mut();
    let entry = t.entry(fd);
    // RDHUP (peer's FIN) counts as a hangup of the read side.
    let mut ev = events & (Events::IN | Events::OUT | Events::ERR | Events::HUP);
    if events.contains(Events::RDHUP) {
        ev |= Events::HUP;
    }
    entry.ev = ev;
    if ev.intersects(Events::IN | Events::HUP | Events::ERR) {
        entry.state |= READY_R;
    }
    if ev.intersects(Events::OUT | Events::ERR) {
        entry.state |= READY_W;
    }
    Report::Handle
}

/// Deletes `fd` from thread `tid` and closes it with `close`.
pub async fn delete(table: &RefCell<FdTable>, fd: Fd, tid: usize, close: impl FnOnce(Fd)) {
    let (fixed, left) = {
        let t = table.borrow();
        (!t.bugs.is_buggy(HAP_FDRACE), t.left.clone())
    };
    if fixed {
        // Nobody may start working on it from now on; wait for those who
        // already are (a late event report, a poller applying an update)
        // to leave before its masks are cleared.
        table.borrow_mut().entry(fd).owner = None;
        loop {
            let notified = left.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let others = table.borrow().entry_masks(fd).1 & !bit(tid);
            if others == 0 {
                break;
            }
            faultline_harness::probe("proxy:delete-waits");
            notified.await;
        }
    }
    {
        let mut t = table.borrow_mut();
        // No update of this fd is relevant any more.
        t.entry(fd).update_mask = 0;
        if t.updates[tid].last() == Some(&fd) {
            t.updates[tid].pop();
        }
    }
    race_point("proxy.fd-delete").await;
    let mut t = table.borrow_mut();
    let entry = t.entry(fd);
    if !fixed {
        // HAP-FDRACE: the owner is reset only now, after the update mask
        // was cleared, without waiting for threads still working on the
        // fd: a late report may have set its update bit in between.
        entry.owner = None;
    }
    entry.thread_mask = 0;
    entry.state = 0;
    entry.ev = Events::NONE;
    // close() takes the fd out of every poller.
    entry.registered.clear();
    drop(t);
    close(fd);
}

impl FdTable {
    fn entry_masks(&self, fd: Fd) -> (ThreadMask, ThreadMask, ThreadMask) {
        self.masks(fd).unwrap_or((0, 0, 0))
    }

    /// Queues `fd` on thread `tid`'s own update list unless its bit says
    /// it already is.
    fn program_own_update(&mut self, fd: Fd, tid: usize) {
        let me = bit(tid);
        let entry = self.entry(fd);
        if entry.update_mask & me == 0 {
            entry.update_mask |= me;
            self.updates[tid].push(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(bugs: Bugs) -> RefCell<FdTable> {
        RefCell::new(FdTable::new(3, bugs))
    }

    #[test]
    fn an_update_is_queued_once_per_thread_until_its_bit_is_consumed() {
        let t = table(Bugs::fixed());
        let mut t = t.borrow_mut();
        t.insert(7, Owner::Conn(1), bit(1));
        t.want_recv(7, 1);
        t.want_send(7, 1);
        assert_eq!(t.masks(7), Some((bit(1), 0, bit(1))));
        assert_eq!(t.take_updates(1), vec![7], "queued once for two changes");
        assert_eq!(
            t.consume_update(7, 1),
            Some(Events::IN | Events::RDHUP | Events::OUT)
        );
        assert_eq!(t.masks(7), Some((bit(1), 0, 0)));
        t.stop_send(7, 1);
        assert_eq!(t.take_updates(1), vec![7], "a new change queues again");
    }

    #[test]
    fn a_stale_update_bit_keeps_a_reused_fd_from_being_queued() {
        let t = table(Bugs::fixed());
        let mut t = t.borrow_mut();
        t.insert(5, Owner::Conn(1), bit(0));
        // A bit set and never consumed...
        t.entry(5).update_mask |= bit(0);
        t.entry(5).owner = None;
        // ...survives the reuse of the number on the same thread.
        t.insert(5, Owner::Conn(2), bit(0));
        t.want_recv(5, 0);
        assert!(!t.is_queued(5, 0), "the stale bit stops the update");
    }

    #[test]
    fn a_takeover_moves_the_fd_and_stops_its_polling() {
        let t = table(Bugs::fixed());
        let mut t = t.borrow_mut();
        t.insert(9, Owner::Conn(4), bit(0));
        t.want_recv(9, 0);
        let _ = t.take_updates(0);
        t.consume_update(9, 0);
        assert!(!t.takeover(9, 2, Owner::Conn(5)), "not the expected owner");
        assert!(t.grab(9, 0));
        assert!(!t.takeover(9, 2, Owner::Conn(4)), "thread 0 works on it");
        t.release(9, 0);
        assert!(t.takeover(9, 2, Owner::Conn(4)));
        assert_eq!(t.masks(9), Some((bit(2), 0, bit(2))));
        assert_eq!(t.take_updates(2), vec![9]);
        assert_eq!(t.consume_update(9, 2), Some(Events::NONE));
        assert_eq!(t.consume_update(9, 0), None, "thread 0 must forget it");
    }

    /// Runs a late report on thread 0 that stops at its race point while
    /// thread 1 deletes the fd, as the two tasks of one host interleave.
    fn late_report_racing_a_delete(bugs: Bugs) -> (ThreadMask, bool) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let table = Rc::new(table(bugs));
            {
                let mut t = table.borrow_mut();
                t.insert(6, Owner::Conn(1), bit(0));
                // Moved to thread 1; thread 0's poller still has it.
                assert!(t.takeover(6, 1, Owner::Conn(1)));
                let _ = t.take_updates(1);
            }
            // Thread 0 grabs the fd for a late report, then pauses.
            assert!(table.borrow_mut().grab(6, 0));
            assert_eq!(table.borrow().entry_masks(6).0, bit(1));
            let late = {
                let table = table.clone();
                tokio::task::spawn_local(async move {
                    tokio::task::yield_now().await;
                    // The report goes on where it paused: sets its bit.
                    let mut t = table.borrow_mut();
                    t.program_own_update(6, 0);
                    t.release(6, 0);
                })
            };
            delete(&table, 6, 1, |_| {}).await;
            late.await.unwrap();
            // Thread 0's poller then looks at its list: the fd is gone.
            let mut t = table.borrow_mut();
            for fd in t.take_updates(0) {
                if t.grab(fd, 0) {
                    t.consume_update(fd, 0);
                    t.release(fd, 0);
                }
            }
            let stale = t.entry_masks(6).2;
            // The number is reused on thread 0.
            t.insert(6, Owner::Conn(2), bit(0));
            t.want_recv(6, 0);
            (stale, t.is_queued(6, 0))
        })
    }

    #[test]
    fn deleting_waits_for_a_late_report_so_no_stale_update_bit_survives() {
        let (stale, queued) = late_report_racing_a_delete(Bugs::fixed());
        assert_eq!(stale, 0);
        assert!(queued, "the reused fd is polled");
    }

    #[test]
    fn without_the_fix_a_late_report_leaves_a_stale_bit_and_the_reused_fd_is_never_polled() {
        let (stale, queued) = late_report_racing_a_delete(Bugs::with(HAP_FDRACE));
        assert_eq!(stale, bit(0));
        assert!(!queued);
    }
}
