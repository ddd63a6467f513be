//! The health monitor: what a user checks of a proxy's health checks
//! without knowing how they work. It probes every kv node itself (a TCP
//! connect) and asks the proxy for its view (`STAT`: `server:NAME` is `up`
//! or `down`). A node that has refused connections for longer than the
//! proxy's checks need to notice (`fall` checks `interval_ms` apart, the
//! one in flight, and a check timeout) must be reported down: oracle
//! `health-check`.
//!
//! Clients consult the monitor too: a node it has seen refusing
//! connections is not "up", so an `ETMPFAIL` for a key of that node is
//! the proxy doing its job.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::{SimStream, oracle};
use tokio::time::Instant;

use crate::protocol::client::Client;
use crate::server::KV_PORT;

/// What the monitor has seen of each kv node.
#[derive(Debug, Default)]
pub struct Health {
    /// Per node: since when it refuses connections (none: it accepted the
    /// last probe, or was never probed).
    refusing_since: Vec<Option<Instant>>,
    /// Per node: it refused a probe at least once.
    ever_refused: Vec<bool>,
}

/// The monitor's state, shared with the clients of one simulation.
pub type SharedHealth = Rc<RefCell<Health>>;

impl Health {
    pub fn new(nodes: usize) -> SharedHealth {
        Rc::new(RefCell::new(Health {
            refusing_since: vec![None; nodes],
            ever_refused: vec![false; nodes],
        }))
    }

    /// Whether node `i` ever refused a probe: requests for it may fail.
    pub fn was_refusing(&self, i: usize) -> bool {
        self.ever_refused.get(i).copied().unwrap_or(false)
    }
}

/// Whether kv node `node` refuses a connection right now (a client's own
/// check when the proxy tells it a node is unavailable: the monitor's
/// last probe may predate the crash). A probe that takes longer than
/// `timeout_ms` counts as not refusing.
pub async fn refuses_now(health: &SharedHealth, node: usize, timeout_ms: u64) -> bool {
    probe(health, node, Duration::from_millis(timeout_ms)).await == Some(true)
}

/// Connects to kv node `node` and records what it saw: `Some(true)`
/// refused, `Some(false)` accepted, `None` no answer within `timeout`.
async fn probe(health: &SharedHealth, node: usize, timeout: Duration) -> Option<bool> {
    let attempt = tokio::time::timeout(
        timeout,
        SimStream::connect((format!("kv-{node}").as_str(), KV_PORT)),
    )
    .await;
    let mut h = health.borrow_mut();
    match attempt {
        Ok(Ok(_stream)) => {
            h.refusing_since[node] = None;
            Some(false)
        }
        Ok(Err(_refused)) => {
            h.ever_refused[node] = true;
            h.refusing_since[node].get_or_insert_with(Instant::now);
            Some(true)
        }
        Err(_slow) => None,
    }
}

/// How the monitor runs.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    pub nodes: usize,
    pub interval_ms: u64,
    /// The proxy's checks: how long they may take to see a dead node.
    pub check_interval_ms: u64,
    pub check_timeout_ms: u64,
    pub check_fall: u32,
    pub proxy_port: u16,
}

impl MonitorConfig {
    /// How long a node may refuse connections before the proxy must say
    /// it is down: `fall` checks, the one that was in flight, a timeout,
    /// and one monitor interval for the monitor's own lateness.
    pub fn allowed_ms(&self) -> u64 {
        (u64::from(self.check_fall) + 1) * self.check_interval_ms
            + self.check_timeout_ms
            + self.interval_ms
    }
}

/// Probes until `done()` says the clients finished.
pub async fn run_monitor(config: MonitorConfig, health: SharedHealth, done: impl Fn() -> bool) {
    let interval = Duration::from_millis(config.interval_ms);
    let mut proxy: Option<Client<SimStream>> = None;
    while !done() && !oracle::failed() {
        tokio::time::sleep(interval).await;
        for i in 0..config.nodes {
            probe(&health, i, interval).await;
        }
        if proxy.is_none() {
            match SimStream::connect(("proxy", config.proxy_port)).await {
                Ok(stream) => proxy = Some(Client::with_first_opaque(stream, 0x4ea1_0000)),
                Err(_) => continue,
            }
        }
        let Some(client) = proxy.as_mut() else {
            continue;
        };
        let answer = tokio::time::timeout(interval * 10, client.stats(b"")).await;
        let Ok(Ok(entries)) = answer else {
            proxy = None;
            continue;
        };
        let now = Instant::now();
        for i in 0..config.nodes {
            let Some(since) = health.borrow().refusing_since[i] else {
                continue;
            };
            let prefix = format!("server:kv-{i}#");
            let reported_up = entries
                .iter()
                .any(|(k, v)| k.starts_with(&prefix) && v == "up");
            let refusing_ms = now.duration_since(since).as_millis() as u64;
            if reported_up && refusing_ms > config.allowed_ms() {
                oracle::fail(
                    "health-check",
                    format!(
                        "kv-{i} has refused connections for {refusing_ms} ms, the proxy still reports it up ({} checks {} ms apart should have seen it within {} ms)",
                        config.check_fall,
                        config.check_interval_ms,
                        config.allowed_ms()
                    ),
                );
                return;
            }
        }
    }
}
