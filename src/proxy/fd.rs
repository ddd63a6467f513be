//! The fd table and the update lists, as HAProxy 2.7's `fd.c` keeps them.
//!
//! Every fd number the proxy uses has an entry that outlives each use of
//! the number (the kernel reuses numbers lowest-free-first). What threads
//! share in it is atomic, a harness [`Atomic`] each, so every operation on
//! it is a place where the seed may switch threads:
//!
//! * `refc_tgid` (`proxy.fdtab.refc_tgid`): the thread group in the low
//!   16 bits (1 while the fd is in use, 0 once deleted) and, above, how
//!   many threads hold a reference ("grabbed" it) to look at its masks;
//! * `thread_mask` (`proxy.fdtab.thread_mask`): the threads that own it
//!   (one, except the listener);
//! * `running_mask` (`proxy.fdtab.running_mask`): the threads working on
//!   it right now (an event handler, a takeover); the last one to leave an
//!   fd whose owners are gone deletes it;
//! * `update_mask` (`proxy.fdtab.update_mask`): the threads whose poller
//!   has an update to apply for it. A thread queues the fd on its own
//!   update list only when it sets its bit, so a bit that is never
//!   consumed stops every later update of that fd on that thread.
//!
//! Updates for other threads go through the shared update list
//! (`proxy.fdtab.update_list`, a lock here where HAProxy has a lock-free
//! list). Per direction, an fd is *active* (someone wants the I/O) and
//! *ready* (no EAGAIN since the last report); the owning thread keeps those
//! bits, like the last poll flags (`ev`) and which pollers registered it.
//!
//! HAP-FDRACE (HAProxy commit 237e6a0d6): deleting an fd cleared its update
//! mask and reset its tgid only after, without waiting for threads that
//! had grabbed it: a late event report that had grabbed the fd sets its
//! update bit in between, and nobody consumes that bit (its poller's grab
//! fails once the tgid is reset). The fix resets the tgid first, waits for
//! the references to drop, and only then clears the masks.
//!
//! Both variants carry the fix of the race that commit mentions in
//! passing (HAProxy commit cd8914bc5), which preemption at these atomics
//! found here too: a takeover could come and go between an event report's
//! check of the thread mask and its compare-and-swap of the running mask,
//! so both threads believed the fd was theirs, and the report's running
//! bit outlived the fd. Since that fix, a report takes its running bit
//! first and waits for a stable thread mask, and deletion is a one-shot
//! flag (`FD_MUST_CLOSE`) the last thread to leave claims.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use faultline_harness::sync::{Atomic, Mutex, spin_loop};
use faultline_harness::{Events, Fd};

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

/// The proxy's thread group (one group: every thread is in it).
const TGID: u32 = 1;

/// One reference in `refc_tgid`'s upper half.
const REFC_ONE: u32 = 0x1_0000;

/// In `flags`: the fd was deleted; whoever leaves it last closes it.
const FD_MUST_CLOSE_BIT: u32 = 23;
const FD_MUST_CLOSE: u32 = 1 << FD_MUST_CLOSE_BIT;

/// How the table closes an fd that left it (the proxy's `close()`): a
/// future, since the syscall is a preemption point. It runs last, after
/// every change the deletion made to the entry.
pub type Close<'a> = dyn Fn(Fd) -> Pin<Box<dyn Future<Output = ()> + 'a>> + 'a;

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

/// One fd number's entry (HAProxy's `fdtab[fd]`).
pub struct FdEntry {
    pub refc_tgid: Atomic<u32>,
    pub thread_mask: Atomic<ThreadMask>,
    pub running_mask: Atomic<ThreadMask>,
    pub update_mask: Atomic<ThreadMask>,
    /// Flags threads set for each other (`FD_MUST_CLOSE`), kept with the
    /// direction bits in HAProxy's `state`.
    flags: Atomic<u32>,
    /// `None` once deleted.
    owner: Cell<Option<Owner>>,
    /// The incarnation: pollers carry it in their registrations, so a
    /// report about an earlier use of the number is recognised.
    generation: Cell<u64>,
    state: Cell<u8>,
    ev: Cell<Events>,
    /// Threads whose poller has the fd registered, and with what interest
    /// (HAProxy's `polled_mask`).
    registered: RefCell<BTreeMap<usize, Events>>,
}

impl FdEntry {
    fn new() -> FdEntry {
        FdEntry {
            refc_tgid: Atomic::new("proxy.fdtab.refc_tgid", 0),
            thread_mask: Atomic::new("proxy.fdtab.thread_mask", 0),
            running_mask: Atomic::new("proxy.fdtab.running_mask", 0),
            update_mask: Atomic::new("proxy.fdtab.update_mask", 0),
            flags: Atomic::new("proxy.fdtab.state", 0),
            owner: Cell::new(None),
            generation: Cell::new(0),
            state: Cell::new(0),
            ev: Cell::new(Events::NONE),
            registered: RefCell::default(),
        }
    }

    pub fn owner(&self) -> Option<Owner> {
        self.owner.get()
    }

    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    pub fn state(&self) -> u8 {
        self.state.get()
    }

    /// The interest thread `tid`'s poller has it registered with.
    pub fn registered(&self, tid: usize) -> Option<Events> {
        self.registered.borrow().get(&tid).copied()
    }

    pub fn set_registered(&self, tid: usize, interest: Option<Events>) {
        let mut registered = self.registered.borrow_mut();
        match interest {
            Some(i) => registered.insert(tid, i),
            None => registered.remove(&tid),
        };
    }

    /// The masks (thread, running, update), for tests, assertions and
    /// traces: not a synchronization.
    pub fn masks(&self) -> (ThreadMask, ThreadMask, ThreadMask) {
        (
            self.thread_mask.unsync_load(),
            self.running_mask.unsync_load(),
            self.update_mask.unsync_load(),
        )
    }
}

/// What an event report decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// This thread owns the fd and runs on it: run its handler, then
    /// [`FdTable::done_events`].
    Handle,
    /// The fd belongs to another thread now: an update was programmed so
    /// that this thread's poller forgets it.
    Migrated,
    /// The fd was closed (or reused) meanwhile.
    Closed,
}

/// The table (see the module docs).
pub struct FdTable {
    entries: RefCell<BTreeMap<Fd, Rc<FdEntry>>>,
    /// Per thread: the fds its poller must update (HAProxy's thread-local
    /// `fd_updt`: only that thread touches it).
    updates: Vec<RefCell<Vec<Fd>>>,
    /// Fds with updates for threads other than the one that programmed
    /// them (HAProxy's `update_list`).
    update_list: Mutex<Vec<Fd>>,
    next_generation: Cell<u64>,
    bugs: Bugs,
}

impl FdTable {
    pub fn new(threads: usize, bugs: Bugs) -> FdTable {
        assert!(
            (1..=MAX_THREADS).contains(&threads),
            "1..={MAX_THREADS} threads"
        );
        FdTable {
            entries: RefCell::default(),
            updates: (0..threads).map(|_| RefCell::default()).collect(),
            update_list: Mutex::new("proxy.fdtab.update_list", Vec::new()),
            next_generation: Cell::new(1),
            bugs,
        }
    }

    pub fn threads(&self) -> usize {
        self.updates.len()
    }

    fn all_threads(&self) -> ThreadMask {
        (0..self.threads()).fold(0, |m, t| m | bit(t))
    }

    /// The entry of `fd` (made on first use, kept for later uses).
    pub fn entry(&self, fd: Fd) -> Rc<FdEntry> {
        self.entries
            .borrow_mut()
            .entry(fd)
            .or_insert_with(|| Rc::new(FdEntry::new()))
            .clone()
    }

    /// The entry of `fd`, if the number was ever used.
    pub fn get(&self, fd: Fd) -> Option<Rc<FdEntry>> {
        self.entries.borrow().get(&fd).cloned()
    }

    /// Whether `fd` is in use (inserted and not deleted).
    pub fn is_open(&self, fd: Fd) -> bool {
        self.get(fd).is_some_and(|e| e.owner().is_some())
    }

    // --- the tgid and its references (HAProxy's fd_*_tgid) ---

    /// Takes a reference if the fd is in use by our group.
    pub async fn grab_tgid(&self, e: &FdEntry) -> bool {
        let old = e.refc_tgid.fetch_add(REFC_ONE).await & 0xffff;
        if old == TGID {
            return true;
        }
        e.refc_tgid.fetch_sub(REFC_ONE).await;
        false
    }

    /// Takes a reference if the fd is in use by any group; answers it.
    async fn take_tgid(&self, e: &FdEntry) -> u32 {
        let old = e.refc_tgid.fetch_add(REFC_ONE).await & 0xffff;
        if old != 0 {
            return old;
        }
        e.refc_tgid.fetch_sub(REFC_ONE).await;
        0
    }

    pub async fn drop_tgid(&self, e: &FdEntry) {
        e.refc_tgid.fetch_sub(REFC_ONE).await;
    }

    /// Resets the tgid, keeping the references.
    async fn reset_tgid(&self, e: &FdEntry) {
        e.refc_tgid.fetch_and(0xffff_0000).await;
    }

    /// Waits until nobody holds a reference, then takes the fd for our
    /// group with one reference.
    async fn claim_tgid(&self, e: &FdEntry) {
        let desired = TGID + REFC_ONE;
        let mut old = desired;
        loop {
            old &= 0xffff;
            match e.refc_tgid.compare_exchange(old, desired).await {
                Ok(_) => return,
                Err(current) => old = current,
            }
            spin_loop().await;
        }
    }

    /// Registers a new fd for `owner` on the threads of `thread_mask`.
    /// Both directions start ready: the first I/O is tried at once, before
    /// any poll. The update mask is left as it is: it tells which pollers
    /// still know the fd from an earlier use.
    pub async fn insert(&self, fd: Fd, owner: Owner, thread_mask: ThreadMask) -> u64 {
        assert!(thread_mask != 0, "an fd has an owning thread");
        let e = self.entry(fd);
        assert!(e.owner().is_none(), "fd {fd} inserted twice");
        self.claim_tgid(&e).await;
        assert_eq!(
            e.running_mask.unsync_load(),
            0,
            "fd {fd}: nobody runs on a free fd"
        );
        let generation = self.next_generation.get();
        self.next_generation.set(generation + 1);
        e.owner.set(Some(owner));
        e.generation.set(generation);
        e.state.set(READY_R | READY_W);
        e.ev.set(Events::NONE);
        e.thread_mask.store(thread_mask).await;
        self.drop_tgid(&e).await;
        generation
    }

    // --- polling updates ---

    /// Programs a polling update of `fd` for the threads that own it
    /// (HAProxy's `updt_fd_polling`).
    pub async fn updt_fd_polling(&self, fd: Fd, tid: usize) {
        let e = self.entry(fd);
        if self.take_tgid(&e).await == 0 {
            return; // Closed meanwhile.
        }
        self.drop_tgid(&e).await;
        let me = bit(tid);
        let tmask = e.thread_mask.load().await;
        if self.threads() == 1 || tmask == me {
            if e.update_mask.bit_test_and_set(tid as u32).await {
                // Already queued on our list (or so the bit says).
                if !self.updates[tid].borrow().contains(&fd) {
                    faultline_harness::probe("proxy:update-bit-set-but-not-queued");
                }
                return;
            }
            self.updates[tid].borrow_mut().push(fd);
            return;
        }
        let mut update_mask = e.update_mask.load().await;
        loop {
            let tmask = e.thread_mask.load().await;
            if update_mask == tmask {
                return;
            }
            match e.update_mask.compare_exchange(update_mask, tmask).await {
                Ok(_) => break,
                Err(current) => update_mask = current,
            }
        }
        self.add_to_update_list(fd).await;
    }

    async fn add_to_update_list(&self, fd: Fd) {
        let mut list = self.update_list.lock().await;
        if !list.contains(&fd) {
            list.push(fd);
        }
    }

    async fn rm_from_update_list(&self, fd: Fd) {
        self.update_list.lock().await.retain(|f| *f != fd);
    }

    /// Thread `tid` applied the shared list's update of `fd`: its bit goes;
    /// the last thread takes the fd off the list (HAProxy's
    /// `done_update_polling`, which re-adds it when a new update came in
    /// meanwhile).
    pub async fn done_update_polling(&self, e: &FdEntry, fd: Fd, tid: usize) {
        let all = self.all_threads();
        let mut mask = e.update_mask.fetch_and(!bit(tid)).await & !bit(tid);
        while mask & all == 0 {
            self.rm_from_update_list(fd).await;
            mask = e.update_mask.load().await;
            if mask & all == 0 {
                break;
            }
            self.add_to_update_list(fd).await;
            mask = e.update_mask.load().await;
        }
    }

    /// Takes thread `tid`'s own update list.
    pub fn take_updates(&self, tid: usize) -> Vec<Fd> {
        std::mem::take(&mut *self.updates[tid].borrow_mut())
    }

    /// The fds on the shared update list now.
    pub async fn shared_updates(&self) -> Vec<Fd> {
        self.update_list.lock().await.clone()
    }

    /// Whether `fd` is queued on thread `tid`'s own update list.
    pub fn is_queued(&self, fd: Fd, tid: usize) -> bool {
        self.updates[tid].borrow().contains(&fd)
    }

    /// The interest thread `tid`'s poller must have for `fd` now: `None`
    /// when the fd is not this thread's any more.
    pub async fn interest(&self, e: &FdEntry, tid: usize) -> Option<Events> {
        if e.thread_mask.load().await & bit(tid) == 0 {
            return None;
        }
        let state = e.state.get();
        let mut interest = Events::NONE;
        if state & ACTIVE_R != 0 {
            interest |= Events::IN | Events::RDHUP;
        }
        if state & ACTIVE_W != 0 {
            interest |= Events::OUT;
        }
        Some(interest)
    }

    // --- the direction state ---

    async fn set_state(&self, fd: Fd, tid: usize, set: u8, clear: u8) {
        let e = self.entry(fd);
        let before = e.state.get();
        let after = (before | set) & !clear;
        e.state.set(after);
        if after & (ACTIVE_R | ACTIVE_W) != before & (ACTIVE_R | ACTIVE_W) {
            self.updt_fd_polling(fd, tid).await;
        }
    }

    pub async fn want_recv(&self, fd: Fd, tid: usize) {
        self.set_state(fd, tid, ACTIVE_R, 0).await;
    }
    pub async fn stop_recv(&self, fd: Fd, tid: usize) {
        self.set_state(fd, tid, 0, ACTIVE_R).await;
    }
    pub async fn want_send(&self, fd: Fd, tid: usize) {
        self.set_state(fd, tid, ACTIVE_W, 0).await;
    }
    pub async fn stop_send(&self, fd: Fd, tid: usize) {
        self.set_state(fd, tid, 0, ACTIVE_W).await;
    }
    pub async fn stop_both(&self, fd: Fd, tid: usize) {
        self.set_state(fd, tid, 0, ACTIVE_R | ACTIVE_W).await;
    }

    fn clear_state(&self, fd: Fd, bits: u8) {
        let e = self.entry(fd);
        e.state.set(e.state.get() & !bits);
    }

    /// A receive met EAGAIN: wait for the poller.
    pub fn cant_recv(&self, fd: Fd) {
        self.clear_state(fd, READY_R);
    }
    /// A short receive: the next one would very likely meet EAGAIN, so do
    /// not try it before the poller reports again.
    pub fn done_recv(&self, fd: Fd) {
        self.clear_state(fd, READY_R);
    }
    /// A send met EAGAIN (or could not start yet): wait for the poller.
    pub fn cant_send(&self, fd: Fd) {
        self.clear_state(fd, READY_W);
    }

    pub fn recv_ready(&self, fd: Fd) -> bool {
        self.get(fd).is_some_and(|e| e.state.get() & READY_R != 0)
    }

    pub fn send_ready(&self, fd: Fd) -> bool {
        self.get(fd).is_some_and(|e| e.state.get() & READY_W != 0)
    }

    /// What the last poll reported for `fd`.
    pub fn ev(&self, fd: Fd) -> Events {
        self.get(fd).map(|e| e.ev.get()).unwrap_or_default()
    }

    // --- takeover, event reports, deletion ---

    /// Gives an idle fd owned by another thread to thread `tid`, if it
    /// still belongs to `expected` and nobody works on it (HAProxy's
    /// `fd_takeover`). Its polling is stopped: the new owner subscribes
    /// again. The old owner's poller still has it registered until a late
    /// report tells it otherwise.
    pub async fn takeover(&self, fd: Fd, tid: usize, expected: Owner) -> bool {
        let Some(e) = self.get(fd) else {
            return false;
        };
        if e.owner() != Some(expected) {
            return false;
        }
        if !self.grab_tgid(&e).await {
            return false;
        }
        if e.running_mask.compare_exchange(0, bit(tid)).await.is_err() {
            self.drop_tgid(&e).await;
            return false;
        }
        e.thread_mask.store(bit(tid)).await;
        self.stop_both(fd, tid).await;
        e.running_mask.fetch_and(!bit(tid)).await;
        self.drop_tgid(&e).await;
        true
    }

    /// A poller's report for `fd` on thread `tid` (`generation` is the one
    /// its registration carries); HAProxy's `fd_update_events` up to the
    /// handler. On [`Report::Handle`] the thread runs on the fd until it
    /// calls [`FdTable::done_events`].
    pub async fn update_events(
        &self,
        fd: Fd,
        tid: usize,
        events: Events,
        generation: u64,
        close: &Close<'_>,
    ) -> Report {
        let e = self.entry(fd);
        if e.generation() != generation || !self.grab_tgid(&e).await {
            return Report::Closed;
        }
        let me = bit(tid);
        if e.thread_mask.load().await & me == 0 {
            return self.lost(&e, fd, tid).await;
        }
        // Running first, then a thread mask that shows every other running
        // thread: a takeover takes running before it replaces the mask.
        e.running_mask.fetch_or(me).await;
        let tmask = loop {
            let rmask = e.running_mask.load().await & !me;
            let tmask = e.thread_mask.load().await;
            if rmask & !tmask == 0 {
                break tmask;
            }
            spin_loop().await;
        };
        if tmask & me == 0 {
            // A takeover won: the fd is not ours.
            if e.running_mask.fetch_and(!me).await == me {
                return self.closed_or_migrated(&e, fd, tid, close).await;
            }
            return self.lost(&e, fd, tid).await;
        }
        // Running on it, the reference is not needed any more.
        self.drop_tgid(&e).await;
        // RDHUP (peer's FIN) counts as a hangup of the read side.
        let mut ev = events & (Events::IN | Events::OUT | Events::ERR | Events::HUP);
        if events.contains(Events::RDHUP) {
            ev |= Events::HUP;
        }
        e.ev.set(ev);
        let mut state = e.state.get();
        if ev.intersects(Events::IN | Events::HUP | Events::ERR) {
            state |= READY_R;
        }
        if ev.intersects(Events::OUT | Events::ERR) {
            state |= READY_W;
        }
        e.state.set(state);
        // A reported direction becomes a wanted one before the handler
        // runs, so that a handler with nothing to do need not poll again:
        // the "speculative" events of the pollers HAP-ERRHUP lived with
        // (1.5-dev's ev_epoll, which still did this for ERR and HUP until
        // HAProxy commit 26d7cfce3). The connection turns a direction off
        // only when its own wish for it changes, or when it fails.
        let mut wanted = 0;
        if ev.intersects(Events::IN | Events::HUP | Events::ERR) {
            wanted |= ACTIVE_R;
        }
        if ev.intersects(Events::OUT | Events::ERR) {
            wanted |= ACTIVE_W;
        }
        self.set_state(fd, tid, wanted, 0).await;
        Report::Handle
    }

    /// The handler of a [`Report::Handle`] is done: thread `tid` stops
    /// running on `fd`; if it was deleted or taken over meanwhile, this
    /// thread may be the one to close it (HAProxy's `fd_update_events`
    /// after the handler).
    pub async fn done_events(&self, fd: Fd, tid: usize, close: &Close<'_>) -> Report {
        let e = self.entry(fd);
        if !self.grab_tgid(&e).await {
            return Report::Closed;
        }
        let tmask = e.thread_mask.load().await;
        if e.running_mask.fetch_and(!bit(tid)).await == bit(tid) && tmask & bit(tid) == 0 {
            return self.closed_or_migrated(&e, fd, tid, close).await;
        }
        self.drop_tgid(&e).await;
        Report::Handle
    }

    /// Thread `tid` was the last to run on an fd that is not its own: it
    /// closes it if it was deleted, else it only forgets it.
    async fn closed_or_migrated(
        &self,
        e: &FdEntry,
        fd: Fd,
        tid: usize,
        close: &Close<'_>,
    ) -> Report {
        if e.flags.bit_test_and_reset(FD_MUST_CLOSE_BIT).await {
            self.drop_tgid(e).await;
            self.delete_orphan(fd, tid, close).await;
            return Report::Closed;
        }
        self.lost(e, fd, tid).await
    }

    /// A late report from a poller that still has the fd registered after
    /// it moved to another thread (or while it is being closed): program an
    /// update so that this poller stops polling it.
    async fn lost(&self, e: &FdEntry, fd: Fd, tid: usize) -> Report {
        faultline_harness::probe("proxy:late-report");
        if !e.update_mask.bit_test_and_set(tid as u32).await {
            self.updates[tid].borrow_mut().push(fd);
        }
        self.drop_tgid(e).await;
        Report::Migrated
    }

    /// Deletes `fd` from thread `tid` and closes it with `close`, now or,
    /// when another thread still runs on it, when that thread leaves
    /// (HAProxy's `fd_delete`).
    pub async fn delete(&self, fd: Fd, tid: usize, close: &Close<'_>) {
        let e = self.entry(fd);
        e.running_mask.fetch_or(bit(tid)).await;
        e.flags.fetch_or(FD_MUST_CLOSE).await;
        e.thread_mask.store(0).await;
        if e.running_mask.fetch_and(!bit(tid)).await == bit(tid) {
            if e.flags.bit_test_and_reset(FD_MUST_CLOSE_BIT).await {
                self.delete_orphan(fd, tid, close).await;
            }
        } else {
            faultline_harness::probe("proxy:delete-left-to-the-last-runner");
        }
    }

    /// Nobody owns or runs on `fd` any more: reset it and close it
    /// (HAProxy's `_fd_delete_orphan`).
    async fn delete_orphan(&self, fd: Fd, tid: usize, close: &Close<'_>) {
        let e = self.entry(fd);
        let fixed = !self.bugs.is_buggy(HAP_FDRACE);
        if fixed {
            // Nobody may grab it from now on; those who already did (a
            // late event report checking its thread mask, a poller
            // applying an update) leave before its masks are reset.
            self.reset_tgid(&e).await;
            while e.refc_tgid.load().await != 0 {
                faultline_harness::probe("proxy:delete-waits");
                spin_loop().await;
            }
        }
        // This fd's updates are not wanted any more.
        self.rm_from_update_list(fd).await;
        e.update_mask.store(0).await;
        {
            let mut own = self.updates[tid].borrow_mut();
            if own.last() == Some(&fd) {
                own.pop();
            }
        }
        // close() takes the fd out of every poller.
        e.registered.borrow_mut().clear();
        e.state.set(0);
        if !fixed {
            // HAP-FDRACE: the tgid is reset only now, after the update mask
            // was cleared, without waiting for the threads that grabbed the
            // fd: a late report may have set its update bit in between.
            self.reset_tgid(&e).await;
        }
        e.ev.set(Events::NONE);
        e.owner.set(None);
        close(fd).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    fn no_close(_: Fd) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async {})
    }

    #[test]
    fn an_update_is_queued_once_per_thread_until_its_bit_is_consumed() {
        block_on(async {
            let t = FdTable::new(3, Bugs::fixed());
            t.insert(7, Owner::Conn(1), bit(1)).await;
            t.want_recv(7, 1).await;
            t.want_send(7, 1).await;
            let e = t.entry(7);
            assert_eq!(e.masks(), (bit(1), 0, bit(1)));
            assert_eq!(t.take_updates(1), vec![7], "queued once for two changes");
            e.update_mask.fetch_and(!bit(1)).await;
            assert_eq!(
                t.interest(&e, 1).await,
                Some(Events::IN | Events::RDHUP | Events::OUT)
            );
            t.stop_send(7, 1).await;
            assert_eq!(t.take_updates(1), vec![7], "a new change queues again");
        });
    }

    #[test]
    fn an_error_report_makes_both_directions_wanted_until_someone_stops_them() {
        block_on(async {
            let t = FdTable::new(1, Bugs::fixed());
            let generation = t.insert(4, Owner::Conn(1), bit(0)).await;
            let e = t.entry(4);
            assert_eq!(t.interest(&e, 0).await, Some(Events::NONE));
            let report = t
                .update_events(4, 0, Events::ERR | Events::HUP, generation, &no_close)
                .await;
            assert_eq!(report, Report::Handle);
            // The poller's speculative events: reading and writing wanted,
            // an update queued for the poller.
            assert_eq!(
                t.interest(&e, 0).await,
                Some(Events::IN | Events::RDHUP | Events::OUT)
            );
            assert_eq!(t.take_updates(0), vec![4]);
            t.done_events(4, 0, &no_close).await;
            e.update_mask.fetch_and(!bit(0)).await;
            // What a failed connection does (conn_stop_polling).
            t.stop_both(4, 0).await;
            assert_eq!(t.interest(&e, 0).await, Some(Events::NONE));
        });
    }

    #[test]
    fn a_stale_update_bit_keeps_a_reused_fd_from_being_queued() {
        block_on(async {
            let t = FdTable::new(3, Bugs::fixed());
            t.insert(5, Owner::Conn(1), bit(0)).await;
            t.delete(5, 0, &no_close).await;
            // A bit set and never consumed...
            t.entry(5).update_mask.fetch_or(bit(0)).await;
            // ...survives the reuse of the number on the same thread.
            t.insert(5, Owner::Conn(2), bit(0)).await;
            t.want_recv(5, 0).await;
            assert!(!t.is_queued(5, 0), "the stale bit stops the update");
        });
    }

    #[test]
    fn a_takeover_moves_the_fd_and_stops_its_polling() {
        block_on(async {
            let t = FdTable::new(3, Bugs::fixed());
            t.insert(9, Owner::Conn(4), bit(0)).await;
            t.want_recv(9, 0).await;
            let _ = t.take_updates(0);
            t.entry(9).update_mask.fetch_and(!bit(0)).await;
            assert!(
                !t.takeover(9, 2, Owner::Conn(5)).await,
                "not the expected owner"
            );
            let generation = t.entry(9).generation();
            assert_eq!(
                t.update_events(9, 0, Events::IN, generation, &no_close)
                    .await,
                Report::Handle
            );
            assert!(
                !t.takeover(9, 2, Owner::Conn(4)).await,
                "thread 0 works on it"
            );
            t.done_events(9, 0, &no_close).await;
            assert!(t.takeover(9, 2, Owner::Conn(4)).await);
            let e = t.entry(9);
            assert_eq!(e.masks(), (bit(2), 0, bit(2)));
            assert_eq!(t.take_updates(2), vec![9]);
            assert_eq!(t.interest(&e, 2).await, Some(Events::NONE));
            assert_eq!(t.interest(&e, 0).await, None, "thread 0 must forget it");
            // Thread 0's poller reports it late: it programs its own update.
            assert_eq!(
                t.update_events(9, 0, Events::IN, generation, &no_close)
                    .await,
                Report::Migrated
            );
            assert_eq!(t.take_updates(0), vec![9]);
        });
    }

    /// A late report on thread 0 grabs the fd, then pauses; thread 1
    /// deletes the fd meanwhile (the two tasks of one host interleave
    /// where the report's next atomic operation waits to run). Answers the
    /// update mask left behind and whether the reused number is polled.
    fn late_report_racing_a_delete(bugs: Bugs) -> (ThreadMask, bool) {
        block_on(async move {
            let t = Rc::new(FdTable::new(3, bugs));
            t.insert(6, Owner::Conn(1), bit(0)).await;
            // Moved to thread 1; thread 0's poller still has it.
            assert!(t.takeover(6, 1, Owner::Conn(1)).await);
            let _ = t.take_updates(1);
            let e = t.entry(6);
            // Thread 0 grabs the fd for a late report...
            assert!(t.grab_tgid(&e).await);
            let late = {
                let (t, e) = (t.clone(), e.clone());
                faultline_harness::spawn(async move {
                    // ...and is switched out before it sets its bit.
                    faultline_harness::yield_now().await;
                    if !e.update_mask.bit_test_and_set(0).await {
                        t.updates[0].borrow_mut().push(6);
                    }
                    t.drop_tgid(&e).await;
                })
            };
            t.delete(6, 1, &no_close).await;
            late.await.unwrap();
            // Thread 0's poller looks at its list: the fd is gone.
            for fd in t.take_updates(0) {
                let e = t.entry(fd);
                if t.grab_tgid(&e).await {
                    e.update_mask.fetch_and(!bit(0)).await;
                    t.drop_tgid(&e).await;
                }
            }
            let stale = e.update_mask.unsync_load();
            // The number is reused on thread 0.
            t.insert(6, Owner::Conn(2), bit(0)).await;
            t.want_recv(6, 0).await;
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
