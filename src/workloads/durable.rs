//! The `durable-writes` workload: `kv-1` holds every vbucket active, `kv-2`
//! a replica of each, the cluster manager (`ns`) sets up the replication
//! between them, and clients write durably (level majority), write
//! plainly and read, each client its own keys.
//!
//! ```toml
//! workload = "durable-writes"
//! [params]
//! vbuckets = 4
//! clients = 8
//! ops = 60                 # per client
//! durable_percent = 70     # of the writes
//! read_percent = 20        # of the operations
//! durability_timeout_ms = 10000
//! write_deadline_ms = 5000 # liveness: every durable write answers in time
//!
//! [params.executor]        # both nodes' background task executor
//! auxio_threads = 1        # also reader_threads, writer_threads, nonio_threads
//! fallback_sleep_ms = 2000 # a sleeping thread looks at its queue this often
//! fallback_sleep = true    # false: only a wake-up or a due task wakes it
//! ```
//!
//! Oracles: `store-model` (every read agrees with the writes: acknowledged
//! ones, or ambiguous ones that may have been applied), `kv-status` (an
//! answer the client cannot explain), and the scenario's `latency`
//! thresholds on what the node records: `durable-write` (how long a
//! durable write took) and `scheduler-wait.auxio` (how late the task that
//! prepares outgoing replication messages ran).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::oracle;

use super::store_model::KvModel;
use crate::protocol::show;
use faultline_harness::{
    ParamError, RunSpec, SimSetup, SimStream, Workload, parse_params, with_rng,
};
use rand::Rng;
use serde::Deserialize;

use super::rebalance::{kv_host, node_config};
use crate::bugs::Bugs;
use crate::dcp::{ProxyConfig, Replicator, replication_name};
use crate::protocol::McbpFramer;
use crate::protocol::client::{Client, ClientError};
use crate::protocol::{Durability, Opcode, Status, vbucket_of};
use crate::server::KV_PORT;
use crate::server::executor::{DEFAULT_FALLBACK_SLEEP_MS, ExecutorConfig};

const MAX_CLIENTS: u32 = 256;
const MAX_OPS: u32 = 100_000;
const MAX_VALUE_BYTES: u32 = 64 * 1024;

/// Durable writes are refused (DURABILITY_IMPOSSIBLE) until the replica
/// stream is up: a client retries this often, this far apart.
const MAX_IMPOSSIBLE_RETRIES: u32 = 2_000;
const IMPOSSIBLE_RETRY_MS: u64 = 5;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_vbuckets")]
    vbuckets: u16,
    #[serde(default = "default_clients")]
    clients: u32,
    #[serde(default = "default_ops")]
    ops: u32,
    #[serde(default = "default_keys")]
    keys_per_client: u32,
    #[serde(default = "default_durable_percent")]
    durable_percent: u32,
    #[serde(default = "default_read_percent")]
    read_percent: u32,
    #[serde(default = "default_value_bytes")]
    max_value_bytes: u32,
    #[serde(default = "default_durability_timeout_ms")]
    durability_timeout_ms: u64,
    /// Liveness: a durable write not answered this long after it was sent
    /// fails the run (none when absent).
    #[serde(default)]
    write_deadline_ms: Option<u64>,
    #[serde(default)]
    executor: ExecutorParams,
}

/// The nodes' executor: worker threads per task type and the fallback
/// sleep (the engine's `MIN_SLEEP_TIME`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ExecutorParams {
    reader_threads: usize,
    writer_threads: usize,
    auxio_threads: usize,
    nonio_threads: usize,
    fallback_sleep_ms: u64,
    /// `false`: no fallback, a sleeping thread waits until it is woken or
    /// its next task is due.
    fallback_sleep: bool,
}

impl Default for ExecutorParams {
    fn default() -> Self {
        let d = ExecutorConfig::default();
        ExecutorParams {
            reader_threads: d.reader_threads,
            writer_threads: d.writer_threads,
            auxio_threads: d.auxio_threads,
            nonio_threads: d.nonio_threads,
            fallback_sleep_ms: DEFAULT_FALLBACK_SLEEP_MS,
            fallback_sleep: true,
        }
    }
}

impl ExecutorParams {
    fn config(&self) -> ExecutorConfig {
        ExecutorConfig {
            reader_threads: self.reader_threads,
            writer_threads: self.writer_threads,
            auxio_threads: self.auxio_threads,
            nonio_threads: self.nonio_threads,
            fallback_sleep_ms: self.fallback_sleep.then_some(self.fallback_sleep_ms),
        }
    }
}

fn default_vbuckets() -> u16 {
    4
}
fn default_clients() -> u32 {
    8
}
fn default_ops() -> u32 {
    60
}
fn default_keys() -> u32 {
    10
}
fn default_durable_percent() -> u32 {
    70
}
fn default_read_percent() -> u32 {
    20
}
fn default_value_bytes() -> u32 {
    256
}
fn default_durability_timeout_ms() -> u64 {
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
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return Err(ParamError::new(
                "clients",
                format!("params.clients must be within 1..={MAX_CLIENTS}"),
            ));
        }
        if self.ops > MAX_OPS || self.keys_per_client == 0 {
            return Err(ParamError::new(
                "ops",
                format!("params.ops must be at most {MAX_OPS}, with keys_per_client > 0"),
            ));
        }
        if self.durable_percent > 100 || self.read_percent > 100 {
            return Err(ParamError::new(
                "durable_percent",
                "params.durable_percent and read_percent are percentages",
            ));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > MAX_VALUE_BYTES {
            return Err(ParamError::new(
                "max_value_bytes",
                format!("params.max_value_bytes must be within 1..={MAX_VALUE_BYTES}"),
            ));
        }
        if self.durability_timeout_ms == 0 {
            return Err(ParamError::new(
                "durability_timeout_ms",
                "params.durability_timeout_ms must be positive",
            ));
        }
        if self.write_deadline_ms == Some(0) {
            return Err(ParamError::new(
                "write_deadline_ms",
                "params.write_deadline_ms must be positive",
            ));
        }
        self.executor
            .config()
            .validate()
            .map_err(|why| ParamError::new("executor", format!("params.executor: {why}")))
    }
}

pub struct DurableWrites;

impl Workload for DurableWrites {
    fn name(&self) -> &'static str {
        "durable-writes"
    }

    fn check(&self, params: &toml::Table) -> Result<(), ParamError> {
        parse_params::<Params>(params)?.check()
    }

    fn build(&self, setup: &mut SimSetup<'_>, run: &RunSpec<'_>) -> Result<(), String> {
        let p: Params = parse_params(run.params).map_err(|e| e.message)?;
        let bugs = Bugs::from_run(run);
        setup.set_framer(Rc::new(McbpFramer));
        let mut active = node_config(p.vbuckets, true, bugs.clone());
        active.durability_timeout_ms = p.durability_timeout_ms;
        active.executor = p.executor.config();
        kv_host(setup, "kv-1", active);
        let mut replica = node_config(p.vbuckets, false, bugs.clone());
        replica.executor = p.executor.config();
        kv_host(setup, "kv-2", replica);
        let vbuckets = p.vbuckets;
        setup.host("ns", move || replicate_everything(vbuckets, bugs.clone()));
        let model = Rc::new(RefCell::new(KvModel::new()));
        for index in 0..p.clients {
            let writer = Writer {
                index,
                vbuckets: p.vbuckets,
                ops: p.ops,
                keys: p.keys_per_client,
                durable_percent: p.durable_percent,
                read_percent: p.read_percent,
                max_value_bytes: p.max_value_bytes,
                write_deadline: p.write_deadline_ms.map(Duration::from_millis),
                model: model.clone(),
            };
            setup.client(&format!("client-{index}"), async move {
                writer.run().await;
                Ok(())
            });
        }
        Ok(())
    }
}

/// The cluster manager: one replication stream per vbucket from kv-1 to
/// kv-2, kept open (tried again if the set-up fails).
async fn replicate_everything(vbuckets: u16, bugs: Bugs) -> turmoil::Result {
    let replicator = Replicator::new(ProxyConfig {
        name: replication_name("kv-1", "kv-2"),
        consumer_host: "kv-2".into(),
        producer_host: "kv-1".into(),
        port: KV_PORT,
        bugs,
    });
    let vbs = (0..vbuckets).collect();
    loop {
        match replicator.setup_replication(&vbs).await {
            Ok(()) => break,
            Err(e) => {
                tracing::info!(target: "faultline::ns", error = %e, "replication set-up failed; again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // The replication runs as long as the replicator lives.
    std::future::pending::<()>().await;
    Ok(())
}

struct Writer {
    index: u32,
    vbuckets: u16,
    ops: u32,
    keys: u32,
    durable_percent: u32,
    read_percent: u32,
    max_value_bytes: u32,
    write_deadline: Option<Duration>,
    model: Rc<RefCell<KvModel>>,
}

impl Writer {
    async fn run(self) {
        let mut client = match SimStream::connect(("kv-1", KV_PORT)).await {
            Ok(s) => Client::new(s),
            Err(e) => return oracle::fail("kv-status", format!("client-{}: {e}", self.index)),
        };
        let stream = format!("durable/{}", self.index);
        for op in 0..self.ops {
            let (j, roll, durable_roll, len) = with_rng(&stream, |rng| {
                (
                    rng.random_range(0..self.keys),
                    rng.random_range(0..100u32),
                    rng.random_range(0..100u32),
                    rng.random_range(1..=self.max_value_bytes) as usize,
                )
            });
            let key = format!("client-{}:k{j}", self.index).into_bytes();
            let vb = vbucket_of(&key, self.vbuckets);
            let result = if roll < self.read_percent {
                self.read(&mut client, &key, vb).await
            } else {
                let mut value = format!("client-{}:k{j}:op{op}:", self.index).into_bytes();
                value.resize(len.max(value.len()), b'a' + (op % 26) as u8);
                self.write(
                    &mut client,
                    &key,
                    &value,
                    vb,
                    durable_roll < self.durable_percent,
                )
                .await
            };
            if let Err(why) = result {
                return oracle::fail("kv-status", format!("client-{}: {why}", self.index));
            }
        }
    }

    async fn read(
        &self,
        client: &mut Client<SimStream>,
        key: &[u8],
        vb: u16,
    ) -> Result<(), String> {
        let got = client
            .get(key, vb)
            .await
            .map_err(|e| format!("GET vb {vb}: {e}"))?;
        if let Err(why) = self
            .model
            .borrow()
            .check_read(key, got.as_ref().map(|i| i.value.as_ref()))
        {
            oracle::fail("store-model", format!("client-{}: {why}", self.index));
        }
        Ok(())
    }

    async fn write(
        &self,
        client: &mut Client<SimStream>,
        key: &[u8],
        value: &[u8],
        vb: u16,
        durable: bool,
    ) -> Result<(), String> {
        let mut store = crate::protocol::client::Store::new(Opcode::SET, key, value).vbucket(vb);
        if durable {
            store = store.durability(Durability::Majority);
        }
        let _deadline = self.write_deadline.filter(|_| durable).map(|within| {
            oracle::pending_within(
                format!("client-{} durable SET {}", self.index, show(key)),
                within,
            )
        });
        for _ in 0..MAX_IMPOSSIBLE_RETRIES {
            match client.store(&store).await {
                Ok(_) => {
                    self.model.borrow_mut().acked(key, Some(value));
                    return Ok(());
                }
                // The replica stream is not up yet.
                Err(ClientError::Status(Status::DURABILITY_IMPOSSIBLE)) if durable => {
                    tokio::time::sleep(Duration::from_millis(IMPOSSIBLE_RETRY_MS)).await;
                }
                Err(ClientError::Status(Status::SYNC_WRITE_AMBIGUOUS)) if durable => {
                    self.model.borrow_mut().uncertain(key, Some(value));
                    return Ok(());
                }
                // An earlier ambiguous write to the key is still in flight:
                // this one was not applied.
                Err(ClientError::Status(Status::SYNC_WRITE_IN_PROGRESS)) => return Ok(()),
                Err(e) => return Err(format!("SET vb {vb} durable={durable}: {e}")),
            }
        }
        Err(format!("vb {vb}: durable writes stayed impossible"))
    }
}
