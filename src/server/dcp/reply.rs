//! The answer to a request the DCP side does not take: shared by the
//! producer and the consumer, below both.

use crate::protocol::{Packet, Status};

/// The answer to a request the DCP side does not take.
pub(super) fn refuse(request: &Packet, status: Status) -> Packet {
    Packet::response(&request.header, status)
}
