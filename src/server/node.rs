//! A kv node's shared state ([`Node`]) and its configuration: what every
//! connection, command, task and replication stream of the node reaches
//! through an `Rc<Node>`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::sync::Atomic;

use super::dcp::conn_map::Dcp;
use super::executor::{Executor, ExecutorConfig};
use super::store::{Store, VbState};
use super::thread_buffers::ThreadBuffers;
use crate::bugs::Bugs;
use crate::protocol::Limits;

/// The port kv nodes listen on.
pub const KV_PORT: u16 = 11210;

/// What a node reports as its version.
pub const VERSION: &str = "1.6.0-faultline";

/// A node's configuration.
#[derive(Clone, Debug)]
pub struct KvConfig {
    pub port: u16,
    /// vbuckets of the bucket (4 to 1024).
    pub vbuckets: u16,
    /// Which vbuckets are active here; the others start as replicas.
    pub active: VbRange,
    pub limits: Limits,
    /// Worker "threads": each lends its connections a spare read and write
    /// buffer; connections are assigned round-robin.
    pub workers: usize,
    pub read_buffer_bytes: usize,
    pub write_buffer_bytes: usize,
    /// Close a connection waiting for a request once its last request is
    /// this old (memcached's `idle_timeout`: a new connection's first
    /// request has `FIRST_REQUEST_TIMEOUT_MS`, in `handler.rs`); never when `None`.
    pub idle_timeout_ms: Option<u64>,
    /// Extra `STAT` entries (`detail_N`), to make the response large.
    pub stat_detail_entries: usize,
    /// How long a synchronous write waits for its replica before it answers
    /// SYNC_WRITE_AMBIGUOUS.
    pub durability_timeout_ms: u64,
    /// Worker threads of the background task executor.
    pub executor: ExecutorConfig,
    pub bugs: Bugs,
}

/// A range of vbucket ids, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VbRange {
    pub start: u16,
    pub end: u16,
}

impl VbRange {
    pub fn all(vbuckets: u16) -> VbRange {
        VbRange {
            start: 0,
            end: vbuckets,
        }
    }
    pub fn contains(&self, vb: u16) -> bool {
        (self.start..self.end).contains(&vb)
    }
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            port: KV_PORT,
            vbuckets: 16,
            active: VbRange::all(16),
            limits: Limits::default(),
            workers: 1,
            read_buffer_bytes: 8 * 1024,
            write_buffer_bytes: 2 * 1024,
            idle_timeout_ms: None,
            stat_detail_entries: 0,
            durability_timeout_ms: 30_000,
            executor: ExecutorConfig::default(),
            bugs: Bugs::fixed(),
        }
    }
}

impl KvConfig {
    /// Checks the configuration's limits.
    pub fn validate(&self) -> Result<(), String> {
        if !(4..=1024).contains(&self.vbuckets) {
            return Err(format!(
                "vbuckets must be within 4..=1024, not {}",
                self.vbuckets
            ));
        }
        if self.active.start > self.active.end || self.active.end > self.vbuckets {
            return Err("the active vbucket range is outside the bucket".into());
        }
        if self.workers == 0 || self.workers > 64 {
            return Err("workers must be within 1..=64".into());
        }
        if self.write_buffer_bytes < 64 || self.read_buffer_bytes < 64 {
            return Err("buffers must hold at least 64 bytes".into());
        }
        if self.durability_timeout_ms == 0 {
            return Err("durability_timeout_ms must be positive".into());
        }
        self.executor.validate()
    }
}

/// Per-node counters for `STAT`: atomics (`kv.stats.*`), as the engine's
/// stats, bumped by every connection's thread without a lock.
#[derive(Debug)]
pub struct Stats {
    pub curr_connections: Atomic<u64>,
    pub total_connections: Atomic<u64>,
    pub cmd_get: Atomic<u64>,
    pub cmd_set: Atomic<u64>,
    pub get_hits: Atomic<u64>,
    pub get_misses: Atomic<u64>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            curr_connections: Atomic::new("kv.stats.curr_connections", 0),
            total_connections: Atomic::new("kv.stats.total_connections", 0),
            cmd_get: Atomic::new("kv.stats.cmd_get", 0),
            cmd_set: Atomic::new("kv.stats.cmd_set", 0),
            get_hits: Atomic::new("kv.stats.get_hits", 0),
            get_misses: Atomic::new("kv.stats.get_misses", 0),
        }
    }
}

/// A running node's shared state.
pub struct Node {
    pub config: KvConfig,
    /// The vbuckets, under their own locks (see `store`).
    pub store: Store,
    /// Background tasks (the DCP checkpoint processors among them).
    pub executor: Executor,
    /// Replication streams and synchronous writes.
    pub dcp: Dcp,
    /// Per worker thread: its spare buffers.
    buffers: Vec<RefCell<ThreadBuffers>>,
    pub stats: Stats,
    next_conn: Cell<u64>,
    /// The node clock's zero.
    started: tokio::time::Instant,
}

impl Node {
    /// A node; starts its executor's threads, so it must be called inside
    /// a `LocalSet` (a simulated host is one).
    pub fn new(config: KvConfig) -> Rc<Node> {
        config.validate().expect("a valid node configuration");
        let active = config.active;
        let host_seed = faultline_harness::with_rng("kv/uuid", rand::Rng::random::<u64>);
        let store = Store::new(
            config.vbuckets,
            |vb| {
                if active.contains(vb) {
                    VbState::Active
                } else {
                    VbState::Replica
                }
            },
            config.limits.max_value_bytes,
            host_seed,
        );
        let buffers = (0..config.workers)
            .map(|_| {
                RefCell::new(ThreadBuffers::new(
                    config.read_buffer_bytes,
                    config.write_buffer_bytes,
                ))
            })
            .collect();
        let executor = Executor::start(config.executor, config.bugs.clone());
        Rc::new(Node {
            store,
            executor,
            dcp: Dcp::default(),
            buffers,
            stats: Stats::default(),
            next_conn: Cell::new(1),
            started: tokio::time::Instant::now(),
            config,
        })
    }

    /// Time on the node's clock (simulated in a simulation).
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Unix time in seconds (for absolute expiry times).
    pub fn unix_now_s(&self) -> u64 {
        clock::unix_now_s()
    }

    /// Sets a vbucket's state. A vbucket that stops being active ends its
    /// replication streams and abandons its synchronous writes. Returns the
    /// old state (`None`: no such vbucket).
    pub async fn set_vbucket_state(&self, vb: u16, state: VbState) -> Option<VbState> {
        let old = self.store.set_state(vb, state).await?;
        tracing::debug!(target: "faultline::kv", vb, from = old.name(), to = state.name(), "vbucket state");
        if old == VbState::Active && state != VbState::Active {
            self.dcp.vbucket_left_active(vb).await;
        }
        Some(old)
    }

    pub fn buffers(&self, worker: usize) -> &RefCell<ThreadBuffers> {
        &self.buffers[worker]
    }

    pub(super) fn next_conn_id(&self) -> u64 {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        id
    }
}

mod clock {
    /// Seconds since the Unix epoch: the simulation's clock inside a run,
    /// the system's outside (`faultline serve`).
    pub fn unix_now_s() -> u64 {
        if let Some(since) = turmoil::since_epoch() {
            return since.as_secs();
        }
        // Outside a simulation only (real sockets).
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}
