//! The `dcp-rebalance` workload: the cluster manager (`ns`) moves vbuckets
//! from `kv-1` to `kv-2` while loaders write and read; afterwards every key
//! is read back from the node that owns its vbucket.
//!
//! ```toml
//! workload = "dcp-rebalance"
//! [params]
//! vbuckets = 8          # of the bucket; all active on kv-1 at the start
//! move_vbuckets = 4     # vbuckets 0..4 move to kv-2
//! loaders = 2
//! ops_per_loader = 150
//! attempts = 3          # a failed rebalance is tried again
//! ```
//!
//! Oracles: `liveness` (every stream's set-up, named `setup vb N`, and the
//! rebalance return within `oracles.liveness_deadline_ms`),
//! `stream-safety` (the replicator is never told ok for a stream that
//! ended before it was up), `store-model` (reads during and after the
//! rebalance agree with the writes), `rebalance` (no attempt succeeded),
//! `kv-status` (a status a loader cannot explain).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::oracle;

use super::store_model::KvModel;
use faultline_harness::{
    ParamError, RunSpec, SimListener, SimSetup, SimStream, Workload, parse_params, with_rng,
};
use rand::Rng;
use serde::Deserialize;

use crate::bugs::Bugs;
use crate::dcp::admin::Admin;
use crate::dcp::{ProxyConfig, RebalanceConfig, Replicator, rebalance, replication_name};
use crate::protocol::Status;
use crate::protocol::client::{Client, ClientError};
use crate::protocol::{McbpFramer, vbucket_of};
use crate::server::{KV_PORT, KvConfig, Node, VbRange, serve};

/// Upper bounds that keep a scenario file from asking for absurd runs.
const MAX_LOADERS: u32 = 64;
const MAX_OPS: u32 = 100_000;
const MAX_VALUE_BYTES: u32 = 64 * 1024;

/// How often a loader retries an operation its vbucket's owners refuse
/// (a vbucket mid-takeover), 1 ms apart.
const MAX_OWNER_RETRIES: u32 = 5_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_vbuckets")]
    vbuckets: u16,
    #[serde(default = "default_move")]
    move_vbuckets: u16,
    #[serde(default = "default_loaders")]
    loaders: u32,
    #[serde(default = "default_ops")]
    ops_per_loader: u32,
    #[serde(default = "default_keys")]
    keys_per_loader: u32,
    #[serde(default = "default_value_bytes")]
    max_value_bytes: u32,
    /// When the rebalance starts, in simulated ms.
    #[serde(default = "default_start_ms")]
    start_ms: u64,
    #[serde(default = "default_attempts")]
    attempts: u32,
    #[serde(default = "default_retry_delay_ms")]
    retry_delay_ms: u64,
    #[serde(default = "default_backfill_timeout_ms")]
    backfill_timeout_ms: u64,
    /// The rebalance (every attempt) must return within this, in
    /// simulated ms (liveness oracle).
    #[serde(default = "default_rebalance_deadline_ms")]
    rebalance_deadline_ms: u64,
}

fn default_vbuckets() -> u16 {
    8
}
fn default_move() -> u16 {
    4
}
fn default_loaders() -> u32 {
    2
}
fn default_ops() -> u32 {
    150
}
fn default_keys() -> u32 {
    40
}
fn default_value_bytes() -> u32 {
    200
}
fn default_start_ms() -> u64 {
    20
}
fn default_attempts() -> u32 {
    3
}
fn default_retry_delay_ms() -> u64 {
    20
}
fn default_backfill_timeout_ms() -> u64 {
    2_000
}
fn default_rebalance_deadline_ms() -> u64 {
    10_000
}

impl Params {
    fn check(&self) -> Result<(), ParamError> {
        if !(4..=64).contains(&self.vbuckets) {
            return Err(ParamError::new(
                "vbuckets",
                "params.vbuckets must be within 4..=64",
            ));
        }
        if self.move_vbuckets == 0 || self.move_vbuckets > self.vbuckets {
            return Err(ParamError::new(
                "move_vbuckets",
                "params.move_vbuckets must be within 1..=vbuckets",
            ));
        }
        if self.loaders > MAX_LOADERS {
            return Err(ParamError::new(
                "loaders",
                format!("params.loaders must be at most {MAX_LOADERS}"),
            ));
        }
        if self.ops_per_loader > MAX_OPS || self.keys_per_loader == 0 {
            return Err(ParamError::new(
                "ops_per_loader",
                format!(
                    "params.ops_per_loader must be at most {MAX_OPS}, with keys_per_loader > 0"
                ),
            ));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > MAX_VALUE_BYTES {
            return Err(ParamError::new(
                "max_value_bytes",
                format!("params.max_value_bytes must be within 1..={MAX_VALUE_BYTES}"),
            ));
        }
        if self.attempts == 0 {
            return Err(ParamError::new(
                "attempts",
                "params.attempts must be positive",
            ));
        }
        Ok(())
    }
}

/// A kv node as a host: `active` vbuckets active, the others replicas.
pub(crate) fn kv_host(setup: &mut SimSetup<'_>, name: &str, config: KvConfig) {
    setup.host(name, move || {
        let config = config.clone();
        async move {
            let listener = SimListener::bind(("0.0.0.0", config.port)).await?;
            serve(listener, Node::new(config)).await?;
            Ok(())
        }
    });
}

pub(crate) fn node_config(vbuckets: u16, active: bool, bugs: Bugs) -> KvConfig {
    KvConfig {
        vbuckets,
        active: if active {
            VbRange::all(vbuckets)
        } else {
            VbRange { start: 0, end: 0 }
        },
        bugs,
        ..KvConfig::default()
    }
}

/// What the loaders and the cluster manager share: the model of the
/// store, the keys written, how many loaders are still running.
#[derive(Default)]
struct Shared {
    model: RefCell<KvModel>,
    keys: RefCell<BTreeMap<Vec<u8>, u16>>,
    loaders_running: Cell<u32>,
}

pub struct DcpRebalance;

impl Workload for DcpRebalance {
    fn name(&self) -> &'static str {
        "dcp-rebalance"
    }

    fn check(&self, params: &toml::Table) -> Result<(), ParamError> {
        parse_params::<Params>(params)?.check()
    }

    fn build(&self, setup: &mut SimSetup<'_>, run: &RunSpec<'_>) -> Result<(), String> {
        let p: Params = parse_params(run.params).map_err(|e| e.message)?;
        let bugs = Bugs::from_run(run);
        setup.set_framer(Rc::new(McbpFramer));
        kv_host(setup, "kv-1", node_config(p.vbuckets, true, bugs.clone()));
        kv_host(setup, "kv-2", node_config(p.vbuckets, false, bugs.clone()));
        let shared = Rc::new(Shared::default());
        shared.loaders_running.set(p.loaders);
        for index in 0..p.loaders {
            let loader = Loader {
                index,
                vbuckets: p.vbuckets,
                ops: p.ops_per_loader,
                keys: p.keys_per_loader,
                max_value_bytes: p.max_value_bytes,
                shared: shared.clone(),
            };
            setup.client(&format!("loader-{index}"), async move {
                loader.run().await;
                Ok(())
            });
        }
        let ns = Ns {
            vbs: (0..p.move_vbuckets).collect(),
            attempts: p.attempts,
            start: Duration::from_millis(p.start_ms),
            retry_delay: Duration::from_millis(p.retry_delay_ms),
            deadline: Duration::from_millis(p.rebalance_deadline_ms),
            config: RebalanceConfig {
                backfill_timeout_ms: p.backfill_timeout_ms,
                ..RebalanceConfig::default()
            },
            bugs,
            shared,
        };
        setup.client("ns", async move {
            ns.run().await;
            Ok(())
        });
        Ok(())
    }
}

/// The cluster manager: rebalances, then checks every key.
struct Ns {
    vbs: BTreeSet<u16>,
    attempts: u32,
    start: Duration,
    retry_delay: Duration,
    deadline: Duration,
    config: RebalanceConfig,
    bugs: Bugs,
    shared: Rc<Shared>,
}

impl Ns {
    async fn run(self) {
        tokio::time::sleep(self.start).await;
        let replicator = Replicator::new(ProxyConfig {
            name: replication_name("kv-1", "kv-2"),
            consumer_host: "kv-2".into(),
            producer_host: "kv-1".into(),
            port: KV_PORT,
            bugs: self.bugs.clone(),
        });
        let (mut old, mut new) = match (
            Admin::connect("kv-1", KV_PORT).await,
            Admin::connect("kv-2", KV_PORT).await,
        ) {
            (Ok(old), Ok(new)) => (old, new),
            _ => return oracle::fail("rebalance", "ns could not connect to the nodes"),
        };
        let rebalance_done = oracle::pending_within(
            format!("rebalance of vbs {:?} from kv-1 to kv-2", self.vbs),
            self.deadline,
        );
        let mut last_error = None;
        for attempt in 1..=self.attempts {
            match rebalance(&replicator, &mut old, &mut new, &self.vbs, self.config).await {
                Ok(moved) => {
                    tracing::info!(target: "faultline::ns", attempt, moved = ?moved, "rebalance ok");
                    last_error = None;
                    break;
                }
                Err(e) => {
                    tracing::info!(target: "faultline::ns", attempt, error = %e, "rebalance failed");
                    last_error = Some(e.to_string());
                    tokio::time::sleep(self.retry_delay).await;
                }
            }
        }
        drop(rebalance_done);
        if let Some(error) = last_error {
            return oracle::fail(
                "rebalance",
                format!("{} attempts failed; the last: {error}", self.attempts),
            );
        }
        let _ = replicator.shut().await;
        while self.shared.loaders_running.get() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.check_every_key().await;
    }

    /// Reads every key from its vbucket's owner after the move.
    async fn check_every_key(&self) {
        let mut clients = BTreeMap::new();
        for host in ["kv-1", "kv-2"] {
            match SimStream::connect((host, KV_PORT)).await {
                Ok(s) => {
                    clients.insert(host, Client::new(s));
                }
                Err(e) => return oracle::fail("store-model", format!("ns: {host}: {e}")),
            }
        }
        let keys = self.shared.keys.borrow().clone();
        for (key, vb) in keys {
            let host = if self.vbs.contains(&vb) {
                "kv-2"
            } else {
                "kv-1"
            };
            let client = clients.get_mut(host).expect("connected");
            let got = match client.get(&key, vb).await {
                Ok(item) => item.map(|i| i.value.to_vec()),
                Err(e) => {
                    return oracle::fail(
                        "store-model",
                        format!("after the rebalance, {host} vb {vb}: {e}"),
                    );
                }
            };
            if let Err(why) = self.shared.model.borrow().check_read(&key, got.as_deref()) {
                return oracle::fail(
                    "store-model",
                    format!("after the rebalance, {host} vb {vb}: {why}"),
                );
            }
        }
        tracing::info!(target: "faultline::ns", keys = self.shared.keys.borrow().len(), "every key checked");
    }
}

/// A client that writes and reads its own keys, following vbuckets as they
/// move (a `NOT_MY_VBUCKET` sends it to the other node).
struct Loader {
    index: u32,
    vbuckets: u16,
    ops: u32,
    keys: u32,
    max_value_bytes: u32,
    shared: Rc<Shared>,
}

impl Loader {
    async fn run(self) {
        let mut clients = BTreeMap::new();
        for host in ["kv-1", "kv-2"] {
            match SimStream::connect((host, KV_PORT)).await {
                Ok(s) => {
                    clients.insert(host, Client::new(s));
                }
                Err(e) => {
                    oracle::fail("kv-status", format!("loader-{}: {host}: {e}", self.index));
                    return;
                }
            }
        }
        let mut owner = vec!["kv-1"; usize::from(self.vbuckets)];
        let stream = format!("loader/{}", self.index);
        for op in 0..self.ops {
            let (j, write, len) = with_rng(&stream, |rng| {
                (
                    rng.random_range(0..self.keys),
                    rng.random_bool(0.7),
                    rng.random_range(1..=self.max_value_bytes) as usize,
                )
            });
            let key = format!("loader-{}:k{j}", self.index).into_bytes();
            let vb = vbucket_of(&key, self.vbuckets);
            let value = if write {
                let mut v = format!("{}:op{op}:", String::from_utf8_lossy(&key)).into_bytes();
                v.resize(len.max(v.len()), b'a' + (op % 26) as u8);
                Some(v)
            } else {
                None
            };
            if let Err(why) = self.one(&mut clients, &mut owner, &key, vb, value).await {
                oracle::fail("kv-status", format!("loader-{}: {why}", self.index));
                break;
            }
        }
        self.shared
            .loaders_running
            .set(self.shared.loaders_running.get() - 1);
    }

    /// One write (`Some`) or read, at the vbucket's owner.
    async fn one(
        &self,
        clients: &mut BTreeMap<&'static str, Client<SimStream>>,
        owner: &mut [&'static str],
        key: &[u8],
        vb: u16,
        value: Option<Vec<u8>>,
    ) -> Result<(), String> {
        for _ in 0..MAX_OWNER_RETRIES {
            let host = owner[usize::from(vb)];
            let client = clients.get_mut(host).expect("connected");
            let result = match &value {
                Some(v) => client.set(key, v, vb).await.map(|_| None),
                None => client
                    .get(key, vb)
                    .await
                    .map(|i| i.map(|i| i.value.to_vec())),
            };
            match result {
                Ok(got) => {
                    match &value {
                        Some(v) => {
                            self.shared.model.borrow_mut().acked(key, Some(v));
                            self.shared.keys.borrow_mut().insert(key.to_vec(), vb);
                        }
                        None => {
                            if let Err(why) =
                                self.shared.model.borrow().check_read(key, got.as_deref())
                            {
                                oracle::fail("store-model", format!("{host} vb {vb}: {why}"));
                            }
                        }
                    }
                    return Ok(());
                }
                Err(ClientError::Status(Status::NOT_MY_VBUCKET)) => {
                    // The vbucket moved (or is moving): ask the other node.
                    owner[usize::from(vb)] = if host == "kv-1" { "kv-2" } else { "kv-1" };
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(format!("{host} vb {vb}: {e}")),
            }
        }
        Err(format!("no node takes vb {vb}"))
    }
}
