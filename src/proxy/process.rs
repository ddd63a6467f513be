//! One proxy process: its backends, its threads and what they share (the
//! fd table, the idle pools, the settings). The handlers borrow a thread's
//! state through [`Proxy`]; this file uses none of them.

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

use super::backend::{self, Server};
use super::config::ProxyConfig;
use super::conn::{ConnId, Connection};
use super::fd::FdTable;
use super::role::{Conn, IdleConn, Role};
use super::state::State;

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
    pub(super) task: OnceCell<tokio::task::Id>,
    state: RefCell<State>,
    /// Connections accepted for this thread (HAProxy's per-thread accept
    /// ring, `accept_queue_push_mp` / `accept_queue_pop_sc`; a lock here,
    /// each push and pop one step as on the ring).
    pub(super) accept_queue: faultline_harness::sync::Mutex<VecDeque<(Fd, std::net::SocketAddr)>>,
    /// The ring's tasklet is woken (HAProxy's `tasklet_wakeup` puts it on
    /// the thread's shared tasklet list, which the thread checks on each
    /// pass).
    pub(super) accept_woken: Atomic<bool>,
    /// Wakes the thread's poller when another thread gives it work
    /// (HAProxy's `wake_thread()`, a write to the thread's pipe).
    pub(super) notify: faultline_harness::sync::Notify,
}

/// Connection `id`'s layers and a part of its role, lent from its
/// thread's state for a moment (see [`super::raw_sock::Lend`]): borrowed anew
/// each time, never across a syscall (other threads may run there).
pub struct Lent<'a, T> {
    pub state: &'a RefCell<State>,
    pub id: ConnId,
    pub part: fn(&mut Role) -> &mut T,
}

impl<T> super::raw_sock::Lend<T> for Lent<'_, T> {
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
    pub(super) next_accept_thread: Atomic<usize>,
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
