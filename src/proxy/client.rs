//! The client side: a client connection reads request packets into its
//! buffer and handles one at a time ([`super::route`] says what becomes of
//! each, [`super::connect`] sends one to a backend); answers go out from
//! its output buffer, after what its pipe holds of a spliced body.
//!
//! The handler runs on the connection's thread and ends by deciding the
//! connection's polling (what it waits for). It borrows the thread's
//! state only between awaits: where it awaits (the fd table's atomic
//! operations, the shared counters), other threads may run.

use std::ops::ControlFlow;

use faultline_harness::sys::Syscalls;
use tokio::time::Instant;

use super::config::ms;
use super::conn::{CO_FL_ERROR, CO_FL_SOCK_RD_SH, ConnId, polling, set_polling};
use super::connect::attach;
use super::process::Proxy;
use super::raw_sock::{rcv_buf, snd_buf, snd_pipe};
use super::role::{client_inbuf, whole_role};
use super::route::{Seen, accept_request};
use super::state::State;
use crate::protocol::{HEADER_LEN, Header, Packet, ProtocolError, Status};

/// The client connection's handler. Answers whether it made progress.
pub async fn process_client<S: Syscalls + 'static>(px: &Proxy<S>, tid: usize, id: ConnId) -> bool {
    let mut progress = match exchange(px, id).await {
        ControlFlow::Continue(progress) => progress,
        ControlFlow::Break(answer) => return answer,
    };
    // Handle the requests that arrived, one at a time.
    progress |= handle_requests(px, tid, id).await;
    // Send what the requests produced (speculatively).
    let pending = px.state().client(id).pending_bytes() > 0;
    if pending {
        progress |= send_pending(px, id).await > 0;
        let mut st = px.state();
        if st.conn(id).c.has(CO_FL_ERROR) {
            abort_client(&mut st, id);
            return true;
        }
    }
    let wanted = match wait(px, id, progress) {
        ControlFlow::Continue(wanted) => wanted,
        ControlFlow::Break(answer) => return answer,
    };
    set_polling(&px.fdtab, wanted).await;
    progress
}

/// The handler's I/O step: sends what is pending, then receives while
/// there is room. Breaks with the handler's answer when the connection
/// is gone or failed (then it is aborted); else answers whether it made
/// progress.
async fn exchange<S: Syscalls + 'static>(px: &Proxy<S>, id: ConnId) -> ControlFlow<bool, bool> {
    let mut progress = false;
    let flags_before = match px.state().conns.get(&id) {
        Some(conn) => conn.c.flags,
        None => return ControlFlow::Break(false),
    };
    // Send what is pending.
    progress |= send_pending(px, id).await > 0;
    // Receive while there is room: ask for the free space.
    let room = {
        let mut st = px.state();
        let cl = st.client(id);
        cl.inbuf.compact();
        cl.inbuf.room()
    };
    if room > 0 {
        let mut lent = px.lent(id, client_inbuf);
        let n = rcv_buf(&px.sys, &px.fdtab, &mut lent, room, &px.bugs).await;
        progress |= n > 0;
    }
    let mut st = px.state();
    let st = &mut *st;
    let conn = st.conn(id);
    let feeder = conn.client().feeder;
    progress |= conn.c.flags != flags_before;
    let (failed, errno) = (conn.c.has(CO_FL_ERROR), conn.c.errno);
    if progress {
        // Room was made: the backend streaming to us may go on.
        if let Some(sid) = feeder {
            st.wake(sid);
        }
    }
    if failed {
        tracing::debug!(target: "faultline::proxy", conn = id, errno = ?errno, "client connection failed");
        abort_client(st, id);
        return ControlFlow::Break(true);
    }
    ControlFlow::Continue(progress)
}

/// What the input buffer holds next.
enum Next {
    /// A request to handle.
    Request(Packet),
    /// A packet that cannot be handled was refused: no more requests.
    Refused,
    /// Nothing to handle now.
    Wait,
}

/// Handles the requests in client `id`'s buffer, one at a time, while
/// none is in progress. Answers whether it handled or refused any.
async fn handle_requests<S: Syscalls + 'static>(px: &Proxy<S>, tid: usize, id: ConnId) -> bool {
    let mut progress = false;
    loop {
        let next = next_request(px, &mut px.state(), id);
        let packet = match next {
            Next::Request(packet) => packet,
            Next::Refused => return true,
            Next::Wait => return progress,
        };
        progress = true;
        dispatch(px, tid, id, packet).await;
    }
}

/// Takes the next request packet out of client `id`'s buffer, unless one
/// is in progress or answers wait.
fn next_request<S: Syscalls + 'static>(px: &Proxy<S>, st: &mut State, id: ConnId) -> Next {
    let cl = st.client(id);
    if cl.request.is_some() || cl.feeder.is_some() || cl.close_after_flush {
        return Next::Wait;
    }
    if cl.pending_bytes() >= px.config.buffer_bytes {
        // Answers the client has not read are bounded: one that
        // pipelines requests and does not read leaves the rest
        // waiting in its buffer (as HAProxy leaves a request in
        // its buffer while the response channel is full).
        return Next::Wait;
    }
    match Packet::try_parse(cl.inbuf.data(), &px.limits) {
        Ok(Some((packet, used))) => {
            cl.inbuf.consume(used);
            Next::Request(packet)
        }
        Ok(None) => {
            if cl.inbuf.is_full() {
                // A packet larger than the buffer: refused.
                let header = peek_header(cl.inbuf.data());
                cl.refuse(header, Status::E2BIG);
                return Next::Refused;
            }
            Next::Wait
        }
        Err(e) => {
            let status = match e {
                ProtocolError::BodyTooLarge { .. } => Status::E2BIG,
                _ => Status::EINVAL,
            };
            let header = peek_header(cl.inbuf.data());
            tracing::debug!(target: "faultline::proxy", conn = id, error = %e, "malformed request");
            cl.refuse(header, status);
            Next::Refused
        }
    }
}

/// What client `id` waits for now: closes it when it is done (breaks with
/// the handler's answer), else sets its idle timeout and answers its
/// polling.
fn wait<S: Syscalls + 'static>(
    px: &Proxy<S>,
    id: ConnId,
    progress: bool,
) -> ControlFlow<bool, Option<super::conn::Polling>> {
    let mut st = px.state();
    let st = &mut *st;
    let conn = st.conn(id);
    let c = &mut conn.c;
    let cl = conn.role.client();
    let idle = cl.request.is_none() && cl.feeder.is_none() && cl.pending_bytes() == 0;
    let done_reading = c.has(CO_FL_SOCK_RD_SH) || cl.close_after_flush;
    if idle && done_reading {
        // The client closed (what is left of its input can never
        // become a packet) or must be closed, and nothing is pending.
        st.close(id);
        return ControlFlow::Break(true);
    }
    let want_recv = !cl.inbuf.is_full() && !cl.close_after_flush;
    let want_send = cl.pending_bytes() > 0;
    let wanted = polling(c, want_recv, want_send);
    if idle {
        let expire = Instant::now() + ms(px.config.client_timeout_ms);
        if progress || conn.expire.is_none() {
            st.set_timer(id, Some(expire));
        }
    } else if st.conn(id).expire.is_some() {
        st.set_timer(id, None);
    }
    ControlFlow::Continue(wanted)
}

/// Sends what the client is owed: the pipe's bytes first, then the
/// buffer's (HAProxy's `si_conn_send`: while the pipe holds data, the
/// buffer waits). Answers the bytes sent.
/// (The pipe is the handler's own while its bytes go out, the buffer's
/// bytes are sent from a copy: nothing is borrowed across a syscall.)
async fn send_pending<S: Syscalls>(px: &Proxy<S>, id: ConnId) -> usize {
    let mut sent = 0;
    let pipe = px.state().client(id).pipe;
    if let Some(mut pipe) = pipe {
        sent += snd_pipe(&px.sys, &px.fdtab, &mut px.lent(id, whole_role), &mut pipe).await;
        let flushed = {
            let mut st = px.state();
            let conn = st.conn(id);
            let failed = conn.c.has(CO_FL_ERROR);
            let cl = conn.client();
            cl.pipe = Some(pipe);
            if pipe.data_bytes > 0 || failed {
                return sent;
            }
            // Flushed: the pipe goes back.
            cl.pipe.take().expect("just seen")
        };
        flushed.put(&px.sys).await;
    }
    let out = {
        let mut st = px.state();
        let cl = st.client(id);
        (!cl.out.is_empty()).then(|| cl.out.clone())
    };
    if let Some(out) = out {
        let n = snd_buf(
            &px.sys,
            &px.fdtab,
            &mut px.lent(id, whole_role),
            &out,
            &px.bugs,
        )
        .await;
        px.state().client(id).out.drain(..n);
        sent += n;
    }
    sent
}

fn peek_header(bytes: &[u8]) -> Option<Header> {
    let head: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    Header::parse(head).ok()
}

/// The client connection failed: close it, and the backend connection
/// carrying its request (the response would have nowhere to go).
fn abort_client(st: &mut State, id: ConnId) {
    let request = st
        .conns
        .get_mut(&id)
        .and_then(|c| c.client().request.take());
    if let Some(sid) = request.and_then(|r| r.server_conn) {
        st.close(sid);
    }
    let feeder = st.conns.get_mut(&id).and_then(|c| c.client().feeder.take());
    if let Some(sid) = feeder {
        st.close(sid);
    }
    st.close(id);
}

/// Handles one request packet of client connection `id`.
async fn dispatch<S: Syscalls + 'static>(px: &Proxy<S>, tid: usize, id: ConnId, packet: Packet) {
    let seen = Seen::read(px, &packet).await;
    if accept_request(px, &mut px.state(), id, packet, &seen) {
        attach(px, tid, id, false).await;
    }
}
