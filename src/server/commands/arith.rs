//! INCREMENT, DECREMENT (and quiet variants): decimal ASCII counters.
//! Extras: delta (8), initial value (8), expiry (4); an expiry of
//! 0xffffffff means "do not create".

use std::rc::Rc;

use super::reply::{Flow, answer, status_of};
use crate::protocol::{Opcode, Packet, Status};
use crate::server::conn::{Conn, ServerStream};
use crate::server::node::Node;
use crate::server::store::expiry;

pub async fn arith<S: ServerStream>(node: &Rc<Node>, conn: &mut Conn<S>, request: &Packet) -> Flow {
    let h = &request.header;
    let delta = request
        .extras_u64(0)
        .expect("shape checked: 20 bytes of extras");
    let initial = request.extras_u64(8).expect("shape checked");
    let expiration_s = request.extras_u32(16).expect("shape checked");
    let incr = h.opcode.loud() == Opcode::INCREMENT;
    let now = node.now();
    let expires_at = expiry(expiration_s, now, node.unix_now_s());
    let result = node
        .store
        .arith(
            h.vbucket(),
            request.key.clone(),
            incr,
            delta,
            initial,
            expiration_s,
            expires_at,
            now,
            &node.dcp.durability,
        )
        .await;
    let response = match result {
        Ok((value, cas)) => Packet::response(h, Status::SUCCESS)
            .cas(cas)
            .value(value.to_be_bytes().to_vec()),
        Err(e) => Packet::response(h, status_of(e)),
    };
    answer(conn, request, response)
}
