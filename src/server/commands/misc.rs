//! NOOP, VERSION, QUIT, FLUSH.

use std::rc::Rc;
use std::time::Duration;

use super::reply::{Flow, answer};
use crate::protocol::{Opcode, Packet, Status};
use crate::server::conn::{Conn, ServerStream};
use crate::server::node::{Node, VERSION};

pub fn noop<S: ServerStream>(conn: &mut Conn<S>, request: &Packet) -> Flow {
    conn.respond(Packet::response(&request.header, Status::SUCCESS));
    Flow::Continue
}

pub fn version<S: ServerStream>(conn: &mut Conn<S>, request: &Packet) -> Flow {
    conn.respond(
        Packet::response(&request.header, Status::SUCCESS).value(VERSION.as_bytes().to_vec()),
    );
    Flow::Continue
}

/// QUIT answers, then closes; QUITQ closes without a word.
pub fn quit<S: ServerStream>(conn: &mut Conn<S>, request: &Packet) -> Flow {
    if request.header.opcode == Opcode::QUIT {
        conn.respond(Packet::response(&request.header, Status::SUCCESS));
    }
    Flow::Close
}

/// FLUSH forgets every item, now or after the given delay in seconds.
pub async fn flush<S: ServerStream>(node: &Rc<Node>, conn: &mut Conn<S>, request: &Packet) -> Flow {
    let delay_s = request.extras_u32(0).unwrap_or(0);
    let at = node.now() + Duration::from_secs(u64::from(delay_s));
    node.store.flush(at).await;
    answer(
        conn,
        request,
        Packet::response(&request.header, Status::SUCCESS),
    )
}
