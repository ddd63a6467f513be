//! What the proxy sees pass, kept for the stream-safety check.
//!
//! The watch follows each stream's set-up on the wire, independently of
//! the consumer connection's state machine: a `DCP_ADD_STREAM` goes to the
//! consumer node, the producer may end the stream (`DCP_STREAM_END`), the
//! consumer node answers the `DCP_ADD_STREAM`. A stream whose end passed
//! before its answer was never up. A caller told "ok" for such a stream
//! was told something false: the replicator checks every "ok" against the
//! watch (oracle `stream-safety`).

use std::collections::BTreeMap;

use crate::protocol::dcp::{self, end_status};
use crate::protocol::{Opcode, Packet};

#[derive(Default, Debug)]
pub struct Watch {
    /// `DCP_ADD_STREAM`s sent and not answered yet: opaque -> vbucket.
    adding: BTreeMap<u32, u16>,
    /// vbuckets whose stream ended before its `DCP_ADD_STREAM` was
    /// answered, with the end's reason (forgotten at the next
    /// `DCP_ADD_STREAM` for the vbucket).
    ended_before_up: BTreeMap<u16, u32>,
}

impl Watch {
    /// A packet the proxy sends to the consumer node.
    pub fn to_consumer(&mut self, packet: &Packet) {
        let h = &packet.header;
        if h.is_request() && h.opcode == Opcode::DCP_ADD_STREAM {
            let takeover = dcp::add_stream_flags(packet)
                .is_ok_and(|flags| flags & dcp::ADD_STREAM_TAKEOVER != 0);
            if !takeover {
                self.adding.insert(h.opaque, h.vbucket());
                self.ended_before_up.remove(&h.vbucket());
            }
        }
    }

    /// A packet from the consumer node.
    pub fn from_consumer(&mut self, packet: &Packet) {
        let h = &packet.header;
        if !h.is_request() && h.opcode == Opcode::DCP_ADD_STREAM {
            self.adding.remove(&h.opaque);
        }
    }

    /// A packet from the producer node.
    pub fn from_producer(&mut self, packet: &Packet) {
        let h = &packet.header;
        if h.is_request() && h.opcode == Opcode::DCP_STREAM_END {
            let vb = h.vbucket();
            if self.adding.values().any(|v| *v == vb) {
                let reason = dcp::stream_end_status(packet).unwrap_or(end_status::OK);
                self.ended_before_up.insert(vb, reason);
            }
        }
    }

    /// Why telling a caller "ok" for the stream of `vb` is false, if it is.
    pub fn not_up(&self, vb: u16) -> Option<String> {
        self.ended_before_up.get(&vb).map(|reason| {
            format!(
                "vb {vb}: its stream ended ({}) before its ADD_STREAM was answered",
                end_status::name(*reason)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Status;

    #[test]
    fn an_end_before_the_answer_means_never_up() {
        let mut w = Watch::default();
        let add = dcp::add_stream(3, 0).opaque(3);
        w.to_consumer(&add);
        w.from_producer(&dcp::stream_end(3, end_status::CLOSED));
        w.from_consumer(&Packet::response(&add.header, Status::SUCCESS));
        assert!(w.not_up(3).unwrap().contains("closed"));
        // A new stream for the vbucket starts clean.
        w.to_consumer(&add);
        assert_eq!(w.not_up(3), None);
    }

    #[test]
    fn an_end_after_the_answer_is_the_stream_s_ordinary_end() {
        let mut w = Watch::default();
        let add = dcp::add_stream(3, 0).opaque(3);
        w.to_consumer(&add);
        w.from_consumer(&Packet::response(&add.header, Status::SUCCESS));
        w.from_producer(&dcp::stream_end(3, end_status::CLOSED));
        assert_eq!(w.not_up(3), None);
    }
}
