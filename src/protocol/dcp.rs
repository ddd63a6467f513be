//! DCP (Couchbase's replication protocol) messages: the extras layouts of
//! the packets the kv nodes and the cluster manager exchange. All integers
//! are big-endian.

use bytes::Bytes;

use super::{Opcode, Packet, ProtocolError};

/// `DCP_OPEN` flag: the connection is a producer (else a consumer).
pub const OPEN_PRODUCER: u32 = 0x01;

/// `DCP_STREAM_END` reasons.
pub mod end_status {
    /// The stream reached its end seqno.
    pub const OK: u32 = 0;
    /// Closed by a `DCP_CLOSE_STREAM`.
    pub const CLOSED: u32 = 1;
    /// The vbucket's state changed (e.g. it is no longer active).
    pub const STATE_CHANGED: u32 = 2;
    /// The connection is going away.
    pub const DISCONNECTED: u32 = 3;
    /// The consumer was too slow.
    pub const TOO_SLOW: u32 = 4;

    pub fn name(status: u32) -> &'static str {
        match status {
            OK => "ok",
            CLOSED => "closed",
            STATE_CHANGED => "state-changed",
            DISCONNECTED => "disconnected",
            TOO_SLOW => "too-slow",
            _ => "unknown",
        }
    }
}

/// `DCP_ADD_STREAM` flag: the stream is for a takeover.
pub const ADD_STREAM_TAKEOVER: u32 = 0x01;

/// The end seqno "stream until closed".
pub const SEQNO_INFINITY: u64 = u64::MAX;

fn exact<const N: usize>(p: &Packet) -> Result<&[u8; N], ProtocolError> {
    p.extras[..]
        .try_into()
        .map_err(|_| ProtocolError::BadExtras {
            opcode: p.header.opcode,
            bytes: p.extras.len(),
        })
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// `DCP_OPEN` request: seqno (4, unused), flags (4); key = connection name.
pub fn open(name: &str, producer: bool) -> Packet {
    let mut extras = Vec::with_capacity(8);
    extras.extend_from_slice(&0u32.to_be_bytes());
    extras.extend_from_slice(&(if producer { OPEN_PRODUCER } else { 0 }).to_be_bytes());
    Packet::request(Opcode::DCP_OPEN)
        .key(name.as_bytes().to_vec())
        .extras(extras)
}

/// Whether a `DCP_OPEN` asks for a producer.
pub fn open_is_producer(p: &Packet) -> Result<bool, ProtocolError> {
    let e = exact::<8>(p)?;
    Ok(be32(e, 4) & OPEN_PRODUCER != 0)
}

/// `DCP_ADD_STREAM` request: flags (4); the vbucket is in the header.
pub fn add_stream(vbucket: u16, flags: u32) -> Packet {
    Packet::request(Opcode::DCP_ADD_STREAM)
        .vbucket(vbucket)
        .extras(flags.to_be_bytes().to_vec())
}

pub fn add_stream_flags(p: &Packet) -> Result<u32, ProtocolError> {
    Ok(be32(exact::<4>(p)?, 0))
}

/// `DCP_STREAM_REQ` extras.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamReq {
    pub flags: u32,
    pub start_seqno: u64,
    pub end_seqno: u64,
    pub vbucket_uuid: u64,
    pub snap_start: u64,
    pub snap_end: u64,
}

impl StreamReq {
    pub const EXTRAS_BYTES: usize = 48;

    pub fn packet(&self, vbucket: u16) -> Packet {
        let mut e = Vec::with_capacity(Self::EXTRAS_BYTES);
        e.extend_from_slice(&self.flags.to_be_bytes());
        e.extend_from_slice(&0u32.to_be_bytes());
        for v in [
            self.start_seqno,
            self.end_seqno,
            self.vbucket_uuid,
            self.snap_start,
            self.snap_end,
        ] {
            e.extend_from_slice(&v.to_be_bytes());
        }
        Packet::request(Opcode::DCP_STREAM_REQ)
            .vbucket(vbucket)
            .extras(e)
    }

    pub fn parse(p: &Packet) -> Result<StreamReq, ProtocolError> {
        let e = exact::<48>(p)?;
        Ok(StreamReq {
            flags: be32(e, 0),
            start_seqno: be64(e, 8),
            end_seqno: be64(e, 16),
            vbucket_uuid: be64(e, 24),
            snap_start: be64(e, 32),
            snap_end: be64(e, 40),
        })
    }
}

/// `DCP_STREAM_END` request: the reason (4).
pub fn stream_end(vbucket: u16, status: u32) -> Packet {
    Packet::request(Opcode::DCP_STREAM_END)
        .vbucket(vbucket)
        .extras(status.to_be_bytes().to_vec())
}

pub fn stream_end_status(p: &Packet) -> Result<u32, ProtocolError> {
    Ok(be32(exact::<4>(p)?, 0))
}

/// `DCP_CLOSE_STREAM` request.
pub fn close_stream(vbucket: u16) -> Packet {
    Packet::request(Opcode::DCP_CLOSE_STREAM).vbucket(vbucket)
}

/// `DCP_SNAPSHOT_MARKER` extras: start (8), end (8), flags (4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMarker {
    pub start: u64,
    pub end: u64,
    pub flags: u32,
}

impl SnapshotMarker {
    pub const MEMORY: u32 = 0x01;
    pub const DISK: u32 = 0x02;

    pub fn packet(&self, vbucket: u16) -> Packet {
        let mut e = Vec::with_capacity(20);
        e.extend_from_slice(&self.start.to_be_bytes());
        e.extend_from_slice(&self.end.to_be_bytes());
        e.extend_from_slice(&self.flags.to_be_bytes());
        Packet::request(Opcode::DCP_SNAPSHOT_MARKER)
            .vbucket(vbucket)
            .extras(e)
    }

    pub fn parse(p: &Packet) -> Result<SnapshotMarker, ProtocolError> {
        let e = exact::<20>(p)?;
        Ok(SnapshotMarker {
            start: be64(e, 0),
            end: be64(e, 8),
            flags: be32(e, 16),
        })
    }
}

/// `DCP_MUTATION` (and `DCP_PREPARE`) extras we use: by_seqno (8),
/// rev_seqno (8), flags (4), expiration (4), lock time (4), nmeta (2),
/// nru (1) = 31 bytes; a prepare replaces nmeta by deleted (1) and
/// durability level (1) after nru, also 31 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    pub by_seqno: u64,
    pub rev_seqno: u64,
    pub flags: u32,
    pub expiration: u32,
    pub key: Bytes,
    pub value: Bytes,
}

impl Mutation {
    pub const EXTRAS_BYTES: usize = 31;

    fn extras(&self, tail: [u8; 3]) -> Vec<u8> {
        let mut e = Vec::with_capacity(Self::EXTRAS_BYTES);
        e.extend_from_slice(&self.by_seqno.to_be_bytes());
        e.extend_from_slice(&self.rev_seqno.to_be_bytes());
        e.extend_from_slice(&self.flags.to_be_bytes());
        e.extend_from_slice(&self.expiration.to_be_bytes());
        e.extend_from_slice(&0u32.to_be_bytes());
        e.extend_from_slice(&tail);
        e
    }

    /// As a `DCP_MUTATION`.
    pub fn packet(&self, vbucket: u16) -> Packet {
        Packet::request(Opcode::DCP_MUTATION)
            .vbucket(vbucket)
            .extras(self.extras([0, 0, 0]))
            .key(self.key.clone())
            .value(self.value.clone())
    }

    /// As a `DCP_PREPARE` with durability level majority.
    pub fn prepare_packet(&self, vbucket: u16) -> Packet {
        Packet::request(Opcode::DCP_PREPARE)
            .vbucket(vbucket)
            .extras(self.extras([0, 0, super::Durability::Majority as u8]))
            .key(self.key.clone())
            .value(self.value.clone())
    }

    pub fn parse(p: &Packet) -> Result<Mutation, ProtocolError> {
        let e = exact::<31>(p)?;
        Ok(Mutation {
            by_seqno: be64(e, 0),
            rev_seqno: be64(e, 8),
            flags: be32(e, 16),
            expiration: be32(e, 20),
            key: p.key.clone(),
            value: p.value.clone(),
        })
    }
}

/// `DCP_DELETION` extras: by_seqno (8), rev_seqno (8), nmeta (2).
pub fn deletion(vbucket: u16, by_seqno: u64, rev_seqno: u64, key: Bytes) -> Packet {
    let mut e = Vec::with_capacity(18);
    e.extend_from_slice(&by_seqno.to_be_bytes());
    e.extend_from_slice(&rev_seqno.to_be_bytes());
    e.extend_from_slice(&0u16.to_be_bytes());
    Packet::request(Opcode::DCP_DELETION)
        .vbucket(vbucket)
        .extras(e)
        .key(key)
}

/// The by_seqno of a `DCP_DELETION`.
pub fn deletion_seqno(p: &Packet) -> Result<u64, ProtocolError> {
    Ok(be64(exact::<18>(p)?, 0))
}

/// `DCP_COMMIT` extras: prepared seqno (8), commit seqno (8); key = the key.
pub fn commit(vbucket: u16, prepared_seqno: u64, commit_seqno: u64, key: Bytes) -> Packet {
    let mut e = Vec::with_capacity(16);
    e.extend_from_slice(&prepared_seqno.to_be_bytes());
    e.extend_from_slice(&commit_seqno.to_be_bytes());
    Packet::request(Opcode::DCP_COMMIT)
        .vbucket(vbucket)
        .extras(e)
        .key(key)
}

/// (prepared seqno, commit seqno) of a `DCP_COMMIT`.
pub fn commit_seqnos(p: &Packet) -> Result<(u64, u64), ProtocolError> {
    let e = exact::<16>(p)?;
    Ok((be64(e, 0), be64(e, 8)))
}

/// `DCP_SEQNO_ACKNOWLEDGED` extras: the highest prepared seqno the replica holds (8).
pub fn seqno_acknowledged(vbucket: u16, prepared_seqno: u64) -> Packet {
    Packet::request(Opcode::DCP_SEQNO_ACKNOWLEDGED)
        .vbucket(vbucket)
        .extras(prepared_seqno.to_be_bytes().to_vec())
}

pub fn seqno_acknowledged_seqno(p: &Packet) -> Result<u64, ProtocolError> {
    Ok(be64(exact::<8>(p)?, 0))
}

/// `DCP_STREAM_REQ` flag: a takeover stream (it ends by handing the
/// vbucket over to the consumer).
pub const STREAM_REQ_TAKEOVER: u32 = 0x01;

/// vbucket states on the wire (`SET_VBUCKET_STATE`, `DCP_SET_VBUCKET_STATE`).
pub mod vbucket_state {
    pub const ACTIVE: u8 = 1;
    pub const REPLICA: u8 = 2;
    pub const PENDING: u8 = 3;
    pub const DEAD: u8 = 4;

    pub fn name(state: u8) -> &'static str {
        match state {
            ACTIVE => "active",
            REPLICA => "replica",
            PENDING => "pending",
            DEAD => "dead",
            _ => "unknown",
        }
    }
}

/// Most entries a failover log carries, and a failover log we accept.
pub const MAX_FAILOVER_ENTRIES: usize = 64;

/// The value of a successful `DCP_STREAM_REQ` response: the failover log,
/// newest first, as (vbucket uuid, seqno) pairs of 8 + 8 bytes.
pub fn failover_log(entries: &[(u64, u64)]) -> Vec<u8> {
    assert!(entries.len() <= MAX_FAILOVER_ENTRIES);
    let mut value = Vec::with_capacity(entries.len() * 16);
    for (uuid, seqno) in entries {
        value.extend_from_slice(&uuid.to_be_bytes());
        value.extend_from_slice(&seqno.to_be_bytes());
    }
    value
}

pub fn parse_failover_log(p: &Packet) -> Result<Vec<(u64, u64)>, ProtocolError> {
    let v = &p.value;
    if v.len() % 16 != 0 || v.len() / 16 > MAX_FAILOVER_ENTRIES {
        return Err(ProtocolError::BadExtras {
            opcode: p.header.opcode,
            bytes: v.len(),
        });
    }
    Ok(v.chunks_exact(16)
        .map(|c| (be64(c, 0), be64(c, 8)))
        .collect())
}

/// The extras of a `DCP_STREAM_REQ` response with status `ROLLBACK`: the
/// seqno to roll back to (8).
pub fn rollback_seqno(p: &Packet) -> Result<u64, ProtocolError> {
    Ok(be64(exact::<8>(p)?, 0))
}

/// The extras of a successful `DCP_ADD_STREAM` response: the opaque of the
/// stream the consumer opened (4).
pub fn add_stream_response_opaque(p: &Packet) -> Result<u32, ProtocolError> {
    Ok(be32(exact::<4>(p)?, 0))
}

/// `DCP_SET_VBUCKET_STATE` request (producer to consumer during a
/// takeover): the new state (1).
pub fn set_vbucket_state(vbucket: u16, state: u8) -> Packet {
    Packet::request(Opcode::DCP_SET_VBUCKET_STATE)
        .vbucket(vbucket)
        .extras(vec![state])
}

pub fn set_vbucket_state_state(p: &Packet) -> Result<u8, ProtocolError> {
    Ok(exact::<1>(p)?[0])
}

/// `SET_VBUCKET_STATE` request (the cluster manager to a node): the new
/// state as 4 bytes.
pub fn node_set_vbucket_state(vbucket: u16, state: u8) -> Packet {
    Packet::request(Opcode::SET_VBUCKET_STATE)
        .vbucket(vbucket)
        .extras(u32::from(state).to_be_bytes().to_vec())
}

pub fn node_set_vbucket_state_state(p: &Packet) -> Result<u8, ProtocolError> {
    let state = be32(exact::<4>(p)?, 0);
    u8::try_from(state).map_err(|_| ProtocolError::BadExtras {
        opcode: p.header.opcode,
        bytes: 4,
    })
}
