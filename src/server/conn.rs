//! A connection's framing, as memcached frames it: it reads packets and
//! sends responses, and owns the memory both need; what is done with a
//! packet is the handler's (`handler.rs`), what a packet asks the
//! commands' (`commands/`).
//!
//! Reading: the connection waits until the socket is readable holding no
//! buffer (an idle connection gives its buffers back to its worker
//! thread, which keeps one spare of each kind), reads into a read buffer
//! the thread lends, and parses a whole packet (a packet larger than the
//! read buffer has its body read straight into its own memory, as
//! memcached reads a value into its item).
//!
//! Sending: a response goes out with one scatter/gather write per
//! attempt: the header from the write buffer, the value straight from
//! the item. When the socket takes only part of it (a short write), the
//! connection waits for writability, and meanwhile looks idle: it gives
//! back the buffers that hold nothing pending. Whether "nothing pending"
//! is judged right is MB-24634.
//!
//! A DCP connection keeps its buffers once it has them, as memcached's
//! did ([`Conn::keep_buffers`]).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use faultline_harness::SimStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::buffers::{Piece, ReadBuffer, WriteBuffer, give_back_idle};
use super::node::Node;
use super::thread_buffers::Kind;
use crate::protocol::{HEADER_LEN, Header, Packet, ProtocolError};

/// Most pieces handed to one scatter/gather write: our own bound, well
/// below Linux's `IOV_MAX` (1024), which bounds kv_engine's
/// (`daemon/connection.cc` at commit 32c0ae9f1).
pub const MAX_IOV_PIECES: usize = 64;

/// A stream the node can serve: bytes both ways and a readiness wait that
/// holds no buffer (so an idle connection can give its buffers back).
pub trait ServerStream: AsyncRead + AsyncWrite + Unpin {
    fn poll_read_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>>;
}

impl ServerStream for SimStream {
    fn poll_read_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.socket().poll_recv_ready(cx).map(Ok)
    }
}

impl ServerStream for tokio::net::TcpStream {
    fn poll_read_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_read_ready(self, cx)
    }
}

/// One client connection's framing: its stream, the buffers its worker
/// thread lends it, and the queue of what is to be sent.
pub struct Conn<S> {
    pub id: u64,
    stream: S,
    /// For the worker thread's buffers, the limits and the bugs (the
    /// write buffer's).
    node: Rc<Node>,
    worker: usize,
    read: Option<ReadBuffer>,
    write: Option<WriteBuffer>,
    out: VecDeque<Piece>,
    /// Set once the connection is a DCP connection: it no longer gives its
    /// buffers back when idle.
    keep_buffers: bool,
}

impl<S: ServerStream> Conn<S> {
    pub fn new(stream: S, node: Rc<Node>, id: u64, worker: usize) -> Conn<S> {
        Conn {
            id,
            stream,
            node,
            worker,
            read: None,
            write: None,
            out: VecDeque::new(),
            keep_buffers: false,
        }
    }

    /// From now on the connection keeps its buffers once it has them (a
    /// DCP connection).
    pub fn keep_buffers(&mut self) {
        self.keep_buffers = true;
    }

    /// The peer closed: an error if it stopped inside a packet.
    pub fn closed_by_peer(&self) -> Result<(), io::Error> {
        let unparsed = self.unparsed();
        if unparsed > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the peer closed inside a packet ({unparsed} bytes read)"),
            ));
        }
        Ok(())
    }

    /// Bytes read and not yet parsed.
    pub fn unparsed(&self) -> usize {
        self.read.as_ref().map(ReadBuffer::unparsed).unwrap_or(0)
    }

    /// A whole packet from the bytes already read, if there is one (a
    /// packet larger than the read buffer is read to its end here).
    pub async fn buffered_packet(&mut self) -> Result<Option<Packet>, ConnError> {
        let limits = self.node.config.limits;
        let Some(read) = &mut self.read else {
            return Ok(None);
        };
        let parsed = {
            let memory = read.memory.borrow();
            Packet::try_parse(&memory[read.start..read.end], &limits)
        };
        match parsed {
            Ok(Some((packet, used))) => {
                read.start += used;
                if read.is_empty() {
                    read.start = 0;
                    read.end = 0;
                }
                return Ok(Some(packet));
            }
            Ok(None) => {}
            Err(e) => {
                // Answer with the header's opcode and opaque when it
                // decodes at all, even if its lengths are refused.
                let header = self.peek_raw_header();
                return Err(ConnError::Protocol(header, e));
            }
        }
        // A packet too large for the read buffer: read its body into
        // memory of its own (sized by the checked header).
        if let Some(header) = self.peek_header() {
            if HEADER_LEN + header.body_len as usize > self.read.as_ref().expect("some").capacity()
            {
                return self.read_large(header).await.map(Some);
            }
        }
        let read = self.read.as_mut().expect("some");
        if read.end == read.capacity() {
            read.compact();
        }
        Ok(None)
    }

    /// The header of the unparsed bytes, if whole and valid.
    fn peek_header(&self) -> Option<Header> {
        let header = self.peek_raw_header()?;
        header.check_limits(&self.node.config.limits).ok()?;
        Some(header)
    }

    /// The header of the unparsed bytes if it decodes, limits unchecked
    /// (for answering a refused packet).
    fn peek_raw_header(&self) -> Option<Header> {
        let read = self.read.as_ref()?;
        if read.unparsed() < HEADER_LEN {
            return None;
        }
        let memory = read.memory.borrow();
        let bytes: &[u8; HEADER_LEN] = memory[read.start..read.start + HEADER_LEN]
            .try_into()
            .ok()?;
        Header::parse(bytes).ok()
    }

    /// Before waiting for the peer: with nothing read and unparsed, the
    /// connection is idle and gives its buffers back.
    pub fn idle_if_drained(&mut self) {
        if self.read.as_ref().is_none_or(ReadBuffer::is_empty) {
            let _ = self.idle();
        }
    }

    /// Waits until the socket is readable, holding no buffer for it.
    pub async fn readable(&mut self) -> io::Result<()> {
        let stream = &mut self.stream;
        poll_fn(|cx| stream.poll_read_ready(cx)).await
    }

    /// Reads what the socket has into the read buffer (lent by the thread
    /// if the connection gave it back). Returns the bytes read.
    pub async fn fill(&mut self) -> Result<usize, ConnError> {
        if self.read.is_none() {
            let memory = self.node.buffers(self.worker).borrow_mut().lend(Kind::Read);
            self.read = Some(ReadBuffer::new(memory));
        }
        let read = self.read.as_mut().expect("some");
        let stream = &mut self.stream;
        let n = poll_fn(|cx| {
            let mut memory = read.memory.borrow_mut();
            let mut buf = ReadBuf::new(&mut memory[read.end..]);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
        .map_err(ConnError::Io)?;
        read.end += n;
        Ok(n)
    }

    /// Reads a packet whose body does not fit the read buffer.
    async fn read_large(&mut self, header: Header) -> Result<Packet, ConnError> {
        let read = self.read.as_mut().expect("called with a read buffer");
        let body_len = header.body_len as usize;
        assert!(
            body_len <= self.node.config.limits.max_body_bytes(),
            "checked against the limits"
        );
        let mut body = BytesMut::zeroed(body_len);
        let have = (read.unparsed() - HEADER_LEN).min(body_len);
        {
            let memory = read.memory.borrow();
            let from = read.start + HEADER_LEN;
            body[..have].copy_from_slice(&memory[from..from + have]);
        }
        read.start += HEADER_LEN + have;
        if read.is_empty() {
            read.start = 0;
            read.end = 0;
        }
        let mut filled = have;
        let stream = &mut self.stream;
        while filled < body_len {
            let n = poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut body[filled..]);
                match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await
            .map_err(ConnError::Io)?;
            if n == 0 {
                return Err(ConnError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed inside a value",
                )));
            }
            filled += n;
        }
        Ok(Packet::from_parts(header, body.freeze()))
    }

    /// Gives back the buffers that hold nothing pending (memcached's
    /// "steal the buffers of idle connections"), except on a DCP
    /// connection: those kept theirs once allocated.
    fn idle(&mut self) -> bool {
        if self.keep_buffers {
            return false;
        }
        let mut thread = self.node.buffers(self.worker).borrow_mut();
        give_back_idle(&mut thread, &mut self.read, &mut self.write)
    }

    pub fn give_back_buffers(&mut self) {
        let mut thread = self.node.buffers(self.worker).borrow_mut();
        if let Some(read) = self.read.take() {
            thread.give_back(Kind::Read, read.memory);
        }
        if let Some(write) = self.write.take() {
            thread.give_back(Kind::Write, write.memory);
        }
    }

    fn write_buffer(&mut self) -> &mut WriteBuffer {
        if self.write.is_none() {
            let memory = self
                .node
                .buffers(self.worker)
                .borrow_mut()
                .lend(Kind::Write);
            self.write = Some(WriteBuffer::new(memory, self.node.config.bugs.clone()));
        }
        self.write.as_mut().expect("set above")
    }

    /// Queues a response: the header (with extras and key) formatted into
    /// the write buffer, then the value straight from where it lives (an
    /// item's value goes out without a copy).
    pub fn respond(&mut self, packet: Packet) {
        let value = packet.value.clone();
        let header = {
            let mut without_value = packet.clone();
            without_value.value = Bytes::new();
            let mut h = without_value.finished_header();
            h.body_len += u32::try_from(value.len()).expect("values fit the protocol");
            let mut bytes = h.encode().to_vec();
            bytes.extend_from_slice(&without_value.framing);
            bytes.extend_from_slice(&without_value.extras);
            bytes.extend_from_slice(&without_value.key);
            bytes
        };
        let buffer = self.write_buffer();
        let piece = if header.len() <= buffer.space() {
            Piece::Buffer(buffer.format_header(&header))
        } else {
            Piece::Owned(Bytes::from(header))
        };
        self.out.push_back(piece);
        if !value.is_empty() {
            self.out.push_back(Piece::Owned(value));
        }
    }

    /// Sends everything queued.
    pub async fn transmit(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            let n = poll_fn(|cx| {
                let pieces: Vec<&Piece> = self.out.iter().take(MAX_IOV_PIECES).collect();
                let borrowed: Vec<Option<std::cell::Ref<'_, Vec<u8>>>> = pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Buffer(s) => Some(s.memory.borrow()),
                        Piece::Owned(_) => None,
                    })
                    .collect();
                let slices: Vec<IoSlice<'_>> = pieces
                    .iter()
                    .zip(&borrowed)
                    .map(|(piece, memory)| match (piece, memory) {
                        (Piece::Buffer(s), Some(m)) => IoSlice::new(&m[s.offset..s.offset + s.len]),
                        (Piece::Owned(b), _) => IoSlice::new(b),
                        (Piece::Buffer(_), None) => unreachable!("buffer pieces are borrowed"),
                    })
                    .collect();
                let result = Pin::new(&mut self.stream).poll_write_vectored(cx, &slices);
                drop(slices);
                drop(borrowed);
                if result.is_pending() && self.idle() {
                    // Waiting for the socket to drain, the connection looks
                    // idle: the buffers that look empty went back.
                    let queued_bytes: usize = self.out.iter().map(Piece::len).sum();
                    tracing::debug!(target: "faultline::kv", conn = self.id, queued_bytes, "write buffer back to the thread while the socket drains");
                }
                result
            })
            .await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the socket took nothing",
                ));
            }
            self.advance(n);
        }
        if let Some(write) = &mut self.write {
            write.reset();
        }
        Ok(())
    }

    /// `n` bytes of the queue were sent.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let front = self.out.front_mut().expect("sent bytes were queued");
            let take = n.min(front.len());
            if let (Piece::Buffer(slice), Some(write)) = (&*front, &mut self.write) {
                if Rc::ptr_eq(&slice.memory, &write.memory) {
                    write.consumed(take);
                }
            }
            front.advance(take);
            if front.is_empty() {
                self.out.pop_front();
            }
            n -= take;
        }
    }
}

/// Why no packet could be read.
pub enum ConnError {
    Io(io::Error),
    /// Malformed input; the header when it was readable.
    Protocol(Option<Header>, ProtocolError),
}

impl From<ConnError> for io::Error {
    fn from(e: ConnError) -> io::Error {
        match e {
            ConnError::Io(e) => e,
            ConnError::Protocol(_, e) => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}
