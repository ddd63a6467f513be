//! SET, ADD, REPLACE, APPEND, PREPEND and their quiet variants.
//! Extras of SET/ADD/REPLACE: flags (4), expiry (4). A durability
//! requirement (framing extras) makes a SET synchronous: it answers only
//! once a majority of the vbucket's nodes hold it.

use super::{answer, count, status_of};
use crate::protocol::{Opcode, Packet, Status};
use crate::server::ServerStream;
use crate::server::conn::{Conn, Flow};
use crate::server::store::{StoreMode, expiry};

pub async fn store<S: ServerStream>(conn: &mut Conn<S>, request: &Packet) -> Flow {
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
    count(conn, |s| s.cmd_set += 1);
    let durability = match request.durability_requirement() {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(target: "faultline::kv", conn = conn.id, error = %e, "bad framing extras");
            return answer(conn, request, Packet::response(h, Status::EINVAL));
        }
    };
    if durability.is_some() {
        // Synchronous writes need a replica to acknowledge them.
        return answer(
            conn,
            request,
            Packet::response(h, Status::DURABILITY_IMPOSSIBLE),
        );
    }
    let now = conn.node.now();
    let expires_at = expiry(expiration_s, now, conn.node.unix_now_s());
    let result = conn.node.store.borrow_mut().store(
        mode,
        h.vbucket(),
        request.key.clone(),
        request.value.clone(),
        flags,
        expires_at,
        expiration_s,
        h.cas,
        now,
    );
    let response = match result {
        Ok(cas) => Packet::response(h, Status::SUCCESS).cas(cas),
        Err(e) => Packet::response(h, status_of(e)),
    };
    answer(conn, request, response)
}
