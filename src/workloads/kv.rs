//! The `kv-clients` workload: one kv node and many clients sending mixed
//! traffic (see [`traffic`](super::traffic)): small and large values, reads
//! checked against a model, every response validated.
//!
//! ```toml
//! workload = "kv-clients"
//! [params.node]          # the kv node (all keys optional)
//! workers = 1            # connections share one worker's buffer pool
//! [params.traffic]       # what the clients do
//! clients = 8
//! ops = 100
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use super::store_model::KvModel;
use faultline_harness::{ParamError, RunSpec, SimSetup, Workload, parse_params};
use serde::Deserialize;

use super::traffic::{self, Target, TrafficParams};
use crate::bugs::Bugs;
use crate::protocol::McbpFramer;
use crate::server::{KV_PORT, KvConfig, VbRange, run_node};

/// A kv node's settings in a scenario file (`[params.node]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeParams {
    /// Worker threads; a worker's connections share its buffer pool.
    #[serde(default = "default_workers")]
    pub workers: usize,
    #[serde(default = "default_vbuckets")]
    pub vbuckets: u16,
    #[serde(default = "default_read_buffer_bytes")]
    pub read_buffer_bytes: usize,
    #[serde(default = "default_write_buffer_bytes")]
    pub write_buffer_bytes: usize,
    /// Close connections idle this long; never when absent.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Extra STAT entries, to make a STAT response large.
    #[serde(default)]
    pub stat_detail_entries: usize,
}

fn default_workers() -> usize {
    1
}
fn default_vbuckets() -> u16 {
    16
}
fn default_read_buffer_bytes() -> usize {
    8 * 1024
}
fn default_write_buffer_bytes() -> usize {
    2 * 1024
}

impl Default for NodeParams {
    fn default() -> Self {
        NodeParams {
            workers: default_workers(),
            vbuckets: default_vbuckets(),
            read_buffer_bytes: default_read_buffer_bytes(),
            write_buffer_bytes: default_write_buffer_bytes(),
            idle_timeout_ms: None,
            stat_detail_entries: 0,
        }
    }
}

impl NodeParams {
    /// The node's configuration, every vbucket active.
    pub fn config(&self, bugs: Bugs) -> KvConfig {
        KvConfig {
            vbuckets: self.vbuckets,
            active: VbRange::all(self.vbuckets),
            workers: self.workers,
            read_buffer_bytes: self.read_buffer_bytes,
            write_buffer_bytes: self.write_buffer_bytes,
            idle_timeout_ms: self.idle_timeout_ms,
            stat_detail_entries: self.stat_detail_entries,
            bugs,
            ..KvConfig::default()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    node: NodeParams,
    traffic: TrafficParams,
}

pub struct KvClients;

impl Workload for KvClients {
    fn name(&self) -> &'static str {
        "kv-clients"
    }

    fn check(&self, params: &toml::Table) -> Result<(), ParamError> {
        let p: Params = parse_params(params)?;
        p.traffic.check("traffic")?;
        p.node
            .config(Bugs::fixed())
            .validate()
            .map_err(|message| ParamError::new("node", format!("params.node: {message}")))
    }

    fn build(&self, setup: &mut SimSetup<'_>, run: &RunSpec<'_>) -> Result<(), String> {
        let p: Params = parse_params(run.params).map_err(|e| e.message)?;
        let config = p.node.config(Bugs::from_run(run));
        setup.set_framer(Rc::new(McbpFramer));
        setup.host("kv", move || {
            let config = config.clone();
            async move { Ok(run_node(config).await?) }
        });
        let model = Rc::new(RefCell::new(KvModel::new()));
        let target = Target {
            host: "kv".into(),
            port: KV_PORT,
            vbuckets: p.node.vbuckets,
        };
        let shared = traffic::SharedHistory::new(p.traffic.clients);
        for index in 0..p.traffic.clients {
            let (target, traffic, model) = (target.clone(), p.traffic.clone(), model.clone());
            let shared = shared.clone();
            setup.client(&format!("client-{index}"), async move {
                traffic::run_client(index, target, traffic, model, shared).await;
                Ok(())
            });
        }
        Ok(())
    }
}
