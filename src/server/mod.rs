//! A memcached-style kv node.
//!
//! The same code runs as a turmoil host ([`run_node`], over the harness's
//! simulated streams) and on real sockets ([`serve`] with tokio's, for
//! `faultline serve`). One node holds one bucket split in vbuckets; its
//! connections are served like memcached's (`handler.rs`: a connection's
//! request loop; `conn.rs`: its framing, with buffers a worker thread
//! lends its connections, scatter/gather sends, idle connections giving
//! their buffers back), its background
//! tasks run on an executor like the engine's (`executor.rs`), and it
//! replicates over DCP (`dcp/`).
//!
//! Data flow of a request: `conn` reads and parses a packet, `handler`
//! hands it to `commands`, which executes it against the `store` (and, for
//! a durable write, waits for the replica through `dcp`) and queues the
//! response on `conn`, which formats and sends it.
//!
//! Layers, each file using only those below it (as in mini-redis, where
//! the `Connection` frames and the `Handler` loops): `handler` over
//! `commands` over `conn` (framing, `buffers`, `thread_buffers`), all over
//! `node` (`Node`: `store`, `dcp`, `executor`). This file only declares
//! the modules, re-exports the names used outside, and accepts.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use faultline_harness::{SimListener, SimStream};

mod buffers;
pub mod commands;
pub mod conn;
pub mod dcp;
pub mod executor;
mod handler;
pub mod node;
pub mod store;
pub mod thread_buffers;

pub use conn::ServerStream;
pub use node::{KV_PORT, KvConfig, Node, Stats, VERSION, VbRange};

/// A listener the node can accept from.
#[allow(async_fn_in_trait)]
pub trait Accept {
    type Stream: ServerStream + 'static;
    async fn accept_stream(&self) -> io::Result<(Self::Stream, SocketAddr)>;
}

impl Accept for SimListener {
    type Stream = SimStream;
    async fn accept_stream(&self) -> io::Result<(SimStream, SocketAddr)> {
        self.accept().await
    }
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_stream(&self) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
        let (stream, peer) = self.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, peer))
    }
}

/// Serves connections from `listener` until it fails. Must run inside a
/// `LocalSet` (connections are local tasks).
pub async fn serve<L: Accept>(listener: L, node: Rc<Node>) -> io::Result<()> {
    loop {
        let (stream, peer) = listener.accept_stream().await?;
        let id = node.next_conn_id();
        let worker = (id as usize) % node.config.workers;
        let node = node.clone();
        faultline_harness::spawn(async move {
            tracing::debug!(target: "faultline::kv", conn = id, %peer, worker, "connection");
            handler::serve_connection(stream, node, id, worker).await;
        });
    }
}

/// A kv node as turmoil host software: listens on `config.port`.
pub async fn run_node(config: KvConfig) -> io::Result<()> {
    let listener = SimListener::bind(("0.0.0.0", config.port)).await?;
    let node = Node::new(config);
    serve(listener, node).await
}
