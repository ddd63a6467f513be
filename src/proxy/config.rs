//! The proxy's settings, defined once: the `proxy` workload's parameters
//! default to these values (a scenario that leaves a parameter out runs
//! with what is written here), as `faultline proxy` does for what it has
//! no option for.

use std::time::Duration;

use crate::bugs::Bugs;
use crate::protocol::{HEADER_LEN, Limits};

use super::fd;

/// A backend address as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendAddr {
    pub host: String,
    pub port: u16,
}

/// Health checks.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    pub enabled: bool,
    /// What a check asks of a backend.
    pub kind: CheckKind,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Successes in a row that bring a down server up.
    pub rise: u32,
    /// Failures in a row that take an up server down.
    pub fall: u32,
    /// The check's receive buffer: fixed, a response larger than it is
    /// judged on what fits.
    pub buffer_bytes: usize,
}

/// What a health check asks of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A connection that gets established passes (HAProxy's default,
    /// layer-4 check): nothing is sent.
    Connect,
    /// `STAT` must be answered successfully (a layer-7 check).
    Stat,
}

impl CheckKind {
    /// The kind's name in a scenario's parameters (`check_kind`).
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Connect => "connect",
            CheckKind::Stat => "stat",
        }
    }
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            enabled: true,
            kind: CheckKind::Stat,
            // Twice a second: a down node is noticed within the few
            // seconds a simulated run lasts.
            interval_ms: 500,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
            buffer_bytes: 16 * 1024,
        }
    }
}

/// The proxy's configuration.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub listen_port: u16,
    /// kv nodes, in vbucket order (node i is active for the i-th range).
    pub backends: Vec<BackendAddr>,
    pub vbuckets: u16,
    pub threads: usize,
    /// Size of a connection's receive buffer; a packet must fit in it.
    pub buffer_bytes: usize,
    pub connect_timeout_ms: u64,
    /// Longest wait for a backend's response once the request is sent.
    pub server_timeout_ms: u64,
    /// A client connection idle this long is closed.
    pub client_timeout_ms: u64,
    /// An idle backend connection in the pool this long is closed.
    pub keepalive_timeout_ms: u64,
    /// New connections tried after a connection error before a response
    /// started.
    pub retries: u32,
    /// Connections one thread accepts per listener event.
    pub max_accept: usize,
    /// Response bodies are streamed, and forwarded with `splice()`
    /// through a pipe when large enough (HAProxy's `option
    /// splice-response`); else each response is buffered whole.
    pub splice: bool,
    /// The smallest body (or rest of a body) forwarded with `splice()`;
    /// less goes through the buffers (HAProxy's `MIN_SPLICE_FORWARD`,
    /// 4096 by default: `include/common/defaults.h` at commit 61d39a0e2).
    pub min_splice_bytes: usize,
    /// How much of a streamed body may wait in user space (HAProxy's
    /// buffer size on the response side, `BUFSIZE` 16384 by default:
    /// `include/common/defaults.h` at commit 61d39a0e2): more waits in the
    /// socket, and is spliced once the buffered bytes have gone.
    pub response_buffer_bytes: usize,
    pub check: CheckConfig,
    pub bugs: Bugs,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen_port: 11211,
            backends: Vec::new(),
            vbuckets: 16,
            threads: 2,
            // Holds the workloads' largest request (a SET of 64 bytes
            // with its key and extras) many times over; a deployment
            // with larger values sets more (`faultline proxy` does).
            buffer_bytes: 8 * 1024,
            connect_timeout_ms: 2000,
            server_timeout_ms: 5000,
            client_timeout_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            retries: 3,
            max_accept: 8,
            splice: false,
            min_splice_bytes: 4096,
            response_buffer_bytes: 16 * 1024,
            check: CheckConfig::default(),
            bugs: Bugs::fixed(),
        }
    }
}

impl ProxyConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.backends.is_empty() {
            return Err("the proxy needs at least one backend".into());
        }
        if !(4..=1024).contains(&self.vbuckets) {
            return Err("vbuckets must be within 4..=1024".into());
        }
        if usize::from(self.vbuckets) < self.backends.len() {
            return Err("fewer vbuckets than backends".into());
        }
        if !(1..=fd::MAX_THREADS).contains(&self.threads) {
            return Err(format!("threads must be within 1..={}", fd::MAX_THREADS));
        }
        if self.buffer_bytes < 1024 {
            return Err("buffer_bytes must be at least 1024".into());
        }
        if self.check.buffer_bytes < HEADER_LEN {
            return Err("the check buffer must hold a packet header".into());
        }
        if self.max_accept == 0 {
            return Err("max_accept must be positive".into());
        }
        if self.splice && !(1024..=self.buffer_bytes).contains(&self.response_buffer_bytes) {
            return Err(format!(
                "response_buffer_bytes must be within 1024..=buffer_bytes ({})",
                self.buffer_bytes
            ));
        }
        if self.splice && (self.min_splice_bytes == 0 || self.min_splice_bytes > self.buffer_bytes)
        {
            return Err(format!(
                "min_splice_bytes must be within 1..=buffer_bytes ({})",
                self.buffer_bytes
            ));
        }
        Ok(())
    }

    /// Packet limits: a packet must fit in a connection buffer.
    pub fn limits(&self) -> Limits {
        let defaults = Limits::default();
        Limits {
            max_key_bytes: defaults.max_key_bytes,
            max_value_bytes: self
                .buffer_bytes
                .saturating_sub(HEADER_LEN + defaults.max_key_bytes + Limits::HEADROOM_BYTES),
        }
    }
}

/// A duration given in milliseconds, as the settings give them.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}
