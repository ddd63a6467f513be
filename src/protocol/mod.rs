//! The memcached binary protocol, shared by the kv server, the proxy and the
//! DCP consumer.
//!
//! Every packet starts with a 24-byte header:
//!
//! ```text
//! byte  0      magic      0x80 request, 0x81 response, 0x08 request with framing extras
//!       1      opcode
//!       2..4   key length (0x08: byte 2 = framing extras length, byte 3 = key length)
//!       4      extras length
//!       5      data type
//!       6..8   vbucket id (request) / status (response)
//!       8..12  total body length (framing extras + extras + key + value)
//!       12..16 opaque (echoed back in the response)
//!       16..24 CAS
//! ```
//!
//! Parsing checks every length against [`Limits`] before allocating, so a
//! malformed or hostile header can never make us allocate by an untrusted
//! length or panic.

pub mod client;
pub mod dcp;
pub mod model;
mod opcode;
mod packet;
mod status;

pub use opcode::Opcode;
pub use packet::{Header, Packet, ProtocolError, ReadError, read_packet};
pub use status::Status;

/// Shows bytes as text when printable, as hex otherwise (at most 48 bytes).
pub fn show(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(48)];
    let more = if bytes.len() > 48 {
        format!("…(+{} bytes)", bytes.len() - 48)
    } else {
        String::new()
    };
    if shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("\"{}\"{more}", String::from_utf8_lossy(shown))
    } else {
        let hex: Vec<String> = shown.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{}{more}", hex.join(""))
    }
}

/// Length of a packet header, in bytes.
pub const HEADER_LEN: usize = 24;

pub const MAGIC_REQUEST: u8 = 0x80;
pub const MAGIC_RESPONSE: u8 = 0x81;
/// A request carrying framing extras (durability requirements).
pub const MAGIC_ALT_REQUEST: u8 = 0x08;
/// A response carrying framing extras.
pub const MAGIC_ALT_RESPONSE: u8 = 0x18;

/// Frame-info id of a durability requirement in framing extras.
pub const FRAME_INFO_DURABILITY: u8 = 0x01;

/// Size limits of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes (memcached's `KEY_MAX_LENGTH`, 250; kv_engine
    /// `daemon/memcached.h` at commit 32c0ae9f1).
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
}

impl Limits {
    /// Room for extras and framing extras beyond key and value, in bytes.
    pub const HEADROOM_BYTES: usize = 256;

    /// The largest body a packet may declare.
    pub fn max_body_bytes(&self) -> usize {
        self.max_key_bytes + self.max_value_bytes + Self::HEADROOM_BYTES
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 250,
            max_value_bytes: 1024 * 1024,
        }
    }
}

/// The vbucket a key belongs to, as Couchbase clients map it: bits 16..31
/// of the key's CRC-32, modulo the bucket's vbucket count.
pub fn vbucket_of(key: &[u8], vbuckets: u16) -> u16 {
    assert!(vbuckets > 0, "a bucket has vbuckets");
    let crc = crc32fast::hash(key);
    (((crc >> 16) & 0x7fff) % u32::from(vbuckets)) as u16
}

/// Durability level of a synchronous write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Durability {
    /// Acknowledged by a majority of the vbucket's nodes (active + replica).
    Majority = 1,
}

/// The framer the harness uses to find packets in connections: a frame is
/// one packet, labelled `req:OPCODE` or `res:OPCODE`.
pub struct McbpFramer;

impl faultline_harness::Framer for McbpFramer {
    fn header_len(&self) -> usize {
        HEADER_LEN
    }

    fn parse(&self, header: &[u8]) -> Option<faultline_harness::FrameInfo> {
        let header: &[u8; HEADER_LEN] = header.try_into().ok()?;
        let parsed = Header::parse(header).ok()?;
        let kind = if parsed.is_request() { "req" } else { "res" };
        Some(faultline_harness::FrameInfo {
            total_len: HEADER_LEN + parsed.body_len as usize,
            label: format!("{kind}:{}", parsed.opcode.name()),
        })
    }
}

#[cfg(test)]
mod tests;
