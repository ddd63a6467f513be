//! The consumer connection's state machine (the cluster manager's
//! `dcp_consumer_conn`): how streams are set up, closed and taken over on
//! the consumer node, and what the caller is told.
//!
//! States:
//!
//! * **idle**: no call in progress; the connection knows its open streams
//!   (`partitions`);
//! * **setting up streams**: `DCP_ADD_STREAM`s and `DCP_CLOSE_STREAM`s are
//!   out; the state holds the vbuckets still waiting for their
//!   `DCP_ADD_STREAM` response (by opaque: the cluster manager uses the
//!   vbucket id as the opaque), the closes still waiting on the consumer
//!   and on the producer, the errors so far, and the caller to answer once
//!   nothing is waiting any more;
//! * **takeover**: one takeover stream is being opened; done when the
//!   consumer node acknowledged the producer's `DCP_SET_VBUCKET_STATE`
//!   (active) and the `DCP_ADD_STREAM` was answered;
//! * **shut**: every stream closed; packets are ignored.
//!
//! A new call is taken only in idle (else it is refused). A response whose
//! opaque the state does not expect means the connection and the node
//! disagree: the connection fails (it is dropped and rebuilt).
//!
//! MB-53445: a `DCP_STREAM_END` from the producer for a vbucket that is
//! still waiting for its `DCP_ADD_STREAM` response. The old lines ignore it
//! (the vbucket is not among the open streams yet), so a consumer node that
//! never answers that `DCP_ADD_STREAM` leaves the caller waiting forever,
//! and one that answers it with success makes the caller believe a stream
//! is up that has already ended (MB-51223). The fix fails the connection.

use std::collections::{BTreeMap, BTreeSet};

use faultline_harness::oracle::{self, Pending};
use tokio::sync::oneshot;

use crate::bugs::{Bugs, MB_53445};
use crate::protocol::dcp::{self, end_status};
use crate::protocol::{Opcode, Packet, Status};

/// Why a set-up, close or takeover call did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// Streams that could not be opened or closed: (status, vbucket).
    Streams(Vec<(Status, u16)>),
    /// The connection failed and was dropped (why).
    ConnectionFailed(String),
    /// The connection is busy with another call, or shut.
    Refused(&'static str),
    /// A takeover of a vbucket whose replication stream is still open.
    TakeoverOnOpenStream(u16),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Streams(errors) => {
                let list: Vec<String> = errors
                    .iter()
                    .map(|(status, vb)| format!("vb {vb}: {status}"))
                    .collect();
                write!(f, "stream errors: {}", list.join(", "))
            }
            SetupError::ConnectionFailed(why) => write!(f, "the connection failed: {why}"),
            SetupError::Refused(why) => write!(f, "refused: {why}"),
            SetupError::TakeoverOnOpenStream(vb) => {
                write!(f, "takeover of vb {vb} while its stream is open")
            }
        }
    }
}

impl std::error::Error for SetupError {}

pub type CallResult = Result<(), SetupError>;

/// Who waits for a call's answer.
pub type Owner = oneshot::Sender<CallResult>;

/// Why the connection fails: it is dropped, its caller gets an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fatal {
    /// A response with an opaque the state does not expect.
    UnrecognizedOpaque { opcode: Opcode, opaque: u32 },
    /// MB-53445's fix: the producer ended a stream that is still being set up.
    StreamEndWhileAdding { vb: u16, reason: u32 },
    /// A packet that does not parse.
    Malformed(String),
    /// A node closed its side.
    Closed(String),
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::UnrecognizedOpaque { opcode, opaque } => {
                write!(f, "unrecognized opaque {opaque} in a {opcode} response")
            }
            Fatal::StreamEndWhileAdding { vb, reason } => write!(
                f,
                "stream end ({}) for vb {vb} while its stream was being set up",
                end_status::name(*reason)
            ),
            Fatal::Malformed(why) => write!(f, "malformed packet: {why}"),
            Fatal::Closed(who) => write!(f, "{who} closed the connection"),
        }
    }
}

/// What the proxy does with a packet after the state machine saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Relay it to the other node.
    Proxy,
    /// Keep it (the cluster manager consumed it).
    Block,
}

/// Packets a call makes the proxy send.
#[derive(Debug, Default, PartialEq)]
pub struct Sends {
    pub to_consumer: Vec<Packet>,
    pub to_producer: Vec<Packet>,
}

/// A vbucket waiting for its `DCP_ADD_STREAM` response; the liveness
/// oracle names it until the response (or the call's end).
struct Adding {
    vb: u16,
    _pending: Pending,
}

struct StreamState {
    owner: Option<Owner>,
    /// By opaque.
    to_add: BTreeMap<u32, Adding>,
    to_close: BTreeMap<u32, u16>,
    to_close_on_producer: BTreeMap<u32, u16>,
    errors: Vec<(Status, u16)>,
    /// Where the connection goes when nothing is waiting.
    then_shut: bool,
}

impl StreamState {
    fn is_adding(&self, vb: u16) -> bool {
        self.to_add.values().any(|a| a.vb == vb)
    }

    fn done(&self) -> bool {
        self.to_add.is_empty() && self.to_close.is_empty() && self.to_close_on_producer.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TakeoverPhase {
    /// `DCP_ADD_STREAM` (takeover) sent.
    Requested,
    /// The consumer node's `DCP_STREAM_REQ` passed: its opaque is known.
    OpaqueKnown,
    /// The consumer node acknowledged the state change to active.
    Active,
}

struct TakeoverState {
    owner: Option<Owner>,
    phase: TakeoverPhase,
    /// The stream's opaque (the consumer node's) once known; the
    /// `DCP_ADD_STREAM`'s (the vbucket) before.
    opaque: u32,
    vb: u16,
    /// The state the producer asked the consumer node to take.
    requested: Option<u8>,
    /// The `DCP_ADD_STREAM` was answered with success.
    open_ack: bool,
    _pending: Pending,
}

enum State {
    Idle,
    Streams(StreamState),
    Takeover(TakeoverState),
    Shut,
}

/// The consumer connection's state.
pub struct ConsumerConn {
    name: String,
    state: State,
    /// vbuckets with an open stream.
    partitions: BTreeSet<u16>,
    bugs: Bugs,
}

impl ConsumerConn {
    pub fn new(name: impl Into<String>, bugs: Bugs) -> ConsumerConn {
        ConsumerConn {
            name: name.into(),
            state: State::Idle,
            partitions: BTreeSet::new(),
            bugs,
        }
    }

    pub fn partitions(&self) -> &BTreeSet<u16> {
        &self.partitions
    }

    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    // --- calls ---

    /// Opens streams for `vbs` that are not open and closes open streams
    /// not in `vbs`; the owner hears once every response came.
    pub fn setup_streams(&mut self, vbs: &BTreeSet<u16>, owner: Owner) -> Sends {
        let mut sends = Sends::default();
        if !self.is_idle() {
            let _ = owner.send(Err(SetupError::Refused("a call is in progress")));
            return sends;
        }
        let to_start: Vec<u16> = vbs.difference(&self.partitions).copied().collect();
        let to_stop: Vec<u16> = self.partitions.difference(vbs).copied().collect();
        if to_start.is_empty() && to_stop.is_empty() {
            let _ = owner.send(Ok(()));
            return sends;
        }
        let mut state = StreamState {
            owner: Some(owner),
            to_add: BTreeMap::new(),
            to_close: BTreeMap::new(),
            to_close_on_producer: BTreeMap::new(),
            errors: Vec::new(),
            then_shut: false,
        };
        for vb in to_start {
            let opaque = u32::from(vb);
            sends
                .to_consumer
                .push(dcp::add_stream(vb, 0).opaque(opaque));
            state.to_add.insert(
                opaque,
                Adding {
                    vb,
                    _pending: oracle::pending(format!("setup vb {vb}")),
                },
            );
        }
        for vb in to_stop {
            let opaque = u32::from(vb);
            sends.to_consumer.push(dcp::close_stream(vb).opaque(opaque));
            sends.to_producer.push(dcp::close_stream(vb).opaque(opaque));
            state.to_close.insert(opaque, vb);
            state.to_close_on_producer.insert(opaque, vb);
        }
        tracing::debug!(
            target: "faultline::ns",
            conn = self.name.as_str(),
            add = ?state.to_add.values().map(|a| a.vb).collect::<Vec<_>>(),
            close = ?state.to_close.values().collect::<Vec<_>>(),
            "setting up streams"
        );
        self.state = State::Streams(state);
        sends
    }

    /// Closes the stream of `vb` if it is open (a set-up without it).
    pub fn maybe_close_stream(&mut self, vb: u16, owner: Owner) -> Sends {
        let mut vbs = self.partitions.clone();
        vbs.remove(&vb);
        self.setup_streams(&vbs, owner)
    }

    /// Opens a takeover stream for `vb`: the owner hears when the vbucket
    /// is active on the consumer node.
    pub fn takeover(&mut self, vb: u16, owner: Owner) -> Sends {
        let mut sends = Sends::default();
        if !self.is_idle() {
            let _ = owner.send(Err(SetupError::Refused("a call is in progress")));
            return sends;
        }
        if self.partitions.contains(&vb) {
            let _ = owner.send(Err(SetupError::TakeoverOnOpenStream(vb)));
            return sends;
        }
        let opaque = u32::from(vb);
        sends
            .to_consumer
            .push(dcp::add_stream(vb, dcp::ADD_STREAM_TAKEOVER).opaque(opaque));
        tracing::debug!(target: "faultline::ns", conn = self.name.as_str(), vb, "takeover requested");
        self.state = State::Takeover(TakeoverState {
            owner: Some(owner),
            phase: TakeoverPhase::Requested,
            opaque,
            vb,
            requested: None,
            open_ack: false,
            _pending: oracle::pending(format!("takeover vb {vb}")),
        });
        sends
    }

    /// Closes every stream, then ignores everything.
    pub fn shut(&mut self, owner: Owner) -> Sends {
        let mut sends = Sends::default();
        if !self.is_idle() {
            let _ = owner.send(Err(SetupError::Refused("a call is in progress")));
            return sends;
        }
        if self.partitions.is_empty() {
            self.state = State::Shut;
            let _ = owner.send(Ok(()));
            return sends;
        }
        let mut to_close = BTreeMap::new();
        for &vb in &self.partitions {
            sends
                .to_consumer
                .push(dcp::close_stream(vb).opaque(u32::from(vb)));
            to_close.insert(u32::from(vb), vb);
        }
        self.state = State::Streams(StreamState {
            owner: Some(owner),
            to_add: BTreeMap::new(),
            to_close,
            to_close_on_producer: BTreeMap::new(),
            errors: Vec::new(),
            then_shut: true,
        });
        sends
    }

    /// The connection failed: the caller in progress hears why.
    pub fn fail(&mut self, fatal: &Fatal) {
        let owner = match std::mem::replace(&mut self.state, State::Shut) {
            State::Streams(mut s) => s.owner.take(),
            State::Takeover(mut t) => t.owner.take(),
            State::Idle | State::Shut => None,
        };
        if let Some(owner) = owner {
            let _ = owner.send(Err(SetupError::ConnectionFailed(fatal.to_string())));
        }
    }

    // --- packets from the consumer node ---

    /// A packet from the consumer node, on its way to the producer node.
    pub fn consumer_packet(&mut self, packet: &Packet) -> Result<Disposition, Fatal> {
        let h = &packet.header;
        if matches!(self.state, State::Shut) {
            return Ok(Disposition::Block);
        }
        match (h.is_request(), h.opcode) {
            (false, Opcode::DCP_ADD_STREAM) => self.add_stream_response(packet),
            (true, Opcode::DCP_STREAM_REQ) => {
                if let State::Takeover(t) = &mut self.state {
                    if t.phase == TakeoverPhase::Requested && h.vbucket() == t.vb {
                        t.phase = TakeoverPhase::OpaqueKnown;
                        t.opaque = h.opaque;
                    }
                }
                Ok(Disposition::Proxy)
            }
            (false, Opcode::DCP_CLOSE_STREAM) => match &mut self.state {
                State::Streams(s) => {
                    let Some(vb) = s.to_close.remove(&h.opaque) else {
                        return Err(Fatal::UnrecognizedOpaque {
                            opcode: h.opcode,
                            opaque: h.opaque,
                        });
                    };
                    // Already closed (the producer's end came first) is fine.
                    let status = h.status();
                    if status.is_success() || status == Status::KEY_ENOENT {
                        self.partitions.remove(&vb);
                    } else {
                        s.errors.push((status, vb));
                    }
                    self.maybe_reply_streams();
                    Ok(Disposition::Block)
                }
                _ => Ok(Disposition::Block),
            },
            (false, Opcode::DCP_SET_VBUCKET_STATE) => {
                if let State::Takeover(t) = &mut self.state {
                    if t.phase == TakeoverPhase::OpaqueKnown
                        && h.opaque == t.opaque
                        && h.status().is_success()
                    {
                        if t.requested == Some(dcp::vbucket_state::ACTIVE) {
                            t.phase = TakeoverPhase::Active;
                            self.maybe_reply_takeover();
                        } else {
                            t.requested = None;
                        }
                    }
                }
                Ok(Disposition::Proxy)
            }
            _ => Ok(Disposition::Proxy),
        }
    }

    fn add_stream_response(&mut self, packet: &Packet) -> Result<Disposition, Fatal> {
        let h = &packet.header;
        let unrecognized = Fatal::UnrecognizedOpaque {
            opcode: h.opcode,
            opaque: h.opaque,
        };
        match &mut self.state {
            State::Streams(s) => {
                let Some(adding) = s.to_add.remove(&h.opaque) else {
                    return Err(unrecognized);
                };
                let vb = adding.vb;
                let status = h.status();
                if status.is_success() {
                    let stream = dcp::add_stream_response_opaque(packet).ok();
                    tracing::debug!(target: "faultline::ns", conn = self.name.as_str(), vb, stream, "stream added");
                    self.partitions.insert(vb);
                } else {
                    tracing::debug!(target: "faultline::ns", conn = self.name.as_str(), vb, %status, "stream not added");
                    s.errors.push((status, vb));
                }
                self.maybe_reply_streams();
                Ok(Disposition::Block)
            }
            State::Takeover(t) if !t.open_ack => {
                if h.opaque != u32::from(t.vb) {
                    return Err(unrecognized);
                }
                if h.status().is_success() {
                    t.open_ack = true;
                    self.maybe_reply_takeover();
                } else {
                    let status = h.status();
                    let vb = t.vb;
                    if let Some(owner) = t.owner.take() {
                        let _ = owner.send(Err(SetupError::Streams(vec![(status, vb)])));
                    }
                    self.state = State::Idle;
                }
                Ok(Disposition::Block)
            }
            // Nobody waits for it: ignored.
            _ => {
                tracing::debug!(target: "faultline::ns", conn = self.name.as_str(), opaque = h.opaque, "add-stream response nobody waits for");
                Ok(Disposition::Block)
            }
        }
    }

    fn maybe_reply_streams(&mut self) {
        let State::Streams(s) = &mut self.state else {
            return;
        };
        if !s.done() {
            return;
        }
        let result = if s.errors.is_empty() {
            Ok(())
        } else {
            Err(SetupError::Streams(std::mem::take(&mut s.errors)))
        };
        tracing::debug!(target: "faultline::ns", conn = self.name.as_str(), ok = result.is_ok(), partitions = ?self.partitions, "streams set up");
        if let Some(owner) = s.owner.take() {
            let _ = owner.send(result);
        }
        self.state = if s.then_shut {
            State::Shut
        } else {
            State::Idle
        };
    }

    fn maybe_reply_takeover(&mut self) {
        let State::Takeover(t) = &mut self.state else {
            return;
        };
        if t.open_ack && t.phase == TakeoverPhase::Active {
            tracing::debug!(target: "faultline::ns", conn = self.name.as_str(), vb = t.vb, "takeover done");
            if let Some(owner) = t.owner.take() {
                let _ = owner.send(Ok(()));
            }
            self.state = State::Idle;
        }
    }

    // --- what the producer side hands over ---

    /// The producer answered a `DCP_CLOSE_STREAM` the proxy sent it.
    pub fn producer_stream_closed(&mut self, packet: &Packet) -> Result<(), Fatal> {
        let h = &packet.header;
        let State::Streams(s) = &mut self.state else {
            return Ok(());
        };
        let Some(vb) = s.to_close_on_producer.remove(&h.opaque) else {
            return Err(Fatal::UnrecognizedOpaque {
                opcode: h.opcode,
                opaque: h.opaque,
            });
        };
        let status = h.status();
        if status.is_success() || status == Status::KEY_ENOENT {
            self.partitions.remove(&vb);
        } else {
            s.errors.push((status, vb));
        }
        self.maybe_reply_streams();
        Ok(())
    }

    /// The producer asks the consumer node to change a vbucket's state
    /// (the end of a takeover).
    pub fn producer_set_vbucket_state(&mut self, packet: &Packet) {
        let State::Takeover(t) = &mut self.state else {
            return;
        };
        if t.phase != TakeoverPhase::OpaqueKnown
            || t.requested.is_some()
            || packet.header.opaque != t.opaque
        {
            return;
        }
        if let Ok(state) = dcp::set_vbucket_state_state(packet) {
            tracing::debug!(target: "faultline::ns", conn = self.name.as_str(), vb = t.vb, state = dcp::vbucket_state::name(state), "vbucket about to change state");
            t.requested = Some(state);
        }
    }

    /// The producer ended a stream.
    pub fn producer_stream_end(&mut self, packet: &Packet) -> Result<(), Fatal> {
        if matches!(self.state, State::Shut) {
            return Ok(());
        }
        let vb = packet.header.vbucket();
        let reason = dcp::stream_end_status(packet).unwrap_or(end_status::OK);
        if matches!(&self.state, State::Streams(s) if s.is_adding(vb)) {
            faultline_harness::probe("ns: a stream ends while it is being set up");
        }
        if !self.bugs.is_buggy(MB_53445) {
            // MB-53445: the fix. A stream that ends while it is still being
            // set up will never be up: fail loudly instead of waiting.
            if let State::Streams(s) = &self.state {
                if s.is_adding(vb) {
                    return Err(Fatal::StreamEndWhileAdding { vb, reason });
                }
            }
        }
        if self.partitions.remove(&vb) {
            // The consumer node closes its side when the end is relayed.
            tracing::debug!(target: "faultline::ns", conn = self.name.as_str(), vb, reason = end_status::name(reason), "stream end processed");
        }
        // Otherwise: no open stream (or a takeover stream, whose end is
        // known from the state change) — nothing to do.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(buggy: bool) -> ConsumerConn {
        let bugs = if buggy {
            Bugs::with(MB_53445)
        } else {
            Bugs::fixed()
        };
        ConsumerConn::new("replication:kv-1->kv-2", bugs)
    }

    fn add_response(vb: u16, status: Status) -> Packet {
        let req = dcp::add_stream(vb, 0).opaque(u32::from(vb));
        Packet::response(&req.header, status).extras(7u32.to_be_bytes().to_vec())
    }

    fn end(vb: u16) -> Packet {
        dcp::stream_end(vb, end_status::CLOSED)
    }

    fn setup(c: &mut ConsumerConn, vbs: &[u16]) -> (oneshot::Receiver<CallResult>, Sends) {
        let (tx, rx) = oneshot::channel();
        let sends = c.setup_streams(&vbs.iter().copied().collect(), tx);
        (rx, sends)
    }

    #[test]
    fn set_up_answers_once_every_stream_answered() {
        let mut c = conn(false);
        let (mut rx, sends) = setup(&mut c, &[1, 2]);
        assert_eq!(sends.to_consumer.len(), 2);
        assert_eq!(sends.to_consumer[0].header.opcode, Opcode::DCP_ADD_STREAM);
        assert_eq!(
            c.consumer_packet(&add_response(1, Status::SUCCESS)),
            Ok(Disposition::Block)
        );
        assert!(rx.try_recv().is_err(), "vb 2 still waits");
        c.consumer_packet(&add_response(2, Status::NOT_MY_VBUCKET))
            .unwrap();
        assert_eq!(
            rx.try_recv().unwrap(),
            Err(SetupError::Streams(vec![(Status::NOT_MY_VBUCKET, 2)]))
        );
        assert_eq!(c.partitions(), &BTreeSet::from([1]));
        assert!(c.is_idle());
    }

    #[test]
    fn an_unknown_opaque_fails_the_connection() {
        let mut c = conn(false);
        let (_rx, _) = setup(&mut c, &[1]);
        assert!(matches!(
            c.consumer_packet(&add_response(5, Status::SUCCESS)),
            Err(Fatal::UnrecognizedOpaque { opaque: 5, .. })
        ));
    }

    #[test]
    fn calls_are_refused_while_another_is_in_progress() {
        let mut c = conn(false);
        let (_rx, _) = setup(&mut c, &[1]);
        let (mut rx2, sends) = setup(&mut c, &[2]);
        assert_eq!(sends, Sends::default());
        assert!(matches!(rx2.try_recv(), Ok(Err(SetupError::Refused(_)))));
        let (tx, mut rx3) = oneshot::channel();
        c.takeover(3, tx);
        assert!(matches!(rx3.try_recv(), Ok(Err(SetupError::Refused(_)))));
    }

    #[test]
    fn a_stream_end_after_the_stream_is_up_closes_it_in_both_variants() {
        for buggy in [false, true] {
            let mut c = conn(buggy);
            let (mut rx, _) = setup(&mut c, &[1]);
            c.consumer_packet(&add_response(1, Status::SUCCESS))
                .unwrap();
            assert_eq!(rx.try_recv().unwrap(), Ok(()));
            assert_eq!(c.producer_stream_end(&end(1)), Ok(()));
            assert!(c.partitions().is_empty());
        }
    }

    #[test]
    fn fixed_a_stream_end_during_set_up_fails_the_connection() {
        let mut c = conn(false);
        let (mut rx, _) = setup(&mut c, &[1, 2]);
        let fatal = c.producer_stream_end(&end(2)).unwrap_err();
        assert_eq!(
            fatal,
            Fatal::StreamEndWhileAdding {
                vb: 2,
                reason: end_status::CLOSED
            }
        );
        c.fail(&fatal);
        assert!(matches!(
            rx.try_recv(),
            Ok(Err(SetupError::ConnectionFailed(_)))
        ));
    }

    #[test]
    fn buggy_a_stream_end_during_set_up_is_ignored() {
        // MB-53445: no answer ever comes for vb 2; the caller waits.
        let mut c = conn(true);
        let (mut rx, _) = setup(&mut c, &[1, 2]);
        assert_eq!(c.producer_stream_end(&end(2)), Ok(()));
        c.consumer_packet(&add_response(1, Status::SUCCESS))
            .unwrap();
        assert!(rx.try_recv().is_err());
        // MB-51223: the answer comes after the end, and the caller hears ok.
        c.consumer_packet(&add_response(2, Status::SUCCESS))
            .unwrap();
        assert_eq!(rx.try_recv().unwrap(), Ok(()));
        assert_eq!(c.partitions(), &BTreeSet::from([1, 2]));
    }

    #[test]
    fn takeover_needs_the_answer_and_the_state_change() {
        let mut c = conn(false);
        let (tx, mut rx) = oneshot::channel();
        let sends = c.takeover(4, tx);
        let add = &sends.to_consumer[0];
        assert_eq!(
            dcp::add_stream_flags(add).unwrap(),
            dcp::ADD_STREAM_TAKEOVER
        );
        // The consumer node's stream request names the stream's opaque.
        let req = dcp::StreamReq {
            flags: dcp::STREAM_REQ_TAKEOVER,
            start_seqno: 0,
            end_seqno: dcp::SEQNO_INFINITY,
            vbucket_uuid: 0,
            snap_start: 0,
            snap_end: 0,
        }
        .packet(4)
        .opaque(0x10000);
        assert_eq!(c.consumer_packet(&req), Ok(Disposition::Proxy));
        c.consumer_packet(&add_response(4, Status::SUCCESS))
            .unwrap();
        let svs = dcp::set_vbucket_state(4, dcp::vbucket_state::ACTIVE).opaque(0x10000);
        c.producer_set_vbucket_state(&svs);
        assert!(rx.try_recv().is_err());
        c.consumer_packet(&Packet::response(&svs.header, Status::SUCCESS))
            .unwrap();
        assert_eq!(rx.try_recv().unwrap(), Ok(()));
        assert!(c.is_idle());
        // The takeover stream's end changes nothing.
        assert_eq!(c.producer_stream_end(&end(4)), Ok(()));
    }

    #[test]
    fn takeover_of_an_open_stream_is_refused() {
        let mut c = conn(false);
        let (_rx, _) = setup(&mut c, &[1]);
        c.consumer_packet(&add_response(1, Status::SUCCESS))
            .unwrap();
        let (tx, mut rx) = oneshot::channel();
        c.takeover(1, tx);
        assert_eq!(
            rx.try_recv().unwrap(),
            Err(SetupError::TakeoverOnOpenStream(1))
        );
        // maybe_close_stream closes it on both nodes.
        let (tx, mut rx) = oneshot::channel();
        let sends = c.maybe_close_stream(1, tx);
        assert_eq!((sends.to_consumer.len(), sends.to_producer.len()), (1, 1));
        let close = &sends.to_consumer[0];
        c.consumer_packet(&Packet::response(&close.header, Status::SUCCESS))
            .unwrap();
        c.producer_stream_closed(&Packet::response(
            &sends.to_producer[0].header,
            Status::KEY_ENOENT,
        ))
        .unwrap();
        assert_eq!(rx.try_recv().unwrap(), Ok(()));
        assert!(c.partitions().is_empty());
    }
}
