//! A client of the binary protocol that validates every response against
//! its request: magic, opcode, opaque, key (for GETK), extras sizes. A
//! mismatch is a [`ClientError::Invalid`], which workloads report with the
//! `response-validation` oracle.

use std::io;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{
    Durability, Limits, MAGIC_ALT_RESPONSE, MAGIC_RESPONSE, Opcode, Packet, ReadError, Status,
    read_packet,
};

#[derive(Debug)]
pub enum ClientError {
    Io(io::Error),
    Read(ReadError),
    /// The connection closed before the response.
    Closed,
    /// The response does not belong to the request.
    Invalid(String),
    /// The server answered with a non-success status.
    Status(Status),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "i/o: {e}"),
            ClientError::Read(e) => write!(f, "read: {e}"),
            ClientError::Closed => write!(f, "the server closed the connection"),
            ClientError::Invalid(why) => write!(f, "invalid response: {why}"),
            ClientError::Status(s) => write!(f, "status {s}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// Whether this is a protocol violation (not a network failure or a
    /// legitimate error status).
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            ClientError::Invalid(_) | ClientError::Read(ReadError::Protocol(_))
        )
    }
}

/// A value read from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub value: Bytes,
    pub flags: u32,
    pub cas: u64,
}

/// A store request (SET, ADD, REPLACE) with its options.
#[derive(Clone, Copy, Debug)]
pub struct Store<'a> {
    pub opcode: Opcode,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub flags: u32,
    pub exptime_s: u32,
    /// Only store if the item's CAS is this (0: any).
    pub cas: u64,
    pub vbucket: u16,
    pub durability: Option<Durability>,
}

impl<'a> Store<'a> {
    pub fn new(opcode: Opcode, key: &'a [u8], value: &'a [u8]) -> Store<'a> {
        Store {
            opcode,
            key,
            value,
            flags: 0,
            exptime_s: 0,
            cas: 0,
            vbucket: 0,
            durability: None,
        }
    }
    pub fn flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }
    pub fn exptime_s(mut self, exptime_s: u32) -> Self {
        self.exptime_s = exptime_s;
        self
    }
    pub fn cas(mut self, cas: u64) -> Self {
        self.cas = cas;
        self
    }
    pub fn vbucket(mut self, vbucket: u16) -> Self {
        self.vbucket = vbucket;
        self
    }
    pub fn durability(mut self, level: Durability) -> Self {
        self.durability = Some(level);
        self
    }

    /// The request packet (opaque 0: the client sets it when sending).
    pub fn packet(&self) -> Packet {
        // APPEND and PREPEND carry no flags and no expiry.
        let mut extras = Vec::with_capacity(8);
        if !matches!(self.opcode.loud(), Opcode::APPEND | Opcode::PREPEND) {
            extras.extend_from_slice(&self.flags.to_be_bytes());
            extras.extend_from_slice(&self.exptime_s.to_be_bytes());
        }
        let request = Packet::request(self.opcode)
            .key(self.key.to_vec())
            .extras(extras)
            .value(self.value.to_vec())
            .cas(self.cas)
            .vbucket(self.vbucket);
        match self.durability {
            Some(level) => request.durability(level),
            None => request,
        }
    }
}

/// An INCREMENT/DECREMENT request: add `delta`, or create the counter
/// with `initial` when the key is missing (`None`: answer NOT_FOUND, the
/// protocol's expiration 0xffffffff).
pub fn arith_packet(opcode: Opcode, key: &[u8], delta: u64, initial: Option<u64>) -> Packet {
    const NO_CREATE: u32 = 0xffff_ffff;
    let mut extras = Vec::with_capacity(20);
    extras.extend_from_slice(&delta.to_be_bytes());
    extras.extend_from_slice(&initial.unwrap_or(0).to_be_bytes());
    let exptime: u32 = if initial.is_some() { 0 } else { NO_CREATE };
    extras.extend_from_slice(&exptime.to_be_bytes());
    Packet::request(opcode).key(key.to_vec()).extras(extras)
}

/// The counter's value in an INCREMENT/DECREMENT answer.
pub fn counter_value(opcode: Opcode, response: &Packet) -> Result<u64, ClientError> {
    let bytes: [u8; 8] = response.value[..].try_into().map_err(|_| {
        ClientError::Invalid(format!(
            "{opcode} answered {} bytes, not 8",
            response.value.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// A protocol client over any byte stream.
pub struct Client<S> {
    stream: S,
    next_opaque: u32,
    limits: Limits,
    /// Whether responses are checked against their requests (opcode,
    /// opaque, key, extras) or only read as packets.
    validating: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Client<S> {
        Client::with_first_opaque(stream, 1)
    }

    /// A client whose opaques count up from `first` (clients of one test
    /// start apart, so a response sent to the wrong client is caught).
    pub fn with_first_opaque(stream: S, first: u32) -> Client<S> {
        Client {
            stream,
            next_opaque: first,
            limits: Limits::default(),
            validating: true,
        }
    }

    /// A client that only reads packets and trusts what they say, as many
    /// clients do: a response that answers another request is taken for
    /// this one's (what such a client then sees is for other oracles to
    /// judge, e.g. linearizability).
    pub fn trusting(mut self) -> Client<S> {
        self.validating = false;
        self
    }

    /// The stream underneath.
    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Sends `request` (with a fresh opaque) and reads and validates its response.
    pub async fn call(&mut self, request: Packet) -> Result<Packet, ClientError> {
        let request = self.send(request).await?;
        let response = self.receive().await?;
        if self.validating {
            validate(&request, &response)?;
        }
        Ok(response)
    }

    /// Writes `request` with a fresh opaque; returns it as sent.
    async fn send(&mut self, request: Packet) -> Result<Packet, ClientError> {
        let request = self.next(request);
        self.stream
            .write_all(&request.encode())
            .await
            .map_err(ClientError::Io)?;
        Ok(request)
    }

    /// Reads one packet.
    async fn receive(&mut self) -> Result<Packet, ClientError> {
        match read_packet(&mut self.stream, &self.limits).await {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(ClientError::Closed),
            Err(e) => Err(ClientError::Read(e)),
        }
    }

    /// Sends a quiet `request` with a NOOP behind it in one write, as
    /// clients batch multi-gets and multi-sets; the NOOP's answer ends the
    /// exchange. Answers the quiet request's answer, `None` when it had
    /// none (a quiet miss, a quiet success).
    pub async fn call_quiet(&mut self, request: Packet) -> Result<Option<Packet>, ClientError> {
        assert!(request.header.opcode.is_quiet(), "a quiet request");
        let request = self.next(request);
        let noop = self.next(Packet::request(Opcode::NOOP));
        let mut bytes = request.encode();
        noop.encode_into(&mut bytes);
        self.stream
            .write_all(&bytes)
            .await
            .map_err(ClientError::Io)?;
        let first = self.receive().await?;
        let is_noop_answer =
            |p: &Packet| p.header.opcode == Opcode::NOOP && p.header.opaque == noop.header.opaque;
        if is_noop_answer(&first) {
            return Ok(None);
        }
        if self.validating {
            validate(&request, &first)?;
        }
        let end = self.receive().await?;
        if self.validating && !is_noop_answer(&end) {
            validate(&noop, &end)?;
        }
        Ok(Some(first))
    }

    /// `request` with a fresh opaque.
    fn next(&mut self, request: Packet) -> Packet {
        let opaque = self.next_opaque;
        self.next_opaque = self.next_opaque.wrapping_add(1);
        request.opaque(opaque)
    }

    async fn call_ok(&mut self, request: Packet) -> Result<Packet, ClientError> {
        let response = self.call(request).await?;
        if response.status_code().is_success() {
            Ok(response)
        } else {
            Err(ClientError::Status(response.status_code()))
        }
    }

    /// GET: `None` when the key does not exist.
    pub async fn get(&mut self, key: &[u8], vbucket: u16) -> Result<Option<Item>, ClientError> {
        let response = self
            .call(
                Packet::request(Opcode::GET)
                    .key(key.to_vec())
                    .vbucket(vbucket),
            )
            .await?;
        match response.status_code() {
            Status::SUCCESS => {
                let flags = response.extras_u32(0).ok_or_else(|| {
                    ClientError::Invalid(format!(
                        "GET hit with {} bytes of extras",
                        response.extras.len()
                    ))
                })?;
                Ok(Some(Item {
                    value: response.value,
                    flags,
                    cas: response.header.cas,
                }))
            }
            Status::KEY_ENOENT => Ok(None),
            other => Err(ClientError::Status(other)),
        }
    }

    /// SET/ADD/REPLACE (and their quiet variants): the new CAS.
    pub async fn store(&mut self, store: &Store<'_>) -> Result<u64, ClientError> {
        Ok(self.call_ok(store.packet()).await?.header.cas)
    }

    pub async fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        vbucket: u16,
    ) -> Result<u64, ClientError> {
        self.store(&Store::new(Opcode::SET, key, value).vbucket(vbucket))
            .await
    }

    /// A SET that returns only after a majority of the vbucket's nodes hold it.
    pub async fn durable_set(
        &mut self,
        key: &[u8],
        value: &[u8],
        vbucket: u16,
    ) -> Result<u64, ClientError> {
        self.store(
            &Store::new(Opcode::SET, key, value)
                .vbucket(vbucket)
                .durability(Durability::Majority),
        )
        .await
    }

    pub async fn delete(&mut self, key: &[u8], vbucket: u16) -> Result<(), ClientError> {
        self.call_ok(
            Packet::request(Opcode::DELETE)
                .key(key.to_vec())
                .vbucket(vbucket),
        )
        .await
        .map(|_| ())
    }

    /// INCREMENT/DECREMENT: the new value.
    pub async fn arith(
        &mut self,
        opcode: Opcode,
        key: &[u8],
        delta: u64,
        initial: u64,
        vbucket: u16,
    ) -> Result<u64, ClientError> {
        let response = self
            .call_ok(arith_packet(opcode, key, delta, Some(initial)).vbucket(vbucket))
            .await?;
        counter_value(opcode, &response)
    }

    /// STAT (the group `group`, empty for the default): every entry, in
    /// the order sent, up to the empty packet that ends the answer. At most
    /// `MAX_STAT_ENTRIES` entries are read.
    pub async fn stats(&mut self, group: &[u8]) -> Result<Vec<(String, String)>, ClientError> {
        const MAX_STAT_ENTRIES: usize = 10_000;
        let request = self
            .send(Packet::request(Opcode::STAT).key(group.to_vec()))
            .await?;
        let mut entries = Vec::new();
        loop {
            let response = self.receive().await?;
            validate(&request, &response)?;
            if !response.status_code().is_success() {
                return Err(ClientError::Status(response.status_code()));
            }
            if response.key.is_empty() {
                return Ok(entries);
            }
            if entries.len() == MAX_STAT_ENTRIES {
                return Err(ClientError::Invalid(format!(
                    "STAT answered more than {MAX_STAT_ENTRIES} entries"
                )));
            }
            entries.push((
                String::from_utf8_lossy(&response.key).into_owned(),
                String::from_utf8_lossy(&response.value).into_owned(),
            ));
        }
    }

    pub async fn noop(&mut self) -> Result<(), ClientError> {
        self.call_ok(Packet::request(Opcode::NOOP))
            .await
            .map(|_| ())
    }

    pub async fn version(&mut self) -> Result<String, ClientError> {
        let response = self.call_ok(Packet::request(Opcode::VERSION)).await?;
        Ok(String::from_utf8_lossy(&response.value).to_string())
    }
}

/// Checks that `response` answers `request`.
pub fn validate(request: &Packet, response: &Packet) -> Result<(), ClientError> {
    let h = &response.header;
    if h.magic != MAGIC_RESPONSE && h.magic != MAGIC_ALT_RESPONSE {
        return Err(ClientError::Invalid(format!(
            "magic 0x{:02x} is not a response",
            h.magic
        )));
    }
    if h.opcode != request.header.opcode {
        return Err(ClientError::Invalid(format!(
            "opcode {} answers a {} request",
            h.opcode, request.header.opcode
        )));
    }
    if h.opaque != request.header.opaque {
        return Err(ClientError::Invalid(format!(
            "opaque {} answers request opaque {}",
            h.opaque, request.header.opaque
        )));
    }
    if h.status().is_success() {
        match request.header.opcode {
            Opcode::GETK | Opcode::GETKQ if response.key != request.key => {
                return Err(ClientError::Invalid(format!(
                    "GETK for {} answered for key {}",
                    super::show(&request.key),
                    super::show(&response.key)
                )));
            }
            Opcode::GET | Opcode::GETQ | Opcode::GETK | Opcode::GETKQ
                if response.extras.len() != 4 =>
            {
                return Err(ClientError::Invalid(format!(
                    "GET hit with {} bytes of extras",
                    response.extras.len()
                )));
            }
            Opcode::SET
            | Opcode::ADD
            | Opcode::REPLACE
            | Opcode::DELETE
            | Opcode::APPEND
            | Opcode::PREPEND
                if !response.value.is_empty() =>
            {
                return Err(ClientError::Invalid(format!(
                    "{} answered with a {}-byte value",
                    request.header.opcode,
                    response.value.len()
                )));
            }
            _ => {}
        }
    }
    Ok(())
}
