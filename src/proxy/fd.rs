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
//! * `state` (`proxy.fdtab.state`): per direction, *active* (someone
//!   wants the I/O) and *ready* (no EAGAIN since the last report), the
//!   last poll flags and `FD_MUST_CLOSE`, set and cleared bit by bit
//!   (HAProxy's BTS/BTR in `fd.h`), or with a CAS loop when another thread
//!   may touch the fd;
//! * `polled_recv`/`polled_send` (`proxy.fdtab.polled_mask`): the threads
//!   whose poller has the fd registered (`polled_mask` in `ev_epoll.c`).
//!
//! Updates for other threads go through the shared update list
//! (`proxy.fdtab.update_list`, a lock here where HAProxy has a lock-free
//! list; ARCHITECTURE.md says why the coarser lock hides nothing).
//!
//! HAP-FDRACE (HAProxy commit 237e6a0d6): deleting an fd cleared its update
//! mask and reset its tgid only after, without waiting for threads that
//! had grabbed it: a late event report that had grabbed the fd sets its
//! update bit in between, and nobody consumes that bit (its poller's grab
//! fails once the tgid is reset). The fix resets the tgid first, waits for
//! the references to drop, and only then clears the masks.
//!
//! HAP-RUNMASK (HAProxy commit cd8914bc5, the race 237e6a0d6 mentions in
//! passing): an event report checked the thread mask and then added its
//! running bit with a compare-and-swap; a takeover could come and go in
//! between (it leaves the running mask as it found it), so both threads
//! believed the fd was theirs, and if the new owner deleted the fd, the
//! report's running bit outlived it: the number's next `fd_insert` finds
//! it. And the last runner out closed an fd nobody owned, which two
//! threads could both see. The fix takes the running bit first and waits
//! for a stable thread mask, and makes deletion a one-shot flag
//! (`FD_MUST_CLOSE`) that the last thread to leave claims.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use faultline_harness::sync::{Atomic, Mutex, spin_loop};
use faultline_harness::{sys::Events, sys::Fd};

use crate::bugs::{Bugs, HAP_FDRACE, HAP_RUNMASK};

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

/// One reference in `refc_tgid`'s upper half (`fd_grab_tgid` adds
/// 0x10000, `include/haproxy/fd.h` at HAProxy commit cd8914bc5).
const REFC_ONE: u32 = 0x1_0000;

/// In `state`: the fd was deleted; whoever leaves it last closes it
/// (HAProxy's `FD_MUST_CLOSE`, `fd-t.h`, added by commit cd8914bc5).
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

/// Direction bits of `state` (HAProxy's `FD_EV_*`,
/// `include/haproxy/fd-t.h` at commit cd8914bc5).
pub const ACTIVE_R: u32 = 0x01;
pub const READY_R: u32 = 0x02;
pub const ACTIVE_W: u32 = 0x10;
pub const READY_W: u32 = 0x20;
const ACTIVE_RW: u32 = ACTIVE_R | ACTIVE_W;

/// What the last poll reported, also in `state` (HAProxy's `FD_POLL_*`,
/// bits 8 to 12 of `include/haproxy/fd-t.h` at commit cd8914bc5).
const FD_POLL_IN: u32 = 1 << 8;
const FD_POLL_OUT: u32 = 1 << 10;
const FD_POLL_ERR: u32 = 1 << 11;
const FD_POLL_HUP: u32 = 1 << 12;
const FD_POLL_ANY: u32 = FD_POLL_IN | FD_POLL_OUT | FD_POLL_ERR | FD_POLL_HUP;

/// The poll bits of `events`.
fn poll_bits(events: Events) -> u32 {
    let mut bits = 0;
    for (ev, bit) in [
        (Events::IN, FD_POLL_IN),
        (Events::OUT, FD_POLL_OUT),
        (Events::ERR, FD_POLL_ERR),
        (Events::HUP, FD_POLL_HUP),
    ] {
        if events.contains(ev) {
            bits |= bit;
        }
    }
    bits
}

/// The events of `state`'s poll bits.
pub fn poll_events(state: u32) -> Events {
    let mut events = Events::NONE;
    for (ev, bit) in [
        (Events::IN, FD_POLL_IN),
        (Events::OUT, FD_POLL_OUT),
        (Events::ERR, FD_POLL_ERR),
        (Events::HUP, FD_POLL_HUP),
    ] {
        if state & bit != 0 {
            events |= ev;
        }
    }
    events
}

/// One fd number's entry (HAProxy's `fdtab[fd]` and `polled_mask[fd]`).
pub struct FdEntry {
    pub refc_tgid: Atomic<u32>,
    pub thread_mask: Atomic<ThreadMask>,
    pub running_mask: Atomic<ThreadMask>,
    pub update_mask: Atomic<ThreadMask>,
    /// HAProxy's `state`: the direction bits, what the last poll reported
    /// and flags threads set for each other (`FD_MUST_CLOSE`), each set
    /// and cleared with the atomic operations `fd.h` uses.
    state: Atomic<u32>,
    /// The threads whose poller has the fd registered for reading and for
    /// writing (HAProxy's `polled_mask[fd].poll_recv` and `poll_send`).
    polled_recv: Atomic<ThreadMask>,
    polled_send: Atomic<ThreadMask>,
    /// `None` once deleted (HAProxy's `owner` pointer: written by the
    /// inserting and the deleting thread, read by the one it was given to).
    owner: Cell<Option<Owner>>,
    /// The incarnation: pollers carry it in their registrations, so a
    /// report about an earlier use of the number is recognised.
    generation: Cell<u64>,
}

impl FdEntry {
    fn new() -> FdEntry {
        FdEntry {
            refc_tgid: Atomic::new("proxy.fdtab.refc_tgid", 0),
            thread_mask: Atomic::new("proxy.fdtab.thread_mask", 0),
            running_mask: Atomic::new("proxy.fdtab.running_mask", 0),
            update_mask: Atomic::new("proxy.fdtab.update_mask", 0),
            state: Atomic::new("proxy.fdtab.state", 0),
            polled_recv: Atomic::new("proxy.fdtab.polled_mask", 0),
            polled_send: Atomic::new("proxy.fdtab.polled_mask", 0),
            owner: Cell::new(None),
            generation: Cell::new(0),
        }
    }

    pub fn owner(&self) -> Option<Owner> {
        self.owner.get()
    }

    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// The interest thread `tid`'s poller has it registered with, as its
    /// poller's `_update_fd` reads `polled_mask`.
    pub async fn registered(&self, tid: usize) -> Option<Events> {
        let me = bit(tid);
        let recv = self.polled_recv.load().await & me != 0;
        let send = self.polled_send.load().await & me != 0;
        let mut events = Events::NONE;
        if recv {
            events |= Events::IN | Events::RDHUP;
        }
        if send {
            events |= Events::OUT;
        }
        (recv || send).then_some(events)
    }

    /// Thread `tid`'s poller now has it registered with `interest` (`None`:
    /// not at all), set with the atomic OR and AND of `_update_fd`.
    pub async fn set_registered(&self, tid: usize, interest: Option<Events>) {
        let me = bit(tid);
        let interest = interest.unwrap_or(Events::NONE);
        if interest.contains(Events::IN) {
            self.polled_recv.fetch_or(me).await;
        } else {
            self.polled_recv.fetch_and(!me).await;
        }
        if interest.contains(Events::OUT) {
            self.polled_send.fetch_or(me).await;
        } else {
            self.polled_send.fetch_and(!me).await;
        }
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
        assert_eq!(e.state.unsync_load(), 0, "fd {fd}: a free fd has no state");
        self.claim_tgid(&e).await;
        // HAProxy's BUG_ON(fdtab[fd].running_mask) in fd_insert: a thread
        // still "running" on a number that was closed and is reused.
        let running = e.running_mask.unsync_load();
        assert!(
            running == 0,
            "fd {fd} reused while threads {running:#x} still run on it"
        );
        let generation = self.next_generation.get();
        self.next_generation.set(generation + 1);
        e.owner.set(Some(owner));
        e.generation.set(generation);
        e.state.store(READY_R | READY_W).await;
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
        let state = e.state.load().await;
        let mut interest = Events::NONE;
        if state & ACTIVE_R != 0 {
            interest |= Events::IN | Events::RDHUP;
        }
        if state & ACTIVE_W != 0 {
            interest |= Events::OUT;
        }
        Some(interest)
    }

    // --- the direction state (HAProxy's fd_want_*, fd_stop_*, fd_cant_*) ---

    /// Sets an active bit (a plain look first, then BTS, as `fd_want_recv`
    /// does); a change programs a polling update.
    async fn want(&self, fd: Fd, tid: usize, bit: u32) {
        let e = self.entry(fd);
        if e.state.load().await & (1 << bit) != 0 || e.state.bit_test_and_set(bit).await {
            return;
        }
        self.updt_fd_polling(fd, tid).await;
    }

    /// Clears an active bit (a look, then BTR); a change programs a
    /// polling update.
    async fn stop(&self, fd: Fd, tid: usize, bit: u32) {
        let e = self.entry(fd);
        if e.state.load().await & (1 << bit) == 0 || !e.state.bit_test_and_reset(bit).await {
            return;
        }
        self.updt_fd_polling(fd, tid).await;
    }

    pub async fn want_recv(&self, fd: Fd, tid: usize) {
        self.want(fd, tid, ACTIVE_R.trailing_zeros()).await;
    }
    pub async fn stop_recv(&self, fd: Fd, tid: usize) {
        self.stop(fd, tid, ACTIVE_R.trailing_zeros()).await;
    }
    pub async fn want_send(&self, fd: Fd, tid: usize) {
        self.want(fd, tid, ACTIVE_W.trailing_zeros()).await;
    }
    pub async fn stop_send(&self, fd: Fd, tid: usize) {
        self.stop(fd, tid, ACTIVE_W.trailing_zeros()).await;
    }

    /// Clears both active bits in one compare-and-swap loop
    /// (`fd_stop_both`).
    pub async fn stop_both(&self, fd: Fd, tid: usize) {
        let e = self.entry(fd);
        let mut old = e.state.load().await;
        loop {
            if old & ACTIVE_RW == 0 {
                return;
            }
            match e.state.compare_exchange(old, old & !ACTIVE_RW).await {
                Ok(_) => break,
                Err(current) => old = current,
            }
        }
        self.updt_fd_polling(fd, tid).await;
    }

    /// Clears a ready bit (a look, then BTR): marking ready never changes
    /// what is polled.
    async fn not_ready(&self, fd: Fd, ready: u32) {
        let e = self.entry(fd);
        if e.state.load().await & ready != 0 {
            e.state.bit_test_and_reset(ready.trailing_zeros()).await;
        }
    }

    /// A receive met EAGAIN: wait for the poller.
    pub async fn cant_recv(&self, fd: Fd) {
        self.not_ready(fd, READY_R).await;
    }
    /// A short receive: the next one would very likely meet EAGAIN, so do
    /// not try it before the poller reports again.
    pub async fn done_recv(&self, fd: Fd) {
        self.not_ready(fd, READY_R).await;
    }
    /// A send met EAGAIN (or could not start yet): wait for the poller.
    pub async fn cant_send(&self, fd: Fd) {
        self.not_ready(fd, READY_W).await;
    }

    /// `fd`'s state word now: its direction bits and, in [`poll_events`],
    /// what the last poll reported.
    pub async fn state(&self, fd: Fd) -> u32 {
        match self.get(fd) {
            Some(e) => e.state.load().await,
            None => 0,
        }
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
        let tmask = if self.bugs.is_buggy(HAP_RUNMASK) {
            // HAP-RUNMASK (the lines HAProxy commit cd8914bc5 replaced): a
            // stable copy of both masks, then a compare-and-swap that adds
            // our running bit. A takeover can come and go between the copy
            // and the CAS (it leaves running as it found it): the CAS
            // succeeds and two threads believe the fd is theirs; if the new
            // owner deletes the fd meanwhile, our running bit outlives it.
            loop {
                let (rmask, tmask) = loop {
                    let rmask = e.running_mask.load().await;
                    let tmask = e.thread_mask.load().await;
                    if rmask & !tmask == 0 {
                        break (rmask, tmask);
                    }
                    spin_loop().await;
                };
                if tmask & me == 0 {
                    return self.lost(&e, fd, tid).await;
                }
                if e.running_mask
                    .compare_exchange(rmask, rmask | me)
                    .await
                    .is_ok()
                {
                    break tmask;
                }
            }
        } else {
            if e.thread_mask.load().await & me == 0 {
                return self.lost(&e, fd, tid).await;
            }
            // Running first, then a thread mask that shows every other
            // running thread: a takeover takes running before it replaces
            // the mask.
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
            tmask
        };
        // Running on it with our bit in its thread mask: no takeover can
        // replace the mask before we leave (it needs an empty running
        // mask). A look without a scheduling point, so that watching does
        // not move the race.
        if e.thread_mask.unsync_load() & me == 0 {
            // Two threads believe the fd is theirs (the first mechanism of
            // HAP-RUNMASK).
            faultline_harness::probe("proxy:fd-run-by-a-thread-that-lost-it");
            tracing::debug!(target: "faultline::proxy", fd, tid, "running on an fd taken over");
        }
        // Running on it, the reference is not needed any more.
        self.drop_tgid(&e).await;
        // RDHUP (peer's FIN) counts as a hangup of the read side.
        let mut ev = events & (Events::IN | Events::OUT | Events::ERR | Events::HUP);
        if events.contains(Events::RDHUP) {
            ev |= Events::HUP;
        }
        let mut new_flags = poll_bits(ev);
        if ev.intersects(Events::IN | Events::HUP | Events::ERR) {
            new_flags |= READY_R;
        }
        if ev.intersects(Events::OUT | Events::ERR) {
            new_flags |= READY_W;
        }
        // An fd more than one thread may touch is updated with a CAS loop,
        // one only its owner touches with a store (as HAProxy does).
        let mut old = e.state.load().await;
        loop {
            let new = (old & !FD_POLL_ANY) | new_flags;
            if new == old {
                break;
            }
            if tmask == me {
                e.state.store(new).await;
                break;
            }
            match e.state.compare_exchange(old, new).await {
                Ok(_) => break,
                Err(current) => old = current,
            }
        }
        // A reported direction becomes a wanted one before the handler
        // runs, so that a handler with nothing to do need not poll again:
        // the "speculative" events of the pollers HAP-ERRHUP lived with
        // (1.5-dev's ev_epoll, which still did this for ERR and HUP until
        // HAProxy commit 26d7cfce3). The connection turns a direction off
        // only when its own wish for it changes, or when it fails.
        if ev.intersects(Events::IN | Events::HUP | Events::ERR) {
            self.want_recv(fd, tid).await;
        }
        if ev.intersects(Events::OUT | Events::ERR) {
            self.want_send(fd, tid).await;
        }
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
        if self.bugs.is_buggy(HAP_RUNMASK) {
            // HAP-RUNMASK (before HAProxy commit cd8914bc5): only an fd
            // nobody owns is closed by its last runner, and without the
            // one-shot flag: a late report setting its running bit right
            // after this one cleared it also sees itself as the last.
            if e.running_mask.fetch_and(!bit(tid)).await == bit(tid) && tmask == 0 {
                self.drop_tgid(&e).await;
                self.delete_orphan(fd, tid, close).await;
                return Report::Closed;
            }
        } else if e.running_mask.fetch_and(!bit(tid)).await == bit(tid) && tmask & bit(tid) == 0 {
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
        if e.state.bit_test_and_reset(FD_MUST_CLOSE_BIT).await {
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
        let buggy = self.bugs.is_buggy(HAP_RUNMASK);
        e.running_mask.fetch_or(bit(tid)).await;
        if !buggy {
            e.state.fetch_or(FD_MUST_CLOSE).await;
        }
        e.thread_mask.store(0).await;
        if e.running_mask.fetch_and(!bit(tid)).await == bit(tid) {
            // HAP-RUNMASK: without HAProxy commit cd8914bc5's one-shot
            // flag, the last runner seen here closes.
            if buggy || e.state.bit_test_and_reset(FD_MUST_CLOSE_BIT).await {
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
        e.polled_recv.store(0).await;
        e.polled_send.store(0).await;
        e.state.store(0).await;
        if !fixed {
            // HAP-FDRACE: the tgid is reset only now, after the update mask
            // was cleared, without waiting for the threads that grabbed the
            // fd: a late report may have set its update bit in between.
            self.reset_tgid(&e).await;
        }
        e.owner.set(None);
        let running = e.running_mask.unsync_load();
        if running != 0 {
            // Threads that will never leave it: the number's next user
            // finds them (the mechanism of HAP-RUNMASK).
            faultline_harness::probe("proxy:fd-closed-while-running");
            tracing::debug!(target: "faultline::proxy", fd, running, "closed with running bits left");
        }
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
