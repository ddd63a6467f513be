//! GET, GETQ, GETK, GETKQ: the value goes out straight from the item.

use std::rc::Rc;

use super::reply::{Flow, status_of};
use crate::protocol::{Opcode, Packet, Status};
use crate::server::conn::{Conn, ServerStream};
use crate::server::node::Node;

pub async fn get<S: ServerStream>(node: &Rc<Node>, conn: &mut Conn<S>, request: &Packet) -> Flow {
    let h = &request.header;
    let now = node.now();
    let found = node.store.get(h.vbucket(), &request.key, now).await;
    node.stats.cmd_get.fetch_add(1).await;
    let with_key = matches!(h.opcode, Opcode::GETK | Opcode::GETKQ);
    match found {
        Ok(Some(item)) => {
            node.stats.get_hits.fetch_add(1).await;
            let mut response = Packet::response(h, Status::SUCCESS)
                .extras(item.flags.to_be_bytes().to_vec())
                .cas(item.cas)
                .value(item.value);
            if with_key {
                response = response.key(request.key.clone());
            }
            conn.respond(response);
        }
        Ok(None) => {
            node.stats.get_misses.fetch_add(1).await;
            if !h.opcode.is_quiet() {
                let mut response = Packet::response(h, Status::KEY_ENOENT);
                if with_key {
                    response = response.key(request.key.clone());
                }
                conn.respond(response);
            }
        }
        Err(e) => conn.respond(Packet::response(h, status_of(e))),
    }
    Flow::Continue
}
