//! Gallery: rsmc (`rsmc-core` 0.4 from crates.io), a memcached
//! binary-protocol client, talking to faultline's own kv server inside the
//! simulation.
//!
//! How it plugs in: rsmc is runtime-agnostic. Its client runs over any type
//! that implements its `Connection` trait (connect, read, write), and the
//! crate for tokio, `rsmc-tokio`, implements it over a `TcpStream` behind a
//! `tokio::sync::Mutex`. [`SimConnection`] is that implementation with
//! `SimStream::connect` in place of `TcpStream::connect` and faultline's
//! tokio-compatible `Mutex` in place of tokio's: nothing else of rsmc
//! changes. The server is faultline's kv node (`faultline::server::run_node`)
//! on the host `kv`, as a user would run any server of their own.
//!
//! What faultline found (README, "Gallery"): rsmc-core's `read_packet`
//! reads a response's 24-byte header with one call of `Connection::read`
//! and its body with one more, and ignores the byte counts they return;
//! rsmc-tokio's `read` is one `TcpStream::read`, which returns what has
//! arrived. A response that arrives in two TCP segments is parsed from a
//! buffer whose tail is still zeros: a header with a wrong length or
//! status, or a value cut short and padded with zero bytes, and the rest
//! of the response is then read as the next one. The buggy variant reads
//! as rsmc-tokio 0.4.0 does; the fixed one fills the buffer (`read_exact`),
//! the workaround a user can put in their own `Connection`.
//!
//! Oracle `read-your-writes`: each client sets its own keys to fresh
//! values and reads each back. A hit must carry the value last
//! acknowledged, or one whose set was never acknowledged (it may land
//! late); a miss is allowed (a restarted kv node has forgotten its keys).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use faultline::bugs::Bugs;
use faultline::protocol::McbpFramer;
use faultline::server::{KV_PORT, KvConfig, run_node};
use faultline_harness::sync::tokio::Mutex;
use faultline_harness::{
    ParamError, Registry, RunSpec, SimSetup, SimStream, Variant, Workload, oracle, parse_params,
    with_rng,
};
use rand::Rng;
use rsmc_core::client::{Client, ClientConfig, Connection, Error, NoCompressor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How [`SimConnection::read`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// One read, as rsmc-tokio 0.4.0's `TokioConnection::read`: whatever
    /// has arrived, up to the buffer's length.
    Once,
    /// Until the buffer is full (`read_exact`).
    Fill,
}

thread_local! {
    /// The read mode of this run's connections: rsmc makes a connection
    /// with `Connection::connect(url)`, which takes nothing else.
    static READ_MODE: std::cell::Cell<ReadMode> = const { std::cell::Cell::new(ReadMode::Fill) };
}

/// rsmc's `Connection` over a simulated TCP stream: rsmc-tokio's
/// `TokioConnection` with `SimStream` for `TcpStream`.
#[derive(Clone, Debug)]
pub struct SimConnection {
    stream: Arc<Mutex<SimStream>>,
    read_mode: ReadMode,
}

#[async_trait]
impl Connection for SimConnection {
    async fn connect(url: String) -> Result<Self, Error> {
        let stream = SimStream::connect(url).await?;
        Ok(SimConnection {
            stream: Arc::new(Mutex::named("rsmc.connection", stream)),
            read_mode: READ_MODE.with(|mode| mode.get()),
        })
    }

    async fn read(&mut self, buf: &mut Vec<u8>) -> Result<usize, Error> {
        let mut stream = self.stream.lock().await;
        Ok(match self.read_mode {
            ReadMode::Once => stream.read(buf).await?,
            ReadMode::Fill => stream.read_exact(buf).await?,
        })
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        let mut stream = self.stream.lock().await;
        Ok(stream.write_all(data).await?)
    }
}

/// The workload's parameters (`[params]` of a scenario file).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Clients, each with its own keys and connection.
    pub clients: u32,
    /// Keys per client.
    pub keys: u32,
    /// Sets (each followed by a get) per client.
    pub writes: u32,
    /// Values are 1..=this many bytes.
    pub max_value_bytes: usize,
    /// A client gives up on an answer after this long and reconnects.
    pub answer_timeout_ms: u64,
}

/// The largest value the workload writes, in bytes. bincode puts a value's
/// length before it; below 129 the length's first byte cannot be read as a
/// response's magic (0x81), so a misread value is reported as what it is
/// instead of being taken for a header with a length of gigabytes.
pub const MAX_VALUE_BYTES: usize = 128;

/// The workload: host `kv` (faultline's kv node), clients `client-0`, …
pub struct RsmcKv;

impl Workload for RsmcKv {
    fn name(&self) -> &'static str {
        "rsmc-kv"
    }

    fn check(&self, params: &toml::Table) -> Result<(), ParamError> {
        let p: Params = parse_params(params)?;
        if p.clients == 0 || p.keys == 0 {
            return Err(ParamError::new(
                "clients",
                "params.clients and params.keys must be positive",
            ));
        }
        if p.max_value_bytes == 0 || p.max_value_bytes > MAX_VALUE_BYTES {
            return Err(ParamError::new(
                "max_value_bytes",
                format!("params.max_value_bytes must be within 1..={MAX_VALUE_BYTES}"),
            ));
        }
        if p.answer_timeout_ms == 0 {
            return Err(ParamError::new(
                "answer_timeout_ms",
                "params.answer_timeout_ms must be positive",
            ));
        }
        Ok(())
    }

    fn build(&self, setup: &mut SimSetup<'_>, run: &RunSpec<'_>) -> Result<(), String> {
        let p: Params = parse_params(run.params).map_err(|e| e.message)?;
        let mode = match run.variant {
            Variant::Buggy => ReadMode::Once,
            Variant::Fixed => ReadMode::Fill,
        };
        READ_MODE.with(|m| m.set(mode));
        // The kv node's messages, for the traces and message-aware faults.
        setup.set_framer(Rc::new(McbpFramer));
        let config = KvConfig {
            bugs: Bugs::fixed(),
            ..KvConfig::default()
        };
        setup.host("kv", move || {
            let config = config.clone();
            async move { Ok(run_node(config).await?) }
        });
        for id in 0..p.clients {
            let p = p.clone();
            setup.client(&format!("client-{id}"), async move {
                client(id, p).await;
                Ok(())
            });
        }
        Ok(())
    }
}

type KvClient = Client<SimConnection, NoCompressor>;

/// What a client has written to one of its keys.
#[derive(Default)]
struct Written {
    /// The value of the last acknowledged set.
    acked: Option<String>,
    /// Values whose set was sent and never acknowledged: each may still
    /// land.
    unacked: Vec<String>,
}

/// Sets its keys to fresh values and reads each back (oracle
/// `read-your-writes`); an operation that fails or times out is retried on
/// a new client.
async fn client(id: u32, p: Params) {
    let timeout = Duration::from_millis(p.answer_timeout_ms);
    let config = ClientConfig::new_uncompressed(vec![format!("kv:{KV_PORT}")]);
    let mut current: Option<KvClient> = None;
    let mut written: BTreeMap<String, Written> = BTreeMap::new();
    for _ in 0..p.writes {
        let (key, value): (String, String) = with_rng(&format!("client-{id}"), |rng| {
            let key = rng.random_range(0..p.keys);
            let len = rng.random_range(1..=p.max_value_bytes);
            (
                format!("client-{id}-{key}"),
                (0..len).map(|_| rng.random_range('a'..='z')).collect(),
            )
        });
        // The set, until acknowledged.
        loop {
            written
                .entry(key.clone())
                .or_default()
                .unacked
                .push(value.clone());
            let (k, v) = (key.clone(), value.clone());
            let set = exchange(&mut current, &config, timeout, |c| {
                Box::pin(async move { c.set(&k, &v, 0).await })
            })
            .await;
            if set.is_some() {
                break;
            }
        }
        let entry = written.get_mut(&key).expect("written above");
        entry.unacked.retain(|v| *v != value);
        entry.acked = Some(value);
        // The get, until answered.
        let found = loop {
            let k = key.clone();
            let get = exchange(&mut current, &config, timeout, |c| {
                Box::pin(async move { c.get::<_, String>(&k).await })
            })
            .await;
            if let Some(found) = get {
                break found;
            }
        };
        let entry = &written[&key];
        match found {
            None => {} // A restarted kv node forgot it.
            Some(v) if Some(&v) == entry.acked.as_ref() || entry.unacked.contains(&v) => {}
            Some(v) => {
                return oracle::fail(
                    "read-your-writes",
                    format!(
                        "client-{id}: get {key}: {:?} ({} bytes), a value client-{id} never set (last acknowledged: {:?})",
                        v,
                        v.len(),
                        entry.acked.as_deref().unwrap_or_default()
                    ),
                );
            }
        }
    }
}

/// `op` on the client's connection (a new one if it has none), within
/// `timeout`; `None` (and the client dropped) on any error.
async fn exchange<T>(
    current: &mut Option<KvClient>,
    config: &ClientConfig<SimConnection, NoCompressor>,
    timeout: Duration,
    op: impl for<'a> FnOnce(
        &'a mut KvClient,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T, Error>> + 'a>,
    >,
) -> Option<T> {
    let mut client = match current.take() {
        Some(c) => c,
        None => match tokio::time::timeout(timeout, Client::new(config.clone())).await {
            Ok(Ok(c)) => c,
            _ => {
                tokio::time::sleep(timeout).await;
                return None;
            }
        },
    };
    let answer = tokio::time::timeout(timeout, op(&mut client))
        .await
        .ok()?
        .ok()?;
    *current = Some(client);
    Some(answer)
}

/// The crate's workloads.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(Arc::new(RsmcKv));
    registry
}

/// Where this crate's scenario files are.
pub fn scenarios_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Where this crate's fault plans are (`shrink`'s smallest plans, kept).
pub fn plans_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans")
}
