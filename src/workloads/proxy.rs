//! The `proxy` workload: kv nodes (`kv-0`..), the proxy in front of them
//! (host `proxy`, on the simulated syscall view), and clients that send a
//! mixed workload through the proxy and check every answer.
//!
//! Oracles:
//! * `response-validation`: an answer that does not belong to its request;
//! * `store-model`: a read that disagrees with the client's model of the
//!   store (`KvModel`; each client uses keys of its own);
//! * `linearizability` (with `shared_keys`): the clients share keys, and
//!   the history of all their operations has no order that memcached's
//!   semantics explain;
//! * `proxy-availability`: a request the proxy failed (`ETMPFAIL`, a
//!   closed connection) although every kv node is up;
//! * `liveness` (with `request_deadline_ms`): a request not answered
//!   within that time;
//! * `throughput` (scenario thresholds on `proxy.requests`).
//!
//! Clients may misbehave when the plan switches it on:
//! `client.abort` makes a client send a request and drop its connection
//! without reading an answer that already arrived: the proxy sees the
//! request, then a reset. Clients also vary their style:
//! `client.quiet-read` sends a read as a multi-get does (GETKQ with a
//! NOOP behind it, in one write): a miss answers nothing, the NOOP's
//! answer ends it.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::oracle;

use super::store_model::KvModel;
use faultline_harness::{
    ParamError, RunSpec, SimSetup, SimStream, Workload, parse_params, probe, switch, sys::Sys,
    with_rng,
};
use rand::Rng;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::bugs::Bugs;
use crate::protocol::client::{Client, ClientError, Store, arith_packet, counter_value};
use crate::protocol::model::output_of_response;
use crate::protocol::{Durability, Limits, McbpFramer, Opcode, Packet, Status};
use crate::proxy::backend::active_range;
use crate::proxy::backend::node_of;
use crate::proxy::{BackendAddr, CheckConfig, CheckKind, ProxyConfig, run_proxy};
use crate::server::{KV_PORT, KvConfig, run_node};
use crate::workloads::health::{self, Health, MonitorConfig, SharedHealth};
use crate::workloads::traffic::{self, ClientDone, SharedHistory, SharedMix};

/// The port the proxy listens on in simulations.
pub const PROXY_PORT: u16 = 11211;

/// The `proxy` workload's parameters (also `[params.proxy]` of the
/// `whole-system` workload).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    #[serde(default = "d_nodes")]
    nodes: usize,
    #[serde(default = "d_vbuckets")]
    vbuckets: u16,
    #[serde(default = "d_threads")]
    threads: usize,
    #[serde(default = "d_clients")]
    clients: u32,
    /// Requests per client.
    #[serde(default = "d_requests")]
    requests: u32,
    /// Keys per client.
    #[serde(default = "d_keys")]
    keys: u32,
    /// Values are 1..=this many bytes (from `min_value_bytes`).
    #[serde(default = "d_max_value_bytes")]
    max_value_bytes: usize,
    #[serde(default = "d_min_value_bytes")]
    min_value_bytes: usize,
    /// Open a new connection for every request (else one per client).
    #[serde(default)]
    new_connection_per_request: bool,
    /// A client gives up on an answer after this long.
    #[serde(default = "d_request_timeout_ms")]
    request_timeout_ms: u64,
    /// Liveness: every request is answered within this time.
    #[serde(default)]
    request_deadline_ms: Option<u64>,
    /// How long an aborting client waits (not reading) before its last
    /// request and the close.
    #[serde(default = "d_abort_think_ms")]
    abort_think_ms: u64,
    // The proxy.
    #[serde(default = "d_buffer_bytes")]
    buffer_bytes: usize,
    #[serde(default = "d_connect_timeout_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "d_server_timeout_ms")]
    server_timeout_ms: u64,
    #[serde(default = "d_client_timeout_ms")]
    client_timeout_ms: u64,
    #[serde(default = "d_keepalive_timeout_ms")]
    keepalive_timeout_ms: u64,
    #[serde(default = "d_retries")]
    retries: u32,
    /// The proxy streams response bodies and splices the large ones
    /// (its `splice` setting).
    #[serde(default)]
    splice: bool,
    #[serde(default = "d_min_splice_bytes")]
    min_splice_bytes: usize,
    #[serde(default = "d_response_buffer_bytes")]
    response_buffer_bytes: usize,
    #[serde(default = "d_checks")]
    checks: bool,
    #[serde(default = "d_check_interval_ms")]
    check_interval_ms: u64,
    #[serde(default = "d_check_timeout_ms")]
    check_timeout_ms: u64,
    #[serde(default = "d_check_rise")]
    check_rise: u32,
    #[serde(default = "d_check_fall")]
    check_fall: u32,
    #[serde(default = "d_check_buffer_bytes")]
    check_buffer_bytes: usize,
    /// `stat` (a STAT must be answered) or `connect` (an established
    /// connection passes, HAProxy's default check).
    #[serde(default = "d_check_kind")]
    check_kind: String,
    /// A monitor probes the kv nodes this often and checks the proxy's
    /// view of them (oracle `health-check`); clients then accept
    /// `ETMPFAIL` for keys of a node it saw refusing connections.
    #[serde(default)]
    health_monitor_ms: Option<u64>,
    // The kv nodes.
    /// kv nodes close connections idle this long.
    #[serde(default)]
    kv_idle_timeout_ms: Option<u64>,
    /// Extra STAT entries (a large check answer).
    #[serde(default)]
    stat_detail_entries: usize,
    /// A client pauses 0..=this many ms after each request (traffic with
    /// gaps, as real clients have).
    #[serde(default)]
    think_time_ms: u64,
    /// Share of SETs that are durable (majority), in percent: answered
    /// once the vbucket's replica holds them, where it has one.
    #[serde(default)]
    durable_percent: u32,
    /// The kv nodes' vbuckets are not where the proxy's initial map says
    /// (node i holds node i+1's range): the proxy must learn the map from
    /// `NOT_MY_VBUCKET` answers, as after a rebalance.
    #[serde(default)]
    stale_map: bool,
    /// 0: each client owns its keys (checked by `KvModel`). Otherwise the
    /// clients draw from this many shared keys (GET, SET, CAS, ADD,
    /// DELETE, APPEND, INCR), and the history of every client's operations
    /// must be linearizable (oracle `linearizability`, when the last
    /// client ends).
    #[serde(default)]
    shared_keys: u32,
}

fn d_nodes() -> usize {
    2
}
fn d_vbuckets() -> u16 {
    16
}
fn d_threads() -> usize {
    2
}
fn d_clients() -> u32 {
    4
}
fn d_requests() -> u32 {
    100
}
fn d_keys() -> u32 {
    8
}
fn d_max_value_bytes() -> usize {
    64
}
fn d_request_timeout_ms() -> u64 {
    20_000
}
fn d_abort_think_ms() -> u64 {
    40
}
fn d_min_value_bytes() -> usize {
    1
}
// The proxy's settings default to the proxy's own defaults
// (`ProxyConfig::default()`): they are defined once, in `crate::proxy`.
fn d_min_splice_bytes() -> usize {
    ProxyConfig::default().min_splice_bytes
}
fn d_response_buffer_bytes() -> usize {
    ProxyConfig::default().response_buffer_bytes
}
fn d_buffer_bytes() -> usize {
    ProxyConfig::default().buffer_bytes
}
fn d_connect_timeout_ms() -> u64 {
    ProxyConfig::default().connect_timeout_ms
}
fn d_server_timeout_ms() -> u64 {
    ProxyConfig::default().server_timeout_ms
}
fn d_client_timeout_ms() -> u64 {
    ProxyConfig::default().client_timeout_ms
}
fn d_keepalive_timeout_ms() -> u64 {
    ProxyConfig::default().keepalive_timeout_ms
}
fn d_retries() -> u32 {
    ProxyConfig::default().retries
}
fn d_checks() -> bool {
    CheckConfig::default().enabled
}
fn d_check_interval_ms() -> u64 {
    CheckConfig::default().interval_ms
}
fn d_check_timeout_ms() -> u64 {
    CheckConfig::default().timeout_ms
}
fn d_check_rise() -> u32 {
    CheckConfig::default().rise
}
fn d_check_fall() -> u32 {
    CheckConfig::default().fall
}
fn d_check_buffer_bytes() -> usize {
    CheckConfig::default().buffer_bytes
}
fn d_check_kind() -> String {
    CheckConfig::default().kind.name().into()
}

/// How often a client asks again after a temporary answer (a vbucket
/// being moved, a durable write in flight), 1 ms apart.
const MAX_OWNER_RETRIES: u32 = 3_000;

/// Reads among shared-key operations, in percent (as in the own-key mix).
const SHARED_READ_PERCENT: u32 = 30;

/// Upper bounds that keep a scenario from asking for absurd runs.
const MAX_THINK_TIME_MS: u64 = 60_000;
const MAX_NODES: usize = 8;
const MAX_CLIENTS: u32 = 64;
/// The kv nodes' largest value.
const MAX_VALUE_BYTES: usize = 1024 * 1024;

impl Params {
    fn proxy_config(&self, bugs: Bugs) -> ProxyConfig {
        ProxyConfig {
            listen_port: PROXY_PORT,
            backends: (0..self.nodes)
                .map(|i| BackendAddr {
                    host: format!("kv-{i}"),
                    port: KV_PORT,
                })
                .collect(),
            vbuckets: self.vbuckets,
            threads: self.threads,
            buffer_bytes: self.buffer_bytes,
            connect_timeout_ms: self.connect_timeout_ms,
            server_timeout_ms: self.server_timeout_ms,
            client_timeout_ms: self.client_timeout_ms,
            keepalive_timeout_ms: self.keepalive_timeout_ms,
            retries: self.retries,
            splice: self.splice,
            min_splice_bytes: self.min_splice_bytes,
            response_buffer_bytes: self.response_buffer_bytes,
            check: CheckConfig {
                enabled: self.checks,
                kind: if self.check_kind == CheckKind::Connect.name() {
                    CheckKind::Connect
                } else {
                    CheckKind::Stat
                },
                interval_ms: self.check_interval_ms,
                timeout_ms: self.check_timeout_ms,
                rise: self.check_rise,
                fall: self.check_fall,
                buffer_bytes: self.check_buffer_bytes,
            },
            bugs,
            ..ProxyConfig::default()
        }
    }

    fn kv_config(&self, index: usize, bugs: Bugs) -> KvConfig {
        KvConfig {
            bugs,
            vbuckets: self.vbuckets,
            active: active_range(
                (index + usize::from(self.stale_map)) % self.nodes,
                self.nodes,
                self.vbuckets,
            ),
            idle_timeout_ms: self.kv_idle_timeout_ms,
            stat_detail_entries: self.stat_detail_entries,
            ..KvConfig::default()
        }
    }
}

pub struct ProxyWorkload;

impl Workload for ProxyWorkload {
    fn name(&self) -> &'static str {
        "proxy"
    }

    fn check(&self, params: &toml::Table) -> Result<(), ParamError> {
        parse_params::<Params>(params)?.check("")
    }

    fn build(&self, setup: &mut SimSetup<'_>, run: &RunSpec<'_>) -> Result<(), String> {
        let p: Params = parse_params(run.params).map_err(|e| e.message)?;
        p.build(setup, Bugs::from_run(run), |_| {});
        Ok(())
    }
}

impl Params {
    /// Checks the limits; `path` prefixes keys (`proxy.` in a nested table).
    pub(crate) fn check(&self, path: &str) -> Result<(), ParamError> {
        let p = self;
        let bad = |key: &str, why: String| {
            Err(ParamError::new(
                &format!("{path}{key}"),
                format!("params.{path}{key} {why}"),
            ))
        };
        if p.nodes == 0 || p.nodes > MAX_NODES {
            return bad("nodes", format!("must be within 1..={MAX_NODES}"));
        }
        if p.clients == 0 || p.clients > MAX_CLIENTS {
            return bad("clients", format!("must be within 1..={MAX_CLIENTS}"));
        }
        if p.keys == 0 {
            return bad("keys", "must be positive".into());
        }
        if p.durable_percent > 100 {
            return bad("durable_percent", "is a percentage".into());
        }
        if p.think_time_ms > MAX_THINK_TIME_MS {
            return bad(
                "think_time_ms",
                format!("must be at most {MAX_THINK_TIME_MS}"),
            );
        }
        let kinds = [CheckKind::Stat.name(), CheckKind::Connect.name()];
        if !kinds.contains(&p.check_kind.as_str()) {
            return bad(
                "check_kind",
                format!("is `stat` or `connect`, not `{}`", p.check_kind),
            );
        }
        if p.health_monitor_ms == Some(0) {
            return bad("health_monitor_ms", "must be positive".into());
        }
        if p.shared_keys > traffic::MAX_SHARED_KEYS {
            return bad(
                "shared_keys",
                format!("must be at most {}", traffic::MAX_SHARED_KEYS),
            );
        }
        if p.max_value_bytes == 0 || p.max_value_bytes > MAX_VALUE_BYTES {
            return bad(
                "max_value_bytes",
                format!("must be within 1..={MAX_VALUE_BYTES}"),
            );
        }
        if p.min_value_bytes == 0 || p.min_value_bytes > p.max_value_bytes {
            return bad(
                "min_value_bytes",
                format!("must be within 1..=max_value_bytes ({})", p.max_value_bytes),
            );
        }
        // A request is buffered whole by the proxy: the largest SET must
        // fit its buffer.
        let largest_request_bytes =
            p.max_value_bytes + Limits::default().max_key_bytes + Limits::HEADROOM_BYTES;
        if largest_request_bytes + crate::protocol::HEADER_LEN > p.buffer_bytes {
            return bad(
                "max_value_bytes",
                format!(
                    "must leave room for a request's header, key and extras in buffer_bytes ({}): at most {}",
                    p.buffer_bytes,
                    p.buffer_bytes.saturating_sub(
                        crate::protocol::HEADER_LEN
                            + Limits::default().max_key_bytes
                            + Limits::HEADROOM_BYTES
                    )
                ),
            );
        }
        let table = match path.trim_end_matches('.') {
            "" => "params".to_string(),
            nested => format!("params.{nested}"),
        };
        let whole = |m: String| ParamError {
            key: None,
            message: format!("{table}: {m}"),
        };
        p.proxy_config(Bugs::fixed()).validate().map_err(whole)?;
        p.kv_config(0, Bugs::fixed()).validate().map_err(whole)?;
        Ok(())
    }

    /// Adds the kv nodes (`kv-0`..; `adjust` may change their
    /// configuration), the proxy and the clients to a simulation.
    pub(crate) fn build(
        &self,
        setup: &mut SimSetup<'_>,
        bugs: Bugs,
        adjust: impl Fn(&mut KvConfig),
    ) {
        setup.set_framer(Rc::new(McbpFramer));
        for i in 0..self.nodes {
            let mut config = self.kv_config(i, bugs.clone());
            adjust(&mut config);
            setup.host(&format!("kv-{i}"), move || {
                let config = config.clone();
                async move { Ok(run_node(config).await?) }
            });
        }
        let config = self.proxy_config(bugs);
        setup.host("proxy", move || {
            let config = config.clone();
            async move { Ok(run_proxy(Sys::new(), config).await?) }
        });
        let health = Health::new(self.nodes);
        let running = Rc::new(std::cell::Cell::new(self.clients));
        if let Some(interval_ms) = self.health_monitor_ms {
            let config = MonitorConfig {
                nodes: self.nodes,
                interval_ms,
                check_interval_ms: self.check_interval_ms,
                check_timeout_ms: self.check_timeout_ms,
                check_fall: self.check_fall,
                proxy_port: PROXY_PORT,
            };
            let (health, running) = (health.clone(), running.clone());
            setup.client("monitor", async move {
                health::run_monitor(config, health, move || running.get() == 0).await;
                Ok(())
            });
        }
        let shared = SharedHistory::new(self.clients);
        for id in 0..self.clients {
            let p = self.clone();
            let (health, running, shared) = (health.clone(), running.clone(), shared.clone());
            setup.client(&format!("client-{id}"), async move {
                run_client(id, p, health, shared).await;
                running.set(running.get() - 1);
                Ok(())
            });
        }
    }

    pub(crate) fn nodes(&self) -> usize {
        self.nodes
    }

    pub(crate) fn vbuckets(&self) -> u16 {
        self.vbuckets
    }
}

/// Why a request did not complete.
enum Failed {
    /// An oracle already fired.
    Reported,
    /// The key's node refused connections: the request was not served,
    /// rightly.
    Unavailable,
}

struct ClientRun {
    id: u32,
    p: Params,
    model: KvModel,
    client: Option<Client<SimStream>>,
    counter: u32,
    health: SharedHealth,
    shared: Rc<RefCell<SharedHistory>>,
}

async fn run_client(id: u32, p: Params, health: SharedHealth, shared: Rc<RefCell<SharedHistory>>) {
    let _done = ClientDone::new(&shared);
    let mut run = ClientRun {
        id,
        p,
        model: KvModel::new(),
        client: None,
        counter: 0,
        health,
        shared,
    };
    for n in 0..run.p.requests {
        if oracle::failed() {
            return;
        }
        if run.p.new_connection_per_request {
            run.client = None;
        }
        if switch("client.abort") && run.abort().await.is_err() {
            return;
        }
        let done = if run.p.shared_keys > 0 {
            run.shared_request().await
        } else {
            run.one_request(n).await
        };
        match done {
            Ok(()) | Err(Failed::Unavailable) => {}
            Err(Failed::Reported) => return,
        }
        if run.p.think_time_ms > 0 {
            let pause_ms = with_rng(&run.rng_name(), |rng| {
                rng.random_range(0..=run.p.think_time_ms)
            });
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
    }
    if run.p.shared_keys > 0 {
        return;
    }
    // Every key reads back as the model says.
    let keys: Vec<Vec<u8>> = (0..run.p.keys).map(|k| run.key(k)).collect();
    for key in keys {
        match run.read_check(&key).await {
            Ok(()) | Err(Failed::Unavailable) => {}
            Err(Failed::Reported) => return,
        }
    }
}

impl ClientRun {
    fn key(&self, k: u32) -> Vec<u8> {
        format!("c{}-k{k}", self.id).into_bytes()
    }

    fn counter_key(&self) -> Vec<u8> {
        format!("c{}-n", self.id).into_bytes()
    }

    fn rng_name(&self) -> String {
        format!("proxy/client-{}", self.id)
    }

    /// The client's connection, made when needed.
    async fn connection(&mut self) -> Result<&mut Client<SimStream>, Failed> {
        if self.client.is_none() {
            let mut attempt = 0;
            let stream = loop {
                match SimStream::connect(("proxy", PROXY_PORT)).await {
                    Ok(s) => break s,
                    // The proxy may not listen yet at the very start.
                    Err(e) if attempt < 20 => {
                        attempt += 1;
                        tracing::debug!(target: "faultline::workload", client = self.id, error = %e, "connect retry");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => {
                        oracle::fail(
                            "proxy-availability",
                            format!("client-{} could not connect to the proxy: {e}", self.id),
                        );
                        return Err(Failed::Reported);
                    }
                }
            };
            self.client = Some(Client::new(stream));
        }
        Ok(self.client.as_mut().expect("set above"))
    }

    /// Sends `request` and returns the answer, reporting failures.
    async fn call(&mut self, what: &str, request: Packet) -> Result<Packet, Failed> {
        let id = self.id;
        let timeout = Duration::from_millis(self.p.request_timeout_ms);
        let deadline = self.p.request_deadline_ms;
        let started = tokio::time::Instant::now();
        let _pending = deadline.map(|ms| {
            oracle::pending_within(format!("client-{id} {what}"), Duration::from_millis(ms))
        });
        let mut owner_retries = 0;
        loop {
            let response = self.call_once(what, request.clone(), timeout).await?;
            // Temporary answers a careful client waits out and asks again:
            // a vbucket in the middle of a move has no owner for a moment;
            // a key whose durable write is still in flight takes no write.
            let temporary = matches!(
                response.status_code(),
                Status::NOT_MY_VBUCKET | Status::SYNC_WRITE_IN_PROGRESS
            );
            if temporary && owner_retries < MAX_OWNER_RETRIES {
                owner_retries += 1;
                probe("client:temporary-answer");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            oracle::count("proxy.requests");
            oracle::record_latency("proxy.request", started.elapsed());
            return Ok(response);
        }
    }

    /// One attempt of [`ClientRun::call`].
    async fn call_once(
        &mut self,
        what: &str,
        request: Packet,
        timeout: Duration,
    ) -> Result<Packet, Failed> {
        let id = self.id;
        let request_key = request.key.to_vec();
        let client = self.connection().await?;
        let call = async {
            if !request.header.opcode.is_quiet() {
                return client.call(request).await;
            }
            // A quiet read that answers nothing is a miss.
            let miss = Packet::response(&request.header, Status::KEY_ENOENT);
            Ok(client.call_quiet(request).await?.unwrap_or(miss))
        };
        let result = tokio::time::timeout(timeout, call).await;
        let response = match result {
            Err(_) => {
                oracle::fail(
                    "liveness",
                    format!(
                        "client-{id} {what}: no answer within {} ms",
                        timeout.as_millis()
                    ),
                );
                return Err(Failed::Reported);
            }
            Ok(Err(e)) if e.is_invalid() => {
                oracle::fail("response-validation", format!("client-{id} {what}: {e}"));
                return Err(Failed::Reported);
            }
            Ok(Err(e)) => {
                oracle::fail(
                    "proxy-availability",
                    format!("client-{id} {what}: {e} (every kv node is up)"),
                );
                return Err(Failed::Reported);
            }
            Ok(Ok(r)) => r,
        };
        if response.status_code() == Status::ETMPFAIL {
            let vb = crate::protocol::vbucket_of(&request_key, self.p.vbuckets);
            let node = node_of(vb, self.p.nodes, self.p.vbuckets);
            let refusing = self.health.borrow().was_refusing(node)
                || (self.p.health_monitor_ms.is_some()
                    && health::refuses_now(&self.health, node, self.p.request_timeout_ms).await);
            if refusing {
                probe("client:node-down-tmpfail");
                return Err(Failed::Unavailable);
            }
            oracle::fail(
                "proxy-availability",
                format!(
                    "client-{id} {what}: the proxy answered ETMPFAIL although every kv node is up"
                ),
            );
            return Err(Failed::Reported);
        }
        Ok(response)
    }

    fn model_error(&self, message: String) -> Failed {
        oracle::fail("store-model", format!("client-{}: {message}", self.id));
        Failed::Reported
    }

    async fn read_check(&mut self, key: &[u8]) -> Result<(), Failed> {
        let quiet = switch("client.quiet-read");
        let opcode = if quiet { Opcode::GETKQ } else { Opcode::GET };
        let what = format!("{opcode} {}", String::from_utf8_lossy(key));
        let response = self
            .call(&what, Packet::request(opcode).key(key.to_vec()))
            .await?;
        let got = match response.status_code() {
            Status::SUCCESS => Some(response.value.to_vec()),
            Status::KEY_ENOENT => None,
            other => return Err(self.model_error(format!("{what} answered {other}"))),
        };
        self.model
            .check_read(key, got.as_deref())
            .map_err(|m| self.model_error(m))
    }

    async fn one_request(&mut self, n: u32) -> Result<(), Failed> {
        let (pick, k, value) = with_rng(&self.rng_name(), |rng| {
            let len = rng.random_range(self.p.min_value_bytes..=self.p.max_value_bytes);
            let value = letters(rng, len);
            (
                rng.random_range(0..100u32),
                rng.random_range(0..self.p.keys),
                value,
            )
        });
        let key = self.key(k);
        // (No draw without durable writes: the other scenarios' seeds keep
        // their traces.)
        let durable = self.p.durable_percent > 0
            && with_rng(&self.rng_name(), |rng| rng.random_range(0..100u32))
                < self.p.durable_percent;
        match pick {
            0..35 if durable => self.durable_set(&key, &value).await,
            0..35 => self.set(&key, &value).await,
            35..65 => self.read_check(&key).await,
            65..73 => self.delete(&key).await,
            73..81 => self.add(&key, &value).await,
            81..89 => self.append(&key, &value).await,
            _ => self.incr().await,
        }
        .map(|()| {
            tracing::trace!(target: "faultline::workload", client = self.id, n, "request done");
        })
    }

    /// One operation on a shared key, recorded with its answer, or as
    /// possibly applied when its outcome is unknown (no answer, a
    /// connection lost, ETMPFAIL: the proxy may have forwarded it).
    async fn shared_request(&mut self) -> Result<(), Failed> {
        let mix = SharedMix {
            keys: self.p.shared_keys,
            read_percent: SHARED_READ_PERCENT,
            durable_percent: self.p.durable_percent,
        };
        let (input, durable) = self.shared.borrow().draw(&self.rng_name(), self.id, &mix);
        let mut request = input.request();
        if durable {
            request = request.durability(Durability::Majority);
        }
        let what = format!("{} {}", request.opcode(), input.key);
        let invoked_at = traffic::now_us();
        let result = self.call(&what, request).await;
        let completed_at = traffic::now_us();
        let answer = match result {
            Ok(response) => output_of_response(&input, &response),
            Err(failed) => {
                self.shared
                    .borrow_mut()
                    .record(self.id, input, invoked_at, None, completed_at);
                return Err(failed);
            }
        };
        let recorded =
            self.shared
                .borrow_mut()
                .answered(self.id, input, invoked_at, answer, completed_at);
        match recorded {
            Ok(()) => Ok(()),
            Err(ClientError::Status(other)) => {
                Err(self.model_error(format!("{what} answered {other}")))
            }
            Err(e) => {
                oracle::fail(
                    "response-validation",
                    format!("client-{} {what}: {e}", self.id),
                );
                Err(Failed::Reported)
            }
        }
    }

    async fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), Failed> {
        let what = format!("SET {}", String::from_utf8_lossy(key));
        let request = Store::new(Opcode::SET, key, value).packet();
        let response = self.call(&what, request).await?;
        if response.status_code() != Status::SUCCESS {
            return Err(self.model_error(format!("{what} answered {}", response.status_code())));
        }
        self.model.acked(key, Some(value));
        Ok(())
    }

    /// A SET that the node answers once the vbucket's replica holds it.
    async fn durable_set(&mut self, key: &[u8], value: &[u8]) -> Result<(), Failed> {
        let what = format!("durable SET {}", String::from_utf8_lossy(key));
        let request = Store::new(Opcode::SET, key, value)
            .packet()
            .durability(Durability::Majority);
        let response = self.call(&what, request).await?;
        match response.status_code() {
            Status::SUCCESS => self.model.acked(key, Some(value)),
            // The node cannot tell whether the replica got it.
            Status::SYNC_WRITE_AMBIGUOUS => self.model.uncertain(key, Some(value)),
            // Refused before anything was stored: no replica (yet).
            Status::DURABILITY_IMPOSSIBLE => {}
            other => return Err(self.model_error(format!("{what} answered {other}"))),
        }
        Ok(())
    }

    async fn delete(&mut self, key: &[u8]) -> Result<(), Failed> {
        let what = format!("DELETE {}", String::from_utf8_lossy(key));
        let response = self
            .call(&what, Packet::request(Opcode::DELETE).key(key.to_vec()))
            .await?;
        match response.status_code() {
            Status::SUCCESS => {
                if self.model.expected(key).is_none() {
                    return Err(self.model_error(format!("{what} found a value the model lacks")));
                }
                self.model.acked(key, None);
            }
            Status::KEY_ENOENT => {
                self.model
                    .check_read(key, None)
                    .map_err(|m| self.model_error(m))?;
            }
            other => return Err(self.model_error(format!("{what} answered {other}"))),
        }
        Ok(())
    }

    async fn add(&mut self, key: &[u8], value: &[u8]) -> Result<(), Failed> {
        let what = format!("ADD {}", String::from_utf8_lossy(key));
        let request = Store::new(Opcode::ADD, key, value).packet();
        let response = self.call(&what, request).await?;
        match response.status_code() {
            Status::SUCCESS => {
                self.model
                    .check_read(key, None)
                    .map_err(|m| self.model_error(format!("{what} stored: {m}")))?;
                self.model.acked(key, Some(value));
            }
            Status::KEY_EEXISTS => {
                if self.model.expected(key).is_none() {
                    return Err(
                        self.model_error(format!("{what}: exists, the model holds nothing"))
                    );
                }
            }
            other => return Err(self.model_error(format!("{what} answered {other}"))),
        }
        Ok(())
    }

    async fn append(&mut self, key: &[u8], suffix: &[u8]) -> Result<(), Failed> {
        let what = format!("APPEND {}", String::from_utf8_lossy(key));
        let request = Store::new(Opcode::APPEND, key, suffix).packet();
        let response = self.call(&what, request).await?;
        match response.status_code() {
            Status::SUCCESS => {
                let Some(old) = self.model.expected(key).map(<[u8]>::to_vec) else {
                    return Err(self.model_error(format!("{what} appended to nothing")));
                };
                let mut new = old;
                new.extend_from_slice(suffix);
                self.model.acked(key, Some(&new));
            }
            Status::NOT_STORED => {
                self.model
                    .check_read(key, None)
                    .map_err(|m| self.model_error(format!("{what} not stored: {m}")))?;
            }
            other => return Err(self.model_error(format!("{what} answered {other}"))),
        }
        Ok(())
    }

    async fn incr(&mut self) -> Result<(), Failed> {
        let key = self.counter_key();
        let what = format!("INCREMENT {}", String::from_utf8_lossy(&key));
        let request = arith_packet(Opcode::INCREMENT, &key, 1, Some(0));
        let response = self.call(&what, request).await?;
        if response.status_code() != Status::SUCCESS {
            return Err(self.model_error(format!("{what} answered {}", response.status_code())));
        }
        let got = counter_value(Opcode::INCREMENT, &response).map_err(|e| {
            oracle::fail(
                "response-validation",
                format!("client-{} {what}: {e}", self.id),
            );
            Failed::Reported
        })?;
        // Absent, the counter is created with the initial value 0.
        let expected = u64::from(self.counter);
        if got != expected {
            return Err(
                self.model_error(format!("{what} answered {got}, the model holds {expected}"))
            );
        }
        self.counter += 1;
        self.model.acked(&key, Some(got.to_string().as_bytes()));
        Ok(())
    }

    /// Sends a GET, lets its answer arrive without reading it, sends a
    /// SET and drops the connection: closing with unread bytes resets it,
    /// right behind the SET.
    async fn abort(&mut self) -> Result<(), Failed> {
        probe("client:abort");
        // A key of its own: the abandoned SET may land at any time later
        // (even after a later SET of the same key on another connection),
        // so the model does not track it.
        let key = format!("c{}-abandoned", self.id).into_bytes();
        let think = Duration::from_millis(self.p.abort_think_ms);
        let client = self.connection().await?;
        let stream = client.stream();
        let get = Packet::request(Opcode::GET).key(key.clone()).opaque(0xab07);
        if stream.write_all(&get.encode()).await.is_err() {
            return Ok(());
        }
        // Not reading: the answer stays in the socket.
        tokio::time::sleep(think).await;
        let set = Store::new(Opcode::SET, &key, b"abandoned")
            .packet()
            .opaque(0xab08);
        let _ = stream.write_all(&set.encode()).await;
        self.client = None;
        Ok(())
    }
}

/// `len` lowercase letters: the very bytes, and the very random numbers
/// consumed, of `(0..len).map(|_| rng.random_range(b'a'..=b'z'))`, drawn
/// from the generator's words a chunk at a time. Values of 200 KB drawn a
/// letter at a time were half of a splice scenario's run time; this takes
/// about 30% less (288 against 416 µs per 200 KB value).
///
/// rand's `random_range` on a `u8` range (`sample_single_inclusive`, rand
/// 0.9 `distr/uniform_int.rs`) takes one `u32` per letter, multiplies it by
/// 26 and keeps the high half; when the low half lands in the last 26
/// values (a chance of 26 in 2^32) it takes a second `u32` and adds the
/// carry of its high half. Here a chunk's first words come from one
/// `fill_bytes` (a ChaCha generator hands out the same words in the same
/// order either way), never more words than letters still to draw; a chunk
/// with a letter that needs a second word is drawn again one word at a
/// time from the same words.
fn letters<R: rand::RngCore>(rng: &mut R, len: usize) -> Vec<u8> {
    const LETTERS: u32 = 26;
    const CHUNK_WORDS: usize = 1024;
    let mut out = Vec::with_capacity(len);
    let mut chunk = [0u8; CHUNK_WORDS * 4];
    let mut drawn = [0u8; CHUNK_WORDS];
    while out.len() < len {
        let n = (len - out.len()).min(CHUNK_WORDS);
        let words = &mut chunk[..n * 4];
        rng.fill_bytes(words);
        let mut needs_second = false;
        for (letter, w) in drawn[..n].iter_mut().zip(words.chunks_exact(4)) {
            let wide = u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]])) * u64::from(LETTERS);
            needs_second |= (wide as u32) > LETTERS.wrapping_neg();
            *letter = b'a' + (wide >> 32) as u8;
        }
        if !needs_second {
            out.extend_from_slice(&drawn[..n]);
            continue;
        }
        let mut at = 0;
        while at < words.len() {
            let wide = u64::from(next_word(rng, words, &mut at)) * u64::from(LETTERS);
            let (mut high, low) = ((wide >> 32) as u32, wide as u32);
            if low > LETTERS.wrapping_neg() {
                let second = next_word(rng, words, &mut at);
                let carry = (u64::from(second) * u64::from(LETTERS)) >> 32;
                high += u32::from(low.checked_add(carry as u32).is_none());
            }
            out.push(b'a' + high as u8);
        }
    }
    assert_eq!(out.len(), len, "a letter per word drawn, a chunk at a time");
    out
}

/// The next word of the generator's stream: from `words` (drawn from it
/// already) while they last, then from the generator.
fn next_word<R: rand::RngCore>(rng: &mut R, words: &[u8], at: &mut usize) -> u32 {
    match words.get(*at..*at + 4) {
        Some(word) => {
            *at += 4;
            u32::from_le_bytes([word[0], word[1], word[2], word[3]])
        }
        None => rng.next_u32(),
    }
}

#[cfg(test)]
mod tests {
    use super::letters;
    use rand::{Rng, RngCore, SeedableRng};

    fn one_at_a_time<R: Rng>(rng: &mut R, len: usize) -> Vec<u8> {
        (0..len).map(|_| rng.random_range(b'a'..=b'z')).collect()
    }

    #[test]
    fn letters_are_drawn_as_random_range_draws_them() {
        for seed in 0..20u64 {
            for len in [0, 1, 2, 3, 7, 1023, 1024, 1025, 5000, 200_000] {
                let mut a = faultline_harness::SimRng::seed_from_u64(seed);
                let mut b = a.clone();
                assert_eq!(letters(&mut a, len), one_at_a_time(&mut b, len));
                assert_eq!(a.next_u64(), b.next_u64(), "the same numbers consumed");
            }
        }
    }

    /// Words from a list, to reach the second word's branch (a chance of
    /// 26 in 2^32 per letter from a real generator).
    struct Words(Vec<u32>, usize);

    impl RngCore for Words {
        fn next_u32(&mut self) -> u32 {
            self.1 += 1;
            self.0[self.1 - 1]
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.next_u32()) | (u64::from(self.next_u32()) << 32)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(4) {
                let word = self.next_u32().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
        }
    }

    #[test]
    fn a_letter_that_needs_a_second_word_takes_the_next_one() {
        // Words whose low half lands past 2^32 - 26 need a second one.
        let second: Vec<u32> = (0..u32::MAX)
            .filter(|w| (u64::from(*w) * 26) as u32 > 26u32.wrapping_neg())
            .take(3)
            .collect();
        assert_eq!(second.len(), 3);
        let mut words = vec![
            5,
            second[0],
            u32::MAX,
            9,
            second[1],
            7,
            second[2],
            3,
            11,
            13,
        ];
        // And across chunks: a second word needed at a chunk's last word.
        words.extend((0..1030).map(|i| if i == 1023 { second[0] } else { i * 7919 }));
        for len in (1..=7).chain([1030, 1035]) {
            let mut a = Words(words.clone(), 0);
            let mut b = Words(words.clone(), 0);
            assert_eq!(letters(&mut a, len), one_at_a_time(&mut b, len), "{len}");
            assert_eq!(a.1, b.1, "{len} letters consumed the same words");
        }
    }
}
