//! Gallery: hyper's HTTP/1.1 and HTTP/2 client and server connections
//! (HTTP/2 is the `h2` crate under hyper), under faultline.
//!
//! A versioned key-value service over HTTP/1.1 or HTTP/2 (`http2` in the
//! scenario's parameters): `PUT /k/<key>` with a body
//! `<version> <value>` keeps the value of the highest version it was sent
//! (a late, retried PUT never undoes a newer one); `GET /k/<key>` answers
//! `<version> <value>`, or 404. The store is in memory: a restarted server
//! has forgotten everything.
//!
//! How it plugs in: the server is `hyper::server::conn::http1` (or
//! `http2`) serving each accepted `SimStream` (wrapped in
//! `hyper_util::rt::TokioIo`, as a `TcpStream` is), the clients
//! `hyper::client::conn::http1::handshake` (or `http2`) over
//! `SimStream::connect`; HTTP/2's streams run on hyper-util's own
//! `TokioExecutor` (`tokio::spawn`), and the clients' connection futures
//! are `tokio::spawn`ed, as with a `TcpStream`; the store is behind
//! `faultline_harness::sync::tokio::RwLock`. The connection tasks are
//! spawned with `faultline_harness::sync::tokio::spawn` (tokio's `spawn`,
//! followed by the scheduler as a thread).
//!
//! Oracle `read-your-writes`: each client writes its own keys with rising
//! versions and reads each back; the answer must carry the version last
//! acknowledged or a newer one, or be a 404 (only a restart loses keys).
//! The scenario has no buggy variant of its own: it tests hyper.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use faultline_harness::sync::tokio::RwLock;
use faultline_harness::{
    ParamError, Registry, RunSpec, SimListener, SimSetup, SimStream, Workload, oracle,
    parse_params, with_rng,
};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;

/// The port the server listens on.
pub const PORT: u16 = 8080;

/// The largest request body the server reads, in bytes.
pub const MAX_BODY_BYTES: usize = 4096;

/// Versions and values by key.
type Store = Arc<RwLock<BTreeMap<String, (u64, Bytes)>>>;

/// Serves HTTP/1.1 (or, with `http2`, HTTP/2) connections until the
/// listener fails.
pub async fn serve(listener: SimListener, http2: bool) -> std::io::Result<()> {
    let store: Store = Arc::new(RwLock::named("kv.store", BTreeMap::new()));
    loop {
        let (stream, _) = listener.accept().await?;
        let store = store.clone();
        faultline_harness::sync::tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(store.clone(), req));
            let io = TokioIo::new(stream);
            let _ = if http2 {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
            };
        });
    }
}

async fn handle(
    store: Store,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(key) = req.uri().path().strip_prefix("/k/").map(str::to_string) else {
        return Ok(status(StatusCode::NOT_FOUND));
    };
    match *req.method() {
        Method::GET => Ok(match store.read().await.get(&key) {
            Some((version, value)) => {
                let mut body = format!("{version} ").into_bytes();
                body.extend_from_slice(value);
                Response::new(Full::new(Bytes::from(body)))
            }
            None => status(StatusCode::NOT_FOUND),
        }),
        Method::PUT => {
            let Ok(body) = http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            else {
                return Ok(status(StatusCode::PAYLOAD_TOO_LARGE));
            };
            let Some((version, value)) = parse(&body.to_bytes()) else {
                return Ok(status(StatusCode::BAD_REQUEST));
            };
            let mut store = store.write().await;
            let slot = store.entry(key).or_insert((0, Bytes::new()));
            if version >= slot.0 {
                *slot = (version, value);
            }
            Ok(status(StatusCode::NO_CONTENT))
        }
        _ => Ok(status(StatusCode::METHOD_NOT_ALLOWED)),
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

/// `<version> <value>`.
fn parse(body: &[u8]) -> Option<(u64, Bytes)> {
    let space = body.iter().position(|b| *b == b' ')?;
    let version = std::str::from_utf8(&body[..space]).ok()?.parse().ok()?;
    Some((version, Bytes::copy_from_slice(&body[space + 1..])))
}

/// The workload's parameters (`[params]` of a scenario file).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Clients, each with its own keys and connection.
    pub clients: u32,
    /// Keys per client.
    pub keys: u32,
    /// Writes (each followed by a read) per client.
    pub writes: u32,
    /// Values are 1..=this many bytes.
    pub max_value_bytes: usize,
    /// A client gives up on an answer after this long and reconnects.
    pub answer_timeout_ms: u64,
    /// HTTP/2 instead of HTTP/1.1.
    #[serde(default)]
    pub http2: bool,
}

/// The workload: host `server`, clients `client-0`, `client-1`, …
pub struct HyperKv;

impl Workload for HyperKv {
    fn name(&self) -> &'static str {
        "hyper-kv"
    }

    fn check(&self, params: &toml::Table) -> Result<(), ParamError> {
        let p: Params = parse_params(params)?;
        if p.clients == 0 || p.keys == 0 {
            return Err(ParamError::new(
                "clients",
                "params.clients and params.keys must be positive",
            ));
        }
        if p.max_value_bytes == 0 || p.max_value_bytes + 21 > MAX_BODY_BYTES {
            return Err(ParamError::new(
                "max_value_bytes",
                format!(
                    "params.max_value_bytes must be within 1..={}",
                    MAX_BODY_BYTES - 21
                ),
            ));
        }
        Ok(())
    }

    fn build(&self, setup: &mut SimSetup<'_>, run: &RunSpec<'_>) -> Result<(), String> {
        let p: Params = parse_params(run.params).map_err(|e| e.message)?;
        let http2 = p.http2;
        setup.host("server", move || async move {
            let listener = SimListener::bind(("0.0.0.0", PORT)).await?;
            Ok(serve(listener, http2).await?)
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

/// One connection of a client.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn connect(http2: bool) -> Option<Sender> {
    let io = TokioIo::new(SimStream::connect(("server", PORT)).await.ok()?);
    if http2 {
        let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Some(Sender::Http2(sender))
    } else {
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Some(Sender::Http1(sender))
    }
}

/// One request and its whole answer: status and body.
async fn call(sender: &mut Sender, request: Request<Full<Bytes>>) -> Option<(StatusCode, Bytes)> {
    let response = match sender {
        Sender::Http1(s) => {
            s.ready().await.ok()?;
            s.send_request(request).await.ok()?
        }
        Sender::Http2(s) => {
            s.ready().await.ok()?;
            s.send_request(request).await.ok()?
        }
    };
    let status = response.status();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

/// Writes its keys with rising versions, reading each back (oracle
/// `read-your-writes`); a request that fails or times out is retried on a
/// new connection.
async fn client(id: u32, p: Params) {
    let timeout = Duration::from_millis(p.answer_timeout_ms);
    let mut acked: BTreeMap<u32, u64> = BTreeMap::new();
    let mut sender: Option<Sender> = None;
    let mut version = 0;
    for _ in 0..p.writes {
        version += 1;
        let (key, value): (u32, Vec<u8>) = with_rng(&format!("client-{id}"), |rng| {
            let key = rng.random_range(0..p.keys);
            let len = rng.random_range(1..=p.max_value_bytes);
            (
                key,
                (0..len).map(|_| rng.random_range(b'a'..=b'z')).collect(),
            )
        });
        let path = format!("/k/client-{id}-{key}");
        let mut body = format!("{version} ").into_bytes();
        body.extend_from_slice(&value);
        // The write, until acknowledged.
        loop {
            let request = Request::builder()
                .method(Method::PUT)
                .uri(path.as_str())
                .header("host", "server")
                .body(Full::new(Bytes::from(body.clone())))
                .expect("a valid request");
            match exchange(&mut sender, request, timeout, p.http2).await {
                Some((StatusCode::NO_CONTENT, _)) => break,
                Some((code, _)) => {
                    return oracle::fail(
                        "read-your-writes",
                        format!("client-{id}: PUT {path}: {code}"),
                    );
                }
                None => continue,
            }
        }
        acked.insert(key, version);
        // The read, until answered.
        let answer = loop {
            let request = Request::builder()
                .method(Method::GET)
                .uri(path.as_str())
                .header("host", "server")
                .body(Full::new(Bytes::new()))
                .expect("a valid request");
            if let Some(answer) = exchange(&mut sender, request, timeout, p.http2).await {
                break answer;
            }
        };
        match answer {
            (StatusCode::NOT_FOUND, _) => {} // A restart forgot it.
            (StatusCode::OK, body) => match parse(&body) {
                Some((seen, _)) if seen >= version => {}
                Some((seen, _)) => {
                    return oracle::fail(
                        "read-your-writes",
                        format!(
                            "client-{id}: GET {path}: version {seen} after version {version} was acknowledged"
                        ),
                    );
                }
                None => {
                    return oracle::fail(
                        "read-your-writes",
                        format!(
                            "client-{id}: GET {path}: a body of {} bytes that is no `<version> <value>`",
                            body.len()
                        ),
                    );
                }
            },
            (code, _) => {
                return oracle::fail(
                    "read-your-writes",
                    format!("client-{id}: GET {path}: {code}"),
                );
            }
        }
    }
}

/// `request` on the client's connection (a new one if it has none), within
/// `timeout`; `None` (and the connection dropped) on any error.
async fn exchange(
    sender: &mut Option<Sender>,
    request: Request<Full<Bytes>>,
    timeout: Duration,
    http2: bool,
) -> Option<(StatusCode, Bytes)> {
    let mut current = match sender.take() {
        Some(s) => s,
        None => match tokio::time::timeout(timeout, connect(http2)).await {
            Ok(Some(s)) => s,
            _ => {
                tokio::time::sleep(timeout).await;
                return None;
            }
        },
    };
    let answer = tokio::time::timeout(timeout, call(&mut current, request))
        .await
        .ok()
        .flatten()?;
    *sender = Some(current);
    Some(answer)
}

/// The crate's workloads.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(Arc::new(HyperKv));
    registry
}

/// Where this crate's scenario files are.
pub fn scenarios_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}
