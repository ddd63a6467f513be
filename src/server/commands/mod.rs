//! Command execution: one file per command family, as in mini-redis.
//!
//! Each command checks its packet's shape (extras, key and value sizes),
//! runs against the store, and queues its response on the connection.
//! Malformed requests get `EINVAL`; unknown opcodes `UNKNOWN_COMMAND`.
//! Quiet variants answer only what their loud twins would answer on
//! failure (GETQ/GETKQ: only hits).

use std::rc::Rc;

use super::conn::{Conn, ServerStream};
use super::dcp;
use super::node::Node;
use crate::protocol::{Opcode, Packet, Status};

mod arith;
mod dcp_open;
mod delete;
mod get;
mod misc;
mod reply;
mod stat;
mod store;
mod vbucket;

pub use reply::Flow;

/// The shape a request must have.
struct Shape {
    extras: &'static [usize],
    key: KeyRule,
    value: bool,
}

#[derive(PartialEq, Eq)]
enum KeyRule {
    Required,
    Optional,
    Forbidden,
}

fn shape(opcode: Opcode) -> Option<Shape> {
    use KeyRule::*;
    let s = |extras: &'static [usize], key, value| Some(Shape { extras, key, value });
    match opcode.loud() {
        Opcode::GET | Opcode::GETK => s(&[0], Required, false),
        Opcode::SET | Opcode::ADD | Opcode::REPLACE => s(&[8], Required, true),
        Opcode::APPEND | Opcode::PREPEND => s(&[0], Required, true),
        Opcode::DELETE => s(&[0], Required, false),
        Opcode::INCREMENT | Opcode::DECREMENT => s(&[20], Required, false),
        Opcode::FLUSH => s(&[0, 4], Forbidden, false),
        Opcode::NOOP | Opcode::VERSION | Opcode::QUIT => s(&[0], Forbidden, false),
        Opcode::STAT => s(&[0], Optional, false),
        Opcode::DCP_OPEN => s(&[8], Required, false),
        Opcode::SET_VBUCKET_STATE => s(&[4], Forbidden, false),
        _ => None,
    }
}

fn check(packet: &Packet, shape: &Shape) -> Result<(), String> {
    if !shape.extras.contains(&packet.extras.len()) {
        return Err(format!("{} bytes of extras", packet.extras.len()));
    }
    match shape.key {
        KeyRule::Required if packet.key.is_empty() => return Err("no key".into()),
        KeyRule::Forbidden if !packet.key.is_empty() => return Err("a key".into()),
        _ => {}
    }
    if !shape.value && !packet.value.is_empty() {
        return Err("a value".into());
    }
    if !packet.framing.is_empty() && packet.header.opcode.loud() != Opcode::SET {
        return Err("framing extras".into());
    }
    Ok(())
}

/// Executes one request and queues its response(s).
pub async fn execute<S: ServerStream>(node: &Rc<Node>, conn: &mut Conn<S>, packet: Packet) -> Flow {
    let opcode = packet.header.opcode;
    if !packet.header.is_request() {
        tracing::debug!(target: "faultline::kv", conn = conn.id, %opcode, "a response where a request belongs");
        conn.respond(Packet::response(&packet.header, Status::EINVAL));
        return Flow::Close;
    }
    let Some(shape) = shape(opcode) else {
        conn.respond(Packet::response(&packet.header, Status::UNKNOWN_COMMAND));
        return Flow::Continue;
    };
    if let Err(why) = check(&packet, &shape) {
        tracing::debug!(target: "faultline::kv", conn = conn.id, %opcode, why = why.as_str(), "invalid request");
        conn.respond(Packet::response(&packet.header, Status::EINVAL));
        return Flow::Continue;
    }
    let flow = match opcode.loud() {
        Opcode::GET | Opcode::GETK => get::get(node, conn, &packet).await,
        Opcode::SET | Opcode::ADD | Opcode::REPLACE | Opcode::APPEND | Opcode::PREPEND => {
            store::store(node, conn, &packet).await
        }
        Opcode::DELETE => delete::delete(node, conn, &packet).await,
        Opcode::INCREMENT | Opcode::DECREMENT => arith::arith(node, conn, &packet).await,
        Opcode::FLUSH => misc::flush(node, conn, &packet).await,
        Opcode::NOOP => misc::noop(conn, &packet),
        Opcode::VERSION => misc::version(conn, &packet),
        Opcode::QUIT => misc::quit(conn, &packet),
        Opcode::STAT => stat::stat(node, conn, &packet).await,
        Opcode::DCP_OPEN => dcp_open::dcp_open(node, conn, &packet).await,
        Opcode::SET_VBUCKET_STATE => vbucket::set_vbucket_state(node, conn, &packet).await,
        _ => unreachable!("every shaped opcode is dispatched"),
    };
    if mutates(opcode) {
        // Replication streams of the vbucket have something to send.
        dcp::notify_vbucket(node, packet.header.vbucket()).await;
    }
    flow
}

/// Whether a command may append to its vbucket's log.
fn mutates(opcode: Opcode) -> bool {
    matches!(
        opcode.loud(),
        Opcode::SET
            | Opcode::ADD
            | Opcode::REPLACE
            | Opcode::APPEND
            | Opcode::PREPEND
            | Opcode::DELETE
            | Opcode::INCREMENT
            | Opcode::DECREMENT
    )
}
