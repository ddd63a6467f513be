//! One proxy thread's own state: its connections, timers, tasklets and
//! closes. Only that thread's task touches it (the proxy lends it, see
//! `super::process::Proxy::state`), so its methods are plain, with no await: what
//! threads share goes through `sync` primitives elsewhere.

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::Instant;

use super::backend::Server;
use super::conn::ConnId;
use super::role::{ClientSide, Conn, ServerSide};

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
    /// Thread `tid`'s state, of `threads` threads; `health` and
    /// `next_check` are thread 0's (it runs the checks), empty elsewhere.
    pub fn new(tid: usize, threads: usize, health: Vec<Server>, next_check: Vec<Instant>) -> State {
        State {
            tid,
            threads,
            conns: BTreeMap::new(),
            timers: BTreeSet::new(),
            wake: BTreeSet::new(),
            closing: Vec::new(),
            idle_here: BTreeMap::new(),
            made: 0,
            health,
            next_check,
        }
    }

    /// Connection `id`, which its caller knows is in this thread's state
    /// (it found it there since its last await, or it is the connection
    /// whose handler runs, which only this thread closes).
    pub fn conn(&mut self, id: ConnId) -> &mut Conn {
        let tid = self.tid;
        match self.conns.get_mut(&id) {
            Some(conn) => conn,
            None => panic!("conn {id} is not in thread {tid}'s state"),
        }
    }

    /// Takes connection `id` out of the state (into an idle pool; see
    /// [`State::conn`]).
    pub fn remove(&mut self, id: ConnId) -> Conn {
        let tid = self.tid;
        match self.conns.remove(&id) {
            Some(conn) => conn,
            None => panic!("conn {id} is not in thread {tid}'s state"),
        }
    }

    /// Client connection `id` (see [`State::conn`]).
    pub fn client(&mut self, id: ConnId) -> &mut ClientSide {
        self.conn(id).client()
    }

    /// Backend connection `id` (see [`State::conn`]).
    pub fn server(&mut self, id: ConnId) -> &mut ServerSide {
        self.conn(id).server()
    }

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
