//! The producer side of the proxy (the cluster manager's
//! `dcp_producer_conn`): most packets from the producer node are relayed
//! to the consumer node untouched; three are also handed to the consumer
//! connection's state machine, because the set-up and takeover calls
//! depend on them.

use super::consumer::{ConsumerConn, Disposition, Fatal};
use crate::protocol::{Opcode, Packet};

/// A packet from the producer node, on its way to the consumer node.
pub fn producer_packet(conn: &mut ConsumerConn, packet: &Packet) -> Result<Disposition, Fatal> {
    let h = &packet.header;
    match (h.is_request(), h.opcode) {
        // The end of a takeover: the consumer node is told to change state.
        (true, Opcode::DCP_SET_VBUCKET_STATE) => {
            conn.producer_set_vbucket_state(packet);
            Ok(Disposition::Proxy)
        }
        // The answer to a close the proxy sent the producer itself.
        (false, Opcode::DCP_CLOSE_STREAM) => {
            conn.producer_stream_closed(packet)?;
            Ok(Disposition::Block)
        }
        // The consumer node closes its side when it gets the end.
        (true, Opcode::DCP_STREAM_END) => {
            conn.producer_stream_end(packet)?;
            Ok(Disposition::Proxy)
        }
        _ => Ok(Disposition::Proxy),
    }
}
