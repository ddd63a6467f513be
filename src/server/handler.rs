//! A connection's request loop, above its framing (`conn.rs`) and the
//! commands (`commands/`): the connection reads and sends packets, the
//! commands answer them, the handler decides what happens next.
//!
//! The loop: wait until a whole request is read (a client connection is
//! closed once it has waited longer than the idle timeout), execute it,
//! send the response, and again, until the peer closes, a command asks to
//! close, or the input is malformed.
//!
//! After `DCP_OPEN` the connection is a DCP connection (`dcp/`): duplex,
//! it waits for the peer's bytes *or* for the node to have messages for
//! the peer, handles every whole packet it has read, then sends what the
//! node prepared. A DCP connection has no idle timeout and keeps its
//! buffers once it has them, as memcached's did.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use super::commands::{self, Flow};
use super::conn::{Conn, ConnError, ServerStream};
use super::dcp::{DcpConn, MAX_MESSAGES_PER_STEP};
use super::node::Node;
use crate::protocol::{Header, Packet, ProtocolError, Status};

/// How long a new connection's first request may take to arrive, in ms,
/// when an idle timeout is set: ours (neither memcached nor HAProxy has
/// this value), so that a short idle timeout does not close a connection
/// whose first request is on its way.
pub const FIRST_REQUEST_TIMEOUT_MS: u64 = 5000;

/// Serves one connection: what its requests ask, in order.
struct Handler<S> {
    id: u64,
    conn: Conn<S>,
    node: Rc<Node>,
    /// Set by `DCP_OPEN`.
    dcp: Option<DcpConn>,
    /// When the last request was read: the idle timeout runs from it
    /// (none yet: a new connection's first request has
    /// [`FIRST_REQUEST_TIMEOUT_MS`]).
    last_command: Option<Instant>,
}

/// Serves `stream` until the peer closes it or it fails.
pub async fn serve_connection<S: ServerStream>(stream: S, node: Rc<Node>, id: u64, worker: usize) {
    node.stats.curr_connections.fetch_add(1).await;
    node.stats.total_connections.fetch_add(1).await;
    let mut handler = Handler {
        id,
        conn: Conn::new(stream, node.clone(), id, worker),
        node: node.clone(),
        dcp: None,
        last_command: None,
    };
    match handler.run().await {
        Ok(()) => tracing::debug!(target: "faultline::kv", conn = id, "closed"),
        Err(e) => {
            tracing::debug!(target: "faultline::kv", conn = id, error = %e, "closed on error")
        }
    }
    handler.conn.give_back_buffers();
    node.stats.curr_connections.fetch_sub(1).await;
}

impl<S: ServerStream> Handler<S> {
    async fn run(&mut self) -> io::Result<()> {
        loop {
            let packet = match self.next_packet().await {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(ConnError::Io(e)) => return Err(e),
                Err(ConnError::Protocol(header, e)) => return self.refuse(header, e).await,
            };
            self.last_command = Some(Instant::now());
            let flow = commands::execute(&self.node, &mut self.conn, packet).await;
            if let Flow::StartDcp(dcp) = &flow {
                // Before the answer is sent: a DCP connection keeps its
                // buffers while the socket drains.
                self.start_dcp(dcp.clone());
            }
            self.conn.transmit().await?;
            if matches!(flow, Flow::Close) {
                return Ok(());
            }
            if let Some(dcp) = self.dcp.clone() {
                let result = self.run_dcp(&dcp).await;
                dcp.close(&self.node, self.id).await;
                return result;
            }
        }
    }

    /// Malformed input: the next packet boundary is lost. Answers if the
    /// header said what was asked, then the connection closes.
    async fn refuse(&mut self, header: Option<Header>, e: ProtocolError) -> io::Result<()> {
        tracing::debug!(target: "faultline::kv", conn = self.id, dcp = self.dcp.is_some(), error = %e, "malformed packet");
        if let Some(header) = header {
            self.conn.respond(Packet::response(&header, refusal(&e)));
            self.conn.transmit().await?;
        }
        Ok(())
    }

    /// Makes this a DCP connection (after its `DCP_OPEN` is answered).
    fn start_dcp(&mut self, dcp: DcpConn) {
        assert!(self.dcp.is_none(), "a connection is opened for DCP once");
        self.dcp = Some(dcp);
        self.conn.keep_buffers();
    }

    /// The DCP loop: handle what the peer sent, send what the node has,
    /// wait for either.
    async fn run_dcp(&mut self, dcp: &DcpConn) -> io::Result<()> {
        let writer = dcp.writer();
        tracing::debug!(target: "faultline::kv", conn = self.id, name = dcp.name(), "dcp connection");
        loop {
            // Every whole packet already read, before anything is sent.
            loop {
                match self.conn.buffered_packet().await {
                    Ok(Some(packet)) => dcp.handle(&self.node, packet).await,
                    Ok(None) => break,
                    Err(ConnError::Io(e)) => return Err(e),
                    Err(ConnError::Protocol(header, e)) => return self.refuse(header, e).await,
                }
            }
            let mut batch = Vec::new();
            let more = dcp
                .step(MAX_MESSAGES_PER_STEP, &mut |p| batch.push(p))
                .await;
            for packet in batch {
                self.conn.respond(packet);
            }
            self.conn.transmit().await?;
            if more {
                // Let the peer's bytes in before the next batch.
                writer.notify_one();
            }
            tokio::select! {
                ready = self.wait_readable() => {
                    if !ready? {
                        return Ok(());
                    }
                    if self.conn.fill().await? == 0 {
                        return self.conn.closed_by_peer();
                    }
                }
                _ = writer.notified() => {}
            }
        }
    }

    /// The next whole packet; `None` when the peer closed between packets.
    async fn next_packet(&mut self) -> Result<Option<Packet>, ConnError> {
        loop {
            if let Some(packet) = self.conn.buffered_packet().await? {
                return Ok(Some(packet));
            }
            if !self.wait_readable().await? {
                return Ok(None);
            }
            if self.conn.fill().await? == 0 {
                let unparsed = self.conn.unparsed();
                if unparsed > 0 {
                    return Err(ConnError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the peer closed inside a packet ({unparsed} bytes read)"),
                    )));
                }
                return Ok(None);
            }
        }
    }

    /// Waits until the socket is readable; idle meanwhile. `false` when the
    /// idle timeout closed the connection.
    async fn wait_readable(&mut self) -> Result<bool, ConnError> {
        self.conn.idle_if_drained();
        // Replication streams are quiet when nothing changes: the idle
        // timeout is for client connections only. As memcached's
        // (`conn_timeout_thread` in memcached.c): a connection waiting for
        // a command is closed once its last command is older than the
        // timeout, however long its answer took to send.
        let deadline = match (&self.dcp, self.node.config.idle_timeout_ms) {
            (Some(_), _) | (None, None) => None,
            (None, Some(ms)) => Some(match self.last_command {
                Some(at) => at + Duration::from_millis(ms),
                None => Instant::now() + Duration::from_millis(ms.max(FIRST_REQUEST_TIMEOUT_MS)),
            }),
        };
        let ready = self.conn.readable();
        match deadline {
            None => ready.await.map_err(ConnError::Io)?,
            Some(at) => match tokio::time::timeout_at(at, ready).await {
                Ok(result) => result.map_err(ConnError::Io)?,
                Err(_) => {
                    tracing::debug!(target: "faultline::kv", conn = self.id, "idle timeout");
                    return Ok(false);
                }
            },
        }
        Ok(true)
    }
}

/// The status that answers a packet the connection cannot take.
fn refusal(e: &ProtocolError) -> Status {
    match e {
        ProtocolError::BodyTooLarge { .. } => Status::E2BIG,
        _ => Status::EINVAL,
    }
}
