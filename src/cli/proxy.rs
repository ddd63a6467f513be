//! `faultline proxy`: the proxy on real sockets, in front of kv nodes
//! (`faultline serve`). The same code as in simulations, over the real
//! kernel's syscalls (`proxy::os::OsSys`).

use std::io::Write as _;
use std::process::ExitCode;

use faultline::proxy::os::OsSys;
use faultline::proxy::{BackendAddr, CheckConfig, Proxy, ProxyConfig};

use super::{Error, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// The port to listen on, every address (0: any free port; the port is printed).
    #[arg(long, value_name = "PORT")]
    listen: u16,
    /// A kv node, in vbucket order (repeat the option for each node).
    #[arg(long = "backend", value_name = "HOST:PORT", required = true)]
    backends: Vec<String>,
    /// Proxy threads (tasks with a poller each).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// vbuckets of the bucket (the kv nodes must agree).
    #[arg(long, default_value_t = 16)]
    vbuckets: u16,
    /// No health checks.
    #[arg(long)]
    no_checks: bool,
    /// A connection's receive buffer, in bytes: a packet must fit (the
    /// default fits the kv node's largest value, 1 MiB).
    #[arg(long, default_value_t = 1024 * 1024 + 4096)]
    buffer_bytes: usize,
    /// Forward response bodies through the buffers only (no splice()).
    #[arg(long)]
    no_splice: bool,
    /// The smallest body (or rest of a body) forwarded with splice(), in bytes.
    #[arg(long, default_value_t = ProxyConfig::default().min_splice_bytes)]
    min_splice_bytes: usize,
}

fn parse_backend(text: &str) -> Result<BackendAddr> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| Error::Usage(format!("--backend {text}: expected HOST:PORT")))?;
    let port = port
        .parse()
        .map_err(|_| Error::Usage(format!("--backend {text}: bad port")))?;
    Ok(BackendAddr {
        host: host.to_string(),
        port,
    })
}

pub fn proxy(args: ProxyArgs) -> Result<ExitCode> {
    let backends = args
        .backends
        .iter()
        .map(|b| parse_backend(b))
        .collect::<Result<Vec<_>>>()?;
    let config = ProxyConfig {
        listen_port: args.listen,
        backends,
        vbuckets: args.vbuckets,
        threads: args.threads,
        buffer_bytes: args.buffer_bytes,
        splice: !args.no_splice,
        min_splice_bytes: args.min_splice_bytes,
        response_buffer_bytes: ProxyConfig::default().response_buffer_bytes,
        check: CheckConfig {
            enabled: !args.no_checks,
            // The real-socket proxy checks once a second, as it did before
            // the settings were defined once; the simulated default (500
            // ms) is the `proxy` workload's.
            interval_ms: 1000,
            ..CheckConfig::default()
        },
        ..ProxyConfig::default()
    };
    config.validate().map_err(Error::Usage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    let sys = OsSys::new();
    let result: std::result::Result<(), String> = local.block_on(&runtime, async {
        let proxy = Proxy::new(sys.clone(), config).await?;
        proxy
            .listen()
            .await
            .map_err(|e| format!("cannot listen on port {}: {e}", args.listen))?;
        let listener = *proxy.listener.get().expect("listening");
        let port = sys
            .local_port(listener)
            .map_err(|e| format!("getsockname: {e}"))?;
        println!("proxy: listening on port {port}");
        let _ = std::io::stdout().flush();
        proxy.run().await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(message) => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(1))
        }
    }
}
