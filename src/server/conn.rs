//! A connection, served like memcached serves one.
//!
//! The loop: wait until the socket is readable (holding no buffer: an idle
//! connection gives its buffers back to its worker thread, which keeps one
//! spare of each kind), read into a read buffer the thread lends, parse a
//! whole packet (a packet larger
//! than the read buffer has its body read straight into its own memory, as
//! memcached reads a value into its item), execute it, then send the
//! response with one scatter/gather write per attempt: the header from the
//! write buffer, the value straight from the item. When the socket takes
//! only part of it (a short write), the connection waits for writability,
//! and meanwhile looks idle: it gives back the buffers that hold nothing
//! pending. Whether "nothing pending" is judged right is MB-24634.
//!
//! After `DCP_OPEN` the connection is a DCP connection (`dcp/`): duplex,
//! it waits for the peer's bytes *or* for the node to have messages for
//! the peer, handles every whole packet it has read, then sends what the
//! node prepared. A DCP connection keeps its buffers once it has them, as
//! memcached's did.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use faultline_harness::SimStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::buffers::{Piece, ReadBuffer, WriteBuffer, give_back_idle};
use super::commands;
use super::dcp::{DcpConn, MAX_MESSAGES_PER_STEP};
use super::node::Node;
use super::thread_buffers::Kind;
use crate::protocol::{HEADER_LEN, Header, Packet, ProtocolError, Status};

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

/// Most pieces handed to one scatter/gather write: our own bound, well
/// below Linux's `IOV_MAX` (1024), which bounds kv_engine's
/// (`daemon/connection.cc` at commit 32c0ae9f1).
pub const MAX_IOV_PIECES: usize = 64;

/// What the connection does after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Send what is queued, then close.
    Close,
}

/// How long a new connection's first request may take to arrive, in ms,
/// when an idle timeout is set: ours (neither memcached nor HAProxy has
/// this value), so that a short idle timeout does not close a connection
/// whose first request is on its way.
pub const FIRST_REQUEST_TIMEOUT_MS: u64 = 5000;

/// One client connection.
pub struct Conn<S> {
    pub id: u64,
    stream: S,
    pub node: Rc<Node>,
    worker: usize,
    read: Option<ReadBuffer>,
    write: Option<WriteBuffer>,
    out: VecDeque<Piece>,
    /// Set by `DCP_OPEN`.
    dcp: Option<DcpConn>,
    /// When the last request was read: the idle timeout runs from it
    /// (none yet: a new connection's first request has
    /// [`FIRST_REQUEST_TIMEOUT_MS`]).
    last_command: Option<Instant>,
}

/// Serves `stream` until the peer closes it or it fails.
pub async fn serve_connection<S: ServerStream>(stream: S, node: Rc<Node>, id: u64, worker: usize) {
    node.stats.curr_connections.fetch_add(1).await;
    node.stats.total_connections.fetch_add(1).await;
    let mut conn = Conn {
        id,
        stream,
        node: node.clone(),
        worker,
        read: None,
        write: None,
        out: VecDeque::new(),
        dcp: None,
        last_command: None,
    };
    match conn.run().await {
        Ok(()) => tracing::debug!(target: "faultline::kv", conn = id, "closed"),
        Err(e) => {
            tracing::debug!(target: "faultline::kv", conn = id, error = %e, "closed on error")
        }
    }
    conn.give_back_buffers();
    node.stats.curr_connections.fetch_sub(1).await;
}

impl<S: ServerStream> Conn<S> {
    async fn run(&mut self) -> io::Result<()> {
        loop {
            let packet = match self.next_packet().await {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(ConnError::Io(e)) => return Err(e),
                Err(ConnError::Protocol(header, e)) => return self.refuse(header, e).await,
            };
            self.last_command = Some(Instant::now());
            let flow = commands::execute(self, packet).await;
            self.transmit().await?;
            if flow == Flow::Close {
                return Ok(());
            }
            if let Some(dcp) = self.dcp.clone() {
                let result = self.run_dcp(&dcp).await;
                dcp.close(&self.node, self.id).await;
                return result;
            }
        }
    }

    /// Malformed input: the next packet boundary is lost. Answers if the
    /// header said what was asked, then the connection closes.
    async fn refuse(&mut self, header: Option<Header>, e: ProtocolError) -> io::Result<()> {
        tracing::debug!(target: "faultline::kv", conn = self.id, dcp = self.dcp.is_some(), error = %e, "malformed packet");
        if let Some(header) = header {
            self.respond(Packet::response(&header, refusal(&e)));
            self.transmit().await?;
        }
        Ok(())
    }

    /// Makes this a DCP connection (after its `DCP_OPEN` is answered).
    pub fn start_dcp(&mut self, dcp: DcpConn) {
        assert!(self.dcp.is_none(), "a connection is opened for DCP once");
        self.dcp = Some(dcp);
    }

    /// The DCP loop: handle what the peer sent, send what the node has,
    /// wait for either.
    async fn run_dcp(&mut self, dcp: &DcpConn) -> io::Result<()> {
        let writer = dcp.writer();
        tracing::debug!(target: "faultline::kv", conn = self.id, name = dcp.name(), "dcp connection");
        loop {
            // Every whole packet already read, before anything is sent.
            loop {
                match self.buffered_packet().await {
                    Ok(Some(packet)) => dcp.handle(&self.node, packet).await,
                    Ok(None) => break,
                    Err(ConnError::Io(e)) => return Err(e),
                    Err(ConnError::Protocol(header, e)) => return self.refuse(header, e).await,
                }
            }
            let mut batch = Vec::new();
            let more = dcp
                .step(MAX_MESSAGES_PER_STEP, &mut |p| batch.push(p))
                .await;
            for packet in batch {
                self.respond(packet);
            }
            self.transmit().await?;
            if more {
                // Let the peer's bytes in before the next batch.
                writer.notify_one();
            }
            tokio::select! {
                ready = self.wait_readable() => {
                    if !ready? {
                        return Ok(());
                    }
                    if self.fill().await? == 0 {
                        return self.closed_by_peer();
                    }
                }
                _ = writer.notified() => {}
            }
        }
    }

    /// The peer closed: an error if it stopped inside a packet.
    fn closed_by_peer(&self) -> Result<(), io::Error> {
        let unparsed = self.read.as_ref().map(ReadBuffer::unparsed).unwrap_or(0);
        if unparsed > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the peer closed inside a packet ({unparsed} bytes read)"),
            ));
        }
        Ok(())
    }

    /// A whole packet from the bytes already read, if there is one (a
    /// packet larger than the read buffer is read to its end here).
    async fn buffered_packet(&mut self) -> Result<Option<Packet>, ConnError> {
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

    /// The next whole packet; `None` when the peer closed between packets.
    async fn next_packet(&mut self) -> Result<Option<Packet>, ConnError> {
        loop {
            if let Some(packet) = self.buffered_packet().await? {
                return Ok(Some(packet));
            }
            if !self.wait_readable().await? {
                return Ok(None);
            }
            if self.fill().await? == 0 {
                let unparsed = self.read.as_ref().map(ReadBuffer::unparsed).unwrap_or(0);
                if unparsed > 0 {
                    return Err(ConnError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the peer closed inside a packet ({unparsed} bytes read)"),
                    )));
                }
                return Ok(None);
            }
        }
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

    /// Waits until the socket is readable; idle meanwhile. `false` when the
    /// idle timeout closed the connection.
    async fn wait_readable(&mut self) -> Result<bool, ConnError> {
        if self.read.as_ref().is_none_or(ReadBuffer::is_empty) {
            let _ = self.idle();
        }
        let stream = &mut self.stream;
        let ready = poll_fn(|cx| stream.poll_read_ready(cx));
        // Replication streams are quiet when nothing changes: the idle
        // timeout is for client connections only. As memcached's
        // (`conn_timeout_thread` in memcached.c): a connection waiting for
        // a command is closed once its last command is older than the
        // timeout, however long its answer took to send.
        let deadline = match (&self.dcp, self.node.config.idle_timeout_ms) {
            (Some(_), _) | (None, None) => None,
            (None, Some(ms)) => Some(match self.last_command {
                Some(at) => at + Duration::from_millis(ms),
                None => Instant::now() + Duration::from_millis(ms.max(FIRST_REQUEST_TIMEOUT_MS)),
            }),
        };
        match deadline {
            None => ready.await.map_err(ConnError::Io)?,
            Some(at) => match tokio::time::timeout_at(at, ready).await {
                Ok(result) => result.map_err(ConnError::Io)?,
                Err(_) => {
                    tracing::debug!(target: "faultline::kv", conn = self.id, "idle timeout");
                    return Ok(false);
                }
            },
        }
        Ok(true)
    }

    /// Reads what the socket has into the read buffer (lent by the thread
    /// if the connection gave it back). Returns the bytes read.
    async fn fill(&mut self) -> Result<usize, ConnError> {
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
        if self.dcp.is_some() {
            return false;
        }
        let mut thread = self.node.buffers(self.worker).borrow_mut();
        give_back_idle(&mut thread, &mut self.read, &mut self.write)
    }

    fn give_back_buffers(&mut self) {
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

/// The status that answers a packet the connection cannot take.
fn refusal(e: &ProtocolError) -> Status {
    match e {
        ProtocolError::BodyTooLarge { .. } => Status::E2BIG,
        _ => Status::EINVAL,
    }
}

enum ConnError {
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
