//! SET_VBUCKET_STATE: the cluster manager sets a vbucket's state on this
//! node (extras: the state, 4 bytes: 1 active, 2 replica, 3 pending,
//! 4 dead), e.g. a replica before a stream fills it during a rebalance.

use std::rc::Rc;

use super::reply::Flow;
use crate::protocol::{Packet, Status, dcp};
use crate::server::conn::{Conn, ServerStream};
use crate::server::node::Node;
use crate::server::store::VbState;

pub async fn set_vbucket_state<S: ServerStream>(
    node: &Rc<Node>,
    conn: &mut Conn<S>,
    request: &Packet,
) -> Flow {
    let h = &request.header;
    let state = dcp::node_set_vbucket_state_state(request)
        .ok()
        .and_then(VbState::from_wire);
    let status = match state {
        None => Status::EINVAL,
        Some(state) => match node.set_vbucket_state(h.vbucket(), state).await {
            Some(_) => Status::SUCCESS,
            None => Status::NOT_MY_VBUCKET,
        },
    };
    conn.respond(Packet::response(h, status));
    Flow::Continue
}
