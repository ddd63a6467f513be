//! A memcached-aware proxy built like HAProxy.
//!
//! Clients speak the binary protocol to the proxy; the proxy routes each
//! keyed request to the kv node active for the key's vbucket, over a pool
//! of backend connections, and checks the nodes' health. It is written
//! against a syscall API ([`Syscalls`]): the simulated kernel
//! ([`faultline_harness::Sys`]) in simulations, the real one ([`os::OsSys`])
//! for `faultline proxy`.
//!
//! Layers, bottom up:
//!
//! * [`fd`]: the fd table (thread, running and update masks per fd) and
//!   the per-thread update lists;
//! * the pollers (this file): one task per proxy *thread*, each with its
//!   own epoll fd: apply updates, wait, report events, run handlers;
//! * [`conn`]: a connection's control layer (fd) and transport layer
//!   (raw socket), with their ready flags;
//! * [`raw_sock`]: `rcv_buf` / `snd_buf`;
//! * [`session`]: client connections, backend connections and the
//!   requests between them (routing, pool reuse across threads, retries,
//!   timeouts);
//! * [`check`]: health checks into a fixed-size buffer.
//!
//! Threads are tasks of one host: they interleave only where the code
//! awaits. Everything they share that HAProxy updates atomically or under
//! a lock (the fd table's masks and tgid, the update lists, the idle
//! connection pools) is a harness synchronization primitive, so every such
//! operation is a point where the seed may switch threads, as real threads
//! would interleave anywhere.

use std::cell::{OnceCell, RefCell, RefMut};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::Syscalls;
use faultline_harness::sync::Atomic;
use faultline_harness::sys::EpollOp;
use faultline_harness::{Errno, Events, Fd};
use tokio::time::Instant;

use crate::bugs::Bugs;
use crate::protocol::Limits;

pub mod backend;
pub mod buffer;
pub mod check;
pub mod config;
pub mod conn;
pub mod fd;
pub mod os;
pub mod pipe;
pub mod raw_sock;
pub mod session;

use backend::Server;
pub use config::{BackendAddr, CheckConfig, CheckKind, ProxyConfig};
use conn::{ConnId, Connection};
use fd::{FdTable, Owner, Report, ThreadMask, bit};

/// Most events one `epoll_wait` returns.
pub const MAX_EVENTS: usize = 64;

/// Handler runs one pass of a thread's loop may do before polling again.
const MAX_WAKES_PER_PASS: usize = 1024;

/// What the proxy answers to VERSION.
pub const VERSION: &str = "faultline-proxy-1.0";

/// One connection and what it is for.
pub struct Conn {
    pub c: Connection,
    pub role: session::Role,
    /// When its current timeout fires.
    pub expire: Option<Instant>,
    /// Being closed: no more processing.
    pub closing: bool,
}

/// An idle backend connection, held by its server's pool while it waits
/// (HAProxy's idle trees hold the connection itself): the thread that put
/// it there takes it out to handle its events, another thread takes it
/// over.
pub struct IdleConn {
    pub id: ConnId,
    pub conn: Conn,
}

/// One thread's own state: only that thread's task touches it (HAProxy's
/// connections, timers and tasklets belong to one thread), so it is a
/// `RefCell`, never borrowed across an await. What other threads hand
/// this one goes through [`Thread`]'s `sync` primitives.
pub struct State {
    pub tid: usize,
    threads: usize,
    /// The thread's connections (an idle backend connection is in its
    /// server's pool instead, see `idle_here`).
    pub conns: BTreeMap<ConnId, Conn>,
    /// (expiry, conn): the thread's timers. An entry can outlive its
    /// connection's move to another thread: it is checked when it fires.
    pub timers: BTreeSet<(Instant, ConnId)>,
    /// Connections whose handler must run (as tasklets).
    pub wake: BTreeSet<ConnId>,
    /// Connections to close.
    pub closing: Vec<ConnId>,
    /// Backend connections this thread put in an idle pool, with their
    /// server: their events and timers come here until another thread
    /// takes one over.
    pub idle_here: BTreeMap<ConnId, usize>,
    /// Connections this thread made (ids are `tid + 1 + n * threads`:
    /// unique without a shared counter).
    made: u64,
    /// Thread 0 runs the checks: per server, its health record and when
    /// its next check starts.
    pub health: Vec<Server>,
    pub next_check: Vec<Instant>,
}

impl State {
    pub fn new_conn_id(&mut self) -> ConnId {
        let id = self.tid as u64 + 1 + self.made * self.threads as u64;
        self.made += 1;
        id
    }

    /// Sets (or clears) a connection's timeout.
    pub fn set_timer(&mut self, id: ConnId, expire: Option<Instant>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        assert_eq!(
            conn.c.thread, self.tid,
            "conn {id}: a timer of another thread"
        );
        if let Some(old) = conn.expire.take() {
            self.timers.remove(&(old, id));
        }
        conn.expire = expire;
        if let Some(at) = expire {
            self.timers.insert((at, id));
        }
    }

    /// Runs `id`'s handler soon (this thread's connections only: another
    /// thread's are handed over through its queues).
    pub fn wake(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get(&id) {
            assert_eq!(
                conn.c.thread, self.tid,
                "conn {id}: woken by another thread"
            );
            self.wake.insert(id);
        }
    }

    /// Schedules `id` for closing. An idle backend connection must have
    /// left its pool first.
    pub fn close(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if !conn.closing {
                conn.closing = true;
                self.closing.push(id);
            }
        }
    }
}

/// What every thread sees of a backend.
pub struct Backend {
    pub name: String,
    pub addr: std::net::SocketAddr,
    /// Whether it is up, as thread 0's checks judge it (HAProxy's
    /// `srv->cur_state`: written by the check, read by every thread).
    pub up: Atomic<bool>,
}

/// One proxy thread: its poller, its own state, and what other threads
/// hand it.
pub struct Thread {
    pub epfd: Fd,
    /// The task that runs the thread, set when it starts: the state is
    /// lent to that task only.
    task: OnceCell<tokio::task::Id>,
    state: RefCell<State>,
    /// Connections accepted for this thread (HAProxy's per-thread accept
    /// ring, `accept_queue_push_mp` / `accept_queue_pop_sc`; a lock here,
    /// each push and pop one step as on the ring).
    accept_queue: faultline_harness::sync::Mutex<VecDeque<(Fd, std::net::SocketAddr)>>,
    /// The ring's tasklet is woken (HAProxy's `tasklet_wakeup` puts it on
    /// the thread's shared tasklet list, which the thread checks on each
    /// pass).
    accept_woken: Atomic<bool>,
    /// Wakes the thread's poller when another thread gives it work
    /// (HAProxy's `wake_thread()`, a write to the thread's pipe).
    notify: faultline_harness::sync::Notify,
}

/// Connection `id`'s layers and a part of its role, lent from its
/// thread's state for a moment (see [`raw_sock::Lend`]): borrowed anew
/// each time, never across a syscall (other threads may run there).
pub struct Lent<'a, T> {
    pub state: &'a RefCell<State>,
    pub id: ConnId,
    pub part: fn(&mut session::Role) -> &mut T,
}

impl<T> raw_sock::Lend<T> for Lent<'_, T> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Connection, &mut T) -> R) -> R {
        let mut st = self.state.borrow_mut();
        let Some(Conn { c, role, .. }) = st.conns.get_mut(&self.id) else {
            panic!(
                "connection {} left the state while its handler was in a syscall",
                self.id
            );
        };
        f(c, (self.part)(role))
    }
}

/// What a thread's close callback answers (see [`fd::Close`]).
type CloseFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// A running proxy.
pub struct Proxy<S: Syscalls> {
    pub sys: S,
    pub config: ProxyConfig,
    pub bugs: Bugs,
    pub limits: Limits,
    pub fdtab: FdTable,
    pub threads: Vec<Thread>,
    pub backends: Vec<Backend>,
    /// Per server: its idle backend connections, oldest first; any thread
    /// may take one (HAProxy's `idle_conns` under their lock).
    pub idle: Vec<faultline_harness::sync::Mutex<Vec<IdleConn>>>,
    /// Per vbucket: the server believed active for it. It starts as the
    /// configured split and learns from `NOT_MY_VBUCKET` answers (a
    /// rebalance moved the vbucket), as a memcached-aware proxy must; any
    /// thread reads and writes it.
    pub vbmap: Vec<Atomic<usize>>,
    /// Body bytes that went backend -> client through pipes (`splice()`),
    /// for STAT `spliced_bytes` (a counter every thread adds to, atomic as
    /// HAProxy's counters are).
    pub spliced_bytes: Atomic<u64>,
    /// The thread the next accepted connection goes to (round robin;
    /// HAProxy's `l->thr_idx`, updated with a CAS).
    next_accept_thread: Atomic<usize>,
    pub listener: OnceCell<Fd>,
}

fn all_threads(threads: usize) -> ThreadMask {
    (0..threads).fold(0, |m, t| m | bit(t))
}

impl<S: Syscalls> Proxy<S> {
    /// The calling thread's state cell: a proxy thread's task only touches
    /// its own (asserted: the threads share nothing that is not a `sync`
    /// primitive).
    pub fn state_cell(&self) -> &RefCell<State> {
        let me = tokio::task::try_id();
        let thread = self
            .threads
            .iter()
            .find(|t| me.is_some() && t.task.get() == me.as_ref())
            .expect("a proxy thread's state is touched by that thread's task only");
        &thread.state
    }

    /// The calling thread's state, borrowed until the next await.
    pub fn state(&self) -> RefMut<'_, State> {
        self.state_cell().borrow_mut()
    }
}

impl<S: Syscalls + 'static> Proxy<S> {
    /// Resolves the backends and creates the pollers; nothing runs yet.
    pub async fn new(sys: S, config: ProxyConfig) -> Result<Rc<Proxy<S>>, String> {
        config.validate()?;
        let mut health = Vec::new();
        let mut backends = Vec::new();
        for (i, b) in config.backends.iter().enumerate() {
            let addr = sys
                .resolve(&b.host, b.port)
                .map_err(|e| format!("backend {}:{}: {e}", b.host, b.port))?;
            let name = format!("{}#{i}", b.host);
            health.push(Server::new(name.clone(), addr));
            backends.push(Backend {
                name,
                addr,
                up: Atomic::new("proxy.server.cur_state", true),
            });
        }
        let first_check = Instant::now() + Duration::from_millis(config.check.interval_ms);
        let mut threads = Vec::new();
        for tid in 0..config.threads {
            let epfd = sys
                .epoll_create()
                .await
                .map_err(|e| format!("epoll_create: {e}"))?;
            let checks = tid == 0;
            let state = State {
                tid,
                threads: config.threads,
                conns: BTreeMap::new(),
                timers: BTreeSet::new(),
                wake: BTreeSet::new(),
                closing: Vec::new(),
                idle_here: BTreeMap::new(),
                made: 0,
                health: if checks { health.clone() } else { Vec::new() },
                next_check: if checks {
                    vec![first_check; backends.len()]
                } else {
                    Vec::new()
                },
            };
            threads.push(Thread {
                epfd,
                task: OnceCell::new(),
                state: RefCell::new(state),
                accept_queue: faultline_harness::sync::Mutex::new(
                    "proxy.thread.accept_queue",
                    VecDeque::new(),
                ),
                accept_woken: Atomic::new("proxy.thread.shared_tasklets", false),
                notify: faultline_harness::sync::Notify::new("proxy.thread.wake"),
            });
        }
        let vbmap = (0..config.vbuckets)
            .map(|vb| {
                Atomic::new(
                    "proxy.vbmap",
                    backend::node_of(vb, backends.len(), config.vbuckets),
                )
            })
            .collect();
        Ok(Rc::new(Proxy {
            fdtab: FdTable::new(config.threads, config.bugs.clone()),
            idle: (0..config.backends.len())
                .map(|_| faultline_harness::sync::Mutex::new("proxy.server.idle_conns", Vec::new()))
                .collect(),
            threads,
            backends,
            vbmap,
            spliced_bytes: Atomic::new("proxy.stats.spliced_bytes", 0),
            next_accept_thread: Atomic::new("proxy.listener.thr_idx", 0),
            listener: OnceCell::new(),
            bugs: config.bugs.clone(),
            limits: config.limits(),
            config,
            sys,
        }))
    }

    /// Listens on the configured port; every thread polls the listener.
    pub async fn listen(&self) -> Result<(), Errno> {
        let lfd = self.sys.listen(self.config.listen_port).await?;
        self.fdtab
            .insert(lfd, Owner::Listener, all_threads(self.config.threads))
            .await;
        self.fdtab.want_recv(lfd, 0).await;
        assert!(self.listener.set(lfd).is_ok(), "listen is called once");
        tracing::debug!(target: "faultline::proxy", fd = lfd, port = self.config.listen_port, "listening");
        Ok(())
    }

    /// Runs the threads until they fail (they do not end otherwise). Call
    /// inside a `LocalSet` (a simulated host is one).
    pub async fn run(self: &Rc<Self>) -> std::io::Result<()> {
        let mut handles = Vec::new();
        for tid in 0..self.config.threads {
            let px = self.clone();
            handles.push(faultline_harness::spawn(async move {
                px.thread_loop(tid).await;
            }));
        }
        for h in handles {
            h.await.map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// One thread's loop: accepted connections, timers, handlers, closes,
    /// updates, poll.
    async fn thread_loop(self: Rc<Self>, tid: usize) {
        let me = tokio::task::try_id().expect("a proxy thread is a task");
        assert!(
            self.threads[tid].task.set(me).is_ok(),
            "thread {tid} starts once"
        );
        let epfd = self.threads[tid].epfd;
        let close = |fd: Fd| -> CloseFuture<'_> { Box::pin(self.close_fd(fd)) };
        loop {
            self.run_accept_queue(tid).await;
            self.run_timers(tid).await;
            if tid == 0 && self.config.check.enabled {
                check::start_due_checks(&self, tid).await;
            }
            self.run_wakes(tid).await;
            self.run_closes(tid).await;
            self.apply_updates(tid).await;
            let timeout = {
                let st = self.state();
                if !st.wake.is_empty() || !st.closing.is_empty() {
                    Some(Duration::ZERO)
                } else {
                    let mut next = st.timers.first().map(|(at, _)| *at);
                    if tid == 0 && self.config.check.enabled {
                        let check = st.next_check.iter().min().copied();
                        next = match (next, check) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                    next.map(|at| at.saturating_duration_since(Instant::now()))
                }
            };
            let polled = tokio::select! {
                biased;
                polled = self.sys.epoll_wait(epfd, MAX_EVENTS, timeout) => polled,
                () = self.threads[tid].notify.notified() => Ok(Vec::new()),
            };
            let events = match polled {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(target: "faultline::proxy", thread = tid, error = %e, "epoll_wait failed");
                    return;
                }
            };
            let busy = !events.is_empty();
            for event in events {
                let report = self
                    .fdtab
                    .update_events(event.fd, tid, event.events, event.data, &close)
                    .await;
                if report != Report::Handle {
                    continue;
                }
                match self.fdtab.entry(event.fd).owner() {
                    Some(Owner::Listener) => self.accept(tid, event.fd).await,
                    Some(Owner::Conn(id)) => self.io_handler(tid, id, event.events).await,
                    None => {}
                }
                self.fdtab.done_events(event.fd, tid, &close).await;
                self.run_wakes(tid).await;
                self.run_closes(tid).await;
            }
            if busy {
                // Threads run in parallel: after a pass with work, the
                // others get their turn (tasks of one host run in turn).
                faultline_harness::yield_now().await;
            }
        }
    }

    /// Closes an fd that left the table.
    async fn close_fd(&self, fd: Fd) {
        if let Err(e) = self.sys.close(fd).await {
            tracing::warn!(target: "faultline::proxy", fd, error = %e, "close failed");
        }
    }

    /// A poller reported `events` for connection `id`.
    async fn io_handler(&self, tid: usize, id: ConnId, events: Events) {
        let key = format!("proxy conn {id}");
        faultline_harness::oracle::busy_wakeup(&key);
        let progress = self.process(tid, id, Some(events)).await;
        if progress {
            faultline_harness::oracle::busy_progress(&key);
        }
    }

    /// Runs a connection's handler. Answers whether it made progress.
    pub async fn process(&self, tid: usize, id: ConnId, events: Option<Events>) -> bool {
        if !self.reclaim_idle(tid, id, None).await {
            return false;
        }
        let kind = {
            let st = self.state();
            match st.conns.get(&id) {
                Some(c) if !c.closing => {
                    assert_eq!(c.c.thread, tid, "conn {id}: in thread {tid}'s state");
                    c.role.kind()
                }
                _ => return false,
            }
        };
        match kind {
            session::Kind::Client => session::process_client(self, tid, id).await,
            session::Kind::Server => session::process_server(self, tid, id, events).await,
            session::Kind::Check => check::process_check(self, tid, id, events).await,
        }
    }

    /// Makes connection `id` this thread's to handle: an idle backend
    /// connection this thread pooled comes out of its pool, as HAProxy's
    /// `h1_io_cb` takes it out of the idle tree under the lock before it
    /// handles its events (and finds it gone when another thread took it
    /// over). `timer`: only if its timeout is still that one (a timer
    /// entry may be older than a move to another thread and back).
    /// Answers whether the connection is in this thread's state.
    async fn reclaim_idle(&self, tid: usize, id: ConnId, timer: Option<Instant>) -> bool {
        let server = {
            let st = self.state();
            if st.conns.contains_key(&id) {
                return true;
            }
            match st.idle_here.get(&id) {
                Some(server) => *server,
                None => return false,
            }
        };
        let mut pool = self.idle[server].lock().await;
        let pos = pool
            .iter()
            .position(|i| i.id == id && i.conn.c.thread == tid);
        let mut st = self.state();
        match pos {
            Some(pos) if timer.is_none() || pool[pos].conn.expire == timer => {
                let idle = pool.remove(pos);
                st.idle_here.remove(&id);
                st.conns.insert(id, idle.conn);
                true
            }
            Some(_) => false,
            None => {
                tracing::trace!(target: "faultline::proxy", thread = tid, conn = id, "idle connection taken over by another thread");
                st.idle_here.remove(&id);
                false
            }
        }
    }

    /// Takes the connections accepted for this thread from its queue and
    /// starts them (HAProxy's `accept_queue_process`, run when its
    /// tasklet was woken).
    async fn run_accept_queue(&self, tid: usize) {
        let th = &self.threads[tid];
        if !th.accept_woken.load().await {
            return;
        }
        th.accept_woken.store(false).await;
        for _ in 0..self.config.max_accept {
            let next = th.accept_queue.lock().await.pop_front();
            let Some((fd, peer)) = next else {
                return;
            };
            let id = self.state().new_conn_id();
            let mut c = Connection::new(id, tid);
            c.ctrl_init(&self.fdtab, fd, bit(tid)).await;
            c.xprt_init();
            let mut st = self.state();
            st.conns.insert(
                id,
                Conn {
                    c,
                    role: session::Role::Client(session::ClientSide::new(self.config.buffer_bytes)),
                    expire: None,
                    closing: false,
                },
            );
            let expire = Instant::now() + Duration::from_millis(self.config.client_timeout_ms);
            st.set_timer(id, Some(expire));
            st.wake(id);
            tracing::debug!(target: "faultline::proxy", thread = tid, conn = id, fd, %peer, "accepted");
        }
        // Out of budget: again on the next pass.
        th.accept_woken.store(true).await;
    }

    async fn run_wakes(&self, tid: usize) {
        for _ in 0..MAX_WAKES_PER_PASS {
            let next = self.state().wake.pop_first();
            let Some(id) = next else {
                return;
            };
            self.process(tid, id, None).await;
        }
    }

    async fn run_timers(&self, tid: usize) {
        let now = Instant::now();
        loop {
            let expired = {
                let mut st = self.state();
                match st.timers.first() {
                    Some((at, _)) if *at <= now => st.timers.pop_first(),
                    _ => None,
                }
            };
            let Some((at, id)) = expired else {
                return;
            };
            if !self.reclaim_idle(tid, id, Some(at)).await {
                continue;
            }
            let kind = {
                let mut st = self.state();
                match st.conns.get_mut(&id) {
                    Some(c) if c.expire == Some(at) => {
                        c.expire = None;
                        (!c.closing).then(|| c.role.kind())
                    }
                    _ => None,
                }
            };
            match kind {
                Some(session::Kind::Check) => check::on_timeout(self, tid, id).await,
                Some(_) => session::on_timeout(self, tid, id).await,
                None => {}
            }
        }
    }

    /// Closes the connections scheduled for closing: transport first, then
    /// the control layer (the fd leaves the table and is closed).
    async fn run_closes(&self, tid: usize) {
        let close = |fd: Fd| -> CloseFuture<'_> { Box::pin(self.close_fd(fd)) };
        loop {
            let next = self.state().closing.pop();
            let Some(id) = next else {
                return;
            };
            let fd = {
                let mut st = self.state();
                st.set_timer(id, None);
                st.wake.remove(&id);
                let Some(conn) = st.conns.get_mut(&id) else {
                    continue;
                };
                conn.c.xprt_close();
                conn.c.must_close_ctrl().then_some(conn.c.fd)
            };
            if let Some(fd) = fd {
                self.fdtab.delete(fd, tid, &close).await;
            }
            let removed = self.state().conns.remove(&id);
            if let Some(mut conn) = removed {
                if conn.c.ctrl_ready() {
                    conn.c.ctrl_closed();
                }
                if let session::Role::Client(cl) = &mut conn.role {
                    if let Some(pipe) = cl.pipe.take() {
                        pipe.put(&self.sys).await;
                    }
                }
                tracing::debug!(target: "faultline::proxy", thread = tid, conn = id, fd = ?fd, errno = ?conn.c.errno, "closed");
            }
        }
    }

    /// Applies this thread's pending polling updates to its poller: its own
    /// list, then the shared one (HAProxy's `_do_poll` before it waits).
    async fn apply_updates(&self, tid: usize) {
        let epfd = self.threads[tid].epfd;
        for fd in self.fdtab.take_updates(tid) {
            let e = self.fdtab.entry(fd);
            if !self.fdtab.grab_tgid(&e).await {
                // Closed meanwhile: nothing to poll (its bit stays until
                // the fd is deleted again).
                tracing::trace!(target: "faultline::proxy", thread = tid, fd, "update of a closed fd dropped");
                continue;
            }
            e.update_mask.fetch_and(!bit(tid)).await;
            if e.owner().is_some() {
                self.update_fd(tid, epfd, fd, &e).await;
            }
            self.fdtab.drop_tgid(&e).await;
        }
        for fd in self.fdtab.shared_updates().await {
            let e = self.fdtab.entry(fd);
            if !self.fdtab.grab_tgid(&e).await {
                continue;
            }
            if e.update_mask.load().await & bit(tid) == 0 {
                self.fdtab.drop_tgid(&e).await;
                continue;
            }
            self.fdtab.done_update_polling(&e, fd, tid).await;
            if e.owner().is_some() {
                self.update_fd(tid, epfd, fd, &e).await;
            }
            self.fdtab.drop_tgid(&e).await;
        }
    }

    /// Brings thread `tid`'s poller in line with what `fd` wants now.
    async fn update_fd(&self, tid: usize, epfd: Fd, fd: Fd, e: &fd::FdEntry) {
        let interest = self.fdtab.interest(e, tid).await;
        let registered = e.registered(tid).await;
        let op = match (interest, registered) {
            (None, Some(_)) => Some((EpollOp::Del, Events::NONE)),
            (None, None) => None,
            (Some(i), Some(r)) if i == r => None,
            // No direction wanted: out of the poller, as `_update_fd`
            // does with EPOLL_CTL_DEL (a registration with an empty mask
            // would still report ERR and HUP).
            (Some(i), Some(_)) if i.is_empty() => Some((EpollOp::Del, Events::NONE)),
            (Some(i), Some(_)) => Some((EpollOp::Mod, i)),
            (Some(i), None) if i.is_empty() => None,
            (Some(i), None) => Some((EpollOp::Add, i)),
        };
        let Some((op, events)) = op else {
            return;
        };
        tracing::trace!(target: "faultline::proxy", thread = tid, fd, ?op, ?events, "poll update");
        // The polled mask first, then the syscall, as `_update_fd` does.
        e.set_registered(tid, (op != EpollOp::Del).then_some(events))
            .await;
        match self
            .sys
            .epoll_ctl(epfd, op, fd, events, e.generation(), false)
            .await
        {
            Ok(()) => {}
            Err(err) => {
                tracing::warn!(target: "faultline::proxy", thread = tid, fd, ?op, error = %err, "epoll_ctl failed");
            }
        }
    }

    /// The listener is readable on thread `tid`: accept what is pending.
    /// Each new connection goes to the next thread in turn, through that
    /// thread's accept queue (HAProxy's `listener_accept` defers even its
    /// own thread's), and that thread is woken.
    async fn accept(&self, tid: usize, lfd: Fd) {
        for _ in 0..self.config.max_accept {
            match self.sys.accept(lfd).await {
                Ok((fd, peer)) => {
                    let threads = self.config.threads;
                    let owner = self.next_accept_thread.update(|t| (t + 1) % threads).await;
                    let th = &self.threads[owner];
                    th.accept_queue.lock().await.push_back((fd, peer));
                    th.accept_woken.store(true).await;
                    if owner != tid {
                        th.notify.notify_one().await;
                    }
                    tracing::trace!(target: "faultline::proxy", thread = tid, owner, fd, "queued for its thread");
                }
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!(target: "faultline::proxy", thread = tid, error = %e, "accept failed");
                    return;
                }
            }
        }
    }
}

/// Starts a proxy: listens, then runs its threads (never returns unless a
/// thread fails). Call inside a `LocalSet`.
pub async fn run_proxy<S: Syscalls + 'static>(sys: S, config: ProxyConfig) -> std::io::Result<()> {
    let proxy = Proxy::new(sys, config)
        .await
        .map_err(std::io::Error::other)?;
    proxy
        .listen()
        .await
        .map_err(|e| std::io::Error::other(format!("listen: {e}")))?;
    proxy.run().await
}
