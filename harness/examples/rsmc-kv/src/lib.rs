//! Gallery: rsmc (`rsmc-core` 0.4.0 from crates.io), a memcached
//! binary-protocol client, talking to faultline's own kv server inside the
//! simulation.
//!
//! How it plugs in: rsmc-core is runtime-agnostic. Its client runs over any
//! type that implements its `Connection` trait (connect, read, write); the
//! crate for tokio, `rsmc-tokio` 0.4.0, implements it as `TokioConnection`,
//! a `TcpStream` behind a `tokio::sync::Mutex`. That type opens a real
//! socket, so [`SimConnection`] transcribes it with `SimStream::connect` in
//! place of `TcpStream::connect` and faultline's tokio-compatible `Mutex`
//! in place of tokio's. rsmc-core runs unchanged. The server is faultline's
//! kv node (`faultline::server::run_node`) on the host `kv`, as a user
//! would run any server of their own. Only `Client::new`, `set` and `get`
//! are exercised (not the deadpool `Pool` nor the `*_multi` calls).
//!
//! What faultline found (README, "Gallery"): rsmc-core documents
//! `Connection::read` as filling the buffer, and its `read_packet` trusts
//! that: it reads a response's 24-byte header with one call and its body
//! with one more, ignoring the counts. rsmc-tokio's `read` is one
//! `TcpStream::read`, which returns what has arrived. A response that
//! arrives in pieces is parsed from a buffer whose tail is still zeros: a
//! value cut short and padded with zero bytes, or a header whose lengths
//! disagree, on which rsmc-core's parser panics (it never checks that the
//! extras and key fit in the body). The buggy variant reads as
//! rsmc-tokio 0.4.0 does; the fixed one fills the buffer, the fix a user
//! can put in their own `Connection`.
//!
//! Oracle `read-your-writes`: each client sets its own keys to fresh
//! values and reads each back. A hit must carry the value last
//! acknowledged, or one whose set failed (it may land late); a miss is
//! allowed only if the client has reconnected since the acknowledgement (a
//! restarted kv node has forgotten its keys, and its clients reconnect).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use faultline::protocol::McbpFramer;
use faultline::server::{KV_PORT, KvConfig, run_node};
use faultline_harness::sync::tokio::Mutex;
use faultline_harness::{
    ParamError, Registry, RunSpec, SimSetup, SimStream, Variant, Workload, oracle, parse_params,
    probe, with_rng,
};
use rand::Rng;
use rsmc_core::client::{Client, ClientConfig, Connection, Error, NoCompressor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// rsmc's `Connection` over a simulated TCP stream: rsmc-tokio 0.4.0's
/// `TokioConnection` with `SimStream` for `TcpStream`. With `FILL` false
/// its `read` is rsmc-tokio's, one read of whatever has arrived; with
/// `FILL` true it reads until the buffer is full.
#[derive(Clone, Debug)]
pub struct SimConnection<const FILL: bool> {
    stream: Arc<Mutex<SimStream>>,
}

/// The buggy variant's connection: reads as rsmc-tokio 0.4.0 does.
pub type OneReadConnection = SimConnection<false>;
/// The fixed variant's connection: each read fills its buffer.
pub type FillingConnection = SimConnection<true>;

#[async_trait]
impl<const FILL: bool> Connection for SimConnection<FILL> {
    async fn connect(url: String) -> Result<Self, Error> {
        let stream = SimStream::connect(url).await?;
        Ok(SimConnection {
            stream: Arc::new(Mutex::named("rsmc.connection", stream)),
        })
    }

    async fn read(&mut self, buf: &mut Vec<u8>) -> Result<usize, Error> {
        let mut stream = self.stream.lock().await;
        let n = stream.read(buf).await?;
        if n > 0 && n < buf.len() {
            // A header or body that has not wholly arrived: the place where
            // the two reads differ.
            probe("rsmc:short-read");
        }
        if FILL && n < buf.len() {
            // The rest, or an error at the end of the stream (where
            // rsmc-tokio answers 0 and rsmc parses the zeros).
            stream.read_exact(&mut buf[n..]).await?;
            return Ok(buf.len());
        }
        Ok(n)
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
/// length before it, and a response misread out of step is parsed from
/// wherever the last read stopped. Below 129 that length's first byte is
/// never a response's magic (0x81), which would make rsmc-core allocate
/// and copy a body of the length the next four bytes say (never checked:
/// up to 4 GiB). A CAS byte of 0x81 still can, rarely.
pub const MAX_VALUE_BYTES: usize = 128;

/// The workload: host `kv` (faultline's kv node), clients `client-0`, …
pub struct RsmcKv;

impl Workload for RsmcKv {
    fn name(&self) -> &'static str {
        "rsmc-kv"
    }

    fn check(&self, params: &toml::Table) -> Result<(), ParamError> {
        let p: Params = parse_params(params)?;
        for (field, value) in [
            ("clients", p.clients),
            ("keys", p.keys),
            ("writes", p.writes),
        ] {
            if value == 0 {
                return Err(ParamError::new(
                    field,
                    format!("params.{field} must be positive"),
                ));
            }
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
        // The kv node's messages, for the traces and message-aware faults.
        setup.set_framer(Rc::new(McbpFramer));
        setup.host("kv", || async { Ok(run_node(KvConfig::default()).await?) });
        for id in 0..p.clients {
            let p = p.clone();
            let variant = run.variant;
            setup.client(&format!("client-{id}"), async move {
                match variant {
                    Variant::Buggy => client::<OneReadConnection>(id, p).await,
                    Variant::Fixed => client::<FillingConnection>(id, p).await,
                }
                Ok(())
            });
        }
        Ok(())
    }
}

/// What a client has written to one of its keys.
#[derive(Default)]
struct Written {
    /// The value of the last acknowledged set.
    acked: Option<String>,
    /// The client's connection count when it was acknowledged.
    acked_on: u64,
    /// Values of sets that failed or timed out: each may have landed, or
    /// may still land.
    failed: Vec<String>,
}

/// A client's connection to the kv node, made again after any error.
struct Session<C: Connection> {
    config: ClientConfig<C, NoCompressor>,
    timeout: Duration,
    current: Option<Client<C, NoCompressor>>,
    /// Connections made so far.
    connections: u64,
}

impl<C: Connection> Session<C> {
    /// `op` on the current connection (a new one if there is none), within
    /// the timeout. `None` on any error or timeout: the connection is
    /// dropped, and after a failed connect the session waits one timeout
    /// before it answers, so that a node that is down is not asked in a
    /// busy loop.
    async fn exchange<T>(
        &mut self,
        op: impl for<'a> FnOnce(
            &'a mut Client<C, NoCompressor>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, Error>> + 'a>,
        >,
    ) -> Option<T> {
        let mut client = match self.current.take() {
            Some(c) => c,
            None => {
                match tokio::time::timeout(self.timeout, Client::new(self.config.clone())).await {
                    Ok(Ok(c)) => {
                        self.connections += 1;
                        c
                    }
                    _ => {
                        tokio::time::sleep(self.timeout).await;
                        return None;
                    }
                }
            }
        };
        let answer = tokio::time::timeout(self.timeout, op(&mut client))
            .await
            .ok()?
            .ok()?;
        self.current = Some(client);
        Some(answer)
    }
}

/// Sets its keys to fresh values and reads each back (oracle
/// `read-your-writes`); an operation that fails or times out is retried on
/// a new connection.
async fn client<C: Connection>(id: u32, p: Params) {
    let mut session = Session::<C> {
        config: ClientConfig::new_uncompressed(vec![format!("kv:{KV_PORT}")]),
        timeout: Duration::from_millis(p.answer_timeout_ms),
        current: None,
        connections: 0,
    };
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
        let entry = written.entry(key.clone()).or_default();
        // The set, until acknowledged.
        loop {
            let (k, v) = (key.clone(), value.clone());
            let set = session
                .exchange(|c| Box::pin(async move { c.set(&k, &v, 0).await }))
                .await;
            if set.is_some() {
                break;
            }
            if !entry.failed.contains(&value) {
                entry.failed.push(value.clone());
            }
        }
        entry.acked = Some(value);
        entry.acked_on = session.connections;
        // The get, until answered.
        let found = loop {
            let k = key.clone();
            let get = session
                .exchange(|c| Box::pin(async move { c.get::<_, String>(&k).await }))
                .await;
            if let Some(found) = get {
                break found;
            }
        };
        let last = entry.acked.as_deref().unwrap_or_default();
        match found {
            // A restarted kv node forgot it; its clients reconnect.
            None if session.connections > entry.acked_on => {}
            None => {
                return oracle::fail(
                    "read-your-writes",
                    format!(
                        "client-{id}: get {key}: not found on the connection that set it to {last:?}"
                    ),
                );
            }
            Some(v) if v == last || entry.failed.contains(&v) => {}
            Some(v) => {
                return oracle::fail(
                    "read-your-writes",
                    format!(
                        "client-{id}: get {key}: {v:?} ({} bytes), a value client-{id} never set (last acknowledged: {last:?})",
                        v.len(),
                    ),
                );
            }
        }
    }
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
