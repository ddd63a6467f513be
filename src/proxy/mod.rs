//! A memcached-aware proxy built like HAProxy.
//!
//! Clients speak the binary protocol to the proxy; the proxy routes each
//! keyed request to the kv node active for the key's vbucket, over a pool
//! of backend connections, and checks the nodes' health. It is written
//! against a syscall API ([`Syscalls`]): the simulated kernel
//! ([`faultline_harness::sys::Sys`]) in simulations, the real one ([`os::OsSys`])
//! for `faultline proxy`.
//!
//! Layers, bottom up:
//!
//! * [`buffer`], [`pipe`], [`os`]: buffers, pipes, the real kernel;
//! * [`fd`]: the fd table (thread, running and update masks per fd) and
//!   the per-thread update lists;
//! * [`conn`]: a connection's control layer (fd) and transport layer
//!   (raw socket), with their ready flags; the one outgoing connect
//!   (`Connection::open`) and the polling a connection asks for;
//! * [`raw_sock`]: `rcv_buf` / `snd_buf`, `rcv_pipe` / `snd_pipe`;
//! * [`config`], [`backend`]: the settings; where a key goes, a server's
//!   health record;
//! * [`role`]: what a connection is for (client, backend, check) and the
//!   state of each role; [`state`]: one thread's own state;
//! * this file: the proxy, its threads and what they share;
//! * the handlers, each using only those before it: [`route`] (what a
//!   request is answered with or where it goes), [`idle`] (the idle pools
//!   and takeover), [`connect`] (a request's backend connection,
//!   retries), [`drain`] (the NOOP behind a quiet request), [`splice`]
//!   (streamed bodies), [`server`] (a backend connection's handler and
//!   its responses), [`client`] (a client connection's I/O and
//!   requests), [`check`] (health checks into a fixed-size buffer),
//!   [`timeout`];
//! * [`listener`] and [`poller`]: accepting, and one task per proxy
//!   *thread* with its own epoll fd: apply updates, wait, report events,
//!   run handlers.
//!
//! A file uses only files listed before it: no two files import each
//! other, and the lower layers know nothing of the handlers. The handlers
//! use this file's [`Proxy`]; this file uses none of them, and re-exports
//! only the settings and, for the crate's callers, [`run_proxy`].
//!
//! Threads are tasks of one host: they interleave only where the code
//! awaits. Everything they share that HAProxy updates atomically or under
//! a lock (the fd table's masks and tgid, the update lists, the idle
//! connection pools) is a harness synchronization primitive, so every such
//! operation is a point where the seed may switch threads, as real threads
//! would interleave anywhere.

use std::cell::{OnceCell, RefCell, RefMut};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::sync::Atomic;
use faultline_harness::sys::Fd;
use faultline_harness::sys::Syscalls;
use tokio::time::Instant;

use crate::bugs::Bugs;
use crate::protocol::Limits;

pub mod backend;
pub mod buffer;
pub mod check;
pub mod client;
pub mod config;
pub mod conn;
pub mod connect;
pub mod drain;
pub mod fd;
pub mod idle;
pub mod listener;
pub mod os;
pub mod pipe;
pub mod poller;
pub mod raw_sock;
pub mod role;
pub mod route;
pub mod server;
pub mod splice;
pub mod state;
pub mod timeout;

pub use config::{BackendAddr, CheckConfig, CheckKind, ProxyConfig};
pub use poller::run_proxy;

use backend::Server;
use conn::{ConnId, Connection};
use fd::FdTable;
use role::{Conn, IdleConn, Role};
use state::State;

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
    pub part: fn(&mut Role) -> &mut T,
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

    /// Connection `id` with `part` of its role, lent to a transport
    /// function.
    pub fn lent<T>(&self, id: ConnId, part: fn(&mut Role) -> &mut T) -> Lent<'_, T> {
        Lent {
            state: self.state_cell(),
            id,
            part,
        }
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
            let state = State::new(
                tid,
                config.threads,
                if checks { health.clone() } else { Vec::new() },
                if checks {
                    vec![first_check; backends.len()]
                } else {
                    Vec::new()
                },
            );
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
}
