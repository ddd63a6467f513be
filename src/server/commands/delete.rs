//! DELETE, DELETEQ.

use std::rc::Rc;

use super::reply::{Flow, answer, status_of};
use crate::protocol::{Packet, Status};
use crate::server::conn::{Conn, ServerStream};
use crate::server::node::Node;

pub async fn delete<S: ServerStream>(
    node: &Rc<Node>,
    conn: &mut Conn<S>,
    request: &Packet,
) -> Flow {
    let h = &request.header;
    let now = node.now();
    let result = node
        .store
        .delete(h.vbucket(), &request.key, h.cas, now, &node.dcp.durability)
        .await;
    let status = match result {
        Ok(()) => Status::SUCCESS,
        Err(e) => status_of(e),
    };
    answer(conn, request, Packet::response(h, status))
}
