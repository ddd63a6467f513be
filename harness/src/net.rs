//! Simulated TCP with the faults real kernels produce rarely.
//!
//! turmoil's `TcpStream` accepts every write whole and delivers it as one
//! segment. [`SimSocket`] wraps it and adds, per connection and as the run's
//! [`FaultPlan`](crate::FaultPlan) says:
//!
//! * a **send buffer** of N bytes: a write accepts at most the free space (a
//!   short write) and is `Pending` when none is free; the writer is woken
//!   when the peer's application has read and space is free again. (The
//!   buffer models the sender's and receiver's kernel buffers together:
//!   bytes count until the peer's application has read them.)
//! * **segmentation**: accepted bytes leave in segments of seeded sizes, and
//!   a reader receives whatever has arrived, coalesced. The byte stream is
//!   unchanged.
//! * **frame delays and holds**: with a [`Framer`] the reader
//!   side finds message frames in the byte stream and holds back a matching
//!   frame (and, as TCP keeps order, everything after it) for a simulated
//!   time or until a named event. Every delivered frame is traced, which is
//!   what sequence diagrams are drawn from.
//!
//! With none of these faults a socket behaves exactly like turmoil's
//! stream: one write, one segment; one read, at most one segment.
//!
//! [`SimStream`] is the tokio face (`AsyncRead + AsyncWrite`); the
//! syscall view ([`crate::sys`]) uses the same core for its file
//! descriptors.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::coverage;
use crate::ctx::{self, FrameInfo, Framer, RunCtx};
use crate::faults::{FrameDelay, glob_match};

/// Largest amount pulled from turmoil in one read call, in bytes.
const PULL_CHUNK_BYTES: usize = 16 * 1024;

/// Per-run network state of the harness.
#[derive(Default)]
pub(crate) struct NetState {
    /// Connection state made by an acceptor, waiting for its connector:
    /// keyed by (acceptor address, connector address).
    handoff: BTreeMap<(SocketAddr, SocketAddr), Arc<ConnShared>>,
    /// How many frames each frame-delay rule has matched so far.
    rule_hits: BTreeMap<usize, u32>,
}

/// One direction of a connection: what the writer has sent that the
/// reader's application has not read yet.
struct Flow {
    writer_host: Arc<str>,
    reader_host: Arc<str>,
    /// The writer's send buffer in bytes; unlimited when `None`.
    capacity_bytes: Option<usize>,
    unread_bytes: usize,
    writer_waker: Option<Waker>,
    /// Largest segment in bytes; writes are not split when `None`.
    max_segment_bytes: Option<usize>,
    /// The reader end is gone: writes no longer wait for space.
    reader_closed: bool,
    /// The writer's end was closed with bytes it had not read: its end of
    /// stream is a reset (see `Drop for SimSocket`).
    reset_at_end: bool,
}

impl Flow {
    fn new(ctx: &RunCtx, writer: &Arc<str>, reader: &Arc<str>) -> Flow {
        let plan = ctx.plan();
        let capacity_bytes = plan
            .send_buffer
            .iter()
            .filter(|f| {
                glob_match(&f.host, writer) && f.peer.as_ref().is_none_or(|p| glob_match(p, reader))
            })
            .map(|f| f.bytes as usize)
            .min();
        let max_segment_bytes = plan
            .segmentation
            .iter()
            .filter(|f| glob_match(&f.from, writer) && glob_match(&f.to, reader))
            .map(|f| f.max_segment_bytes as usize)
            .min();
        if let Some(cap) = capacity_bytes {
            assert!(cap > 0, "a send buffer holds at least one byte");
        }
        Flow {
            writer_host: writer.clone(),
            reader_host: reader.clone(),
            capacity_bytes,
            unread_bytes: 0,
            writer_waker: None,
            max_segment_bytes,
            reader_closed: false,
            reset_at_end: false,
        }
    }

    fn unlimited(writer: &Arc<str>, reader: &Arc<str>) -> Flow {
        Flow {
            writer_host: writer.clone(),
            reader_host: reader.clone(),
            capacity_bytes: None,
            unread_bytes: 0,
            writer_waker: None,
            max_segment_bytes: None,
            reader_closed: false,
            reset_at_end: false,
        }
    }

    fn consumed(&mut self, bytes: usize) {
        if self.capacity_bytes.is_some() {
            assert!(
                bytes <= self.unread_bytes,
                "read {bytes} bytes but only {} were written",
                self.unread_bytes
            );
        }
        self.unread_bytes = self.unread_bytes.saturating_sub(bytes);
        if let Some(waker) = self.writer_waker.take() {
            waker.wake();
        }
    }
}

/// A flow, locked. (A simulation runs on one thread: the lock is never
/// contended. It makes the sockets `Send`, so that code under test may
/// move them into `tokio::spawn`ed tasks as it does a `TcpStream`. A flow
/// held already can only be this call chain's own guard: that is a bug
/// here, and it panics, as the `RefCell` this lock replaced did, instead
/// of blocking the run's one thread for good.)
fn lock(flow: &Mutex<Flow>) -> MutexGuard<'_, Flow> {
    match flow.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::WouldBlock) => {
            panic!("a flow locked twice by one call chain")
        }
        Err(std::sync::TryLockError::Poisoned(_)) => {
            panic!("a flow's lock is never poisoned: a panic ends the run")
        }
    }
}

/// State both ends of one connection share.
struct ConnShared {
    id: u64,
    /// `flows[0]`: acceptor to connector; `flows[1]`: connector to acceptor.
    flows: [Mutex<Flow>; 2],
}

/// Which end of a connection a socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Acceptor = 0,
    Connector = 1,
}

impl Side {
    fn send_flow(self) -> usize {
        self as usize
    }
    fn recv_flow(self) -> usize {
        1 - self as usize
    }
}

/// The frame currently at the head of the undelivered bytes.
struct HeadFrame {
    info: FrameInfo,
    /// Delivered no earlier than this simulated time.
    release_at: Duration,
    /// Held until this event (or `release_at` as the bound of the hold).
    hold_until: Option<String>,
}

/// Frame tracking on the receive side.
enum Framing {
    /// No framer, or the stream is not of the framer's protocol.
    Off,
    /// No rule can delay a frame on this direction: bytes are released as
    /// they arrive, and frames are only traced, as the application reads
    /// them. (Holding a partial header back would deadlock a send buffer
    /// smaller than a header: its bytes count until they are read.)
    Watch { tracker: FrameTracker },
    /// Rules may delay frames: each frame's header is parsed before any of
    /// its bytes are released (meanwhile the received bytes count as read
    /// for the writer's send buffer, see `credit_incomplete_header`).
    Control {
        /// Rules that may delay frames on this direction: (index, rule).
        rules: Vec<(usize, FrameDelay)>,
        /// Bytes of the frame being delivered that are still to be released.
        remaining_in_frame: usize,
        /// The parsed frame waiting at a frame boundary.
        head: Option<HeadFrame>,
    },
}

/// Finds frames in bytes as the application reads them (watch mode).
#[derive(Default)]
struct FrameTracker {
    /// The header being collected.
    header: Vec<u8>,
    /// Bytes of the current frame after its header still to be read.
    remaining_bytes: usize,
    /// The stream turned out not to be framed.
    off: bool,
}

impl FrameTracker {
    fn observe(&mut self, framer: &dyn Framer, bytes: &[u8], shared: &ConnShared, side: Side) {
        let header_len = framer.header_len();
        let mut at = 0;
        while at < bytes.len() && !self.off {
            if self.remaining_bytes > 0 {
                let n = self.remaining_bytes.min(bytes.len() - at);
                self.remaining_bytes -= n;
                at += n;
                continue;
            }
            let n = (header_len - self.header.len()).min(bytes.len() - at);
            self.header.extend_from_slice(&bytes[at..at + n]);
            at += n;
            if self.header.len() < header_len {
                break;
            }
            match framer.parse(&self.header) {
                Some(info) => {
                    assert!(
                        info.total_len >= header_len,
                        "a frame is at least its header"
                    );
                    self.remaining_bytes = info.total_len - header_len;
                    delivered(shared, side, &info);
                }
                None => {
                    tracing::debug!(target: "faultline::net", conn = shared.id, "stream is not framed");
                    self.off = true;
                }
            }
            self.header.clear();
        }
    }
}

/// Takes `n` bytes off the front of a queue of chunk lengths (a socket's
/// segments, a pipe's buffers), dropping the chunks they empty.
pub(crate) fn consume_front(lengths: &mut VecDeque<usize>, n: usize) {
    let mut left = n;
    while left > 0 {
        let head = lengths.front_mut().expect("the bytes are in chunks");
        let take = left.min(*head);
        *head -= take;
        left -= take;
        if *head == 0 {
            lengths.pop_front();
        }
    }
}

/// Traces a frame's delivery and marks it as an event (`frame:FROM->TO:LABEL`).
fn delivered(shared: &ConnShared, side: Side, info: &FrameInfo) {
    let flow = lock(&shared.flows[side.recv_flow()]);
    tracing::debug!(
        target: "faultline::net",
        conn = shared.id,
        from = &*flow.writer_host,
        to = &*flow.reader_host,
        label = info.label.as_str(),
        len = info.total_len,
        "frame"
    );
    ctx::event(&format!(
        "frame:{}->{}:{}",
        flow.writer_host, flow.reader_host, info.label
    ));
}

/// Receive side: bytes pulled from turmoil that the application has not read.
struct Rx {
    buf: BytesMut,
    /// How many leading bytes of `buf` the application may read now.
    released: usize,
    eof: bool,
    error: Option<io::ErrorKind>,
    framing: Framing,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Leading bytes of `buf` already counted as read for the writer's
    /// send buffer (see `credit_incomplete_header`).
    credited: usize,
    /// The lengths of the segments `buf` holds, oldest first (their sum is
    /// `buf.len()`): a splice takes bytes segment by segment. A segment
    /// longer than what one pull takes counts as several.
    segments: VecDeque<usize>,
}

/// One end of a simulated TCP connection (see the module docs).
pub struct SimSocket {
    inner: turmoil::net::TcpStream,
    shared: Arc<ConnShared>,
    side: Side,
    local: SocketAddr,
    peer: SocketAddr,
    rx: Rx,
    write_closed: bool,
}

impl std::fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSocket")
            .field("conn", &self.shared.id)
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish()
    }
}

fn host_of(addr: SocketAddr) -> Arc<str> {
    turmoil::reverse_lookup(addr.ip())
        .map(Arc::from)
        .unwrap_or_else(|| Arc::from(addr.ip().to_string()))
}

impl SimSocket {
    fn new(
        inner: turmoil::net::TcpStream,
        shared: Arc<ConnShared>,
        side: Side,
    ) -> io::Result<SimSocket> {
        let local = inner.local_addr()?;
        let peer = inner.peer_addr()?;
        let framing = ctx::with(|ctx| match ctx.framer() {
            None => Framing::Off,
            Some(_) => {
                let flow = lock(&shared.flows[side.recv_flow()]);
                let rules: Vec<(usize, FrameDelay)> = ctx
                    .plan()
                    .frame_delay
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| {
                        glob_match(&r.from, &flow.writer_host)
                            && glob_match(&r.to, &flow.reader_host)
                    })
                    .map(|(i, r)| (i, r.clone()))
                    .collect();
                if rules.is_empty() {
                    Framing::Watch {
                        tracker: FrameTracker::default(),
                    }
                } else {
                    Framing::Control {
                        rules,
                        remaining_in_frame: 0,
                        head: None,
                    }
                }
            }
        })
        .unwrap_or(Framing::Off);
        Ok(SimSocket {
            inner,
            shared,
            side,
            local,
            peer,
            rx: Rx {
                buf: BytesMut::new(),
                released: 0,
                eof: false,
                error: None,
                framing,
                timer: None,
                credited: 0,
                segments: VecDeque::new(),
            },
            write_closed: false,
        })
    }

    /// The connection's id in this run (stable across replays).
    pub fn conn_id(&self) -> u64 {
        self.shared.id
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    fn send_flow(&self) -> MutexGuard<'_, Flow> {
        lock(&self.shared.flows[self.side.send_flow()])
    }

    fn recv_flow(&self) -> MutexGuard<'_, Flow> {
        lock(&self.shared.flows[self.side.recv_flow()])
    }

    /// Free space in the send buffer, in bytes (`usize::MAX` when unlimited).
    pub fn send_space(&self) -> usize {
        let flow = self.send_flow();
        match flow.capacity_bytes {
            Some(cap) if !flow.reader_closed => cap.saturating_sub(flow.unread_bytes),
            _ => usize::MAX,
        }
    }

    /// Waits for free space in the send buffer.
    pub fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let mut flow = self.send_flow();
        match flow.capacity_bytes {
            Some(cap) if !flow.reader_closed && flow.unread_bytes >= cap => {
                flow.writer_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Sends as much of `bufs` as the send buffer takes (scatter/gather).
    pub fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let (allowed, max_segment) = {
            let mut flow = self.send_flow();
            let allowed = match flow.capacity_bytes {
                Some(cap) if !flow.reader_closed => {
                    let free = cap.saturating_sub(flow.unread_bytes);
                    if free == 0 {
                        flow.writer_waker = Some(cx.waker().clone());
                        cover(coverage::SEND_BUFFER_FULL);
                        return Poll::Pending;
                    }
                    if free < total {
                        cover(coverage::SEND_BUFFER_SHORT_WRITE);
                    }
                    free.min(total)
                }
                _ => total,
            };
            (allowed, flow.max_segment_bytes)
        };
        // One buffer goes to turmoil as it is (turmoil copies it); several
        // are gathered first.
        let gathered;
        let data: &[u8] = match bufs {
            [one] => &one[..allowed],
            _ => {
                gathered = gather(bufs, allowed);
                &gathered
            }
        };
        let mut sent = 0;
        while sent < data.len() {
            let left = data.len() - sent;
            let segment = match max_segment {
                None => left,
                Some(max) => {
                    let max = max.min(left);
                    let id = self.shared.id;
                    let side = self.side as usize;
                    ctx::with_rng(&format!("segment/{id}/{side}"), |rng| {
                        rng.random_range(1..=max)
                    })
                }
            };
            if segment < left {
                cover(coverage::SEGMENTATION_SPLIT);
            }
            match Pin::new(&mut self.inner).poll_write(cx, &data[sent..sent + segment]) {
                Poll::Ready(Ok(n)) => {
                    assert_eq!(n, segment, "turmoil accepts a write whole");
                    sent += n;
                }
                Poll::Ready(Err(e)) if sent == 0 => return Poll::Ready(Err(e)),
                Poll::Pending if sent == 0 => return Poll::Pending,
                _ => break,
            }
        }
        assert!(sent > 0 && sent <= allowed);
        self.send_flow().unread_bytes += sent;
        if sent < total {
            tracing::debug!(target: "faultline::net", conn = self.shared.id, wanted = total, sent, "short write");
        }
        Poll::Ready(Ok(sent))
    }

    /// Sends a FIN: no more writes.
    pub fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_closed {
            return Poll::Ready(Ok(()));
        }
        let result = std::task::ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
        self.write_closed = true;
        Poll::Ready(result)
    }

    /// Pulls segments from turmoil into the receive buffer: all that have
    /// arrived when coalescing, otherwise at most one. Returns whether
    /// anything new arrived (data, end of stream or an error).
    fn pull(&mut self, cx: &mut Context<'_>) -> bool {
        if self.rx.eof || self.rx.error.is_some() {
            return false;
        }
        let coalesce = self.recv_flow().max_segment_bytes.is_some();
        let mut got = false;
        loop {
            // Read straight into the receive buffer's spare room (zeroing a
            // scratch chunk on every poll cost more than the simulation).
            if self.rx.buf.capacity() - self.rx.buf.len() < PULL_CHUNK_BYTES / 4 {
                self.rx.buf.reserve(PULL_CHUNK_BYTES);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.rx.buf) {
                Poll::Ready(Ok(n)) => {
                    got = true;
                    if n > 0 {
                        self.rx.segments.push_back(n);
                    }
                    if n == 0 {
                        if self.recv_flow().reset_at_end {
                            self.rx.error = Some(io::ErrorKind::ConnectionReset);
                        } else {
                            self.rx.eof = true;
                        }
                        break;
                    }
                    if !coalesce {
                        break;
                    }
                }
                Poll::Ready(Err(e)) => {
                    got = true;
                    self.rx.error = Some(e.kind());
                    break;
                }
                Poll::Pending => break,
            }
        }
        got
    }

    /// Moves the release mark forward over every byte the frame rules let
    /// through now; arms a timer or waits for an event when a frame is held.
    fn release(&mut self, cx: &mut Context<'_>) {
        let shared = &self.shared;
        let side = self.side;
        let Framing::Control {
            rules,
            remaining_in_frame,
            head,
        } = &mut self.rx.framing
        else {
            self.rx.released = self.rx.buf.len();
            return;
        };
        // (The run's framer: framing is on only inside a run that has one.)
        let framer = ctx::with(|ctx| ctx.framer())
            .flatten()
            .expect("a framed stream's run has a framer");
        loop {
            let unreleased = self.rx.buf.len() - self.rx.released;
            if *remaining_in_frame > 0 {
                let n = (*remaining_in_frame).min(unreleased);
                self.rx.released += n;
                *remaining_in_frame -= n;
                if *remaining_in_frame > 0 {
                    return;
                }
                continue;
            }
            if head.is_none() {
                let header_len = framer.header_len();
                if unreleased < header_len {
                    credit_incomplete_header(&mut self.rx, &shared.flows[side.recv_flow()]);
                    return;
                }
                let start = self.rx.released;
                let Some(info) = framer.parse(&self.rx.buf[start..start + header_len]) else {
                    // Not this protocol (or garbage): deliver the rest unframed.
                    tracing::debug!(target: "faultline::net", conn = shared.id, "stream is not framed");
                    self.rx.released = self.rx.buf.len();
                    self.rx.framing = Framing::Off;
                    return;
                };
                assert!(
                    info.total_len >= header_len,
                    "a frame is at least its header"
                );
                *head = Some(decide(shared, side, rules, info));
            }
            let frame = head.as_ref().expect("set above");
            let now = ctx::now();
            let blocked = match &frame.hold_until {
                // A hold ends with its event, or at its bound (`release_at`).
                Some(event) => {
                    let happened = ctx::with(|c| c.events().has(event)).unwrap_or(true);
                    if !happened {
                        ctx::with(|c| c.events().wait(cx.waker()));
                    }
                    !happened && now < frame.release_at
                }
                None => now < frame.release_at,
            };
            if blocked {
                let mut timer = Box::pin(tokio::time::sleep(frame.release_at - now));
                if timer.as_mut().poll(cx).is_ready() {
                    // The clock moved on while we looked: look again.
                    self.rx.timer = None;
                    continue;
                }
                self.rx.timer = Some(timer);
                return;
            }
            let frame = head.take().expect("checked above");
            delivered(shared, side, &frame.info);
            *remaining_in_frame = frame.info.total_len;
        }
    }

    /// Whether a receive would return something now (data, end of stream
    /// or an error); registers `cx` for a wake-up otherwise.
    pub fn poll_recv_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(timer) = self.rx.timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                self.rx.timer = None;
            }
        }
        loop {
            self.release(cx);
            if self.rx.released > 0 {
                return Poll::Ready(());
            }
            let pending_bytes = self.rx.buf.len() > self.rx.released;
            if (self.rx.eof || self.rx.error.is_some()) && !pending_bytes {
                return Poll::Ready(());
            }
            if !self.pull(cx) {
                return Poll::Pending;
            }
        }
    }

    /// Reads released bytes into `out`. `Ok(0)` is the end of the stream.
    /// `WouldBlock` when nothing is available (after registering `cx`).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        self.poll_recv_from(cx, out, false)
    }

    /// As [`SimSocket::poll_recv`], from one segment at most: what a
    /// splice turns into one pipe buffer (or one per page of it).
    pub fn poll_recv_segment(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_recv_from(cx, out, true)
    }

    fn poll_recv_from(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut [u8],
        one_segment: bool,
    ) -> Poll<io::Result<usize>> {
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.rx.buf.is_empty()
            && matches!(self.rx.framing, Framing::Off)
            && !self.rx.eof
            && self.rx.error.is_none()
            && self.recv_flow().max_segment_bytes.is_none()
        {
            return self.poll_recv_direct(cx, out);
        }
        std::task::ready!(self.poll_recv_ready(cx));
        if self.rx.released > 0 {
            let mut n = self.rx.released.min(out.len());
            if one_segment {
                n = n.min(*self.rx.segments.front().expect("bytes are in segments"));
            }
            out[..n].copy_from_slice(&self.rx.buf[..n]);
            // (The framer is looked up only while the stream may be framed.)
            if let Framing::Watch { tracker } = &mut self.rx.framing
                && !tracker.off
                && let Some(framer) = ctx::with(|ctx| ctx.framer()).flatten()
            {
                tracker.observe(&*framer, &out[..n], &self.shared, self.side);
            }
            self.rx.buf.advance(n);
            self.rx.released -= n;
            consume_front(&mut self.rx.segments, n);
            assert_eq!(
                self.rx.segments.is_empty(),
                self.rx.buf.is_empty(),
                "the segments hold the buffer's bytes"
            );
            let fresh = n.saturating_sub(self.rx.credited);
            self.rx.credited = self.rx.credited.saturating_sub(n);
            self.recv_flow().consumed(fresh);
            return Poll::Ready(Ok(n));
        }
        match self.rx.error {
            Some(kind) => Poll::Ready(Err(kind.into())),
            None => Poll::Ready(Ok(0)),
        }
    }

    /// Nothing buffered, framed or coalesced: read straight from turmoil
    /// into `out` (the same bytes and chunks as through the receive buffer,
    /// one copy fewer).
    fn poll_recv_direct(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut read_buf = ReadBuf::new(out);
        match std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read_buf)) {
            Ok(()) => {
                let n = read_buf.filled().len();
                if n > 0 {
                    self.recv_flow().consumed(n);
                    return Poll::Ready(Ok(n));
                }
                if self.recv_flow().reset_at_end {
                    self.rx.error = Some(io::ErrorKind::ConnectionReset);
                    return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
                }
                self.rx.eof = true;
                Poll::Ready(Ok(0))
            }
            Err(e) => {
                self.rx.error = Some(e.kind());
                Poll::Ready(Err(e))
            }
        }
    }

    /// Bytes that have arrived and that the application may read now.
    pub fn readable_bytes(&self) -> usize {
        self.rx.released
    }

    /// The peer closed its end (FIN seen) and every byte before it was read.
    pub fn at_eof(&self) -> bool {
        self.rx.eof && self.rx.buf.is_empty()
    }

    /// The peer's FIN has arrived behind every byte it sent, which may
    /// still wait to be read: what Linux reports as `EPOLLRDHUP` as soon as
    /// the FIN is queued. (Known once the reader has taken in all that
    /// arrived: at once when segments are coalesced at the reader, else
    /// when the last byte is read.)
    pub fn fin_received(&self) -> bool {
        self.rx.eof && self.rx.released == self.rx.buf.len()
    }

    /// The connection was reset by the peer.
    pub fn reset_error(&self) -> Option<io::ErrorKind> {
        self.rx.error
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        // Closing a socket with received bytes unread sends a reset, not a
        // FIN (RFC 9293 3.10.4). turmoil does so for bytes it still holds;
        // bytes this socket already pulled from turmoil would leave with a
        // FIN, so the peer's end of stream is marked as a reset instead.
        if !self.rx.buf.is_empty() {
            self.send_flow().reset_at_end = true;
            cover(coverage::NET_CLOSED_WITH_UNREAD);
            tracing::debug!(target: "faultline::net", conn = self.shared.id, unread = self.rx.buf.len(), "closed with unread bytes: reset");
        }
        let mut flow = self.recv_flow();
        flow.reader_closed = true;
        if let Some(waker) = flow.writer_waker.take() {
            waker.wake();
        }
    }
}

/// A frame rule needs a frame's whole header before it can release any of
/// it; a send buffer smaller than a header would then never drain (its
/// bytes count until read). So while a header is incomplete, everything
/// received counts as read for the writer's buffer, as a receiving kernel
/// acknowledges what it holds.
fn credit_incomplete_header(rx: &mut Rx, flow: &Mutex<Flow>) {
    if rx.buf.len() > rx.credited {
        lock(flow).consumed(rx.buf.len() - rx.credited);
        rx.credited = rx.buf.len();
    }
}

/// Decides what happens to a frame that has reached the head of the stream.
fn decide(
    shared: &ConnShared,
    side: Side,
    rules: &[(usize, FrameDelay)],
    info: FrameInfo,
) -> HeadFrame {
    let now = ctx::now();
    let mut frame = HeadFrame {
        info,
        release_at: now,
        hold_until: None,
    };
    if rules.is_empty() {
        return frame;
    }
    ctx::with(|ctx| {
        let mut net = ctx.part::<NetState>().borrow_mut();
        for (index, rule) in rules {
            if !glob_match(&rule.frame, &frame.info.label) {
                continue;
            }
            ctx.cover(&coverage::frame_delay_applied(
                &rule.from,
                &rule.to,
                &rule.frame,
            ));
            let hits = net.rule_hits.entry(*index).or_insert(0);
            *hits += 1;
            if rule.nth.is_some_and(|nth| nth != *hits) {
                continue;
            }
            let flow = lock(&shared.flows[side.recv_flow()]);
            match &rule.hold_until {
                Some(event) => {
                    ctx.cover(coverage::FRAME_DELAY_HELD);
                    frame.hold_until = Some(event.clone());
                    frame.release_at = frame
                        .release_at
                        .max(now + Duration::from_millis(rule.max_hold_ms));
                    tracing::debug!(
                        target: "faultline::fault",
                        conn = shared.id,
                        from = &*flow.writer_host,
                        to = &*flow.reader_host,
                        label = frame.info.label.as_str(),
                        until = event.as_str(),
                        "frame held"
                    );
                }
                None => {
                    ctx.cover(coverage::FRAME_DELAY_DELAYED);
                    frame.release_at = frame
                        .release_at
                        .max(now + Duration::from_millis(rule.delay_ms));
                    tracing::debug!(
                        target: "faultline::fault",
                        conn = shared.id,
                        from = &*flow.writer_host,
                        to = &*flow.reader_host,
                        label = frame.info.label.as_str(),
                        delay_ms = rule.delay_ms,
                        "frame delayed"
                    );
                }
            }
        }
    });
    frame
}

fn gather(bufs: &[IoSlice<'_>], limit: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(limit);
    for buf in bufs {
        let take = (limit - out.len()).min(buf.len());
        out.extend_from_slice(&buf[..take]);
        if out.len() == limit {
            break;
        }
    }
    out.freeze()
}

fn cover(point: &str) {
    ctx::with(|ctx| ctx.cover(point));
}

/// Builds the shared state of a connection for the acceptor's end.
fn accepted_conn(local: SocketAddr, peer: SocketAddr) -> Arc<ConnShared> {
    let me = ctx::current_host()
        .map(Arc::from)
        .unwrap_or_else(|| host_of(local));
    let them = host_of(peer);
    let shared = ctx::with(|ctx| {
        Arc::new(ConnShared {
            id: ctx.next_id(),
            flows: [
                Mutex::new(Flow::new(ctx, &me, &them)),
                Mutex::new(Flow::new(ctx, &them, &me)),
            ],
        })
    })
    .unwrap_or_else(|| {
        Arc::new(ConnShared {
            id: 0,
            flows: [
                Mutex::new(Flow::unlimited(&me, &them)),
                Mutex::new(Flow::unlimited(&them, &me)),
            ],
        })
    });
    ctx::with(|ctx| {
        ctx.part::<NetState>()
            .borrow_mut()
            .handoff
            .insert((local, peer), shared.clone());
        let flow = lock(&shared.flows[0]);
        tracing::debug!(
            target: "faultline::net",
            conn = shared.id,
            from = &*them,
            to = &*me,
            send_buffer = flow.capacity_bytes.unwrap_or(0),
            "accept"
        );
    });
    shared
}

/// Finds the state the acceptor made for this connection.
fn connected_conn(local: SocketAddr, peer: SocketAddr) -> Arc<ConnShared> {
    let found = ctx::with(|ctx| {
        ctx.part::<NetState>()
            .borrow_mut()
            .handoff
            .remove(&(peer, local))
    })
    .flatten();
    match found {
        Some(shared) => shared,
        None => {
            // The acceptor is not a harness socket: no faults on this one.
            let me = ctx::current_host()
                .map(Arc::from)
                .unwrap_or_else(|| host_of(local));
            let them = host_of(peer);
            Arc::new(ConnShared {
                id: ctx::with(|ctx| ctx.next_id()).unwrap_or(0),
                flows: [
                    Mutex::new(Flow::unlimited(&them, &me)),
                    Mutex::new(Flow::unlimited(&me, &them)),
                ],
            })
        }
    }
}

/// Connects to `addr` (a `host:port` turmoil resolves).
pub async fn connect_socket(addr: impl turmoil::ToSocketAddrs) -> io::Result<SimSocket> {
    let inner = turmoil::net::TcpStream::connect(addr).await?;
    let local = inner.local_addr()?;
    let peer = inner.peer_addr()?;
    let shared = connected_conn(local, peer);
    SimSocket::new(inner, shared, Side::Connector)
}

/// A listening socket whose accepted connections are [`SimStream`]s.
pub struct SimListener {
    inner: turmoil::net::TcpListener,
}

impl SimListener {
    /// Binds a listener to `addr` (e.g. `("0.0.0.0", port)`).
    pub async fn bind(addr: impl turmoil::ToSocketAddrs) -> io::Result<SimListener> {
        Ok(SimListener {
            inner: turmoil::net::TcpListener::bind(addr).await?,
        })
    }

    /// Waits for the next connection: a stream with the run's faults, and its
    /// peer's address.
    pub async fn accept(&self) -> io::Result<(SimStream, SocketAddr)> {
        let (socket, peer) = self.accept_socket().await?;
        Ok((SimStream { socket }, peer))
    }

    /// Accepts a connection as a bare socket (for the syscall view).
    pub async fn accept_socket(&self) -> io::Result<(SimSocket, SocketAddr)> {
        let (inner, peer) = self.inner.accept().await?;
        let local = inner.local_addr()?;
        let shared = accepted_conn(local, peer);
        Ok((SimSocket::new(inner, shared, Side::Acceptor)?, peer))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A simulated TCP stream with the run's faults, usable wherever tokio's
/// `AsyncRead + AsyncWrite` is.
#[derive(Debug)]
pub struct SimStream {
    socket: SimSocket,
}

impl SimStream {
    /// Connects to `addr` (a `host:port` turmoil resolves); the run's faults
    /// apply to the new stream.
    pub async fn connect(addr: impl turmoil::ToSocketAddrs) -> io::Result<SimStream> {
        Ok(SimStream {
            socket: connect_socket(addr).await?,
        })
    }

    /// The connection's id in this run (stable across replays), as traces name
    /// it (`conn=`).
    pub fn conn_id(&self) -> u64 {
        self.socket.conn_id()
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.socket.peer_addr()
    }

    /// The socket underneath.
    pub fn socket(&mut self) -> &mut SimSocket {
        &mut self.socket
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = std::task::ready!(this.socket.poll_recv(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().socket.poll_send(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().socket.poll_send(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().socket.poll_shutdown_write(cx)
    }
}
