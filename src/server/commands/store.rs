//! SET, ADD, REPLACE, APPEND, PREPEND and their quiet variants.
//! Extras of SET/ADD/REPLACE: flags (4), expiry (4). A durability
//! requirement (framing extras) makes a SET synchronous: it answers only
//! once a majority of the vbucket's nodes hold it (`dcp/durability.rs`).

use std::rc::Rc;
use std::time::Duration;

use faultline_harness::oracle;

use super::reply::{Flow, answer, status_of};
use crate::protocol::{Opcode, Packet, Status};
use crate::server::conn::{Conn, ServerStream};
use crate::server::dcp::notify_vbucket;
use crate::server::node::Node;
use crate::server::store::{StoreMode, VbState, expiry};

pub async fn store<S: ServerStream>(node: &Rc<Node>, conn: &mut Conn<S>, request: &Packet) -> Flow {
    let h = &request.header;
    let (mode, flags, expiration_s) = match h.opcode.loud() {
        Opcode::SET => (StoreMode::Set, request.extras_u32(0), request.extras_u32(4)),
        Opcode::ADD => (StoreMode::Add, request.extras_u32(0), request.extras_u32(4)),
        Opcode::REPLACE => (
            StoreMode::Replace,
            request.extras_u32(0),
            request.extras_u32(4),
        ),
        Opcode::APPEND => (StoreMode::Append, Some(0), Some(0)),
        Opcode::PREPEND => (StoreMode::Prepend, Some(0), Some(0)),
        other => unreachable!("{other} is not a store"),
    };
    let (flags, expiration_s) = (
        flags.expect("shape checked"),
        expiration_s.expect("shape checked"),
    );
    node.stats.cmd_set.fetch_add(1).await;
    let durability = match request.durability_requirement() {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(target: "faultline::kv", conn = conn.id, error = %e, "bad framing extras");
            return answer(conn, request, Packet::response(h, Status::EINVAL));
        }
    };
    if durability.is_some() {
        let response = durable_set(node, conn, request, flags).await;
        return answer(conn, request, response);
    }
    let now = node.now();
    let expires_at = expiry(expiration_s, now, node.unix_now_s());
    let result = node
        .store
        .store(
            mode,
            h.vbucket(),
            request.key.clone(),
            request.value.clone(),
            flags,
            expires_at,
            expiration_s,
            h.cas,
            now,
            &node.dcp.durability,
        )
        .await;
    let response = match result {
        Ok(cas) => Packet::response(h, Status::SUCCESS).cas(cas),
        Err(e) => Packet::response(h, status_of(e)),
    };
    answer(conn, request, response)
}

/// A synchronous SET: prepare, wait for the replica's acknowledgement (or
/// the durability timeout), answer. Expiry is not supported on this path.
async fn durable_set<S: ServerStream>(
    node: &Rc<Node>,
    conn: &mut Conn<S>,
    request: &Packet,
    flags: u32,
) -> Packet {
    let h = &request.header;
    let vb = h.vbucket();
    let now = node.now();
    // Under the vbucket's state lock (shared), as the engine's set: the
    // checks, the prepare and its tracking.
    let (seqno, outcome) = {
        let store = &node.store;
        let Some(v) = store.vbucket(vb) else {
            return Packet::response(h, Status::NOT_MY_VBUCKET);
        };
        let state = v.state_read().await;
        if state.state != VbState::Active {
            return Packet::response(h, Status::NOT_MY_VBUCKET);
        }
        // A majority of two nodes needs the replica.
        if !node.dcp.has_replica_stream(vb).await {
            return Packet::response(h, Status::DURABILITY_IMPOSSIBLE);
        }
        // The key's pending write, the vbucket's room, the CAS and the
        // prepare itself, under the hash table's lock.
        let prepared = store
            .prepare(
                v,
                request.key.clone(),
                request.value.clone(),
                flags,
                h.cas,
                now,
                &node.dcp.durability,
            )
            .await;
        drop(state);
        match prepared {
            Ok(prepared) => prepared,
            Err(e) => return Packet::response(h, status_of(e)),
        }
    };
    // The prepare goes out with the vbucket's next snapshot.
    notify_vbucket(node, vb).await;
    let timeout = Duration::from_millis(node.config.durability_timeout_ms);
    let response = match tokio::time::timeout(timeout, outcome).await {
        Ok(Ok(Ok(cas))) => Packet::response(h, Status::SUCCESS).cas(cas),
        Ok(Ok(Err(status))) => Packet::response(h, status),
        // The monitor forgot the write (the vbucket stopped being active).
        Ok(Err(_)) => Packet::response(h, Status::SYNC_WRITE_AMBIGUOUS),
        // The replica did not answer in time: the write is aborted (it can
        // no longer commit, and the key takes writes again); the client
        // cannot know what the replica saw: ambiguous.
        Err(_) => {
            node.dcp.durability.lock().await.abort(vb, seqno);
            tracing::debug!(target: "faultline::kv", conn = conn.id, vb, seqno, "durable write timed out: aborted");
            Packet::response(h, Status::SYNC_WRITE_AMBIGUOUS)
        }
    };
    let latency = node.now().saturating_sub(now);
    oracle::record_latency("durable-write", latency);
    tracing::trace!(target: "faultline::kv", conn = conn.id, vb, seqno, status = %response.header.status(), latency_us = latency.as_micros() as u64, "durable write");
    response
}
