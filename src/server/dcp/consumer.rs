//! The consumer side: passive streams into replica vbuckets.
//!
//! The cluster manager asks for a stream with `DCP_ADD_STREAM` (its own
//! opaque). The node opens a passive stream with an opaque of its own and
//! sends `DCP_STREAM_REQ` on the same connection, starting at the replica's
//! high seqno; the cluster manager relays it to the producer. When the
//! stream request's response comes back, the node answers the
//! `DCP_ADD_STREAM` (the cluster manager's opaque, the status, the stream's
//! opaque in the extras). The answer waits in the stream until the
//! connection's next step sends it.
//!
//! Then the stream's messages (all carrying the stream's opaque) are
//! applied to the replica vbucket; the highest prepare applied is
//! acknowledged to the producer with `DCP_SEQNO_ACKNOWLEDGED`. A
//! `DCP_SET_VBUCKET_STATE` on a takeover stream changes the vbucket's state
//! here; `DCP_STREAM_END` closes the stream.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use tokio::sync::Notify;

use super::reply::refuse;
use crate::protocol::dcp::{self, end_status};
use crate::protocol::{Opcode, Packet, ProtocolError, Status};
use crate::server::node::Node;
use crate::server::store::{Mutation, VbState};

/// Most streams one consumer connection holds.
pub const MAX_STREAMS: usize = 1024;

/// Stream opaques this node hands out start here (apart from the cluster
/// manager's, which are vbucket ids).
const FIRST_STREAM_OPAQUE: u32 = 0x0001_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The stream request is out; no response yet.
    Requested,
    /// Accepted by the producer: messages are applied.
    Reading,
}

struct PassiveStream {
    vb: u16,
    /// The opaque of the `DCP_ADD_STREAM` that asked for the stream.
    add_opaque: u32,
    takeover: bool,
    phase: Phase,
    /// The `DCP_ADD_STREAM` response, until a step sends it.
    add_response: Option<Packet>,
    /// Highest prepare applied, and highest acknowledged.
    prepared: u64,
    acked: u64,
}

/// One consumer connection.
pub struct Consumer {
    pub name: String,
    /// Streams by their opaque.
    streams: RefCell<BTreeMap<u32, PassiveStream>>,
    next_opaque: Cell<u32>,
    out: RefCell<VecDeque<Packet>>,
    pub(crate) writer: Rc<Notify>,
}

impl Consumer {
    pub(crate) fn new(name: String) -> Rc<Consumer> {
        tracing::debug!(target: "faultline::dcp", name = name.as_str(), "consumer opened");
        Rc::new(Consumer {
            name,
            streams: RefCell::default(),
            next_opaque: Cell::new(FIRST_STREAM_OPAQUE),
            out: RefCell::default(),
            writer: Rc::new(Notify::new()),
        })
    }

    fn send(&self, packet: Packet) {
        self.out.borrow_mut().push_back(packet);
        self.writer.notify_one();
    }

    fn stream_of_vb(&self, vb: u16) -> Option<u32> {
        self.streams
            .borrow()
            .iter()
            .find(|(_, s)| s.vb == vb)
            .map(|(opaque, _)| *opaque)
    }

    pub(crate) async fn handle(&self, node: &Rc<Node>, packet: Packet) {
        let h = packet.header;
        if !h.is_request() {
            match h.opcode {
                Opcode::DCP_STREAM_REQ => self.stream_req_response(node, &packet).await,
                other => {
                    tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), opcode = %other, "consumer ignores a response")
                }
            }
            return;
        }
        let result = match h.opcode {
            Opcode::DCP_ADD_STREAM => self.add_stream(node, &packet).await,
            Opcode::DCP_CLOSE_STREAM => {
                self.close_stream(&packet);
                Ok(())
            }
            Opcode::DCP_STREAM_END => self.stream_end(&packet),
            Opcode::DCP_SNAPSHOT_MARKER => {
                dcp::SnapshotMarker::parse(&packet).map(|_| self.check_stream(&packet))
            }
            Opcode::DCP_MUTATION
            | Opcode::DCP_DELETION
            | Opcode::DCP_PREPARE
            | Opcode::DCP_COMMIT => self.apply(node, &packet).await,
            Opcode::DCP_SET_VBUCKET_STATE => self.set_vbucket_state(node, &packet).await,
            Opcode::DCP_NOOP => {
                self.send(refuse(&packet, Status::SUCCESS));
                Ok(())
            }
            _ => {
                self.send(refuse(&packet, Status::EINVAL));
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), opcode = %h.opcode, error = %e, "malformed DCP message");
            self.send(refuse(&packet, Status::EINVAL));
        }
    }

    async fn add_stream(&self, node: &Node, packet: &Packet) -> Result<(), ProtocolError> {
        let flags = dcp::add_stream_flags(packet)?;
        let vb = packet.header.vbucket();
        let vbucket = match node.store.vbucket(vb) {
            Some(v) => {
                let state = v.state_read().await;
                matches!(state.state, VbState::Replica | VbState::Pending)
                    .then_some((v.high_seqno().await, state.uuid))
            }
            None => None,
        };
        let (high_seqno, uuid) = match vbucket {
            Some(found) => found,
            None => {
                self.send(refuse(packet, Status::NOT_MY_VBUCKET));
                return Ok(());
            }
        };
        if self.stream_of_vb(vb).is_some() {
            self.send(refuse(packet, Status::KEY_EEXISTS));
            return Ok(());
        }
        if self.streams.borrow().len() >= MAX_STREAMS {
            self.send(refuse(packet, Status::ENOMEM));
            return Ok(());
        }
        let opaque = self.next_opaque.get();
        self.next_opaque
            .set(opaque.wrapping_add(1).max(FIRST_STREAM_OPAQUE));
        let takeover = flags & dcp::ADD_STREAM_TAKEOVER != 0;
        self.streams.borrow_mut().insert(
            opaque,
            PassiveStream {
                vb,
                add_opaque: packet.header.opaque,
                takeover,
                phase: Phase::Requested,
                add_response: None,
                prepared: 0,
                acked: 0,
            },
        );
        let request = dcp::StreamReq {
            flags: if takeover {
                dcp::STREAM_REQ_TAKEOVER
            } else {
                0
            },
            start_seqno: high_seqno,
            end_seqno: dcp::SEQNO_INFINITY,
            vbucket_uuid: uuid,
            snap_start: high_seqno,
            snap_end: high_seqno,
        };
        tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), vb, opaque, start = high_seqno, takeover, "stream requested");
        self.send(request.packet(vb).opaque(opaque));
        Ok(())
    }

    /// The producer answered a stream request: the answer to the
    /// `DCP_ADD_STREAM` waits in the stream for the next step.
    async fn stream_req_response(&self, node: &Node, packet: &Packet) {
        let opaque = packet.header.opaque;
        let requested = self
            .streams
            .borrow()
            .get(&opaque)
            .filter(|s| s.phase == Phase::Requested)
            .map(|s| s.vb);
        let mut status = packet.header.status();
        if let Some(vb) = requested {
            if status.is_success() {
                match dcp::parse_failover_log(packet) {
                    Ok(log) if !log.is_empty() => {
                        // The replica follows the producer's history from now.
                        node.store.set_uuid(vb, log[0].0).await;
                    }
                    _ => status = Status::EINVAL,
                }
            }
        }
        let mut streams = self.streams.borrow_mut();
        let Some(stream) = streams.get_mut(&opaque) else {
            tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), opaque, "stream-request response for no stream");
            return;
        };
        if stream.phase != Phase::Requested {
            return;
        }
        let add_request = Packet::request(Opcode::DCP_ADD_STREAM).opaque(stream.add_opaque);
        let response = Packet::response(&add_request.header, status);
        tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), vb = stream.vb, opaque, %status, "stream request answered");
        if status.is_success() {
            stream.phase = Phase::Reading;
            stream.add_response = Some(response.extras(opaque.to_be_bytes().to_vec()));
            self.writer.notify_one();
        } else {
            streams.remove(&opaque);
            drop(streams);
            self.send(response);
        }
    }

    fn close_stream(&self, packet: &Packet) {
        let vb = packet.header.vbucket();
        match self.stream_of_vb(vb) {
            Some(opaque) => {
                let stream = self.streams.borrow_mut().remove(&opaque).expect("found");
                if let Some(pending) = stream.add_response {
                    self.send(pending);
                }
                tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), vb, "stream closed");
                self.send(refuse(packet, Status::SUCCESS));
            }
            None => self.send(refuse(packet, Status::KEY_ENOENT)),
        }
    }

    fn stream_end(&self, packet: &Packet) -> Result<(), ProtocolError> {
        let reason = dcp::stream_end_status(packet)?;
        let opaque = packet.header.opaque;
        let Some(stream) = self.streams.borrow_mut().remove(&opaque) else {
            tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), opaque, "stream end for no stream");
            return Ok(());
        };
        tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), vb = stream.vb, opaque, reason = end_status::name(reason), "stream ended");
        if let Some(pending) = stream.add_response {
            if faultline_harness::switch("kv.skip_add_stream_response") {
                // The kv error path the plan switches on: the stream's
                // answer dies with it.
                tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), vb = stream.vb, "add-stream response dropped with its stream");
            } else {
                self.send(pending);
            }
        }
        Ok(())
    }

    /// The stream a message belongs to must be reading this vbucket.
    fn check_stream(&self, packet: &Packet) {
        let ok = self
            .streams
            .borrow()
            .get(&packet.header.opaque)
            .is_some_and(|s| s.phase == Phase::Reading && s.vb == packet.header.vbucket());
        if !ok {
            tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), opaque = packet.header.opaque, opcode = %packet.header.opcode, "message for no open stream");
        }
    }

    async fn apply(&self, node: &Node, packet: &Packet) -> Result<(), ProtocolError> {
        let vb = packet.header.vbucket();
        let mutation = match packet.header.opcode {
            Opcode::DCP_MUTATION => {
                let m = dcp::Mutation::parse(packet)?;
                Mutation::Set {
                    key: m.key,
                    value: m.value,
                    flags: m.flags,
                    expiration_s: m.expiration,
                    seqno: m.by_seqno,
                    cas: packet.header.cas,
                }
            }
            Opcode::DCP_DELETION => Mutation::Delete {
                key: packet.key.clone(),
                seqno: dcp::deletion_seqno(packet)?,
            },
            Opcode::DCP_PREPARE => {
                let m = dcp::Mutation::parse(packet)?;
                Mutation::Prepare {
                    key: m.key,
                    value: m.value,
                    flags: m.flags,
                    seqno: m.by_seqno,
                    cas: packet.header.cas,
                }
            }
            Opcode::DCP_COMMIT => {
                let (prepared_seqno, seqno) = dcp::commit_seqnos(packet)?;
                Mutation::Commit {
                    key: packet.key.clone(),
                    prepared_seqno,
                    seqno,
                }
            }
            other => unreachable!("{other} is not a stream message"),
        };
        let open = |s: &PassiveStream| s.phase == Phase::Reading && s.vb == vb;
        if !self
            .streams
            .borrow()
            .get(&packet.header.opaque)
            .is_some_and(open)
        {
            tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), vb, opaque = packet.header.opaque, "message for no open stream");
            return Ok(());
        }
        let seqno = mutation.seqno();
        let prepare = matches!(mutation, Mutation::Prepare { .. });
        let now = node.now();
        match node.store.apply_replicated(vb, mutation, now).await {
            Ok(()) => {
                // Only this connection's task touches its streams: the
                // stream is still the one checked above.
                let mut streams = self.streams.borrow_mut();
                if let Some(stream) = streams.get_mut(&packet.header.opaque).filter(|s| open(s)) {
                    if prepare && seqno > stream.prepared {
                        stream.prepared = seqno;
                        self.writer.notify_one();
                    }
                }
            }
            Err(e) => {
                tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), vb, seqno, error = ?e, "replica refused a message")
            }
        }
        Ok(())
    }

    async fn set_vbucket_state(
        &self,
        node: &Rc<Node>,
        packet: &Packet,
    ) -> Result<(), ProtocolError> {
        let code = dcp::set_vbucket_state_state(packet)?;
        let takeover = self
            .streams
            .borrow()
            .get(&packet.header.opaque)
            .is_some_and(|s| s.takeover && s.vb == packet.header.vbucket());
        let status = match VbState::from_wire(code) {
            Some(state) if takeover => {
                node.set_vbucket_state(packet.header.vbucket(), state).await;
                tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), vb = packet.header.vbucket(), state = state.name(), "takeover: vbucket state set");
                Status::SUCCESS
            }
            Some(_) => Status::KEY_ENOENT,
            None => Status::EINVAL,
        };
        self.send(refuse(packet, status));
        Ok(())
    }

    /// Hands up to `max` messages to `send`: answers and stream requests,
    /// then `DCP_ADD_STREAM` answers, then acknowledgements of prepares.
    pub(crate) fn step(&self, max: usize, send: &mut dyn FnMut(Packet)) -> bool {
        let mut sent = 0;
        let mut out = self.out.borrow_mut();
        while sent < max {
            let Some(p) = out.pop_front() else { break };
            send(p);
            sent += 1;
        }
        if !out.is_empty() {
            return true;
        }
        let mut streams = self.streams.borrow_mut();
        for (opaque, stream) in streams.iter_mut() {
            if sent >= max {
                return true;
            }
            if let Some(response) = stream.add_response.take() {
                send(response);
                sent += 1;
            }
            if stream.prepared > stream.acked && sent < max {
                send(dcp::seqno_acknowledged(stream.vb, stream.prepared).opaque(*opaque));
                stream.acked = stream.prepared;
                sent += 1;
            }
        }
        streams
            .values()
            .any(|s| s.add_response.is_some() || s.prepared > s.acked)
    }

    pub(crate) fn close(&self) {
        let streams = std::mem::take(&mut *self.streams.borrow_mut());
        tracing::debug!(target: "faultline::dcp", name = self.name.as_str(), streams = streams.len(), "consumer closed");
    }
}
