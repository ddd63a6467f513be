//! A user's own server, tested with `faultline-harness` from outside it.
//!
//! The server echoes length-prefixed messages: two bytes of big-endian
//! length, then that many bytes. Its buggy variant believes that one
//! `read` brings one whole message (the classic framing bug): on a real
//! network a message may arrive in pieces, or two may arrive together.
//! The fixed variant reads exactly the header, then exactly the body.
//! turmoil's own streams deliver every write whole, so the bug is latent
//! until the harness's segmentation fault splits the bytes.
//!
//! What a user of the harness writes, all of it here:
//! * the system under test ([`serve`]), over the harness's [`SimListener`]
//!   and [`SimStream`] (tokio `AsyncRead + AsyncWrite`);
//! * a [`Workload`] ([`FramedEcho`]) that builds the hosts and clients of a
//!   simulation from a scenario's parameters, with an oracle
//!   (`echo-check`: every echo equals what was sent, in time);
//! * a scenario file (`scenarios/framed-echo.toml`): parameters, the
//!   faults it allows, the recorded failing seed;
//! * tests with [`faultline_harness::testing::Check`] (`tests/external.rs`)
//!   and a binary with the harness's command line (`src/main.rs`).

use std::sync::Arc;
use std::time::Duration;

use faultline_harness::{
    ParamError, Registry, RunSpec, SimListener, SimSetup, SimStream, Variant, Workload, oracle,
    parse_params, with_rng,
};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The port the server listens on.
pub const PORT: u16 = 7000;

/// The largest message body, in bytes (the length prefix is two bytes).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Serves echo connections until the listener fails. `whole_reads`: the
/// buggy variant (one read is one message).
pub async fn serve(listener: SimListener, whole_reads: bool) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(async move {
            let _ = if whole_reads {
                echo_whole_reads(stream).await
            } else {
                echo_framed(stream).await
            };
        });
    }
}

/// The buggy variant: a read is taken for one whole message.
async fn echo_whole_reads(mut stream: SimStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 2 + MAX_MESSAGE_BYTES];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if n < 2 {
            continue; // Not even a header: dropped.
        }
        let body = &buf[2..n];
        let mut reply = (body.len() as u16).to_be_bytes().to_vec();
        reply.extend_from_slice(body);
        stream.write_all(&reply).await?;
    }
}

/// The fixed variant: exactly the header, then exactly the body.
async fn echo_framed(mut stream: SimStream) -> std::io::Result<()> {
    loop {
        let mut header = [0u8; 2];
        if stream.read_exact(&mut header).await.is_err() {
            return Ok(());
        }
        let len = usize::from(u16::from_be_bytes(header));
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        stream.write_all(&header).await?;
        stream.write_all(&body).await?;
    }
}

/// The workload's parameters (`[params]` of a scenario file).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Clients, each with its own connection.
    #[serde(default = "default_clients")]
    pub clients: u32,
    /// Messages per client.
    #[serde(default = "default_messages")]
    pub messages: u32,
    /// Bodies are 1..=this many bytes, drawn by the seed.
    #[serde(default = "default_max_bytes")]
    pub max_message_bytes: usize,
    /// An echo must arrive within this long (simulated ms).
    #[serde(default = "default_deadline_ms")]
    pub reply_deadline_ms: u64,
}

fn default_clients() -> u32 {
    2
}
fn default_messages() -> u32 {
    20
}
fn default_max_bytes() -> usize {
    300
}
fn default_deadline_ms() -> u64 {
    1000
}

/// The workload: host `server`, clients `client-0`, `client-1`, …
pub struct FramedEcho;

impl Workload for FramedEcho {
    fn name(&self) -> &'static str {
        "framed-echo"
    }

    fn check(&self, params: &toml::Table) -> Result<(), ParamError> {
        let p: Params = parse_params(params)?;
        if p.max_message_bytes == 0 || p.max_message_bytes > MAX_MESSAGE_BYTES {
            return Err(ParamError::new(
                "max_message_bytes",
                format!("params.max_message_bytes must be within 1..={MAX_MESSAGE_BYTES}"),
            ));
        }
        if p.clients == 0 {
            return Err(ParamError::new(
                "clients",
                "params.clients must be positive",
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

/// Sends random messages and checks every echo (oracle `echo-check`).
async fn client(id: u32, p: Params) {
    let Ok(mut stream) = SimStream::connect(("server", PORT)).await else {
        return oracle::fail("echo-check", format!("client-{id}: cannot connect"));
    };
    for n in 0..p.messages {
        let body: Vec<u8> = with_rng(&format!("client-{id}"), |rng| {
            let len = rng.random_range(1..=p.max_message_bytes);
            (0..len).map(|_| rng.random()).collect()
        });
        let mut message = (body.len() as u16).to_be_bytes().to_vec();
        message.extend_from_slice(&body);
        let deadline = Duration::from_millis(p.reply_deadline_ms);
        let echoed = tokio::time::timeout(deadline, async {
            stream.write_all(&message).await?;
            let mut echo = vec![0u8; message.len()];
            stream.read_exact(&mut echo).await?;
            Ok::<_, std::io::Error>(echo)
        })
        .await;
        match echoed {
            Ok(Ok(echo)) if echo == message => {}
            Ok(Ok(_)) => {
                return oracle::fail(
                    "echo-check",
                    format!("client-{id} message {n}: the echo differs from what was sent"),
                );
            }
            Ok(Err(e)) => {
                return oracle::fail("echo-check", format!("client-{id} message {n}: {e}"));
            }
            Err(_) => {
                return oracle::fail(
                    "echo-check",
                    format!(
                        "client-{id} message {n}: no whole echo within {} ms",
                        p.reply_deadline_ms
                    ),
                );
            }
        }
    }
}

/// The crate's workloads.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(Arc::new(FramedEcho));
    registry
}

/// Where this crate's scenario files are.
pub fn scenarios_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}
