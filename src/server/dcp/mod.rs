//! The kv node's side of DCP, Couchbase's replication protocol.
//!
//! A connection becomes a DCP connection with `DCP_OPEN`: a *producer*
//! (this node sends a vbucket's mutations to a replica) or a *consumer*
//! (this node receives them). From then on the connection is duplex: it
//! reads requests and responses from its peer, and it sends what the node
//! produces for it (the connection loop in `handler.rs` waits for either).
//! The peer is the cluster manager's DCP proxy, which relays the packets
//! between a consumer node and a producer node.
//!
//! * [`producer`]: `DCP_STREAM_REQ` opens an active stream on an active
//!   vbucket; a checkpoint-processor task on the executor's aux-io queue
//!   moves the vbucket log's new entries into the stream's ready queue
//!   (snapshot markers, mutations, deletions, prepares, commits) and wakes
//!   the connection. A takeover stream ends by handing the vbucket over.
//! * [`consumer`]: `DCP_ADD_STREAM` from the cluster manager makes the node
//!   send `DCP_STREAM_REQ` on the same connection; the stream request's
//!   response becomes the `DCP_ADD_STREAM` response. Received messages are
//!   applied to the replica vbucket; prepares are acknowledged with
//!   `DCP_SEQNO_ACKNOWLEDGED`.
//! * [`durability`]: synchronous writes wait for the replica's
//!   acknowledgement, then commit; what is in flight is kept by the
//!   [`durability_monitor`], which knows no node (the store consults it).
//! * [`conn_map`]: the node's producers and durability monitor, under
//!   their locks.
//!
//! * `notify.rs`: [`notify_vbucket`], waking a vbucket's streams when its
//!   log grows (re-exported here for the commands).
//!
//! This file is the layer above them that connections and commands use:
//! [`DcpConn`]. Its children import nothing from it.
//!
//! Two kv misbehaviours can be switched on by a fault plan (they are the
//! error path the MB-53445 report's author put into the engine to trigger
//! the cluster manager's hang); they are off unless a plan asks:
//!
//! * `kv.end_stream_after_accept` (producer): right after accepting a
//!   stream request, the producer ends that stream (`DCP_STREAM_END`,
//!   closed), as if forced to close it.
//! * `kv.skip_add_stream_response` (consumer): when a stream ends while its
//!   `DCP_ADD_STREAM` response is still queued, the response is dropped
//!   instead of being sent first.
//!
//! What this module may not know: the cluster manager's state (it only sees
//! packets), other nodes (only its peer connection), or which bug a run
//! exposes.

use std::rc::{Rc, Weak};

use tokio::sync::Notify;

use super::node::Node;
use crate::protocol::Packet;

pub mod conn_map;
pub mod consumer;
pub mod durability;
pub mod durability_monitor;
mod notify;
pub mod producer;
mod reply;

use conn_map::ProducerConn;
use consumer::Consumer;
pub use notify::notify_vbucket;
use producer::Producer;

/// Most messages one step hands to the connection before it reads again.
pub const MAX_MESSAGES_PER_STEP: usize = 256;

/// Most DCP producer connections a node serves at once: each has a task on
/// the executor, whose task limit must never be reached from the network.
pub const MAX_PRODUCERS: usize = 256;
const _: () = assert!(MAX_PRODUCERS < crate::server::executor::MAX_TASKS / 2);

/// The DCP side of one connection.
#[derive(Clone)]
pub enum DcpConn {
    Producer(Rc<Producer>),
    Consumer(Rc<Consumer>),
}

impl DcpConn {
    /// A connection opened with `DCP_OPEN`.
    pub async fn open(node: &Rc<Node>, conn: u64, name: String, producer: bool) -> DcpConn {
        if producer {
            let p = Producer::start(node, conn, name).await;
            node.dcp
                .producers
                .lock()
                .await
                .insert(conn, Rc::downgrade(&p) as Weak<dyn ProducerConn>);
            DcpConn::Producer(p)
        } else {
            DcpConn::Consumer(Consumer::new(name))
        }
    }

    pub fn name(&self) -> &str {
        match self {
            DcpConn::Producer(p) => &p.name,
            DcpConn::Consumer(c) => &c.name,
        }
    }

    /// Notified when the node has something for the peer.
    pub fn writer(&self) -> Rc<Notify> {
        match self {
            DcpConn::Producer(p) => p.writer.clone(),
            DcpConn::Consumer(c) => c.writer.clone(),
        }
    }

    /// Handles one packet from the peer. Answers (and everything else for
    /// the peer) are taken with [`DcpConn::step`].
    pub async fn handle(&self, node: &Rc<Node>, packet: Packet) {
        match self {
            DcpConn::Producer(p) => p.handle(node, packet).await,
            DcpConn::Consumer(c) => c.handle(node, packet).await,
        }
    }

    /// Hands up to `max` messages for the peer to `send`, in order.
    /// Returns whether more are waiting.
    pub async fn step(&self, max: usize, send: &mut dyn FnMut(Packet)) -> bool {
        match self {
            DcpConn::Producer(p) => p.step(max, send).await,
            DcpConn::Consumer(c) => c.step(max, send),
        }
    }

    /// The connection is gone: its streams close.
    pub async fn close(&self, node: &Node, conn: u64) {
        match self {
            DcpConn::Producer(p) => {
                node.dcp.producers.lock().await.remove(&conn);
                p.close(node).await;
            }
            DcpConn::Consumer(c) => c.close(),
        }
    }
}
