//! Synchronous writes (durability level majority) on the active node.
//!
//! A durable SET appends a prepare to the vbucket's log and waits here.
//! With one replica, a majority is the active node plus the replica: the
//! write is durable once the replica's `DCP_SEQNO_ACKNOWLEDGED` covers the
//! prepare's seqno. Then the prepare is committed (a commit entry in the
//! log, the item visible) and the waiting connection answers SUCCESS.
//!
//! A write not acknowledged within the durability timeout is aborted: it
//! is no longer tracked, can never commit (a late acknowledgement finds
//! nothing to commit), and its key takes writes again; its writer answers
//! SYNC_WRITE_AMBIGUOUS (the client cannot know what the replica saw). A
//! vbucket that stops being active abandons its prepares: their writers
//! hear SYNC_WRITE_AMBIGUOUS.
//!
//! The monitor itself (what is in flight) is `durability_monitor.rs`, below
//! the node; this file is what the node does when the replica acknowledges.

use std::rc::Rc;

use super::notify::notify_vbucket;
use crate::protocol::Status;
use crate::server::node::Node;

/// The replica holds every prepare of `vb` up to `seqno`: commit them, in
/// seqno order, and tell their writers.
pub async fn seqno_acknowledged(node: &Rc<Node>, vb: u16, seqno: u64) {
    let durable = node.dcp.durability.lock().await.take_through(vb, seqno);
    if durable.is_empty() {
        return;
    }
    for (prepared, mut write) in durable {
        let outcome = node
            .store
            .commit(vb, prepared)
            .await
            .map(|(_, cas)| cas)
            .map_err(|_| Status::SYNC_WRITE_AMBIGUOUS);
        node.dcp.durability.lock().await.committed(vb, prepared);
        tracing::trace!(target: "faultline::dcp", vb, prepared, ok = outcome.is_ok(), "sync write committed");
        if let Some(waiter) = write.waiter.take() {
            // The writer may have stopped waiting (its timeout).
            let _ = waiter.send(outcome);
        }
    }
    // The commits go to the replica too.
    notify_vbucket(node, vb).await;
}
