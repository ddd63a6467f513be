//! A non-blocking syscall view of simulated sockets, for code written like
//! a C event loop.
//!
//! [`Sys`] is one host's kernel: a file table with small integer fds
//! allocated lowest-free-first (as a kernel does, so numbers are reused at
//! once), sockets whose `connect` completes later, `recv`/`send` that answer
//! a byte count or an [`Errno`], and epoll-like pollers that report
//! readiness (`IN`, `OUT`, `ERR`, `HUP`, `RDHUP`), level-triggered, or
//! edge-triggered on request. A refused connect or a peer's reset closes
//! the socket both ways, as Linux's `tcp_done`: the poll reports
//! `IN|OUT|ERR|HUP|RDHUP` (`ERR` until the error is read; recv returns
//! bytes that arrived before a reset first, then the error, then the end
//! of the stream; send answers `EPIPE` once the error is read). The poller
//! filters `IN`, `OUT` and `RDHUP` by the interest set and reports `ERR`
//! and `HUP` whatever it is, as epoll does.
//!
//! The host's *errno personality* comes from the run's fault plan
//! (`[[errno]]`): on a socket whose connect is still in progress,
//! `linux` answers `EAGAIN` to both `recv` and `send`, `illumos` answers
//! `ENOTCONN` to `recv`, `openbsd` answers `ENOTCONN` to `send`.
//!
//! Sockets are [`SimSocket`]s, so the send-buffer, segmentation and frame
//! faults apply here too.
//!
//! Pipes ([`Sys::pipe`]) are Linux's: 16 buffers of at most a page
//! ([`PAGE_BYTES`]) by default, or as many as `F_SETPIPE_SZ` gives for the
//! host's `[[pipe]]` `capacity_bytes`; a splice from a socket fills one
//! buffer per segment, so a pipe may be full with far fewer bytes than its
//! size. [`Sys::splice`] moves bytes between a socket and a pipe as
//! Linux's `splice(SPLICE_F_NONBLOCK | SPLICE_F_MOVE)` does: through the
//! same socket paths as `recv` and `send`, so their faults apply. Under
//! `linux-2.6.35` every splice fails with `EBADF`.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::coverage;
use crate::ctx;
use crate::faults::{DEFAULT_PIPE_CAPACITY_BYTES, Personality, glob_match};
use crate::net::{SimListener, SimSocket, connect_socket};
use crate::schedule::{self, preempt};

/// A file descriptor.
pub type Fd = i32;

/// The lowest fd handed out (0, 1 and 2 are the standard streams).
pub const FIRST_FD: Fd = 3;

/// Default size of a host's file table.
pub const DEFAULT_MAX_FDS: usize = 1024;

/// Syscalls a host may make at one simulated instant before the harness
/// calls it a busy loop. Simulated time only moves when every task waits,
/// so a task that never waits would otherwise hang the run; real code makes
/// nowhere near this many calls without time passing.
pub const SPIN_LIMIT_CALLS: u64 = 200_000;

/// The same limit once an oracle has already failed the run.
pub const SPIN_LIMIT_AFTER_FAILURE_CALLS: u64 = 2_000;

/// `epoll_wait` calls a host makes at one simulated instant before each
/// further call costs [`POLL_CPU_TIME`] (simulated time only moves when
/// every task waits; a poll loop that always finds work would stop it).
pub const POLLS_PER_INSTANT: u64 = 200;

/// The simulated CPU time of one `epoll_wait` beyond [`POLLS_PER_INSTANT`].
pub const POLL_CPU_TIME: Duration = Duration::from_micros(1);

/// A host that keeps polling without waiting for this long (simulated ms)
/// is in a busy loop: the `busy-loop` oracle fires.
pub const SPIN_LIMIT_MS: u64 = 100;

/// Error numbers, as the syscalls answer them.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Errno {
    /// Try again: nothing to receive, no room in the send buffer, no connection
    /// to accept, or (`linux`) a recv or send while the connect is in progress.
    EAGAIN,
    /// `connect` has started; the connection completes later (poll for `OUT`,
    /// then read `SO_ERROR`).
    EINPROGRESS,
    /// `connect` on a socket whose connect is already in progress.
    EALREADY,
    /// `connect` on a socket that is already connected.
    EISCONN,
    /// The socket is not connected: recv or send on a socket never connected or
    /// whose connect failed; `shutdown`, `local_addr` or `peer_addr` of a
    /// socket that is not connected; and, during a connect in progress, recv
    /// under `illumos` and send under `openbsd`.
    ENOTCONN,
    /// The peer reset the connection; reported once, by recv, send or
    /// `SO_ERROR`.
    ECONNRESET,
    /// Nobody listens at the address: a failed connect, reported by `SO_ERROR`
    /// (or the next recv or send).
    ECONNREFUSED,
    /// send after `shutdown` of the write side, or after the peer reset the
    /// connection; a splice into a pipe whose read end is closed.
    EPIPE,
    /// The fd is not open (or, for `splice`, not open in the direction it is
    /// used: a pipe's write end read from, its read end written to); every
    /// splice under `linux-2.6.35`.
    EBADF,
    /// Invalid argument: `connect` on a socket whose connect failed, `accept`
    /// on an fd that is not a listener, an `epoll_*` call on an fd that is not
    /// a poller, `resolve` outside a simulation, a `splice` that is not
    /// between a socket and a pipe.
    EINVAL,
    /// recv, send or `SO_ERROR` on an fd that is not a socket.
    ENOTSOCK,
    /// The host's file table is full ([`DEFAULT_MAX_FDS`] open files).
    EMFILE,
    /// `listen` on a port already bound on this host.
    EADDRINUSE,
    /// A connect timed out.
    ETIMEDOUT,
    /// A signal interrupted the call before it did anything (real sockets;
    /// the simulated kernel has no signals): call again.
    EINTR,
    /// Any other errno by number: what the OS answered on real sockets, and
    /// `epoll_ctl`'s EEXIST (17) and ENOENT (2) here.
    Other(i32),
}

impl Errno {
    /// The errno's name (`EAGAIN`), or `errno N` for [`Errno::Other`].
    pub fn name(self) -> String {
        match self {
            Errno::Other(n) => format!("errno {n}"),
            other => format!("{other:?}"),
        }
    }

    /// The errno an `io::Error` stands for.
    pub fn from_io(e: &io::Error) -> Errno {
        match e.kind() {
            io::ErrorKind::WouldBlock => Errno::EAGAIN,
            io::ErrorKind::NotConnected => Errno::ENOTCONN,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Errno::ECONNRESET,
            io::ErrorKind::ConnectionRefused => Errno::ECONNREFUSED,
            io::ErrorKind::BrokenPipe => Errno::EPIPE,
            io::ErrorKind::AddrInUse => Errno::EADDRINUSE,
            io::ErrorKind::InvalidInput => Errno::EINVAL,
            io::ErrorKind::TimedOut => Errno::ETIMEDOUT,
            io::ErrorKind::Interrupted => Errno::EINTR,
            _ => Errno::Other(e.raw_os_error().unwrap_or(-1)),
        }
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Poll event bits (Linux's values, `include/uapi/linux/eventpoll.h`).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Events(pub u32);

impl Events {
    /// No event.
    pub const NONE: Events = Events(0);
    /// `EPOLLIN`: readable: bytes to read, the end of the stream, or a
    /// connection to accept.
    pub const IN: Events = Events(0x001);
    /// `EPOLLOUT`: writable: the send buffer has room. A finished connect,
    /// successful or not, reports it too.
    pub const OUT: Events = Events(0x004);
    /// `EPOLLERR`: an error is pending (read it with [`Sys::take_error`]);
    /// reported whatever the interest.
    pub const ERR: Events = Events(0x008);
    /// `EPOLLHUP`: hang-up: the socket is unconnected, reset, or closed in both
    /// directions; reported whatever the interest.
    pub const HUP: Events = Events(0x010);
    /// `EPOLLRDHUP`: the peer has closed its side (end of stream) or reset the
    /// connection.
    pub const RDHUP: Events = Events(0x2000);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Events) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether any bit of `other` is set.
    pub fn intersects(self, other: Events) -> bool {
        self.0 & other.0 != 0
    }
    /// Whether no bit is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for Events {
    type Output = Events;
    fn bitor(self, rhs: Events) -> Events {
        Events(self.0 | rhs.0)
    }
}
impl std::ops::BitOrAssign for Events {
    fn bitor_assign(&mut self, rhs: Events) {
        self.0 |= rhs.0;
    }
}
impl std::ops::BitAnd for Events {
    type Output = Events;
    fn bitand(self, rhs: Events) -> Events {
        Events(self.0 & rhs.0)
    }
}
impl std::ops::Not for Events {
    type Output = Events;
    fn not(self) -> Events {
        Events(!self.0)
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (Events::IN, "IN"),
            (Events::OUT, "OUT"),
            (Events::ERR, "ERR"),
            (Events::HUP, "HUP"),
            (Events::RDHUP, "RDHUP"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(e, _)| self.contains(*e))
            .map(|(_, n)| *n)
            .collect();
        if set.is_empty() {
            f.write_str("-")
        } else {
            f.write_str(&set.join("|"))
        }
    }
}

/// `epoll_ctl` operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpollOp {
    /// `EPOLL_CTL_ADD`: adds the fd to the interest list (EEXIST, as
    /// `Errno::Other(17)`, when it is there already).
    Add,
    /// `EPOLL_CTL_MOD`: replaces the fd's interest and forgets what
    /// edge-triggered reports said (ENOENT, as `Errno::Other(2)`, when it is
    /// absent).
    Mod,
    /// `EPOLL_CTL_DEL`: removes the fd from the interest list (ENOENT when it
    /// is absent).
    Del,
}

/// What `epoll_wait` reports for one fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpollEvent {
    /// The fd that is ready.
    pub fd: Fd,
    /// The ready bits among its interest, `ERR` and `HUP` (edge-triggered: only
    /// those newly ready).
    pub events: Events,
    /// The value given to `epoll_ctl`.
    pub data: u64,
}

/// `shutdown` directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// `SHUT_RD`: every later recv answers 0 (end of stream).
    Read,
    /// `SHUT_WR`: sends the end of stream to the peer; every later send answers
    /// `EPIPE`.
    Write,
    /// `SHUT_RDWR`: both directions.
    Both,
}

/// A waker that wakes everyone interested in one file.
#[derive(Default)]
struct FanOut {
    wakers: Mutex<Vec<Waker>>,
}

impl FanOut {
    fn add(&self, waker: &Waker) {
        let mut wakers = self
            .wakers
            .lock()
            .expect("never poisoned: no panics while held");
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }
}

impl Wake for FanOut {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = std::mem::take(
            &mut *self
                .wakers
                .lock()
                .expect("never poisoned: no panics while held"),
        );
        for w in wakers {
            w.wake();
        }
    }
}

type ConnectSlot = Rc<RefCell<Option<io::Result<SimSocket>>>>;

enum SockState {
    /// `socket()` was called; not connected.
    Fresh,
    Connecting {
        slot: ConnectSlot,
        task: tokio::task::JoinHandle<()>,
    },
    Connected(Box<SimSocket>),
    /// The connect failed; the error is pending in `SO_ERROR`.
    Failed,
}

struct SockFile {
    state: SockState,
    fanout: Arc<FanOut>,
    /// The error `SO_ERROR` (or the next recv/send) reports, then clears.
    pending_error: Option<Errno>,
    /// The peer reset the connection (HUP from then on).
    reset_seen: bool,
    rd_shut: bool,
    wr_shut: bool,
}

struct ListenFile {
    backlog: Rc<RefCell<VecDeque<(SimSocket, SocketAddr)>>>,
    task: tokio::task::JoinHandle<()>,
    fanout: Arc<FanOut>,
    local: SocketAddr,
}

#[derive(Clone, Copy, Debug)]
struct Interest {
    events: Events,
    data: u64,
    edge: bool,
    /// For edge-triggered interest: what was reported and is still ready.
    reported: Events,
}

#[derive(Default)]
struct EpollFile {
    interests: BTreeMap<Fd, Interest>,
}

/// A page: the most one pipe buffer holds.
pub const PAGE_BYTES: usize = 4096;

/// The size `F_SETPIPE_SZ` gives a pipe asked for `requested` bytes:
/// whole pages, their number rounded up to a power of two (Linux's
/// `round_pipe_size`, `fs/pipe.c`).
pub fn pipe_size_bytes(requested: usize) -> usize {
    assert!(requested > 0, "a pipe of no size");
    requested.div_ceil(PAGE_BYTES).next_power_of_two() * PAGE_BYTES
}

/// The bytes of one pipe, shared by its two ends. As Linux's
/// `pipe_inode_info`: a ring of `max_buffers` buffers, each holding at
/// most a page. A splice from a socket fills one buffer per segment (per
/// page of a longer one) and never adds to a buffer already there, so a
/// pipe is full after 16 small segments however few bytes they carry; a
/// buffer is free again once all of its bytes left.
struct PipeBuffer {
    bytes: VecDeque<u8>,
    /// The bytes each used buffer holds, oldest first (their sum is
    /// `bytes.len()`, each within 1..=PAGE_BYTES).
    buffers: VecDeque<usize>,
    /// A splice into a pipe all of whose buffers are used is `EAGAIN`.
    max_buffers: usize,
    reader_open: bool,
    writer_open: bool,
    /// Pollers of either end: woken when bytes move or an end closes.
    fanout: Arc<FanOut>,
}

impl PipeBuffer {
    fn free_buffers(&self) -> usize {
        self.max_buffers - self.buffers.len()
    }

    /// Takes `n` bytes in, in new buffers of a page at most.
    fn push(&mut self, data: &[u8]) {
        for page in data.chunks(PAGE_BYTES) {
            assert!(
                self.free_buffers() > 0,
                "a pipe never holds more buffers than it has"
            );
            self.buffers.push_back(page.len());
        }
        self.bytes.extend(data);
    }

    /// Lets `n` bytes out, freeing the buffers they emptied.
    fn pop(&mut self, n: usize) {
        assert!(n <= self.bytes.len(), "only what the pipe holds leaves it");
        self.bytes.drain(..n);
        crate::net::consume_front(&mut self.buffers, n);
        assert_eq!(self.buffers.is_empty(), self.bytes.is_empty());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PipeSide {
    Read,
    Write,
}

/// One end of a pipe.
#[derive(Clone)]
struct PipeEnd {
    buffer: Rc<RefCell<PipeBuffer>>,
    side: PipeSide,
}

enum File {
    Socket(SockFile),
    Listener(ListenFile),
    Epoll(EpollFile),
    Pipe(PipeEnd),
}

struct Kernel {
    host: String,
    personality: Personality,
    /// What each new pipe holds (`[[pipe]]`, else Linux's 65536).
    pipe_capacity_bytes: usize,
    max_fds: usize,
    files: BTreeMap<Fd, File>,
    /// Syscalls made at the simulated instant `spin.0`.
    spin: (Duration, u64),
    /// `epoll_wait` calls made at the simulated instant `polls.0`.
    polls: (Duration, u64),
    /// Since when the host has been spinning (polling beyond
    /// [`POLLS_PER_INSTANT`] at each instant), and when it last did.
    spinning: Option<(Duration, Duration)>,
}

impl Kernel {
    /// Tracks a poll loop that keeps finding work: spinning longer than
    /// [`SPIN_LIMIT_MS`] of simulated time is a busy loop (100% CPU).
    fn note_spin(&mut self, spinning: bool, now: Duration, epfd: Fd) {
        let limit = Duration::from_millis(SPIN_LIMIT_MS);
        self.spinning = match (self.spinning, spinning) {
            (None, false) => None,
            (None, true) => Some((now, now)),
            (Some((start, _)), true) => Some((start, now)),
            // A millisecond without spinning ends the spin.
            (Some((start, last)), false) if now <= last + Duration::from_millis(1) => {
                Some((start, last))
            }
            (Some(_), false) => None,
        };
        if let Some((start, last)) = self.spinning {
            if last - start >= limit && ctx::in_sim() {
                let message = format!(
                    "host `{}` has polled without waiting since simulated time {:.3} ms ({} ms, last: epoll_wait on fd {epfd})",
                    self.host,
                    start.as_secs_f64() * 1000.0,
                    SPIN_LIMIT_MS
                );
                crate::oracle::fail("busy-loop", &message);
                panic!("{message}");
            }
        }
    }

    /// Counts a syscall; at [`SPIN_LIMIT_CALLS`] calls without simulated
    /// time passing, fires the `busy-loop` oracle and unwinds the spinning
    /// task (the run's verdict stays `busy-loop`).
    fn count_call(&mut self, call: &str, fd: Fd) {
        schedule::note_activity();
        let now = ctx::now();
        if self.spin.0 != now {
            self.spin = (now, 0);
        }
        self.spin.1 += 1;
        // Once an oracle has failed the verdict is decided: a host still
        // spinning is unwound sooner, so the run ends quickly.
        let limit = if crate::oracle::failed() {
            SPIN_LIMIT_AFTER_FAILURE_CALLS
        } else {
            SPIN_LIMIT_CALLS
        };
        if self.spin.1 >= limit && ctx::in_sim() {
            let message = format!(
                "host `{}` made {} syscalls at simulated time {:.3} ms without time passing (last: {call} on fd {fd})",
                self.host,
                self.spin.1,
                now.as_secs_f64() * 1000.0
            );
            crate::oracle::fail("busy-loop", &message);
            panic!("{message}");
        }
    }
}

/// One host's kernel: file table, sockets and pollers. Cheap to clone (the
/// clones share the kernel, as threads of one process share fds).
#[derive(Clone)]
pub struct Sys {
    kernel: Rc<RefCell<Kernel>>,
}

impl std::fmt::Debug for Sys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = self.kernel.borrow();
        f.debug_struct("Sys")
            .field("host", &k.host)
            .field("personality", &k.personality)
            .finish()
    }
}

fn cover(point: &str) {
    ctx::with(|c| c.cover(point));
}

impl Default for Sys {
    fn default() -> Self {
        Sys::new()
    }
}

impl Sys {
    /// The kernel of the current host, with the personality the run's plan
    /// gives it (Linux otherwise).
    pub fn new() -> Sys {
        let host = ctx::current_host().unwrap_or_else(|| "-".to_string());
        let personality = ctx::with(|c| {
            c.plan()
                .errno
                .iter()
                .find(|f| glob_match(&f.host, &host))
                .map(|f| f.personality)
        })
        .flatten()
        .unwrap_or(Personality::Linux);
        if personality != Personality::Linux {
            tracing::debug!(target: "faultline::fault", host = host.as_str(), personality = personality.name(), "errno personality");
        }
        let pipe_capacity = ctx::with(|c| {
            c.plan()
                .pipe
                .iter()
                .find(|f| glob_match(&f.host, &host))
                .map(|f| f.capacity_bytes)
        })
        .flatten();
        let sys = Sys::with_personality(host, personality);
        if let Some(bytes) = pipe_capacity {
            let mut k = sys.kernel.borrow_mut();
            let size_bytes = pipe_size_bytes(bytes as usize);
            tracing::debug!(target: "faultline::fault", host = k.host.as_str(), capacity_bytes = bytes, size_bytes, "pipe capacity");
            k.pipe_capacity_bytes = size_bytes;
        }
        sys
    }

    /// A kernel with an explicit personality.
    pub fn with_personality(host: String, personality: Personality) -> Sys {
        Sys {
            kernel: Rc::new(RefCell::new(Kernel {
                host,
                personality,
                pipe_capacity_bytes: DEFAULT_PIPE_CAPACITY_BYTES as usize,
                max_fds: DEFAULT_MAX_FDS,
                files: BTreeMap::new(),
                spin: (Duration::ZERO, 0),
                polls: (Duration::ZERO, 0),
                spinning: None,
            })),
        }
    }

    /// The errno personality this kernel answers with.
    pub fn personality(&self) -> Personality {
        self.kernel.borrow().personality
    }

    /// How many files are open.
    pub fn open_files(&self) -> usize {
        self.kernel.borrow().files.len()
    }

    /// The capacity of the pipes this kernel creates, in bytes (whole
    /// pages, one buffer each).
    pub fn pipe_capacity_bytes(&self) -> usize {
        self.kernel.borrow().pipe_capacity_bytes
    }

    /// The bytes held by the pipe `fd` is an end of (`None`: not a pipe).
    pub fn pipe_bytes(&self, fd: Fd) -> Option<usize> {
        match self.kernel.borrow().files.get(&fd) {
            Some(File::Pipe(end)) => Some(end.buffer.borrow().bytes.len()),
            _ => None,
        }
    }

    fn allocate(kernel: &mut Kernel, file: File) -> Result<Fd, Errno> {
        if kernel.files.len() >= kernel.max_fds {
            return Err(Errno::EMFILE);
        }
        let mut fd = FIRST_FD;
        for used in kernel.files.keys() {
            if *used != fd {
                break;
            }
            fd += 1;
        }
        assert!(!kernel.files.contains_key(&fd), "fd {fd} is free");
        kernel.files.insert(fd, file);
        Ok(fd)
    }

    /// A new, unconnected TCP socket.
    pub fn socket(&self) -> Result<Fd, Errno> {
        let mut k = self.kernel.borrow_mut();
        Self::allocate(
            &mut k,
            File::Socket(SockFile {
                state: SockState::Fresh,
                fanout: Arc::default(),
                pending_error: None,
                reset_seen: false,
                rd_shut: false,
                wr_shut: false,
            }),
        )
    }

    /// Starts connecting. Answers `EINPROGRESS`: the connection completes
    /// later; poll for `OUT`, then read `SO_ERROR` ([`Sys::take_error`]).
    pub fn connect(&self, fd: Fd, addr: SocketAddr) -> Result<(), Errno> {
        let mut k = self.kernel.borrow_mut();
        let Some(File::Socket(sock)) = k.files.get_mut(&fd) else {
            return Err(Errno::EBADF);
        };
        match sock.state {
            SockState::Fresh => {}
            SockState::Connecting { .. } => return Err(Errno::EALREADY),
            SockState::Connected(_) => return Err(Errno::EISCONN),
            SockState::Failed => return Err(Errno::EINVAL),
        }
        let slot: ConnectSlot = Rc::default();
        let fanout = sock.fanout.clone();
        let result = slot.clone();
        let task = tokio::task::spawn_local(async move {
            let connected = connect_socket(addr).await;
            *result.borrow_mut() = Some(connected);
            fanout.wake_by_ref();
        });
        sock.state = SockState::Connecting { slot, task };
        tracing::debug!(target: "faultline::sys", fd, %addr, "connect in progress");
        Err(Errno::EINPROGRESS)
    }

    /// Moves a socket out of `Connecting` when its connect has finished.
    fn settle(sock: &mut SockFile, fd: Fd) {
        let SockState::Connecting { slot, .. } = &sock.state else {
            return;
        };
        let Some(result) = slot.borrow_mut().take() else {
            return;
        };
        match result {
            Ok(socket) => {
                tracing::debug!(target: "faultline::sys", fd, conn = socket.conn_id(), "connected");
                sock.state = SockState::Connected(Box::new(socket));
            }
            Err(e) => {
                let errno = Errno::from_io(&e);
                tracing::debug!(target: "faultline::sys", fd, errno = %errno, "connect failed");
                sock.pending_error = Some(errno);
                sock.state = SockState::Failed;
            }
        }
    }

    /// Listens on `port` of every address of this host.
    pub async fn listen(&self, port: u16) -> Result<Fd, Errno> {
        let listener = SimListener::bind(("0.0.0.0", port))
            .await
            .map_err(|e| Errno::from_io(&e))?;
        let local = listener.local_addr().map_err(|e| Errno::from_io(&e))?;
        let backlog: Rc<RefCell<VecDeque<(SimSocket, SocketAddr)>>> = Rc::default();
        let fanout: Arc<FanOut> = Arc::default();
        let (queue, wake) = (backlog.clone(), fanout.clone());
        let task = tokio::task::spawn_local(async move {
            while let Ok(accepted) = listener.accept_socket().await {
                queue.borrow_mut().push_back(accepted);
                wake.wake_by_ref();
            }
        });
        let mut k = self.kernel.borrow_mut();
        Self::allocate(
            &mut k,
            File::Listener(ListenFile {
                backlog,
                task,
                fanout,
                local,
            }),
        )
    }

    /// Takes a pending connection, or `EAGAIN`.
    pub fn accept(&self, fd: Fd) -> Result<(Fd, SocketAddr), Errno> {
        let mut k = self.kernel.borrow_mut();
        k.count_call("accept", fd);
        let accepted = match k.files.get_mut(&fd) {
            Some(File::Listener(l)) => l.backlog.borrow_mut().pop_front(),
            Some(_) => return Err(Errno::EINVAL),
            None => return Err(Errno::EBADF),
        };
        let Some((socket, peer)) = accepted else {
            return Err(Errno::EAGAIN);
        };
        let new = Self::allocate(
            &mut k,
            File::Socket(SockFile {
                state: SockState::Connected(Box::new(socket)),
                fanout: Arc::default(),
                pending_error: None,
                reset_seen: false,
                rd_shut: false,
                wr_shut: false,
            }),
        )?;
        tracing::debug!(target: "faultline::sys", listener = fd, fd = new, %peer, "accept");
        Ok((new, peer))
    }

    /// Receives into `buf`: a byte count (0 at the end of the stream) or an errno.
    pub fn recv(&self, fd: Fd, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut k = self.kernel.borrow_mut();
        k.count_call("recv", fd);
        let personality = k.personality;
        let Some(file) = k.files.get_mut(&fd) else {
            return Err(Errno::EBADF);
        };
        let File::Socket(sock) = file else {
            return Err(Errno::ENOTSOCK);
        };
        Self::recv_socket(sock, fd, personality, buf, false)
    }

    /// What `recv` does once it has the socket: `splice` from a socket reads
    /// through it too (`one_segment`: from the oldest segment only), so
    /// both answer alike and the same faults apply.
    fn recv_socket(
        sock: &mut SockFile,
        fd: Fd,
        personality: Personality,
        buf: &mut [u8],
        one_segment: bool,
    ) -> Result<usize, Errno> {
        Self::settle(sock, fd);
        // Bytes that arrived before a reset are read before its error.
        let data_first = matches!(&sock.state, SockState::Connected(s) if s.readable_bytes() > 0)
            && !sock.rd_shut;
        if !data_first {
            if let Some(errno) = sock.pending_error.take() {
                return Err(errno);
            }
        }
        let fanout = sock.fanout.clone();
        match &mut sock.state {
            // Linux's tcp_recvmsg: a socket that never connected is
            // TCP_CLOSE without shutdown bits (ENOTCONN); a refused one went
            // through tcp_done, whose SHUTDOWN_MASK is checked first: end of
            // stream, as its poll (IN|RDHUP) says.
            SockState::Fresh => Err(Errno::ENOTCONN),
            SockState::Failed => Ok(0),
            SockState::Connecting { .. } => {
                cover(coverage::SYS_RECV_DURING_CONNECT);
                if personality == Personality::Illumos {
                    cover(coverage::ERRNO_ENOTCONN_RECV);
                    tracing::debug!(target: "faultline::sys", fd, "recv during connect: ENOTCONN");
                    Err(Errno::ENOTCONN)
                } else {
                    Err(Errno::EAGAIN)
                }
            }
            SockState::Connected(socket) => {
                if sock.rd_shut || (sock.reset_seen && !data_first) {
                    return Ok(0);
                }
                let waker = Waker::from(fanout);
                let mut cx = Context::from_waker(&waker);
                let received = if one_segment {
                    socket.poll_recv_segment(&mut cx, buf)
                } else {
                    socket.poll_recv(&mut cx, buf)
                };
                match received {
                    Poll::Ready(Ok(n)) => Ok(n),
                    Poll::Ready(Err(e)) => {
                        sock.reset_seen = true;
                        let errno = Errno::from_io(&e);
                        tracing::debug!(target: "faultline::sys", fd, errno = %errno, "recv error");
                        Err(errno)
                    }
                    Poll::Pending => Err(Errno::EAGAIN),
                }
            }
        }
    }

    /// Sends `buf`: the bytes accepted (maybe fewer: a short write) or an errno.
    pub fn send(&self, fd: Fd, buf: &[u8]) -> Result<usize, Errno> {
        self.sendv(fd, &[IoSlice::new(buf)])
    }

    /// Scatter/gather send.
    pub fn sendv(&self, fd: Fd, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
        let mut k = self.kernel.borrow_mut();
        k.count_call("send", fd);
        let personality = k.personality;
        let Some(file) = k.files.get_mut(&fd) else {
            return Err(Errno::EBADF);
        };
        let File::Socket(sock) = file else {
            return Err(Errno::ENOTSOCK);
        };
        Self::send_socket(sock, fd, personality, bufs)
    }

    /// What `sendv` does once it has the socket: `splice` into a socket
    /// writes through it too (short writes included).
    fn send_socket(
        sock: &mut SockFile,
        fd: Fd,
        personality: Personality,
        bufs: &[IoSlice<'_>],
    ) -> Result<usize, Errno> {
        Self::settle(sock, fd);
        if let Some(errno) = sock.pending_error.take() {
            return Err(errno);
        }
        let fanout = sock.fanout.clone();
        match &mut sock.state {
            // Linux's tcp_sendmsg waits for the connection in
            // sk_stream_wait_connect, which answers EPIPE for any state but
            // SYN_SENT and SYN_RECV once the socket's error has been read.
            SockState::Fresh | SockState::Failed => Err(Errno::EPIPE),
            SockState::Connecting { .. } => {
                cover(coverage::SYS_SEND_DURING_CONNECT);
                if personality == Personality::Openbsd {
                    cover(coverage::ERRNO_ENOTCONN_SEND);
                    tracing::debug!(target: "faultline::sys", fd, "send during connect: ENOTCONN");
                    Err(Errno::ENOTCONN)
                } else {
                    Err(Errno::EAGAIN)
                }
            }
            SockState::Connected(socket) => {
                if sock.wr_shut || sock.reset_seen {
                    return Err(Errno::EPIPE);
                }
                let waker = Waker::from(fanout);
                let mut cx = Context::from_waker(&waker);
                match socket.poll_send(&mut cx, bufs) {
                    Poll::Ready(Ok(n)) => Ok(n),
                    Poll::Ready(Err(e)) => Err(Errno::from_io(&e)),
                    Poll::Pending => Err(Errno::EAGAIN),
                }
            }
        }
    }

    /// A new pipe: `(read end, write end)`, both non-blocking, numbered
    /// lowest-free-first (`EMFILE` unless two fds are free). It holds the
    /// host's `[[pipe]]` `capacity_bytes` (65536, Linux's 16 pages, by
    /// default).
    pub fn pipe(&self) -> Result<(Fd, Fd), Errno> {
        let mut k = self.kernel.borrow_mut();
        if k.files.len() + 2 > k.max_fds {
            return Err(Errno::EMFILE);
        }
        let capacity_bytes = k.pipe_capacity_bytes;
        assert!(
            capacity_bytes >= PAGE_BYTES && capacity_bytes % PAGE_BYTES == 0,
            "a pipe holds whole pages"
        );
        let buffer = Rc::new(RefCell::new(PipeBuffer {
            bytes: VecDeque::new(),
            buffers: VecDeque::new(),
            max_buffers: capacity_bytes / PAGE_BYTES,
            reader_open: true,
            writer_open: true,
            fanout: Arc::default(),
        }));
        let end = |side| {
            File::Pipe(PipeEnd {
                buffer: buffer.clone(),
                side,
            })
        };
        let read = Self::allocate(&mut k, end(PipeSide::Read))?;
        let write = Self::allocate(&mut k, end(PipeSide::Write))?;
        tracing::debug!(target: "faultline::sys", read, write, capacity_bytes, "pipe");
        Ok((read, write))
    }

    /// Moves at most `max_bytes` between a socket and a pipe without copying
    /// them through the caller, as Linux's `splice(from, NULL, to, NULL,
    /// max_bytes, SPLICE_F_NONBLOCK | SPLICE_F_MOVE)`: from a socket into a
    /// pipe's write end, or from a pipe's read end into a socket. One call
    /// moves at most `min(max_bytes, readable, room)`.
    ///
    /// Answers, in the kernel's order: `Ok(0)` at once for `max_bytes == 0`;
    /// `EBADF` for an fd that is not open, a pipe's write end as `from` or its
    /// read end as `to`; `EINVAL` unless exactly one side is a pipe and the
    /// other a socket; `EBADF` under `linux-2.6.35`. Then the pipe decides
    /// first: into a pipe whose read end is closed, `EPIPE`; into a full one,
    /// `EAGAIN`; from an empty one, `Ok(0)` once its write end is closed (the
    /// end of the stream), `EAGAIN` before. The socket answers as `recv`
    /// (socket -> pipe: `Ok(0)` at its end of stream) or `send` (pipe ->
    /// socket: it may take fewer bytes, and only those leave the pipe) do.
    pub fn splice(&self, from: Fd, to: Fd, max_bytes: usize) -> Result<usize, Errno> {
        let mut k = self.kernel.borrow_mut();
        k.count_call("splice", from);
        if max_bytes == 0 {
            // Linux answers a zero length before it looks at the fds.
            return Ok(0);
        }
        let personality = k.personality;
        let pipe_end = |file: Option<&File>| -> Result<Option<PipeEnd>, Errno> {
            match file {
                None => Err(Errno::EBADF),
                Some(File::Pipe(end)) => Ok(Some(end.clone())),
                Some(_) => Ok(None),
            }
        };
        let from_pipe = pipe_end(k.files.get(&from))?;
        let to_pipe = pipe_end(k.files.get(&to))?;
        // Each fd must be open for its direction.
        if from_pipe.as_ref().is_some_and(|p| p.side != PipeSide::Read)
            || to_pipe.as_ref().is_some_and(|p| p.side != PipeSide::Write)
        {
            return Err(Errno::EBADF);
        }
        let (pipe, sock_fd, into_pipe) = match (from_pipe, to_pipe) {
            (None, Some(pipe)) => (pipe, from, true),
            (Some(pipe), None) => (pipe, to, false),
            // Two pipes (Linux would splice them; nothing here needs it)
            // or no pipe at all.
            _ => return Err(Errno::EINVAL),
        };
        let Some(File::Socket(sock)) = k.files.get_mut(&sock_fd) else {
            // A listener or a poller: nothing to splice.
            return Err(Errno::EINVAL);
        };
        if personality == Personality::Linux2635 {
            cover(coverage::ERRNO_EBADF_SPLICE);
            tracing::debug!(target: "faultline::sys", from, to, "splice: EBADF");
            return Err(Errno::EBADF);
        }
        let moved = if into_pipe {
            {
                let p = pipe.buffer.borrow();
                if !p.reader_open {
                    return Err(Errno::EPIPE);
                }
                if p.free_buffers() == 0 {
                    cover(coverage::PIPE_FULL);
                    return Err(Errno::EAGAIN);
                }
            }
            // Segment by segment, a buffer per segment (per page of a
            // longer one), while buffers are free (Linux's
            // tcp_splice_read -> skb_splice_bits -> splice_to_pipe). What
            // stops it after bytes moved (no more data, the end of the
            // stream, an error) is for the next call to answer.
            let mut moved = 0;
            let mut chunk = Vec::new();
            loop {
                let free = pipe.buffer.borrow().free_buffers();
                let want = (max_bytes - moved).min(free * PAGE_BYTES);
                if want == 0 {
                    break;
                }
                chunk.resize(want, 0);
                match Self::recv_socket(sock, sock_fd, personality, &mut chunk, true) {
                    Ok(0) => break,
                    Ok(n) => {
                        pipe.buffer.borrow_mut().push(&chunk[..n]);
                        moved += n;
                    }
                    Err(Errno::EAGAIN) if moved > 0 => break,
                    Err(errno) if moved > 0 => {
                        // Reported by the next call, as Linux leaves
                        // `sk_err` for it once something was spliced.
                        sock.pending_error = Some(errno);
                        break;
                    }
                    Err(errno) => return Err(errno),
                }
            }
            if moved == 0 {
                return Ok(0);
            }
            moved
        } else {
            let n = {
                let p = pipe.buffer.borrow();
                if p.bytes.is_empty() {
                    return if p.writer_open {
                        Err(Errno::EAGAIN)
                    } else {
                        Ok(0)
                    };
                }
                let want = max_bytes.min(p.bytes.len());
                let (head, tail) = p.bytes.as_slices();
                let head = &head[..want.min(head.len())];
                let tail = &tail[..want - head.len()];
                let bufs = [IoSlice::new(head), IoSlice::new(tail)];
                let bufs = if tail.is_empty() {
                    &bufs[..1]
                } else {
                    &bufs[..]
                };
                Self::send_socket(sock, sock_fd, personality, bufs)?
            };
            pipe.buffer.borrow_mut().pop(n);
            n
        };
        let fanout = pipe.buffer.borrow().fanout.clone();
        drop(k);
        fanout.wake_by_ref();
        tracing::debug!(target: "faultline::sys", from, to, bytes = moved, "splice");
        Ok(moved)
    }

    /// Reads and clears the socket's pending error (`getsockopt(SO_ERROR)`).
    pub fn take_error(&self, fd: Fd) -> Result<Option<Errno>, Errno> {
        let mut k = self.kernel.borrow_mut();
        match k.files.get_mut(&fd) {
            Some(File::Socket(sock)) => {
                Self::settle(sock, fd);
                Ok(sock.pending_error.take())
            }
            Some(_) => Err(Errno::ENOTSOCK),
            None => Err(Errno::EBADF),
        }
    }

    /// Whether the socket's connect has completed successfully.
    pub fn is_connected(&self, fd: Fd) -> bool {
        let mut k = self.kernel.borrow_mut();
        match k.files.get_mut(&fd) {
            Some(File::Socket(sock)) => {
                Self::settle(sock, fd);
                matches!(sock.state, SockState::Connected(_))
            }
            _ => false,
        }
    }

    /// Shuts down one or both directions of a connected socket (`ENOTCONN` when
    /// it is not connected).
    pub fn shutdown(&self, fd: Fd, how: Shutdown) -> Result<(), Errno> {
        let mut k = self.kernel.borrow_mut();
        let Some(File::Socket(sock)) = k.files.get_mut(&fd) else {
            return Err(Errno::EBADF);
        };
        Self::settle(sock, fd);
        let SockState::Connected(socket) = &mut sock.state else {
            return Err(Errno::ENOTCONN);
        };
        if matches!(how, Shutdown::Write | Shutdown::Both) && !sock.wr_shut {
            sock.wr_shut = true;
            let waker = Waker::from(sock.fanout.clone());
            let _ = socket.poll_shutdown_write(&mut Context::from_waker(&waker));
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            sock.rd_shut = true;
        }
        Ok(())
    }

    /// Closes the fd; the number is free again at once. Like Linux, a
    /// closed fd leaves every epoll set it was in.
    pub fn close(&self, fd: Fd) -> Result<(), Errno> {
        let mut k = self.kernel.borrow_mut();
        let file = k.files.remove(&fd).ok_or(Errno::EBADF)?;
        for other in k.files.values_mut() {
            if let File::Epoll(ep) = other {
                ep.interests.remove(&fd);
            }
        }
        drop(k);
        match file {
            File::Socket(sock) => {
                if let SockState::Connecting { task, .. } = &sock.state {
                    task.abort();
                }
                sock.fanout.wake_by_ref();
            }
            File::Listener(l) => {
                l.task.abort();
                l.fanout.wake_by_ref();
            }
            File::Epoll(_) => {}
            File::Pipe(end) => {
                // The other end sees it: a reader the end of the stream
                // (HUP), a writer EPIPE (ERR).
                let fanout = {
                    let mut p = end.buffer.borrow_mut();
                    match end.side {
                        PipeSide::Read => p.reader_open = false,
                        PipeSide::Write => p.writer_open = false,
                    }
                    p.fanout.clone()
                };
                fanout.wake_by_ref();
            }
        }
        tracing::debug!(target: "faultline::sys", fd, "close");
        Ok(())
    }

    /// The local address of a connected socket or of a listener.
    pub fn local_addr(&self, fd: Fd) -> Result<SocketAddr, Errno> {
        let k = self.kernel.borrow();
        match k.files.get(&fd) {
            Some(File::Socket(SockFile {
                state: SockState::Connected(s),
                ..
            })) => Ok(s.local_addr()),
            Some(File::Listener(l)) => Ok(l.local),
            Some(_) => Err(Errno::ENOTCONN),
            None => Err(Errno::EBADF),
        }
    }

    /// The peer's address of a connected socket.
    pub fn peer_addr(&self, fd: Fd) -> Result<SocketAddr, Errno> {
        let k = self.kernel.borrow();
        match k.files.get(&fd) {
            Some(File::Socket(SockFile {
                state: SockState::Connected(s),
                ..
            })) => Ok(s.peer_addr()),
            Some(_) => Err(Errno::ENOTCONN),
            None => Err(Errno::EBADF),
        }
    }

    /// The harness connection id of a connected socket (for traces).
    pub fn conn_id(&self, fd: Fd) -> Option<u64> {
        let k = self.kernel.borrow();
        match k.files.get(&fd) {
            Some(File::Socket(SockFile {
                state: SockState::Connected(s),
                ..
            })) => Some(s.conn_id()),
            _ => None,
        }
    }

    // -----------------------------------------------------------------
    // Pollers.
    // -----------------------------------------------------------------

    /// A new poller with an empty interest list.
    pub fn epoll_create(&self) -> Result<Fd, Errno> {
        let mut k = self.kernel.borrow_mut();
        Self::allocate(&mut k, File::Epoll(EpollFile::default()))
    }

    /// Adds, changes or removes `fd`'s interest in `epfd`. `edge` asks for
    /// edge-triggered reports (a bit is reported when it becomes ready).
    pub fn epoll_ctl(
        &self,
        epfd: Fd,
        op: EpollOp,
        fd: Fd,
        events: Events,
        data: u64,
        edge: bool,
    ) -> Result<(), Errno> {
        let mut k = self.kernel.borrow_mut();
        if !k.files.contains_key(&fd) {
            return Err(Errno::EBADF);
        }
        let Some(File::Epoll(ep)) = k.files.get_mut(&epfd) else {
            return Err(Errno::EINVAL);
        };
        match op {
            EpollOp::Add => {
                if ep.interests.contains_key(&fd) {
                    return Err(Errno::Other(17)); // EEXIST
                }
                ep.interests.insert(
                    fd,
                    Interest {
                        events,
                        data,
                        edge,
                        reported: Events::NONE,
                    },
                );
            }
            EpollOp::Mod => {
                let Some(i) = ep.interests.get_mut(&fd) else {
                    return Err(Errno::Other(2));
                }; // ENOENT
                *i = Interest {
                    events,
                    data,
                    edge,
                    reported: Events::NONE,
                };
            }
            EpollOp::Del => {
                if ep.interests.remove(&fd).is_none() {
                    return Err(Errno::Other(2)); // ENOENT
                }
            }
        }
        Ok(())
    }

    /// Whether `fd` is in `epfd`'s interest list.
    pub fn epoll_has(&self, epfd: Fd, fd: Fd) -> bool {
        matches!(self.kernel.borrow().files.get(&epfd), Some(File::Epoll(ep)) if ep.interests.contains_key(&fd))
    }

    /// What `fd` is ready for now; registers `waker` to hear of changes.
    fn readiness(file: &mut File, fd: Fd, waker: Option<&Waker>) -> Events {
        match file {
            File::Epoll(_) => Events::NONE,
            File::Pipe(end) => {
                let p = end.buffer.borrow();
                if let Some(w) = waker {
                    p.fanout.add(w);
                }
                // As Linux's pipe_poll: the read end is readable while bytes
                // are held and hung up once the writer is gone; the write end
                // is writable while there is room and in error once the
                // reader is gone.
                let mut ready = Events::NONE;
                match end.side {
                    PipeSide::Read => {
                        if !p.bytes.is_empty() {
                            ready |= Events::IN;
                        }
                        if !p.writer_open {
                            ready |= Events::HUP;
                        }
                    }
                    PipeSide::Write => {
                        if p.free_buffers() > 0 {
                            ready |= Events::OUT;
                        }
                        if !p.reader_open {
                            ready |= Events::ERR;
                        }
                    }
                }
                ready
            }
            File::Listener(l) => {
                if let Some(w) = waker {
                    l.fanout.add(w);
                }
                if l.backlog.borrow().is_empty() {
                    Events::NONE
                } else {
                    Events::IN
                }
            }
            File::Socket(sock) => {
                Self::settle(sock, fd);
                if let Some(w) = waker {
                    sock.fanout.add(w);
                }
                let fan = Waker::from(sock.fanout.clone());
                let mut cx = Context::from_waker(&fan);
                let mut ready = Events::NONE;
                match &mut sock.state {
                    // An unconnected socket reports OUT|HUP, as Linux does.
                    SockState::Fresh => ready = Events::OUT | Events::HUP,
                    SockState::Connecting { .. } => {}
                    // A refused connect, as Linux's tcp_reset -> tcp_done:
                    // the socket is closed both ways (TCP_CLOSE,
                    // SHUTDOWN_MASK), so tcp_poll reports HUP, IN|RDHUP
                    // (RCV_SHUTDOWN) and OUT (SEND_SHUTDOWN outside
                    // SYN_SENT), ERR while the error is unread (added
                    // below). The poller filters the directions by interest.
                    SockState::Failed => {
                        ready = Events::IN | Events::OUT | Events::HUP | Events::RDHUP;
                    }
                    SockState::Connected(socket) => {
                        if socket.poll_recv_ready(&mut cx).is_ready() {
                            if socket.readable_bytes() > 0 {
                                ready |= Events::IN;
                            }
                            // RDHUP as soon as the FIN is queued, bytes
                            // before it maybe still unread, as on Linux.
                            if socket.fin_received() {
                                if !socket.at_eof() {
                                    cover(coverage::SYS_RDHUP_BEHIND_DATA);
                                }
                                ready |= Events::IN | Events::RDHUP;
                            }
                            if socket.reset_error().is_some() && !sock.reset_seen {
                                // A reset: the error is pending until someone
                                // reads it. As on Linux, bytes that arrived
                                // before the reset stay readable (recv returns
                                // them first) and the poll reports them
                                // together with ERR|HUP.
                                sock.reset_seen = true;
                                sock.pending_error = Some(Errno::ECONNRESET);
                                cover("sys:reset");
                                if socket.readable_bytes() > 0 {
                                    cover("sys:reset-behind-data");
                                }
                            }
                        }
                        if sock.reset_seen {
                            // tcp_done again: closed both ways, OUT included.
                            ready |= Events::IN | Events::OUT | Events::HUP | Events::RDHUP;
                            if sock.pending_error.is_some() {
                                ready |= Events::ERR;
                            }
                        } else if !sock.wr_shut && socket.poll_send_ready(&mut cx).is_ready() {
                            ready |= Events::OUT;
                        }
                        if sock.wr_shut && (socket.at_eof() || sock.rd_shut) {
                            ready |= Events::HUP;
                        }
                    }
                }
                if sock.pending_error.is_some() {
                    ready |= Events::ERR;
                }
                ready
            }
        }
    }

    /// What `fd` is ready for now, without waiting (a `poll` with timeout 0).
    pub fn ready_now(&self, fd: Fd) -> Result<Events, Errno> {
        let mut k = self.kernel.borrow_mut();
        let file = k.files.get_mut(&fd).ok_or(Errno::EBADF)?;
        Ok(Self::readiness(file, fd, None))
    }

    fn collect(
        &self,
        epfd: Fd,
        max_events: usize,
        waker: Option<&Waker>,
    ) -> Result<Vec<EpollEvent>, Errno> {
        let mut k = self.kernel.borrow_mut();
        let interests: Vec<(Fd, Interest)> = match k.files.get(&epfd) {
            Some(File::Epoll(ep)) => ep.interests.iter().map(|(fd, i)| (*fd, *i)).collect(),
            _ => return Err(Errno::EINVAL),
        };
        let mut out = Vec::new();
        let mut reported = Vec::new();
        for (fd, interest) in interests {
            let Some(file) = k.files.get_mut(&fd) else {
                continue;
            };
            // ERR and HUP are always reported, as epoll does.
            let ready =
                Self::readiness(file, fd, waker) & (interest.events | Events::ERR | Events::HUP);
            let report = if interest.edge {
                let still = interest.reported & ready;
                reported.push((fd, still | ready));
                ready & !still
            } else {
                ready
            };
            if !report.is_empty() && out.len() < max_events {
                out.push(EpollEvent {
                    fd,
                    events: report,
                    data: interest.data,
                });
            }
        }
        if let Some(File::Epoll(ep)) = k.files.get_mut(&epfd) {
            for (fd, r) in reported {
                if let Some(i) = ep.interests.get_mut(&fd) {
                    i.reported = r;
                }
            }
        }
        Ok(out)
    }

    /// Waits until an fd of `epfd` is ready (at most `max_events` reports)
    /// or `timeout` passes (`None`: forever; zero: just look).
    pub async fn epoll_wait(
        &self,
        epfd: Fd,
        max_events: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<EpollEvent>, Errno> {
        assert!(max_events > 0, "epoll_wait needs room for one event");
        // A poll loop that never waits (an fd reported again and again)
        // makes no other syscall: count the polls too.
        let spinning = {
            let mut k = self.kernel.borrow_mut();
            k.count_call("epoll_wait", epfd);
            let now = ctx::now();
            if k.polls.0 != now {
                k.polls = (now, 0);
            }
            k.polls.1 += 1;
            let spinning = k.polls.1 > POLLS_PER_INSTANT;
            k.note_spin(spinning, now, epfd);
            spinning
        };
        if spinning && ctx::in_sim() {
            // Polling costs CPU time: a thread spinning on ready fds lets
            // the clock move, as a real one would while another thread
            // (asleep on a timer here) gets to finish what it was doing.
            tokio::time::sleep(POLL_CPU_TIME).await;
        }
        let mut sleep: Option<Pin<Box<tokio::time::Sleep>>> =
            timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        poll_fn(|cx| {
            let events = self.collect(epfd, max_events, Some(cx.waker()))?;
            if !events.is_empty() || timeout == Some(Duration::ZERO) {
                return Poll::Ready(Ok(events));
            }
            if let Some(s) = sleep.as_mut() {
                if s.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(events));
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        for file in self.files.values() {
            match file {
                File::Socket(SockFile {
                    state: SockState::Connecting { task, .. },
                    ..
                }) => task.abort(),
                File::Listener(l) => l.task.abort(),
                _ => {}
            }
        }
    }
}

/// The syscall API, so that code written against it runs on the simulated
/// kernel ([`Sys`]) and on the real one (an OS backend) alike.
///
/// # Preemption points
///
/// A real thread can lose the CPU on its way into the kernel: between
/// reading a value and calling `epoll_ctl` with it, between clearing a
/// field and `close()`, another thread may run. So on [`Sys`] every call
/// that does I/O or changes the fd table is a preemption point (see
/// `schedule`) named `sys.OP`, awaited before the call itself,
/// which stays indivisible: `sys.socket`, `sys.connect`, `sys.accept`,
/// `sys.recv`, `sys.send` (`send` and `sendv`), `sys.close`, `sys.pipe`,
/// `sys.splice`, `sys.epoll_create`, `sys.epoll_ctl`, and `sys.poll`
/// before `epoll_wait` waits. [`Syscalls::listen`] is `async` (it waits for
/// the network) but not a point: a proxy listens once, before its threads
/// run. [`Syscalls::take_error`], [`Syscalls::shutdown`] and
/// [`Syscalls::resolve`] are plain calls, not points. An OS backend has no
/// points: the real kernel preempts its threads.
///
/// Code that awaits a call must not hold a borrow of state other threads
/// use (a `RefCell`) across it: they may run at the point.
#[allow(async_fn_in_trait)]
pub trait Syscalls: Clone {
    /// A new, unconnected, non-blocking TCP socket.
    async fn socket(&self) -> Result<Fd, Errno>;
    /// Starts a non-blocking connect: `Err(EINPROGRESS)` when under way.
    async fn connect(&self, fd: Fd, addr: SocketAddr) -> Result<(), Errno>;
    /// Listens on `port` of every address of the host.
    async fn listen(&self, port: u16) -> Result<Fd, Errno>;
    /// Takes a pending connection and its peer's address, or `EAGAIN` when
    /// there is none.
    async fn accept(&self, fd: Fd) -> Result<(Fd, SocketAddr), Errno>;
    /// Receives into `buf`: a byte count (0 at the end of the stream) or an
    /// errno (`EAGAIN`: nothing yet).
    async fn recv(&self, fd: Fd, buf: &mut [u8]) -> Result<usize, Errno>;
    /// Scatter/gather send: the bytes accepted (maybe fewer: a short write) or
    /// an errno (`EAGAIN`: no room).
    async fn sendv(&self, fd: Fd, bufs: &[IoSlice<'_>]) -> Result<usize, Errno>;
    /// Sends `buf`: the bytes accepted (maybe fewer: a short write) or an
    /// errno.
    async fn send(&self, fd: Fd, buf: &[u8]) -> Result<usize, Errno> {
        self.sendv(fd, &[IoSlice::new(buf)]).await
    }
    /// `getsockopt(SO_ERROR)`: the pending error, cleared.
    fn take_error(&self, fd: Fd) -> Result<Option<Errno>, Errno>;
    /// Shuts down one or both directions of a connection.
    fn shutdown(&self, fd: Fd, how: Shutdown) -> Result<(), Errno>;
    /// Closes the fd; the number may be handed out again at once.
    async fn close(&self, fd: Fd) -> Result<(), Errno>;
    /// A new non-blocking pipe: `(read end, write end)`.
    async fn pipe(&self) -> Result<(Fd, Fd), Errno>;
    /// Moves at most `max_bytes` from a socket into a pipe's write end, or
    /// from a pipe's read end into a socket, without blocking (`splice` with
    /// `SPLICE_F_NONBLOCK | SPLICE_F_MOVE`): the bytes moved, 0 at the end of
    /// the stream, or an errno (`EAGAIN`: nothing can move now).
    async fn splice(&self, from: Fd, to: Fd, max_bytes: usize) -> Result<usize, Errno>;
    /// A new poller (`epoll_create`).
    async fn epoll_create(&self) -> Result<Fd, Errno>;
    /// Adds, changes or removes `fd`'s interest in `epfd`; `data` comes back
    /// with each report, and `edge` asks for edge-triggered reports.
    async fn epoll_ctl(
        &self,
        epfd: Fd,
        op: EpollOp,
        fd: Fd,
        events: Events,
        data: u64,
        edge: bool,
    ) -> Result<(), Errno>;
    /// Waits until an fd of `epfd` is ready (at most `max_events` reports) or
    /// `timeout` passes (`None`: forever; zero: just look).
    async fn epoll_wait(
        &self,
        epfd: Fd,
        max_events: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<EpollEvent>, Errno>;
    /// The address of `host:port` (a simulated host name, or a real one).
    fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, Errno>;
}

/// Each call that is a preemption point awaits `sys.OP` first (see the
/// trait's docs), then makes the (indivisible) inherent call.
impl Syscalls for Sys {
    async fn socket(&self) -> Result<Fd, Errno> {
        preempt("sys", "socket").await;
        Sys::socket(self)
    }
    async fn connect(&self, fd: Fd, addr: SocketAddr) -> Result<(), Errno> {
        preempt("sys", "connect").await;
        Sys::connect(self, fd, addr)
    }
    async fn listen(&self, port: u16) -> Result<Fd, Errno> {
        Sys::listen(self, port).await
    }
    async fn accept(&self, fd: Fd) -> Result<(Fd, SocketAddr), Errno> {
        preempt("sys", "accept").await;
        Sys::accept(self, fd)
    }
    async fn recv(&self, fd: Fd, buf: &mut [u8]) -> Result<usize, Errno> {
        preempt("sys", "recv").await;
        Sys::recv(self, fd, buf)
    }
    async fn sendv(&self, fd: Fd, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
        preempt("sys", "send").await;
        Sys::sendv(self, fd, bufs)
    }
    async fn send(&self, fd: Fd, buf: &[u8]) -> Result<usize, Errno> {
        preempt("sys", "send").await;
        Sys::send(self, fd, buf)
    }
    fn take_error(&self, fd: Fd) -> Result<Option<Errno>, Errno> {
        Sys::take_error(self, fd)
    }
    fn shutdown(&self, fd: Fd, how: Shutdown) -> Result<(), Errno> {
        Sys::shutdown(self, fd, how)
    }
    async fn close(&self, fd: Fd) -> Result<(), Errno> {
        preempt("sys", "close").await;
        Sys::close(self, fd)
    }
    async fn pipe(&self) -> Result<(Fd, Fd), Errno> {
        preempt("sys", "pipe").await;
        Sys::pipe(self)
    }
    async fn splice(&self, from: Fd, to: Fd, max_bytes: usize) -> Result<usize, Errno> {
        preempt("sys", "splice").await;
        Sys::splice(self, from, to, max_bytes)
    }
    async fn epoll_create(&self) -> Result<Fd, Errno> {
        preempt("sys", "epoll_create").await;
        Sys::epoll_create(self)
    }
    async fn epoll_ctl(
        &self,
        epfd: Fd,
        op: EpollOp,
        fd: Fd,
        events: Events,
        data: u64,
        edge: bool,
    ) -> Result<(), Errno> {
        preempt("sys", "epoll_ctl").await;
        Sys::epoll_ctl(self, epfd, op, fd, events, data, edge)
    }
    async fn epoll_wait(
        &self,
        epfd: Fd,
        max_events: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<EpollEvent>, Errno> {
        preempt("sys", "poll").await;
        Sys::epoll_wait(self, epfd, max_events, timeout).await
    }
    fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, Errno> {
        if !ctx::in_sim() {
            return Err(Errno::EINVAL);
        }
        Ok(SocketAddr::new(turmoil::lookup(host), port))
    }
}
