//! GET, GETQ, GETK, GETKQ: the value goes out straight from the item.

use super::{count, status_of};
use crate::protocol::{Opcode, Packet, Status};
use crate::server::ServerStream;
use crate::server::conn::{Conn, Flow};

pub fn get<S: ServerStream>(conn: &mut Conn<S>, request: &Packet) -> Flow {
    let h = &request.header;
    let now = conn.node.now();
    let found = conn
        .node
        .store
        .borrow_mut()
        .get(h.vbucket(), &request.key, now);
    count(conn, |s| s.cmd_get += 1);
    let with_key = matches!(h.opcode, Opcode::GETK | Opcode::GETKQ);
    match found {
        Ok(Some(item)) => {
            count(conn, |s| s.get_hits += 1);
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
            count(conn, |s| s.get_misses += 1);
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
