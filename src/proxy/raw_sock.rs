//! The raw socket transport: moves bytes between a connection's socket and
//! its buffers with one `recv`/`send` per call (two at most when a
//! receive fills exactly what was asked), and turns what the syscalls and
//! the last poll report say into connection flags.
//!
//! Both functions try the syscall only when the fd is *ready* in that
//! direction (new fds are: the first I/O is speculative, even while a
//! connect is still in progress) and clear readiness on EAGAIN, so that
//! the poller is asked. After a short receive the poll flags already tell
//! whether the peer closed (`HUP`): the end of stream is taken from them
//! without another syscall.

use faultline_harness::sys::Syscalls;
use faultline_harness::{sys::Errno, sys::Events, sys::Fd};

use super::buffer::Buffer;
use super::conn::{
    CO_FL_CONNECTED, CO_FL_SOCK_RD_SH, CO_FL_SOCK_WR_SH, CO_FL_WAIT_L4_CONN, CO_FL_WAIT_ROOM,
    Connection,
};
use super::fd::{FdTable, READY_R, READY_W, poll_events};
use super::pipe::{MAX_SPLICE_AT_ONCE_BYTES, Pipe, RECV_ENOUGH_BYTES, SPLICE_FULL_HINT_BYTES};
use crate::bugs::{
    Bugs, HAP_CONNERR, HAP_ENOTCONN, HAP_ERRHUP, HAP_RCVBUF, HAP_SPLICE_EBADF, HAP_SPLICE_OVERRUN,
    HAP_SPLICE_RDHUP, HAP_SPLICE_SPIN,
};

/// Linux's ENOSYS (38, `include/uapi/asm-generic/errno.h`): a kernel
/// without `splice()`.
const ENOSYS: Errno = Errno::Other(38);

/// The read side reached the end of the stream (HAProxy's `read0` and
/// `out_read0` labels).
fn read0(conn: &mut Connection) {
    conn.flags |= CO_FL_SOCK_RD_SH;
    conn.flags &= !CO_FL_WAIT_L4_CONN;
}

/// `raw_sock_to_buf`'s `read0` label, with `ev` the last poll report.
fn buf_read0(conn: &mut Connection, ev: Events, bugs: &Bugs) {
    read0(conn);
    // HAP-ERRHUP (HAProxy commit debdc4b65, in `raw_sock_to_buf` only):
    // the end of stream may have been taken from HUP alone, and a reset
    // queues ERR with HUP: without this check the error is never noticed,
    // the connection is not marked failed and its polling is never
    // stopped.
    if !bugs.is_buggy(HAP_ERRHUP) && ev.contains(Events::ERR) {
        conn.fail(None);
    }
}

/// The test both receive paths (HAProxy's `raw_sock_to_buf` and
/// `raw_sock_to_pipe`) make of the last poll report before reading:
/// answers `true` when it ended the stream or failed the connection and
/// nothing is to be read. `at_read0` is the path's end-of-stream label.
fn nothing_to_read(
    conn: &mut Connection,
    ev: Events,
    bugs: &Bugs,
    at_read0: impl FnOnce(&mut Connection),
) -> bool {
    if ev.contains(Events::IN) {
        return false;
    }
    // A hangup alone is the end of the stream...
    let hangup = if bugs.is_buggy(HAP_CONNERR) {
        // HAP-CONNERR: a failed connect reported as OUT|ERR|HUP passed
        // for an established connection that was closed.
        ev.contains(Events::HUP)
    } else {
        // HAProxy commit c0e98868f (in both receive paths): not when ERR
        // came with it.
        ev & (Events::ERR | Events::HUP) == Events::HUP
    };
    if hangup {
        at_read0(conn);
        return true;
    }
    // ...and an error before the connection was established is its failure.
    if ev.contains(Events::ERR) && conn.has(CO_FL_WAIT_L4_CONN) {
        conn.fail(None);
        return true;
    }
    false
}

/// What a transport function works on, lent for a moment: a connection's
/// layers and flags, and where its bytes go (a buffer) or nothing in
/// particular. Every syscall is a preemption point where other threads may
/// run, so a connection kept in state other threads borrow (the proxy's
/// `RefCell`) is never held across one: the functions below borrow it
/// between their syscalls only, and make each syscall with their own
/// copies (the bytes to send, a landing area for the bytes received).
pub trait Lend<T> {
    /// Runs `f` on the connection and its part.
    fn with<R>(&mut self, f: impl FnOnce(&mut Connection, &mut T) -> R) -> R;
}

/// Owned borrows lend themselves.
impl<T> Lend<T> for (&mut Connection, &mut T) {
    fn with<R>(&mut self, f: impl FnOnce(&mut Connection, &mut T) -> R) -> R {
        f(self.0, self.1)
    }
}

/// What to do after a syscall's answer was looked at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Make the call again.
    Again,
    /// Done.
    Stop,
    /// `rcv_pipe`: this kernel cannot splice from this socket.
    Unsupported,
}

/// The fd of a connection whose socket may be read now, with what its
/// last poll reported (`fd_recv_ready` and the poll flags of `state`).
async fn recv_ready<T>(table: &FdTable, lent: &mut impl Lend<T>) -> Option<(Fd, Events)> {
    let fd =
        lent.with(|conn, _| (conn.ctrl_ready() && !conn.any(CO_FL_SOCK_RD_SH)).then_some(conn.fd))?;
    let state = table.state(fd).await;
    (state & READY_R != 0).then(|| (fd, poll_events(state)))
}

/// The fd of a connection whose socket may be written now
/// (`fd_send_ready`).
async fn send_ready<T>(table: &FdTable, lent: &mut impl Lend<T>) -> Option<Fd> {
    let fd =
        lent.with(|conn, _| (conn.ctrl_ready() && !conn.any(CO_FL_SOCK_WR_SH)).then_some(conn.fd))?;
    (table.state(fd).await & READY_W != 0).then_some(fd)
}

/// Receives up to `count` bytes into the lent buffer. Returns the bytes
/// received; the connection's flags say whether the stream ended or failed.
pub async fn rcv_buf<S: Syscalls>(
    sys: &S,
    table: &FdTable,
    lent: &mut impl Lend<Buffer>,
    count: usize,
    bugs: &Bugs,
) -> usize {
    let Some((fd, ev)) = recv_ready(table, lent).await else {
        return 0;
    };
    let go = lent.with(|conn, buf| {
        if nothing_to_read(conn, ev, bugs, |c| buf_read0(c, ev, bugs)) {
            return false;
        }
        buf.compact();
        true
    });
    if !go {
        return 0;
    }
    let mut done = 0;
    let mut count = count;
    // Where recv() puts the bytes: the buffer is not borrowed across the
    // call; `fill_with` then takes them as if they had arrived in place.
    let mut landing = Vec::new();
    // Whether the loop ended on an empty socket: the fd is not ready.
    let mut drained = false;
    while count > 0 {
        let try_bytes = lent.with(|_, buf| {
            if bugs.is_buggy(HAP_RCVBUF) {
                // HAP-RCVBUF: the caller was trusted to ask for no more than
                // the free space.
                count
            } else {
                // Asked-for bytes are a maximum; the free space is the bound.
                count.min(buf.room())
            }
        });
        if try_bytes == 0 {
            break;
        }
        landing.resize(try_bytes, 0);
        let received = sys.recv(fd, &mut landing[..try_bytes]).await;
        let next = lent.with(|conn, buf| {
            let filled = buf.fill_with(try_bytes, |dst| {
                received.inspect(|&n| dst[..n].copy_from_slice(&landing[..n]))
            });
            match filled {
                Ok(0) => {
                    buf_read0(conn, ev, bugs);
                    Next::Stop
                }
                Ok(n) => {
                    done += n;
                    if n < try_bytes {
                        // A short read: the socket is drained. If the poller
                        // saw the peer close, this is the end of the stream,
                        // without another recv() to learn it (an error
                        // reported with the hangup is read0's to notice).
                        if ev.contains(Events::HUP) {
                            buf_read0(conn, ev, bugs);
                            return Next::Stop;
                        }
                        drained = true;
                        return Next::Stop;
                    }
                    count -= n;
                    Next::Again
                }
                Err(Errno::EAGAIN) => {
                    drained = true;
                    Next::Stop
                }
                Err(Errno::ENOTCONN) if !bugs.is_buggy(HAP_ENOTCONN) => {
                    // Some systems answer ENOTCONN while the connect is still
                    // in progress: nothing to read yet.
                    faultline_harness::probe("proxy:recv-enotconn-waits");
                    drained = true;
                    Next::Stop
                }
                // A signal came first: the call did nothing, make it again.
                Err(Errno::EINTR) => Next::Again,
                Err(errno) => {
                    // HAP-ENOTCONN (buggy variant): ENOTCONN during a connect
                    // lands here, as a fatal error.
                    conn.fail(Some(errno));
                    Next::Stop
                }
            }
        });
        if next == Next::Stop {
            break;
        }
    }
    if drained {
        table.cant_recv(fd).await;
    }
    if done > 0 {
        lent.with(|conn, _| {
            if conn.has(CO_FL_WAIT_L4_CONN) {
                conn.flags &= !CO_FL_WAIT_L4_CONN;
            }
        });
    }
    done
}

/// Sends as much of `data` as the socket takes. Returns the bytes sent.
/// (`data` is the caller's copy: the connection is lent between syscalls
/// only.)
pub async fn snd_buf<S: Syscalls, T>(
    sys: &S,
    table: &FdTable,
    lent: &mut impl Lend<T>,
    data: &[u8],
    bugs: &Bugs,
) -> usize {
    let Some(fd) = send_ready(table, lent).await else {
        return 0;
    };
    let mut done = 0;
    let mut full = false;
    while done < data.len() {
        let sent = sys.send(fd, &data[done..]).await;
        let next = lent.with(|conn, _| match sent {
            Ok(0) => {
                full = true;
                Next::Stop
            }
            Ok(n) => {
                done += n;
                conn.flags |= CO_FL_CONNECTED;
                if done < data.len() {
                    // The socket buffer is full: do not insist.
                    return Next::Stop;
                }
                Next::Again
            }
            Err(Errno::EAGAIN | Errno::EINPROGRESS) => {
                full = true;
                Next::Stop
            }
            Err(Errno::ENOTCONN) if !bugs.is_buggy(HAP_ENOTCONN) => {
                // Not connected yet on some systems: poll for write.
                faultline_harness::probe("proxy:send-enotconn-waits");
                full = true;
                Next::Stop
            }
            // A signal came first: the call did nothing, make it again.
            Err(Errno::EINTR) => Next::Again,
            Err(errno) => {
                // HAP-ENOTCONN (buggy variant): ENOTCONN during a connect
                // lands here, as a fatal error.
                conn.fail(Some(errno));
                Next::Stop
            }
        });
        if next == Next::Stop {
            break;
        }
    }
    if full {
        table.cant_send(fd).await;
    }
    if done > 0 {
        lent.with(|conn, _| {
            if conn.has(CO_FL_WAIT_L4_CONN) {
                conn.flags &= !CO_FL_WAIT_L4_CONN;
            }
        });
    }
    done
}

/// Moves up to `count` bytes from the socket into `pipe` with `splice()`
/// (HAProxy's `raw_sock_to_pipe`): the bytes never enter a buffer. Returns
/// the bytes moved, or `None` when this kernel cannot splice from this
/// socket (nothing was moved: the caller disables splicing on the
/// connection and receives into its buffer instead). `WAIT_ROOM` says the
/// pipe is full, or full enough for this pass.
pub async fn rcv_pipe<S: Syscalls, T>(
    sys: &S,
    table: &FdTable,
    lent: &mut impl Lend<T>,
    pipe: &mut Pipe,
    count: usize,
    bugs: &Bugs,
) -> Option<usize> {
    let Some((fd, ev)) = recv_ready(table, lent).await else {
        return Some(0);
    };
    if lent.with(|conn, _| nothing_to_read(conn, ev, bugs, read0)) {
        return Some(0);
    }
    let mut retval = 0;
    let mut drained = false;
    let mut count = count;
    while count > 0 {
        let ask = count.min(MAX_SPLICE_AT_ONCE_BYTES);
        let spliced = sys.splice(fd, pipe.prod, ask).await;
        let next = lent.with(|conn, _| match spliced {
            Ok(0) => {
                read0(conn);
                Next::Stop
            }
            Ok(n) => {
                assert!(n <= ask, "splice moved {n} bytes, asked for {ask}");
                retval += n;
                pipe.data_bytes += n;
                if bugs.is_buggy(HAP_SPLICE_RDHUP)
                    && ev & (Events::ERR | Events::HUP) == Events::HUP
                {
                    // HAP-SPLICE-RDHUP (HAProxy commit baf2a5, reverted by
                    // 4fc90efed): a HUP was taken as "this was the last
                    // segment". A splice may also stop short because the
                    // pipe is full: the rest of the input is lost.
                    read0(conn);
                    return Next::Stop;
                }
                if !bugs.is_buggy(HAP_SPLICE_OVERRUN) {
                    // HAProxy commit 4fc90efed: count what moved. Without
                    // it (HAP-SPLICE-OVERRUN), a second splice while the
                    // pipe is not full takes bytes past the scheduled
                    // amount: the next message's.
                    count -= n;
                }
                if pipe.data_bytes >= SPLICE_FULL_HINT_BYTES || n >= RECV_ENOUGH_BYTES {
                    // Enough for this pass: stop before being asked to poll.
                    if !bugs.is_buggy(HAP_SPLICE_SPIN) {
                        // HAProxy commit 61d39a0e2: the pipe is taken as
                        // full, so that recv() is not used in the middle
                        // of the transfer. (HAP-SPLICE-SPIN: the old code
                        // kept recv() out while the pipe held anything.)
                        conn.flags |= CO_FL_WAIT_ROOM;
                    }
                    return Next::Stop;
                }
                Next::Again
            }
            Err(Errno::EAGAIN) => {
                if pipe.data_bytes > 0 {
                    // The socket is empty or the pipe is full: which, the
                    // kernel does not say. Stop until the pipe is flushed.
                    conn.flags |= CO_FL_WAIT_ROOM;
                    return Next::Stop;
                }
                drained = true;
                Next::Stop
            }
            Err(errno)
                if errno == ENOSYS
                    || errno == Errno::EINVAL
                    // HAProxy commit 45b889396: some kernels fail splice()
                    // with EBADF on valid fds; it is taken as "not
                    // supported" too. (HAP-SPLICE-EBADF: the old code lands
                    // below and fails the connection.)
                    || (errno == Errno::EBADF && !bugs.is_buggy(HAP_SPLICE_EBADF)) =>
            {
                // Splicing is disabled on the connection, which goes on
                // with recv(). These errors come before any byte moves.
                assert_eq!(retval, 0, "splice answered {errno} after moving bytes");
                faultline_harness::probe("proxy:splice-not-supported");
                Next::Unsupported
            }
            // A signal came first: the call did nothing, make it again.
            Err(Errno::EINTR) => Next::Again,
            Err(errno) => {
                conn.fail(Some(errno));
                Next::Stop
            }
        });
        match next {
            Next::Again => {}
            Next::Stop => break,
            Next::Unsupported => return None,
        }
    }
    if drained {
        table.cant_recv(fd).await;
    }
    if retval > 0 {
        lent.with(|conn, _| {
            if conn.has(CO_FL_WAIT_L4_CONN) {
                conn.flags &= !CO_FL_WAIT_L4_CONN;
            }
        });
    }
    Some(retval)
}

/// Sends what `pipe` holds to the socket with `splice()` (HAProxy's
/// `raw_sock_from_pipe`). Returns the bytes sent.
pub async fn snd_pipe<S: Syscalls, T>(
    sys: &S,
    table: &FdTable,
    lent: &mut impl Lend<T>,
    pipe: &mut Pipe,
) -> usize {
    let Some(fd) = send_ready(table, lent).await else {
        return 0;
    };
    let mut done = 0;
    let mut full = false;
    while pipe.data_bytes > 0 {
        let spliced = sys.splice(pipe.cons, fd, pipe.data_bytes).await;
        let next = lent.with(|conn, _| match spliced {
            Ok(0) | Err(Errno::EAGAIN) => {
                full = true;
                Next::Stop
            }
            Ok(n) => {
                assert!(
                    n <= pipe.data_bytes,
                    "splice sent {n} bytes of a pipe holding {}",
                    pipe.data_bytes
                );
                done += n;
                pipe.data_bytes -= n;
                conn.flags |= CO_FL_CONNECTED;
                Next::Again
            }
            // A signal came first: the call did nothing, make it again.
            Err(Errno::EINTR) => Next::Again,
            Err(errno) => {
                conn.fail(Some(errno));
                Next::Stop
            }
        });
        if next == Next::Stop {
            break;
        }
    }
    if full {
        table.cant_send(fd).await;
    }
    done
}
