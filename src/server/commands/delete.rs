//! DELETE, DELETEQ.

use super::{answer, status_of};
use crate::protocol::{Packet, Status};
use crate::server::conn::ServerStream;
use crate::server::conn::{Conn, Flow};

pub async fn delete<S: ServerStream>(conn: &mut Conn<S>, request: &Packet) -> Flow {
    let h = &request.header;
    let now = conn.node.now();
    let result = conn
        .node
        .store
        .delete(
            h.vbucket(),
            &request.key,
            h.cas,
            now,
            &conn.node.dcp.durability,
        )
        .await;
    let status = match result {
        Ok(()) => Status::SUCCESS,
        Err(e) => status_of(e),
    };
    answer(conn, request, Packet::response(h, status))
}
