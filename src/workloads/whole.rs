//! The `whole-system` workload: everything at once. Two kv nodes (`kv-0`,
//! `kv-1`), the proxy in front of them with its health checks, clients
//! sending a mixed workload through the proxy (durable writes included),
//! and the cluster manager (`ns`) that sets up replication between the
//! nodes and then rebalances vbuckets from `kv-0` to `kv-1` while the
//! clients run. The proxy follows the moved vbuckets (it learns from
//! `NOT_MY_VBUCKET`), and the clients' last reads check every key.
//!
//! ```toml
//! workload = "whole-system"
//! [params.proxy]        # the `proxy` workload's keys: nodes (2), clients, the proxy, the kv nodes
//! clients = 6
//! durable_percent = 40
//! [params.cluster]      # the cluster manager
//! replicate = [4, 5, 6, 7, 12, 13, 14, 15]
//! rebalance = [0, 1]
//! ```
//!
//! Oracles: those of the `proxy` workload (`response-validation`,
//! `store-model`, `proxy-availability`, `liveness`, `throughput`), plus
//! `liveness` of every replication set-up and rebalance call (each must
//! return, with success or an error, within `call_deadline_ms`) and of
//! every stream's set-up (`setup vb N`), and `stream-safety` (the cluster
//! manager is never told ok for a stream that has already ended). A call
//! that returns an error is not a failure: the cluster manager retries,
//! and gives up after `attempts` (a rebalance that fails is the fixed
//! behaviour when a node misbehaves; one that hangs is not).

use std::collections::BTreeSet;
use std::time::Duration;

use faultline_harness::oracle;
use faultline_harness::{ParamError, RunSpec, SimSetup, Workload, parse_params, probe};
use serde::Deserialize;

use super::proxy::Params as SystemParams;
use crate::bugs::Bugs;
use crate::dcp::admin::Admin;
use crate::dcp::{ProxyConfig, RebalanceConfig, Replicator, rebalance, replication_name};
use crate::protocol::dcp::vbucket_state;
use crate::proxy::backend::active_range;
use crate::server::KV_PORT;

/// The cluster manager's settings (`[params.cluster]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterParams {
    /// When the cluster manager starts, in simulated ms.
    #[serde(default = "default_start_ms")]
    start_ms: u64,
    /// vbuckets replicated from their active node to the other node.
    #[serde(default = "default_replicate")]
    replicate: Vec<u16>,
    /// vbuckets moved from `kv-0` to `kv-1` (active on `kv-0`, not
    /// replicated).
    #[serde(default = "default_rebalance")]
    rebalance: Vec<u16>,
    /// Tries of each call before the cluster manager gives up on it.
    #[serde(default = "default_attempts")]
    attempts: u32,
    #[serde(default = "default_retry_delay_ms")]
    retry_delay_ms: u64,
    /// Every call (replication set-up, rebalance) returns within this, in
    /// simulated ms.
    #[serde(default = "default_call_deadline_ms")]
    call_deadline_ms: u64,
    #[serde(default = "default_backfill_timeout_ms")]
    backfill_timeout_ms: u64,
    /// The kv nodes' durability timeout (keep it under the proxy's server
    /// timeout, so that a slow replica is an answer, not a proxy error).
    #[serde(default = "default_durability_timeout_ms")]
    durability_timeout_ms: u64,
}

fn default_start_ms() -> u64 {
    20
}
fn default_replicate() -> Vec<u16> {
    vec![4, 5, 6, 7, 12, 13, 14, 15]
}
fn default_rebalance() -> Vec<u16> {
    vec![0, 1]
}
fn default_attempts() -> u32 {
    3
}
fn default_retry_delay_ms() -> u64 {
    50
}
fn default_call_deadline_ms() -> u64 {
    10_000
}
fn default_backfill_timeout_ms() -> u64 {
    2_000
}
fn default_durability_timeout_ms() -> u64 {
    1_000
}

impl Default for ClusterParams {
    fn default() -> Self {
        ClusterParams {
            start_ms: default_start_ms(),
            replicate: default_replicate(),
            rebalance: default_rebalance(),
            attempts: default_attempts(),
            retry_delay_ms: default_retry_delay_ms(),
            call_deadline_ms: default_call_deadline_ms(),
            backfill_timeout_ms: default_backfill_timeout_ms(),
            durability_timeout_ms: default_durability_timeout_ms(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    proxy: SystemParams,
    #[serde(default)]
    cluster: ClusterParams,
}

/// The two nodes of the system.
const NODES: [&str; 2] = ["kv-0", "kv-1"];

impl Params {
    fn check(&self) -> Result<(), ParamError> {
        self.proxy.check("proxy.")?;
        let bad = |key: &str, why: String| {
            Err(ParamError::new(
                &format!("cluster.{key}"),
                format!("params.cluster.{key} {why}"),
            ))
        };
        if self.proxy.nodes() != NODES.len() {
            return Err(ParamError::new(
                "proxy.nodes",
                "params.proxy.nodes must be 2: the cluster manager moves vbuckets from kv-0 to kv-1",
            ));
        }
        let vbuckets = self.proxy.vbuckets();
        if let Some(vb) = self
            .cluster
            .replicate
            .iter()
            .chain(&self.cluster.rebalance)
            .find(|vb| **vb >= vbuckets)
        {
            return bad("replicate", format!("names vbucket {vb}, past the bucket"));
        }
        let kv0 = active_range(0, NODES.len(), vbuckets);
        if let Some(vb) = self.cluster.rebalance.iter().find(|vb| !kv0.contains(**vb)) {
            return bad(
                "rebalance",
                format!("names vbucket {vb}, which kv-0 is not active for"),
            );
        }
        if let Some(vb) = self
            .cluster
            .rebalance
            .iter()
            .find(|vb| self.cluster.replicate.contains(vb))
        {
            return bad(
                "rebalance",
                format!("names vbucket {vb}, which is also replicated"),
            );
        }
        if self.cluster.attempts == 0 {
            return bad("attempts", "must be positive".into());
        }
        if self.cluster.call_deadline_ms == 0 || self.cluster.durability_timeout_ms == 0 {
            return bad(
                "call_deadline_ms",
                "and durability_timeout_ms must be positive".into(),
            );
        }
        Ok(())
    }
}

pub struct WholeSystem;

impl Workload for WholeSystem {
    fn name(&self) -> &'static str {
        "whole-system"
    }

    fn check(&self, params: &toml::Table) -> Result<(), ParamError> {
        parse_params::<Params>(params)?.check()
    }

    fn build(&self, setup: &mut SimSetup<'_>, run: &RunSpec<'_>) -> Result<(), String> {
        let p: Params = parse_params(run.params).map_err(|e| e.message)?;
        let bugs = Bugs::from_run(run);
        let durability_timeout_ms = p.cluster.durability_timeout_ms;
        p.proxy.build(setup, bugs.clone(), |config| {
            config.durability_timeout_ms = durability_timeout_ms
        });
        let ns = ClusterManager {
            vbuckets: p.proxy.vbuckets(),
            cluster: p.cluster,
            bugs,
        };
        // A host: the fault plan may crash and restart it, and it starts
        // over (as the cluster manager's processes do).
        setup.host("ns", move || {
            let ns = ns.clone();
            async move {
                ns.run().await;
                Ok(())
            }
        });
        Ok(())
    }
}

/// The cluster manager of the whole system.
#[derive(Clone)]
struct ClusterManager {
    vbuckets: u16,
    cluster: ClusterParams,
    bugs: Bugs,
}

impl ClusterManager {
    fn replicator(&self, producer: &str, consumer: &str) -> Replicator {
        Replicator::new(ProxyConfig {
            name: replication_name(producer, consumer),
            consumer_host: consumer.into(),
            producer_host: producer.into(),
            port: KV_PORT,
            bugs: self.bugs.clone(),
        })
    }

    /// The replicated vbuckets whose active node is `index`.
    fn replicas_of(&self, index: usize) -> BTreeSet<u16> {
        let range = active_range(index, NODES.len(), self.vbuckets);
        self.cluster
            .replicate
            .iter()
            .copied()
            .filter(|vb| range.contains(*vb))
            .collect()
    }

    async fn run(self) {
        tokio::time::sleep(Duration::from_millis(self.cluster.start_ms)).await;
        // A restart finds the cluster as the crash left it.
        self.call("janitor", || self.janitor()).await;
        let forward = self.replicator(NODES[0], NODES[1]);
        let backward = self.replicator(NODES[1], NODES[0]);
        for (replicator, vbs) in [
            (&forward, self.replicas_of(0)),
            (&backward, self.replicas_of(1)),
        ] {
            if vbs.is_empty() {
                continue;
            }
            let what = format!("replication {} of vbs {vbs:?}", replicator.name());
            self.call(&what, || replicator.setup_replication(&vbs))
                .await;
        }
        let moving: BTreeSet<u16> = self.cluster.rebalance.iter().copied().collect();
        if !moving.is_empty() {
            self.rebalance(&forward, &moving).await;
        }
        // Replication serves the clients' durable writes while the host
        // lives; the run ends with the clients.
        let _keep = (forward, backward);
        std::future::pending::<()>().await
    }

    /// Calls `call` until it succeeds, at most `attempts` times; each try
    /// must return within the call deadline (liveness).
    async fn call<F, Fut, E>(&self, what: &str, call: F) -> bool
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        for attempt in 1..=self.cluster.attempts {
            let result = {
                let _deadline = oracle::pending_within(
                    format!("ns: {what} (try {attempt})"),
                    Duration::from_millis(self.cluster.call_deadline_ms),
                );
                call().await
            };
            match result {
                Ok(()) => {
                    tracing::info!(target: "faultline::ns", what, attempt, "done");
                    return true;
                }
                Err(e) => {
                    probe("ns: a call failed and is retried");
                    tracing::info!(target: "faultline::ns", what, attempt, error = %e, "failed");
                    tokio::time::sleep(Duration::from_millis(self.cluster.retry_delay_ms)).await;
                }
            }
        }
        probe("ns: a call gave up");
        false
    }

    /// Repairs vbucket states a crash left behind (as the cluster
    /// manager's janitor does): a vbucket active nowhere, after a takeover
    /// cut short, is made active again on `kv-0`, which held all of it
    /// when it handed it over, and a replica on `kv-1`.
    async fn janitor(&self) -> Result<(), String> {
        let mut nodes = Vec::new();
        for host in NODES {
            let admin = Admin::connect(host, KV_PORT)
                .await
                .map_err(|e| format!("{host}: {e}"))?;
            nodes.push(admin);
        }
        let mut states = Vec::new();
        for admin in &mut nodes {
            let host = admin.host.clone();
            states.push(admin.vbuckets().await.map_err(|e| format!("{host}: {e}"))?);
        }
        let active = |i: usize, vb: u16| states[i].get(&vb).is_some_and(|v| v.state == "active");
        let orphans: Vec<u16> = (0..self.vbuckets)
            .filter(|vb| !active(0, *vb) && !active(1, *vb))
            .collect();
        for vb in orphans {
            probe("ns: janitor repairs a vbucket");
            tracing::info!(target: "faultline::ns", vb, "janitor: active nowhere; kv-0 takes it back");
            nodes[1]
                .set_vbucket_state(vb, vbucket_state::REPLICA)
                .await
                .map_err(|e| format!("{}: {e}", NODES[1]))?;
            nodes[0]
                .set_vbucket_state(vb, vbucket_state::ACTIVE)
                .await
                .map_err(|e| format!("{}: {e}", NODES[0]))?;
        }
        Ok(())
    }

    async fn rebalance(&self, replicator: &Replicator, moving: &BTreeSet<u16>) {
        let config = RebalanceConfig {
            backfill_timeout_ms: self.cluster.backfill_timeout_ms,
            ..RebalanceConfig::default()
        };
        let what = format!("rebalance of vbs {moving:?} from kv-0 to kv-1");
        let moved = self
            .call(&what, || async {
                // Fresh connections each try (a partition may have broken
                // the last ones).
                let mut old = Admin::connect(NODES[0], KV_PORT)
                    .await
                    .map_err(|e| format!("{}: {e}", NODES[0]))?;
                let mut new = Admin::connect(NODES[1], KV_PORT)
                    .await
                    .map_err(|e| format!("{}: {e}", NODES[1]))?;
                rebalance(replicator, &mut old, &mut new, moving, config)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await;
        if moved {
            probe("ns: rebalance done");
        }
    }
}
