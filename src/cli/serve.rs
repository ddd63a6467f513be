//! `faultline serve`: the kv node on real sockets, for real memcached
//! clients. The same code as in simulations, over tokio's TCP.

use std::process::ExitCode;

use faultline::server::{self, KvConfig, Node, VbRange};

use super::{Error, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// TCP port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = server::KV_PORT)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// vbuckets of the bucket (all active on this node).
    #[arg(long, default_value_t = 16)]
    vbuckets: u16,
    /// Worker threads (each with its own buffer pool).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Largest value accepted, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_value_bytes: usize,
}

pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    let mut config = KvConfig {
        port: args.port,
        vbuckets: args.vbuckets,
        active: VbRange::all(args.vbuckets),
        workers: args.workers,
        ..KvConfig::default()
    };
    config.limits.max_value_bytes = args.max_value_bytes;
    config.validate().map_err(Error::Usage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
        // The first line says where we listen (tests wait for it).
        println!("serve: listening on {}", listener.local_addr()?);
        server::serve(listener, Node::new(config)).await
    });
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
