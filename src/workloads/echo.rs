//! The `echo` workload: clients send random messages to the echo service
//! and check every byte that comes back (oracle `echo-check`).

use std::time::Duration;

use faultline_harness::{
    ParamError, RunSpec, SimListener, SimSetup, SimStream, Variant, Workload, oracle, parse_params,
};
use rand::Rng;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::echo::{WritePath, echo};

/// The port the echo service listens on.
pub const ECHO_PORT: u16 = 7;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_clients")]
    clients: u32,
    #[serde(default = "default_messages")]
    messages: u32,
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: u32,
    /// How long a client waits for an echo before the oracle fires.
    #[serde(default = "default_reply_timeout_ms")]
    reply_timeout_ms: u64,
}

fn default_clients() -> u32 {
    2
}
fn default_messages() -> u32 {
    20
}
fn default_max_message_bytes() -> u32 {
    200
}
fn default_reply_timeout_ms() -> u64 {
    1000
}

/// Upper bounds that keep a scenario file from asking for absurd runs.
const MAX_CLIENTS: u32 = 64;
const MAX_MESSAGE_BYTES: u32 = 1 << 20;

pub struct EchoWorkload;

impl Workload for EchoWorkload {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn check(&self, params: &toml::Table) -> Result<(), ParamError> {
        let p: Params = parse_params(params)?;
        if p.clients == 0 || p.clients > MAX_CLIENTS {
            return Err(ParamError::new(
                "clients",
                format!("params.clients must be within 1..={MAX_CLIENTS}"),
            ));
        }
        if p.max_message_bytes == 0 || p.max_message_bytes > MAX_MESSAGE_BYTES {
            return Err(ParamError::new(
                "max_message_bytes",
                format!("params.max_message_bytes must be within 1..={MAX_MESSAGE_BYTES}"),
            ));
        }
        Ok(())
    }

    fn build(&self, setup: &mut SimSetup<'_>, run: &RunSpec<'_>) -> Result<(), String> {
        let p: Params = parse_params(run.params).map_err(|e| e.message)?;
        // The example's bug has no id: another bug switched on (`--bug`, as
        // a hunt does) leaves the echo server's lines fixed.
        let path = match (run.variant, run.bug) {
            (Variant::Buggy, None) => WritePath::IgnoreShortWrites,
            _ => WritePath::WriteAll,
        };
        setup.host("server", move || async move {
            let listener = SimListener::bind(("0.0.0.0", ECHO_PORT)).await?;
            loop {
                let (stream, peer) = listener.accept().await?;
                tokio::task::spawn_local(async move {
                    match echo(stream, path).await {
                        Ok(bytes) => tracing::debug!(target: "faultline::echo", %peer, bytes, "connection done"),
                        Err(e) => tracing::debug!(target: "faultline::echo", %peer, error = %e, "connection failed"),
                    }
                });
            }
        });
        for id in 0..p.clients {
            let messages = p.messages;
            let max_len = p.max_message_bytes as usize;
            let timeout = Duration::from_millis(p.reply_timeout_ms);
            setup.client(&format!("client-{id}"), async move {
                check_echoes(id, messages, max_len, timeout).await;
                Ok(())
            });
        }
        Ok(())
    }
}

/// Sends `messages` random messages and checks that each comes back whole;
/// a failure fires the `echo-check` oracle.
async fn check_echoes(id: u32, messages: u32, max_len: usize, timeout: Duration) {
    let stream = match SimStream::connect(("server", ECHO_PORT)).await {
        Ok(s) => s,
        Err(e) => return oracle::fail("echo-check", format!("client-{id} could not connect: {e}")),
    };
    let stream_name = format!("echo/client-{id}");
    let next_message =
        || faultline_harness::with_rng(&stream_name, |rng| random_message(rng, max_len));
    if let Err(why) = echo_messages(stream, id, messages, timeout, next_message).await {
        oracle::fail("echo-check", why);
    }
}

/// A message of 1..=max_len random bytes.
pub fn random_message(rng: &mut impl Rng, max_len: usize) -> Vec<u8> {
    let len = rng.random_range(1..=max_len);
    (0..len).map(|_| rng.random()).collect()
}

/// The client's side of the echo check over any stream (the harness's, or
/// turmoil's own for the overhead benchmark): sends each message, reads
/// its echo, compares every byte.
pub async fn echo_messages<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    id: u32,
    messages: u32,
    timeout: Duration,
    mut next_message: impl FnMut() -> Vec<u8>,
) -> Result<(), String> {
    for index in 0..messages {
        let message = next_message();
        if let Err(e) = stream.write_all(&message).await {
            return Err(format!("client-{id} message {index}: send failed: {e}"));
        }
        let mut got = vec![0u8; message.len()];
        let mut filled = 0;
        while filled < got.len() {
            match tokio::time::timeout(timeout, stream.read(&mut got[filled..])).await {
                Err(_) => {
                    return Err(format!(
                        "client-{id} message {index}: {} of {} echoed bytes arrived within {} ms",
                        filled,
                        message.len(),
                        timeout.as_millis()
                    ));
                }
                Ok(Err(e)) => return Err(format!("client-{id} message {index}: {e}")),
                Ok(Ok(0)) => {
                    return Err(format!(
                        "client-{id} message {index}: the server closed after {filled} bytes"
                    ));
                }
                Ok(Ok(n)) => filled += n,
            }
        }
        if let Some(offset) = got.iter().zip(&message).position(|(a, b)| a != b) {
            return Err(format!(
                "client-{id} message {index}: byte {offset} came back as {:#04x}, sent {:#04x}",
                got[offset], message[offset]
            ));
        }
    }
    // One line per client, not per message: the trace is for the story.
    tracing::debug!(target: "faultline::echo", client = id, messages, "echoes checked");
    Ok(())
}
