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

use faultline_harness::Syscalls;
use faultline_harness::{Errno, Events};

use super::buffer::Buffer;
use super::conn::{
    CO_FL_CONNECTED, CO_FL_SOCK_RD_SH, CO_FL_SOCK_WR_SH, CO_FL_WAIT_L4_CONN, CO_FL_WAIT_ROOM,
    Connection,
};
use super::fd::FdTable;
use super::pipe::{MAX_SPLICE_AT_ONCE_BYTES, Pipe, RECV_ENOUGH_BYTES, SPLICE_FULL_HINT_BYTES};
use crate::bugs::{
    Bugs, HAP_CONNERR, HAP_ENOTCONN, HAP_ERRHUP, HAP_RCVBUF, HAP_SPLICE_EBADF, HAP_SPLICE_OVERRUN,
    HAP_SPLICE_RDHUP, HAP_SPLICE_SPIN,
};

/// Linux's ENOSYS: a kernel without `splice()`.
const ENOSYS: Errno = Errno::Other(38);

/// The read side reached the end of the stream (HAProxy's `read0`
/// label), with `ev` the last poll report.
fn read0(conn: &mut Connection, ev: Events, bugs: &Bugs) {
    conn.flags |= CO_FL_SOCK_RD_SH;
    conn.flags &= !CO_FL_WAIT_L4_CONN;
    // HAP-ERRHUP (HAProxy commit debdc4b65): the end of stream may have
    // been taken from HUP alone, and a reset queues ERR with HUP: without
    // this check the error is never noticed, the connection is not marked
    // failed and its polling is never stopped. HAP-CONNERR's old code
    // predates this check (commit c0e98868f came two months earlier), so
    // its variant lacks it too.
    let checks_err = !bugs.is_buggy(HAP_ERRHUP) && !bugs.is_buggy(HAP_CONNERR);
    if checks_err && ev.contains(Events::ERR) {
        conn.fail(None);
    }
}

/// The test both receive paths (HAProxy's `raw_sock_to_buf` and
/// `raw_sock_to_pipe`) make of the last poll report before reading:
/// answers `true` when it ended the stream or failed the connection and
/// nothing is to be read.
fn nothing_to_read(conn: &mut Connection, ev: Events, bugs: &Bugs) -> bool {
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
        read0(conn, ev, bugs);
        return true;
    }
    // ...and an error before the connection was established is its failure.
    if ev.contains(Events::ERR) && conn.has(CO_FL_WAIT_L4_CONN) {
        conn.fail(None);
        return true;
    }
    false
}

/// Receives up to `count` bytes into `buf`. Returns the bytes received;
/// the connection's flags say whether the stream ended or failed.
pub fn rcv_buf<S: Syscalls>(
    sys: &S,
    table: &FdTable,
    conn: &mut Connection,
    buf: &mut Buffer,
    count: usize,
    bugs: &Bugs,
) -> usize {
    if !conn.ctrl_ready() || conn.any(CO_FL_SOCK_RD_SH) {
        return 0;
    }
    let fd = conn.fd;
    if !table.recv_ready(fd) {
        return 0;
    }
    let ev = table.ev(fd);
    if nothing_to_read(conn, ev, bugs) {
        return 0;
    }
    buf.compact();
    let mut done = 0;
    let mut count = count;
    while count > 0 {
        let try_bytes = if bugs.is_buggy(HAP_RCVBUF) {
            // HAP-RCVBUF: the caller was trusted to ask for no more than
            // the free space.
            count
        } else {
            // Asked-for bytes are a maximum; the free space is the bound.
            count.min(buf.room())
        };
        if try_bytes == 0 {
            break;
        }
        match buf.fill_with(try_bytes, |dst| sys.recv(fd, dst)) {
            Ok(0) => {
                read0(conn, ev, bugs);
                break;
            }
            Ok(n) => {
                done += n;
                if n < try_bytes {
                    // A short read: the socket is drained. If the poller
                    // saw the peer close, this is the end of the stream,
                    // without another recv() to learn it (an error
                    // reported with the hangup is read0's to notice).
                    if ev.contains(Events::HUP) {
                        read0(conn, ev, bugs);
                        break;
                    }
                    table.done_recv(fd);
                    break;
                }
                count -= n;
            }
            Err(Errno::EAGAIN) => {
                table.cant_recv(fd);
                break;
            }
            Err(Errno::ENOTCONN) if !bugs.is_buggy(HAP_ENOTCONN) => {
                // Some systems answer ENOTCONN while the connect is still
                // in progress: nothing to read yet.
                faultline_harness::probe("proxy:recv-enotconn-waits");
                table.cant_recv(fd);
                break;
            }
            // A signal came first: the call did nothing, make it again.
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                // HAP-ENOTCONN (buggy variant): ENOTCONN during a connect
                // lands here, as a fatal error.
                conn.fail(Some(errno));
                break;
            }
        }
    }
    if done > 0 && conn.has(CO_FL_WAIT_L4_CONN) {
        conn.flags &= !CO_FL_WAIT_L4_CONN;
    }
    done
}

/// Sends as much of `data` as the socket takes. Returns the bytes sent.
pub fn snd_buf<S: Syscalls>(
    sys: &S,
    table: &FdTable,
    conn: &mut Connection,
    data: &[u8],
    bugs: &Bugs,
) -> usize {
    if !conn.ctrl_ready() || conn.any(CO_FL_SOCK_WR_SH) {
        return 0;
    }
    let fd = conn.fd;
    if !table.send_ready(fd) {
        return 0;
    }
    let mut done = 0;
    while done < data.len() {
        match sys.send(fd, &data[done..]) {
            Ok(0) => {
                table.cant_send(fd);
                break;
            }
            Ok(n) => {
                done += n;
                conn.flags |= CO_FL_CONNECTED;
                if done < data.len() {
                    // The socket buffer is full: do not insist.
                    break;
                }
            }
            Err(Errno::EAGAIN | Errno::EINPROGRESS) => {
                table.cant_send(fd);
                break;
            }
            Err(Errno::ENOTCONN) if !bugs.is_buggy(HAP_ENOTCONN) => {
                // Not connected yet on some systems: poll for write.
                faultline_harness::probe("proxy:send-enotconn-waits");
                table.cant_send(fd);
                break;
            }
            // A signal came first: the call did nothing, make it again.
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                // HAP-ENOTCONN (buggy variant): ENOTCONN during a connect
                // lands here, as a fatal error.
                conn.fail(Some(errno));
                break;
            }
        }
    }
    if done > 0 && conn.has(CO_FL_WAIT_L4_CONN) {
        conn.flags &= !CO_FL_WAIT_L4_CONN;
    }
    done
}

/// Moves up to `count` bytes from the socket into `pipe` with `splice()`
/// (HAProxy's `raw_sock_to_pipe`): the bytes never enter a buffer. Returns
/// the bytes moved, or `None` when this kernel cannot splice from this
/// socket (nothing was moved: the caller disables splicing on the
/// connection and receives into its buffer instead). `WAIT_ROOM` says the
/// pipe is full, or full enough for this pass.
pub fn rcv_pipe<S: Syscalls>(
    sys: &S,
    table: &FdTable,
    conn: &mut Connection,
    pipe: &mut Pipe,
    count: usize,
    bugs: &Bugs,
) -> Option<usize> {
    if !conn.ctrl_ready() || conn.any(CO_FL_SOCK_RD_SH) {
        return Some(0);
    }
    let fd = conn.fd;
    if !table.recv_ready(fd) {
        return Some(0);
    }
    let ev = table.ev(fd);
    if nothing_to_read(conn, ev, bugs) {
        return Some(0);
    }
    let mut retval = 0;
    let mut count = count;
    while count > 0 {
        let ask = count.min(MAX_SPLICE_AT_ONCE_BYTES);
        match sys.splice(fd, pipe.prod, ask) {
            Ok(0) => {
                read0(conn, ev, bugs);
                break;
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
                    read0(conn, ev, bugs);
                    break;
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
                    break;
                }
            }
            Err(Errno::EAGAIN) => {
                if pipe.data_bytes > 0 {
                    // The socket is empty or the pipe is full: which, the
                    // kernel does not say. Stop until the pipe is flushed.
                    conn.flags |= CO_FL_WAIT_ROOM;
                    break;
                }
                table.cant_recv(fd);
                break;
            }
            Err(Errno::EINVAL) | Err(ENOSYS) if retval == 0 => return None,
            Err(Errno::EBADF) if retval == 0 && !bugs.is_buggy(HAP_SPLICE_EBADF) => {
                // HAProxy commit 45b889396: some kernels fail splice()
                // with EBADF on valid fds; splicing is disabled on the
                // connection, which goes on with recv(). (HAP-SPLICE-EBADF:
                // the old code lands below and fails the connection.)
                faultline_harness::probe("proxy:splice-not-supported");
                return None;
            }
            // A signal came first: the call did nothing, make it again.
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                conn.fail(Some(errno));
                break;
            }
        }
    }
    if retval > 0 && conn.has(CO_FL_WAIT_L4_CONN) {
        conn.flags &= !CO_FL_WAIT_L4_CONN;
    }
    Some(retval)
}

/// Sends what `pipe` holds to the socket with `splice()` (HAProxy's
/// `raw_sock_from_pipe`). Returns the bytes sent.
pub fn snd_pipe<S: Syscalls>(
    sys: &S,
    table: &FdTable,
    conn: &mut Connection,
    pipe: &mut Pipe,
) -> usize {
    if !conn.ctrl_ready() || conn.any(CO_FL_SOCK_WR_SH) {
        return 0;
    }
    let fd = conn.fd;
    if !table.send_ready(fd) {
        return 0;
    }
    let mut done = 0;
    while pipe.data_bytes > 0 {
        match sys.splice(pipe.cons, fd, pipe.data_bytes) {
            Ok(0) | Err(Errno::EAGAIN) => {
                table.cant_send(fd);
                break;
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
            }
            // A signal came first: the call did nothing, make it again.
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                conn.fail(Some(errno));
                break;
            }
        }
    }
    done
}
