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

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::Syscalls;
use faultline_harness::sys::EpollOp;
use faultline_harness::{Errno, Events, Fd};
use tokio::time::Instant;

use crate::bugs::Bugs;
use crate::protocol::{HEADER_LEN, Limits};

pub mod backend;
pub mod buffer;
pub mod check;
pub mod conn;
pub mod fd;
pub mod os;
pub mod pipe;
pub mod raw_sock;
pub mod session;

use backend::Server;
use conn::{ConnId, Connection};
use fd::{FdTable, Owner, Report, ThreadMask, bit};

/// Most events one `epoll_wait` returns.
pub const MAX_EVENTS: usize = 64;

/// Handler runs one pass of a thread's loop may do before polling again.
const MAX_WAKES_PER_PASS: usize = 1024;

/// What the proxy answers to VERSION.
pub const VERSION: &str = "faultline-proxy-1.0";

/// A backend address as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendAddr {
    pub host: String,
    pub port: u16,
}

/// Health checks.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    pub enabled: bool,
    /// What a check asks of a backend.
    pub kind: CheckKind,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Successes in a row that bring a down server up.
    pub rise: u32,
    /// Failures in a row that take an up server down.
    pub fall: u32,
    /// The check's receive buffer: fixed, a response larger than it is
    /// judged on what fits.
    pub buffer_bytes: usize,
}

/// What a health check asks of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A connection that gets established passes (HAProxy's default,
    /// layer-4 check): nothing is sent.
    Connect,
    /// `STAT` must be answered successfully (a layer-7 check).
    Stat,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            enabled: true,
            kind: CheckKind::Stat,
            interval_ms: 1000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
            buffer_bytes: 16 * 1024,
        }
    }
}

/// The proxy's configuration.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub listen_port: u16,
    /// kv nodes, in vbucket order (node i is active for the i-th range).
    pub backends: Vec<BackendAddr>,
    pub vbuckets: u16,
    pub threads: usize,
    /// Size of a connection's receive buffer; a packet must fit in it.
    pub buffer_bytes: usize,
    pub connect_timeout_ms: u64,
    /// Longest wait for a backend's response once the request is sent.
    pub server_timeout_ms: u64,
    /// A client connection idle this long is closed.
    pub client_timeout_ms: u64,
    /// An idle backend connection in the pool this long is closed.
    pub keepalive_timeout_ms: u64,
    /// New connections tried after a connection error before a response
    /// started.
    pub retries: u32,
    /// Connections one thread accepts per listener event.
    pub max_accept: usize,
    /// Response bodies are streamed, and forwarded with `splice()`
    /// through a pipe when large enough (HAProxy's `option
    /// splice-response`); else each response is buffered whole.
    pub splice: bool,
    /// The smallest body (or rest of a body) forwarded with `splice()`;
    /// less goes through the buffers (HAProxy's `MIN_SPLICE_FORWARD`).
    pub min_splice_bytes: usize,
    /// How much of a streamed body may wait in user space (HAProxy's
    /// buffer size on the response side): more waits in the socket, and is
    /// spliced once the buffered bytes have gone.
    pub response_buffer_bytes: usize,
    pub check: CheckConfig,
    pub bugs: Bugs,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen_port: 11211,
            backends: Vec::new(),
            vbuckets: 16,
            threads: 2,
            buffer_bytes: 16 * 1024,
            connect_timeout_ms: 2000,
            server_timeout_ms: 5000,
            client_timeout_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            retries: 3,
            max_accept: 8,
            splice: false,
            min_splice_bytes: 4096,
            response_buffer_bytes: 16 * 1024,
            check: CheckConfig::default(),
            bugs: Bugs::fixed(),
        }
    }
}

impl ProxyConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.backends.is_empty() {
            return Err("the proxy needs at least one backend".into());
        }
        if !(4..=1024).contains(&self.vbuckets) {
            return Err("vbuckets must be within 4..=1024".into());
        }
        if usize::from(self.vbuckets) < self.backends.len() {
            return Err("fewer vbuckets than backends".into());
        }
        if !(1..=fd::MAX_THREADS).contains(&self.threads) {
            return Err(format!("threads must be within 1..={}", fd::MAX_THREADS));
        }
        if self.buffer_bytes < 1024 {
            return Err("buffer_bytes must be at least 1024".into());
        }
        if self.check.buffer_bytes < HEADER_LEN {
            return Err("the check buffer must hold a packet header".into());
        }
        if self.max_accept == 0 {
            return Err("max_accept must be positive".into());
        }
        if self.splice && !(1024..=self.buffer_bytes).contains(&self.response_buffer_bytes) {
            return Err(format!(
                "response_buffer_bytes must be within 1024..=buffer_bytes ({})",
                self.buffer_bytes
            ));
        }
        if self.splice && (self.min_splice_bytes == 0 || self.min_splice_bytes > self.buffer_bytes)
        {
            return Err(format!(
                "min_splice_bytes must be within 1..=buffer_bytes ({})",
                self.buffer_bytes
            ));
        }
        Ok(())
    }

    /// Packet limits: a packet must fit in a connection buffer.
    pub fn limits(&self) -> Limits {
        let defaults = Limits::default();
        Limits {
            max_key_bytes: defaults.max_key_bytes,
            max_value_bytes: self
                .buffer_bytes
                .saturating_sub(HEADER_LEN + defaults.max_key_bytes + Limits::HEADROOM_BYTES),
        }
    }
}

/// One connection and what it is for.
pub struct Conn {
    pub c: Connection,
    pub role: session::Role,
    /// When its current timeout fires.
    pub expire: Option<Instant>,
    /// Being closed: no more processing.
    pub closing: bool,
}

/// Per-thread bookkeeping.
pub struct ThreadState {
    pub epfd: Fd,
    /// (expiry, conn): the thread's timers.
    pub timers: BTreeSet<(Instant, ConnId)>,
    /// Connections whose handler must run (as tasklets).
    pub wake: BTreeSet<ConnId>,
    /// Connections to close.
    pub closing: Vec<ConnId>,
    /// Wakes the thread's poller when another thread gives it work
    /// (HAProxy's `wake_thread()`, a write to the thread's pipe): a `sync`
    /// primitive, so the seed may switch threads at the wake-up and at
    /// the wait.
    pub notify: Rc<faultline_harness::sync::Notify>,
}

impl Default for ThreadState {
    fn default() -> ThreadState {
        ThreadState {
            epfd: Fd::default(),
            timers: BTreeSet::new(),
            wake: BTreeSet::new(),
            closing: Vec::new(),
            notify: Rc::new(faultline_harness::sync::Notify::new("proxy.thread.wake")),
        }
    }
}

/// Everything the threads share (one host: `RefCell`s, never held across
/// an await).
pub struct State {
    pub conns: BTreeMap<ConnId, Conn>,
    pub servers: Vec<Server>,
    pub threads: Vec<ThreadState>,
    pub listener: Option<Fd>,
    next_conn: ConnId,
    /// The thread the next accepted connection goes to (round robin).
    next_accept_thread: usize,
    /// Threads given work by [`State::wake`] whose poller is still to be
    /// woken (one bit per thread): the caller holds the state, so the
    /// wake-up itself, a scheduling point, follows in
    /// [`Proxy::wake_threads`].
    to_wake: ThreadMask,
    /// Per server: when its next check starts (thread 0 runs checks).
    pub next_check: Vec<Instant>,
    /// Per vbucket: the server believed active for it. It starts as the
    /// configured split and learns from `NOT_MY_VBUCKET` answers (a
    /// rebalance moved the vbucket), as a memcached-aware proxy must.
    pub vbmap: Vec<usize>,
    /// Body bytes that went backend -> client through pipes (`splice()`),
    /// for STAT `spliced_bytes`.
    pub spliced_bytes: u64,
}

impl State {
    pub fn new_conn_id(&mut self) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        id
    }

    /// Sets (or clears) a connection's timeout.
    pub fn set_timer(&mut self, id: ConnId, expire: Option<Instant>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let thread = conn.c.thread;
        if let Some(old) = conn.expire.take() {
            self.threads[thread].timers.remove(&(old, id));
        }
        conn.expire = expire;
        if let Some(at) = expire {
            self.threads[thread].timers.insert((at, id));
        }
    }

    /// Runs `id`'s handler soon, on its thread.
    pub fn wake(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get(&id) {
            let thread = conn.c.thread;
            if self.threads[thread].wake.insert(id) {
                self.to_wake |= bit(thread);
            }
        }
    }

    /// Schedules `id` for closing (its thread does it). An idle backend
    /// connection must have left its pool first.
    pub fn close(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if !conn.closing {
                conn.closing = true;
                let thread = conn.c.thread;
                self.threads[thread].closing.push(id);
            }
        }
    }

    /// Moves a connection to another thread (after an fd takeover).
    pub fn migrate(&mut self, id: ConnId, to: usize) {
        let expire = self.conns.get(&id).and_then(|c| c.expire);
        self.set_timer(id, None);
        if let Some(conn) = self.conns.get_mut(&id) {
            let from = conn.c.thread;
            conn.c.thread = to;
            // The takeover stopped the fd's polling.
            conn.c.polling_reset();
            self.threads[from].wake.remove(&id);
        }
        self.set_timer(id, expire);
    }
}

/// Connection `id`'s layers and a part of its role, lent from the shared
/// state for a moment (see [`raw_sock::Lend`]): borrowed anew each time,
/// never across a syscall (other threads may run there).
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
    /// Per server: its idle backend connections, oldest first; any thread
    /// may take one (HAProxy's `idle_conns` under their lock).
    pub idle: Vec<faultline_harness::sync::Mutex<Vec<ConnId>>>,
    pub state: RefCell<State>,
}

fn all_threads(threads: usize) -> ThreadMask {
    (0..threads).fold(0, |m, t| m | bit(t))
}

impl<S: Syscalls + 'static> Proxy<S> {
    /// Resolves the backends and creates the pollers; nothing runs yet.
    pub async fn new(sys: S, config: ProxyConfig) -> Result<Rc<Proxy<S>>, String> {
        config.validate()?;
        let mut servers = Vec::new();
        for (i, b) in config.backends.iter().enumerate() {
            let addr = sys
                .resolve(&b.host, b.port)
                .map_err(|e| format!("backend {}:{}: {e}", b.host, b.port))?;
            servers.push(Server::new(format!("{}#{i}", b.host), addr));
        }
        let mut threads = Vec::new();
        for _ in 0..config.threads {
            let epfd = sys
                .epoll_create()
                .await
                .map_err(|e| format!("epoll_create: {e}"))?;
            threads.push(ThreadState {
                epfd,
                ..ThreadState::default()
            });
        }
        let now = Instant::now();
        let first_check = now + Duration::from_millis(config.check.interval_ms);
        let vbmap = (0..config.vbuckets)
            .map(|vb| backend::node_of(vb, servers.len(), config.vbuckets))
            .collect();
        let state = State {
            conns: BTreeMap::new(),
            next_check: vec![first_check; servers.len()],
            vbmap,
            spliced_bytes: 0,
            servers,
            threads,
            listener: None,
            next_conn: 1,
            next_accept_thread: 0,
            to_wake: 0,
        };
        Ok(Rc::new(Proxy {
            fdtab: FdTable::new(config.threads, config.bugs.clone()),
            idle: (0..config.backends.len())
                .map(|_| faultline_harness::sync::Mutex::new("proxy.server.idle_conns", Vec::new()))
                .collect(),
            state: RefCell::new(state),
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
        self.state.borrow_mut().listener = Some(lfd);
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

    /// One thread's loop: timers, handlers, closes, updates, poll.
    async fn thread_loop(self: Rc<Self>, tid: usize) {
        let (epfd, notify) = {
            let st = self.state.borrow();
            (st.threads[tid].epfd, st.threads[tid].notify.clone())
        };
        let close = |fd: Fd| -> CloseFuture<'_> { Box::pin(self.close_fd(fd)) };
        loop {
            self.run_timers(tid).await;
            if tid == 0 && self.config.check.enabled {
                check::start_due_checks(&self, tid).await;
                self.wake_threads(tid).await;
            }
            self.run_wakes(tid).await;
            self.run_closes(tid).await;
            self.apply_updates(tid).await;
            let timeout = {
                let st = self.state.borrow();
                let th = &st.threads[tid];
                if !th.wake.is_empty() || !th.closing.is_empty() {
                    Some(Duration::ZERO)
                } else {
                    let mut next = th.timers.first().map(|(at, _)| *at);
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
                () = notify.notified() => Ok(Vec::new()),
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
                    Some(Owner::Listener) => {
                        self.accept(tid, event.fd).await;
                        self.wake_threads(tid).await;
                    }
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
        let kind = {
            let st = self.state.borrow();
            match st.conns.get(&id) {
                Some(c) if !c.closing && c.c.thread == tid => c.role.kind(),
                _ => return false,
            }
        };
        let progress = match kind {
            session::Kind::Client => session::process_client(self, tid, id).await,
            session::Kind::Server => session::process_server(self, tid, id, events).await,
            session::Kind::Check => check::process_check(self, tid, id, events).await,
        };
        self.wake_threads(tid).await;
        progress
    }

    /// Wakes the pollers of the other threads the last handler gave work
    /// to (this thread looks at its own work before it polls again).
    pub async fn wake_threads(&self, tid: usize) {
        let notifies: Vec<_> = {
            let mut st = self.state.borrow_mut();
            let mask = std::mem::take(&mut st.to_wake) & !bit(tid);
            (0..st.threads.len())
                .filter(|t| mask & bit(*t) != 0)
                .map(|t| st.threads[t].notify.clone())
                .collect()
        };
        for notify in notifies {
            notify.notify_one().await;
        }
    }

    async fn run_wakes(&self, tid: usize) {
        for _ in 0..MAX_WAKES_PER_PASS {
            let next = self.state.borrow_mut().threads[tid].wake.pop_first();
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
                let mut st = self.state.borrow_mut();
                let th = &mut st.threads[tid];
                match th.timers.first() {
                    Some((at, _)) if *at <= now => th.timers.pop_first(),
                    _ => None,
                }
            };
            let Some((_, id)) = expired else {
                return;
            };
            let kind = {
                let mut st = self.state.borrow_mut();
                match st.conns.get_mut(&id) {
                    Some(c) => {
                        c.expire = None;
                        (!c.closing).then(|| c.role.kind())
                    }
                    None => None,
                }
            };
            match kind {
                Some(session::Kind::Check) => check::on_timeout(self, tid, id),
                Some(_) => session::on_timeout(self, tid, id).await,
                None => {}
            }
            self.wake_threads(tid).await;
        }
    }

    /// Closes the connections scheduled for closing: transport first, then
    /// the control layer (the fd leaves the table and is closed).
    async fn run_closes(&self, tid: usize) {
        let close = |fd: Fd| -> CloseFuture<'_> { Box::pin(self.close_fd(fd)) };
        loop {
            let next = self.state.borrow_mut().threads[tid].closing.pop();
            let Some(id) = next else {
                return;
            };
            let fd = {
                let mut st = self.state.borrow_mut();
                st.set_timer(id, None);
                st.threads[tid].wake.remove(&id);
                let Some(conn) = st.conns.get_mut(&id) else {
                    continue;
                };
                conn.c.xprt_close();
                conn.c.must_close_ctrl().then_some(conn.c.fd)
            };
            if let Some(fd) = fd {
                self.fdtab.delete(fd, tid, &close).await;
            }
            let removed = self.state.borrow_mut().conns.remove(&id);
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
        let epfd = self.state.borrow().threads[tid].epfd;
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
    /// Each new connection goes to the next thread in turn (which may be
    /// another one: it is woken).
    async fn accept(&self, tid: usize, lfd: Fd) {
        for _ in 0..self.config.max_accept {
            match self.sys.accept(lfd).await {
                Ok((fd, peer)) => {
                    let (id, owner) = {
                        let mut st = self.state.borrow_mut();
                        let owner = st.next_accept_thread;
                        st.next_accept_thread = (owner + 1) % self.config.threads;
                        (st.new_conn_id(), owner)
                    };
                    let mut c = Connection::new(id, owner);
                    c.ctrl_init(&self.fdtab, fd, bit(owner)).await;
                    c.xprt_init();
                    let mut st = self.state.borrow_mut();
                    st.conns.insert(
                        id,
                        Conn {
                            c,
                            role: session::Role::Client(session::ClientSide::new(
                                self.config.buffer_bytes,
                            )),
                            expire: None,
                            closing: false,
                        },
                    );
                    let expire =
                        Instant::now() + Duration::from_millis(self.config.client_timeout_ms);
                    st.set_timer(id, Some(expire));
                    st.wake(id);
                    tracing::debug!(target: "faultline::proxy", thread = tid, owner, conn = id, fd, %peer, "accepted");
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
