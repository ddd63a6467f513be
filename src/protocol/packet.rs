//! Headers and packets: parsing with limits, building, encoding.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{
    Durability, FRAME_INFO_DURABILITY, HEADER_LEN, Limits, MAGIC_ALT_REQUEST, MAGIC_ALT_RESPONSE,
    MAGIC_REQUEST, MAGIC_RESPONSE, Opcode, Status,
};

/// Why bytes are not a valid packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    BadMagic(u8),
    BodyTooLarge {
        body_bytes: usize,
        max_bytes: usize,
    },
    KeyTooLong {
        key_bytes: usize,
        max_bytes: usize,
    },
    /// Framing extras, extras and key do not fit in the declared body.
    LengthsExceedBody {
        framing: usize,
        extras: usize,
        key: usize,
        body: usize,
    },
    /// A command's extras have the wrong size.
    BadExtras {
        opcode: Opcode,
        bytes: usize,
    },
    /// Framing extras that cannot be decoded.
    BadFraming(String),
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::BadMagic(m) => write!(f, "bad magic 0x{m:02x}"),
            ProtocolError::BodyTooLarge {
                body_bytes,
                max_bytes,
            } => {
                write!(
                    f,
                    "body of {body_bytes} bytes is over the limit of {max_bytes}"
                )
            }
            ProtocolError::KeyTooLong {
                key_bytes,
                max_bytes,
            } => {
                write!(
                    f,
                    "key of {key_bytes} bytes is over the limit of {max_bytes}"
                )
            }
            ProtocolError::LengthsExceedBody {
                framing,
                extras,
                key,
                body,
            } => write!(
                f,
                "framing extras ({framing}) + extras ({extras}) + key ({key}) exceed the body ({body} bytes)"
            ),
            ProtocolError::BadExtras { opcode, bytes } => {
                write!(f, "{opcode} with {bytes} bytes of extras")
            }
            ProtocolError::BadFraming(why) => write!(f, "bad framing extras: {why}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why reading a packet from a stream failed.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Protocol(ProtocolError),
    /// The stream ended inside a packet.
    Truncated {
        got_bytes: usize,
        wanted_bytes: usize,
    },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Protocol(e) => write!(f, "{e}"),
            ReadError::Truncated {
                got_bytes,
                wanted_bytes,
            } => {
                write!(
                    f,
                    "the stream ended after {got_bytes} of {wanted_bytes} bytes of a packet"
                )
            }
        }
    }
}

impl std::error::Error for ReadError {}

/// A packet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub magic: u8,
    pub opcode: Opcode,
    /// Framing extras length (only with the alternative magics).
    pub framing_len: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub datatype: u8,
    /// The vbucket id of a request, the status of a response.
    pub vbucket_or_status: u16,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
}

impl Header {
    /// Decodes a header and checks that its lengths are consistent.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, ProtocolError> {
        let magic = b[0];
        let (framing_len, key_len) = match magic {
            MAGIC_REQUEST | MAGIC_RESPONSE => (0, u16::from_be_bytes([b[2], b[3]])),
            MAGIC_ALT_REQUEST | MAGIC_ALT_RESPONSE => (b[2], u16::from(b[3])),
            other => return Err(ProtocolError::BadMagic(other)),
        };
        let header = Header {
            magic,
            opcode: Opcode(b[1]),
            framing_len,
            key_len,
            extras_len: b[4],
            datatype: b[5],
            vbucket_or_status: u16::from_be_bytes([b[6], b[7]]),
            body_len: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            opaque: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
            cas: u64::from_be_bytes([b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23]]),
        };
        let fixed = usize::from(header.framing_len)
            + usize::from(header.extras_len)
            + usize::from(header.key_len);
        if fixed > header.body_len as usize {
            return Err(ProtocolError::LengthsExceedBody {
                framing: header.framing_len.into(),
                extras: header.extras_len.into(),
                key: header.key_len.into(),
                body: header.body_len as usize,
            });
        }
        Ok(header)
    }

    /// Checks the declared sizes against the connection's limits.
    pub fn check_limits(&self, limits: &Limits) -> Result<(), ProtocolError> {
        if self.body_len as usize > limits.max_body_bytes() {
            return Err(ProtocolError::BodyTooLarge {
                body_bytes: self.body_len as usize,
                max_bytes: limits.max_body_bytes(),
            });
        }
        if usize::from(self.key_len) > limits.max_key_bytes {
            return Err(ProtocolError::KeyTooLong {
                key_bytes: self.key_len.into(),
                max_bytes: limits.max_key_bytes,
            });
        }
        Ok(())
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.magic;
        b[1] = self.opcode.0;
        if self.framing_len > 0 || matches!(self.magic, MAGIC_ALT_REQUEST | MAGIC_ALT_RESPONSE) {
            assert!(
                self.key_len <= 255,
                "the alternative header holds a one-byte key length"
            );
            b[2] = self.framing_len;
            b[3] = self.key_len as u8;
        } else {
            b[2..4].copy_from_slice(&self.key_len.to_be_bytes());
        }
        b[4] = self.extras_len;
        b[5] = self.datatype;
        b[6..8].copy_from_slice(&self.vbucket_or_status.to_be_bytes());
        b[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        b[12..16].copy_from_slice(&self.opaque.to_be_bytes());
        b[16..24].copy_from_slice(&self.cas.to_be_bytes());
        b
    }

    pub fn is_request(&self) -> bool {
        matches!(self.magic, MAGIC_REQUEST | MAGIC_ALT_REQUEST)
    }

    pub fn status(&self) -> Status {
        Status(self.vbucket_or_status)
    }

    pub fn vbucket(&self) -> u16 {
        self.vbucket_or_status
    }

    /// Bytes of value in the body.
    pub fn value_len(&self) -> usize {
        self.body_len as usize
            - usize::from(self.framing_len)
            - usize::from(self.extras_len)
            - usize::from(self.key_len)
    }
}

/// A whole packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub header: Header,
    pub framing: Bytes,
    pub extras: Bytes,
    pub key: Bytes,
    pub value: Bytes,
}

impl Packet {
    /// A request with no body.
    pub fn request(opcode: Opcode) -> Packet {
        Packet {
            header: Header {
                magic: MAGIC_REQUEST,
                opcode,
                framing_len: 0,
                key_len: 0,
                extras_len: 0,
                datatype: 0,
                vbucket_or_status: 0,
                body_len: 0,
                opaque: 0,
                cas: 0,
            },
            framing: Bytes::new(),
            extras: Bytes::new(),
            key: Bytes::new(),
            value: Bytes::new(),
        }
    }

    /// The response skeleton for a request: same opcode and opaque.
    pub fn response(request: &Header, status: Status) -> Packet {
        let mut p = Packet::request(request.opcode);
        p.header.magic = MAGIC_RESPONSE;
        p.header.vbucket_or_status = status.0;
        p.header.opaque = request.opaque;
        p
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Packet {
        self.key = key.into();
        self
    }
    pub fn extras(mut self, extras: impl Into<Bytes>) -> Packet {
        self.extras = extras.into();
        self
    }
    pub fn value(mut self, value: impl Into<Bytes>) -> Packet {
        self.value = value.into();
        self
    }
    pub fn opaque(mut self, opaque: u32) -> Packet {
        self.header.opaque = opaque;
        self
    }
    pub fn cas(mut self, cas: u64) -> Packet {
        self.header.cas = cas;
        self
    }
    pub fn vbucket(mut self, vbucket: u16) -> Packet {
        self.header.vbucket_or_status = vbucket;
        self
    }
    pub fn status(mut self, status: Status) -> Packet {
        self.header.vbucket_or_status = status.0;
        self
    }

    /// Asks for a synchronous write with this durability level (framing
    /// extras; switches to the alternative request magic).
    pub fn durability(mut self, level: Durability) -> Packet {
        // Frame info: high nibble id, low nibble length, then the level.
        self.framing = Bytes::from(vec![(FRAME_INFO_DURABILITY << 4) | 1, level as u8]);
        self.header.magic = MAGIC_ALT_REQUEST;
        self
    }

    /// The durability requirement in the framing extras, if any.
    pub fn durability_requirement(&self) -> Result<Option<Durability>, ProtocolError> {
        let mut frames = &self.framing[..];
        let mut found = None;
        while !frames.is_empty() {
            let id = frames[0] >> 4;
            let len = usize::from(frames[0] & 0x0f);
            if frames.len() < 1 + len {
                return Err(ProtocolError::BadFraming(format!(
                    "frame info {id} of {len} bytes is truncated"
                )));
            }
            if id == FRAME_INFO_DURABILITY {
                match frames.get(1) {
                    Some(1) if len >= 1 => found = Some(Durability::Majority),
                    other => {
                        return Err(ProtocolError::BadFraming(format!(
                            "durability level {other:?}"
                        )));
                    }
                }
            }
            frames = &frames[1 + len..];
        }
        Ok(found)
    }

    /// The header with lengths that match the body.
    pub fn finished_header(&self) -> Header {
        let mut h = self.header;
        h.framing_len = u8::try_from(self.framing.len()).expect("framing extras fit in a byte");
        h.extras_len = u8::try_from(self.extras.len()).expect("extras fit in a byte");
        h.key_len = u16::try_from(self.key.len()).expect("keys fit in two bytes");
        h.body_len = u32::try_from(
            self.framing.len() + self.extras.len() + self.key.len() + self.value.len(),
        )
        .expect("bodies fit in four bytes");
        h
    }

    /// Bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.body_len());
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.finished_header().encode());
        out.extend_from_slice(&self.framing);
        out.extend_from_slice(&self.extras);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.value);
    }

    pub fn body_len(&self) -> usize {
        self.framing.len() + self.extras.len() + self.key.len() + self.value.len()
    }

    /// Splits a body whose header was already parsed and checked.
    pub fn from_parts(header: Header, mut body: Bytes) -> Packet {
        assert_eq!(
            body.len(),
            header.body_len as usize,
            "the body matches its header"
        );
        let framing = body.split_to(header.framing_len.into());
        let extras = body.split_to(header.extras_len.into());
        let key = body.split_to(header.key_len.into());
        Packet {
            header,
            framing,
            extras,
            key,
            value: body,
        }
    }

    /// Parses one packet from the start of `buf`: `Ok(None)` when more bytes
    /// are needed, else the packet and the bytes it used.
    pub fn try_parse(
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(Packet, usize)>, ProtocolError> {
        let Some(head) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let header = Header::parse(head.try_into().expect("24 bytes"))?;
        header.check_limits(limits)?;
        let total = HEADER_LEN + header.body_len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        let body = Bytes::copy_from_slice(&buf[HEADER_LEN..total]);
        Ok(Some((Packet::from_parts(header, body), total)))
    }

    pub fn status_code(&self) -> Status {
        self.header.status()
    }

    pub fn opcode(&self) -> Opcode {
        self.header.opcode
    }

    /// Reads a big-endian integer of the extras at `offset`, if present.
    pub fn extras_u32(&self, offset: usize) -> Option<u32> {
        let b = self.extras.get(offset..offset + 4)?;
        Some(u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    pub fn extras_u64(&self, offset: usize) -> Option<u64> {
        let b = self.extras.get(offset..offset + 8)?;
        Some(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
}

/// Reads one packet. `Ok(None)` when the stream ends between packets. The
/// header's lengths are checked against `limits` before the body is
/// allocated.
pub async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    limits: &Limits,
) -> Result<Option<Packet>, ReadError> {
    let mut head = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = reader.read(&mut head[got..]).await.map_err(ReadError::Io)?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ReadError::Truncated {
                    got_bytes: got,
                    wanted_bytes: HEADER_LEN,
                })
            };
        }
        got += n;
    }
    let header = Header::parse(&head).map_err(ReadError::Protocol)?;
    header.check_limits(limits).map_err(ReadError::Protocol)?;
    let wanted = header.body_len as usize;
    let mut body = BytesMut::zeroed(wanted);
    let mut filled = 0;
    while filled < wanted {
        let n = reader
            .read(&mut body[filled..])
            .await
            .map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Truncated {
                got_bytes: HEADER_LEN + filled,
                wanted_bytes: HEADER_LEN + wanted,
            });
        }
        filled += n;
    }
    Ok(Some(Packet::from_parts(header, body.freeze())))
}
