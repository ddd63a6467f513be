//! Waking the streams of a vbucket whose log grew: the one call every
//! writer of a vbucket's log makes (commands, and commits of synchronous
//! writes in `durability.rs`).
//!
//! Its own file, below `mod.rs`: `durability.rs` calls it and is itself
//! below the producer, so it cannot live in the parent, which holds the
//! producer.

use crate::server::node::Node;

/// A vbucket's log grew: every stream on it has something to send.
///
/// A function of the node rather than a method of the conn map
/// ([`Dcp`](super::conn_map::Dcp)): the conn map is part of the node, and
/// does not reach back into it.
pub async fn notify_vbucket(node: &Node, vb: u16) {
    let high_seqno = match node.store.vbucket(vb) {
        Some(v) => v.high_seqno().await,
        None => return,
    };
    for producer in node.dcp.producers().await {
        producer.notify(&node.executor, vb, high_seqno).await;
    }
}
