//! DCP_OPEN: the connection becomes a DCP producer or consumer (extras:
//! seqno (4, unused), flags (4); key: the connection's name).

use std::rc::Rc;

use super::reply::Flow;
use crate::protocol::{Packet, Status, dcp};
use crate::server::conn::{Conn, ServerStream};
use crate::server::dcp::{DcpConn, MAX_PRODUCERS};
use crate::server::node::Node;

/// Longest connection name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

pub async fn dcp_open<S: ServerStream>(
    node: &Rc<Node>,
    conn: &mut Conn<S>,
    request: &Packet,
) -> Flow {
    let h = &request.header;
    let (Ok(producer), Ok(name)) = (
        dcp::open_is_producer(request),
        std::str::from_utf8(&request.key),
    ) else {
        conn.respond(Packet::response(h, Status::EINVAL));
        return Flow::Continue;
    };
    if name.len() > MAX_NAME_BYTES {
        conn.respond(Packet::response(h, Status::EINVAL));
        return Flow::Continue;
    }
    // Each producer has a task on the executor: their number is bounded.
    if producer && node.dcp.producer_count().await >= MAX_PRODUCERS {
        tracing::debug!(target: "faultline::kv", conn = conn.id, "too many DCP producers");
        conn.respond(Packet::response(h, Status::ENOMEM));
        return Flow::Continue;
    }
    let dcp = DcpConn::open(node, conn.id, name.to_string(), producer).await;
    conn.respond(Packet::response(h, Status::SUCCESS));
    Flow::StartDcp(dcp)
}
