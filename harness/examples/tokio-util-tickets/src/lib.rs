//! Gallery: tokio-util's `Framed` with `LengthDelimitedCodec`, under
//! faultline.
//!
//! A ticket service, written as a tokio user writes one: each connection
//! is a task reading length-delimited frames through
//! `tokio_util::codec::Framed`; a request frame asks for a ticket, the
//! answer frame carries it. Tickets are `(epoch_ms, n)`: the simulated
//! time the server process started (a restarted process starts a new
//! epoch, as Snowflake-style ids do) and a counter behind a `RwLock`.
//!
//! How it plugs in: the server runs on the harness's `SimListener` and
//! `SimStream` (tokio `AsyncRead + AsyncWrite`, so `Framed` takes them as
//! it takes a `TcpStream`), and its shared state uses
//! `faultline_harness::sync::tokio::RwLock` in place of tokio's (one
//! import), and its connection tasks are spawned with
//! `faultline_harness::sync::tokio::spawn` where the service had
//! `tokio::spawn` (the same call; it lets PCT and `explore` see them as
//! threads). The faults (tiny send buffers,
//! segmentation, latency, a partition, a process crash) come from the
//! scenario file; the race from the default race space (`points = ["*"]`).
//!
//! The race, written in the user's code: the buggy variant takes a ticket
//! by reading the counter under the read lock and storing the next value
//! under the write lock, two acquisitions: two connections can read the
//! same value and hand out the same ticket. The fix does the
//! read-modify-write under one write lock. Oracle `unique-tickets`: no two
//! answers carry the same ticket (what a user of a ticket service checks
//! without knowing how it could fail).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use faultline_harness::sync::tokio::RwLock;
use faultline_harness::{
    ParamError, Registry, RunSpec, SimListener, SimSetup, SimStream, Variant, Workload, oracle,
    parse_params,
};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// The port the server listens on.
pub const PORT: u16 = 7100;

/// The largest frame either side accepts, in bytes.
pub const MAX_FRAME_BYTES: usize = 64;

/// The request frame.
pub const TAKE: &[u8] = b"TAKE";

/// The codec both sides use: a 4-byte big-endian length, then the frame.
fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// The service: one task per connection, a ticket per request frame.
/// `lost_update`: the buggy variant.
pub async fn serve(listener: SimListener, lost_update: bool) -> std::io::Result<()> {
    let epoch_ms = faultline_harness::now().as_millis() as u64;
    let next = Arc::new(RwLock::named("tickets.next", 0u64));
    loop {
        let (stream, _) = listener.accept().await?;
        let next = next.clone();
        faultline_harness::sync::tokio::spawn(async move {
            let mut frames = Framed::new(stream, codec());
            while let Some(Ok(request)) = frames.next().await {
                if request.as_ref() != TAKE {
                    return; // Not our protocol: drop the connection.
                }
                let n = take(&next, lost_update).await;
                let mut answer = epoch_ms.to_be_bytes().to_vec();
                answer.extend_from_slice(&n.to_be_bytes());
                if frames.send(Bytes::from(answer)).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The next ticket number.
async fn take(next: &RwLock<u64>, lost_update: bool) -> u64 {
    if lost_update {
        let n = *next.read().await;
        *next.write().await = n + 1;
        n
    } else {
        let mut next = next.write().await;
        let n = *next;
        *next += 1;
        n
    }
}

/// The workload's parameters (`[params]` of a scenario file).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Clients, each with its own connection (reconnecting after errors).
    pub clients: u32,
    /// Tickets each client takes.
    pub tickets: u32,
    /// A client gives up on an answer after this long and reconnects.
    pub answer_timeout_ms: u64,
}

/// The workload: host `server`, clients `client-0`, `client-1`, …
pub struct Tickets;

impl Workload for Tickets {
    fn name(&self) -> &'static str {
        "tokio-util-tickets"
    }

    fn check(&self, params: &toml::Table) -> Result<(), ParamError> {
        let p: Params = parse_params(params)?;
        if p.clients == 0 {
            return Err(ParamError::new(
                "clients",
                "params.clients must be positive",
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
        let buggy = run.variant == Variant::Buggy;
        setup.host("server", move || async move {
            let listener = SimListener::bind(("0.0.0.0", PORT)).await?;
            Ok(serve(listener, buggy).await?)
        });
        // Every ticket handed out, and to whom: shared by the clients of
        // this run (they all run on the simulation's thread).
        let issued: Rc<RefCell<BTreeMap<(u64, u64), String>>> = Rc::default();
        for id in 0..p.clients {
            let (p, issued) = (p.clone(), issued.clone());
            setup.client(&format!("client-{id}"), async move {
                client(id, p, issued).await;
                Ok(())
            });
        }
        Ok(())
    }
}

/// Takes `p.tickets` tickets, reconnecting after any error or timeout;
/// fails `unique-tickets` at a ticket already handed out.
async fn client(id: u32, p: Params, issued: Rc<RefCell<BTreeMap<(u64, u64), String>>>) {
    let timeout = Duration::from_millis(p.answer_timeout_ms);
    let mut taken = 0;
    while taken < p.tickets {
        let Ok(stream) = SimStream::connect(("server", PORT)).await else {
            tokio::time::sleep(timeout).await;
            continue;
        };
        let mut frames = Framed::new(stream, codec());
        while taken < p.tickets {
            let answer = tokio::time::timeout(timeout, async {
                frames.send(Bytes::from_static(TAKE)).await?;
                frames.next().await.unwrap_or_else(|| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "closed",
                    ))
                })
            })
            .await;
            let Ok(Ok(answer)) = answer else {
                break; // An error or a timeout: a new connection.
            };
            let Some(ticket) = parse(&answer) else {
                return oracle::fail(
                    "unique-tickets",
                    format!("client-{id}: an answer of {} bytes", answer.len()),
                );
            };
            let who = format!("client-{id} (its ticket {taken})");
            if let Some(first) = issued.borrow_mut().insert(ticket, who.clone()) {
                return oracle::fail(
                    "unique-tickets",
                    format!("ticket {ticket:?} handed out twice: to {first}, then to {who}"),
                );
            }
            taken += 1;
        }
    }
}

/// `(epoch_ms, n)` from an answer frame.
fn parse(answer: &[u8]) -> Option<(u64, u64)> {
    let epoch = u64::from_be_bytes(answer.get(..8)?.try_into().ok()?);
    let n = u64::from_be_bytes(answer.get(8..16)?.try_into().ok()?);
    (answer.len() == 16).then_some((epoch, n))
}

/// The crate's workloads.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(Arc::new(Tickets));
    registry
}

/// Where this crate's scenario files are.
pub fn scenarios_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}
