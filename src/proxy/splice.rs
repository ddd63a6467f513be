//! Streamed response bodies (HAProxy's `option splice-response`): a
//! response whose body is large and not all arrived goes to the client as
//! it comes, its header first; the rest of the body (`to_forward`) moves
//! through the client's pipe with `splice()` when it is large enough,
//! else through the buffers. A backend connection streams to one client
//! (its `feeder`) until the body is all forwarded, or the stream breaks.

use faultline_harness::sys::Syscalls;

use super::conn::{CO_FL_ERROR, CO_FL_SOCK_RD_SH, CO_FL_WAIT_ROOM, ConnId};
use super::drain::response_done;
use super::pipe::Pipe;
use super::process::Proxy;
use super::raw_sock::{rcv_buf, rcv_pipe};
use super::role::{Role, server_inbuf, whole_role};
use super::state::State;
use crate::bugs::{Bugs, HAP_SPLICE_SPIN};
use crate::protocol::{HEADER_LEN, Header, Limits, Status};

/// Starts streaming the response whose header is in backend connection
/// `sid`'s buffer, when splicing is on, its body is at least the minimum
/// splice size and has not all arrived, and it answers client `cid`'s
/// request as it is (not `NOT_MY_VBUCKET`): the header goes to the client
/// with what arrived of the body; the rest is forwarded as it comes
/// (`to_forward`). Answers whether it started.
pub fn start_stream<S: Syscalls + 'static>(
    px: &Proxy<S>,
    st: &mut State,
    sid: ConnId,
    cid: ConnId,
) -> bool {
    if !px.config.splice {
        return false;
    }
    let header = {
        let s = st.server(sid);
        let Some(head) = s.inbuf.data().get(..HEADER_LEN) else {
            return false;
        };
        match Header::parse(head.try_into().expect("24 bytes")) {
            Ok(h) => h,
            // Malformed: the whole-packet path says so.
            Err(_) => return false,
        }
    };
    let body_bytes = header.body_len as usize;
    let arrived_bytes = st.server(sid).inbuf.len() - HEADER_LEN;
    if body_bytes < px.config.min_splice_bytes
        || arrived_bytes >= body_bytes
        || header.check_limits(&Limits::default()).is_err()
    {
        return false;
    }
    let Some(request) = st.conns.get(&cid).and_then(|c| match &c.role {
        Role::Client(cl) => cl.request.as_ref(),
        _ => None,
    }) else {
        return false;
    };
    let answers = request.answered_by(&header)
        && header.status() != Status::NOT_MY_VBUCKET
        && request.flush_left == 0;
    if !answers {
        return false;
    }
    let request = st.client(cid).request.take().expect("seen above");
    let mut head = header;
    head.opcode = request.header.opcode;
    let s = st.server(sid);
    let mut bytes = head.encode().to_vec();
    bytes.extend_from_slice(&s.inbuf.data()[HEADER_LEN..]);
    s.inbuf.clear();
    s.to_forward = body_bytes - arrived_bytes;
    tracing::debug!(target: "faultline::proxy", conn = sid, client = cid, body_bytes, to_forward = s.to_forward, "streaming a response body");
    faultline_harness::probe("proxy:stream-body");
    let cl = st.client(cid);
    cl.out.extend_from_slice(&bytes);
    cl.feeder = Some(sid);
    st.wake(cid);
    // Go on at once: more of the body may wait in the socket.
    st.wake(sid);
    true
}

/// Moves what arrived of a streamed body toward client `cid` (HAProxy's
/// `si_conn_recv_cb` with `to_forward` set): with `splice()` through the
/// client's pipe while at least the minimum splice size is left and no
/// byte waits in a buffer (bytes must not be at two places at once), else
/// through the buffers. Answers whether bytes moved.
///
/// The client's pipe is the handler's own meanwhile (taken out of the
/// client, put back at the end); the shared state is borrowed between the
/// syscalls only.
pub async fn forward_body<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId, cid: ConnId) -> bool {
    let (mut pipe, mut splice_off, out_bytes) = {
        let mut st = px.state();
        let Some(client) = st.conns.get_mut(&cid) else {
            return false;
        };
        let cl = client.client();
        (cl.pipe.take(), cl.splice_off, cl.out.len())
    };
    let mut moved = 0;
    let mut spliced = 0;
    'splice: {
        {
            let mut st = px.state();
            let conn = st.conn(sid);
            let failed = conn.c.has(CO_FL_ERROR);
            let s = conn.server();
            if s.to_forward < px.config.min_splice_bytes || splice_off || failed {
                break 'splice;
            }
            if !s.inbuf.is_empty() || out_bytes > 0 {
                // Bytes already wait in a buffer: they go first.
                break 'splice;
            }
        }
        if pipe.is_none() {
            match Pipe::get(&px.sys).await {
                Ok(p) => pipe = Some(p),
                Err(e) => {
                    tracing::debug!(target: "faultline::proxy", conn = sid, error = %e, "no pipe: no splicing");
                    splice_off = true;
                    break 'splice;
                }
            }
        }
        let p = pipe.as_mut().expect("just made");
        // (What is to forward when splice() is called.)
        let to_forward = px.state().server(sid).to_forward;
        let mut lent = px.lent(sid, whole_role);
        match rcv_pipe(&px.sys, &px.fdtab, &mut lent, p, to_forward, &px.bugs).await {
            None => {
                tracing::debug!(target: "faultline::proxy", conn = sid, "splice not supported: the buffers take over");
                splice_off = true;
            }
            Some(n) => {
                let mut st = px.state();
                let s = st.server(sid);
                // Unsigned, as HAProxy's `chn->to_forward -= ret`: a splice
                // that took more than was to forward wraps it.
                s.to_forward = s.to_forward.wrapping_sub(n);
                moved += n;
                spliced += n;
            }
        }
    }
    // An empty pipe goes back (HAProxy's `abort_splice`).
    if pipe.is_some_and(|p| p.data_bytes == 0) {
        pipe.take().expect("just seen").put(&px.sys).await;
    }
    let room = {
        let mut st = px.state();
        let conn = st.conn(sid);
        let c = &conn.c;
        let s = conn.role.server();
        let may_recv = recv_beside_pipe(&px.bugs, pipe)
            && s.to_forward > 0
            && !c.any(CO_FL_ERROR | CO_FL_SOCK_RD_SH | CO_FL_WAIT_ROOM);
        // The body's bytes in user space, received and waiting for the
        // client, stay within the response buffer.
        let buffered_bytes = s.inbuf.len() + out_bytes;
        let room = px
            .config
            .response_buffer_bytes
            .saturating_sub(buffered_bytes)
            .min(s.inbuf.room());
        (may_recv && room > 0).then_some(room)
    };
    if let Some(room) = room {
        let mut lent = px.lent(sid, server_inbuf);
        moved += rcv_buf(&px.sys, &px.fdtab, &mut lent, room, &px.bugs).await;
    }
    if spliced > 0 {
        px.spliced_bytes.fetch_add(spliced as u64).await;
    }
    let mut st = px.state();
    let st = &mut *st;
    let s = st.server(sid);
    // What the buffer holds of the body goes on to the client's buffer.
    let out_room = px.config.response_buffer_bytes.saturating_sub(out_bytes);
    let take = s.to_forward.min(s.inbuf.len()).min(out_room);
    let bytes = s.inbuf.data()[..take].to_vec();
    s.inbuf.consume(take);
    s.to_forward -= take;
    let cl = st.client(cid);
    cl.out.extend_from_slice(&bytes);
    cl.pipe = pipe;
    cl.splice_off = splice_off;
    if moved > 0 || take > 0 {
        st.wake(cid);
    }
    moved > 0 || take > 0
}

/// Whether a streaming backend connection may receive into its buffer
/// while the client's pipe is `pipe`.
fn recv_beside_pipe(bugs: &Bugs, pipe: Option<Pipe>) -> bool {
    // Receiving into the buffer: an event splice() did not take must be
    // taken by recv(), unless the pipe is full (HAProxy commit 61d39a0e2).
    if bugs.is_buggy(HAP_SPLICE_SPIN) {
        // HAP-SPLICE-SPIN: no recv() while the pipe holds data. Below the
        // minimum splice size, nothing takes the event: the poller reports
        // it again and again until the client drained the pipe.
        pipe.is_none()
    } else {
        true
    }
}

/// The streamed body is all forwarded: client `cid`'s response is done.
pub async fn finish_stream<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId, cid: ConnId) {
    let sentinel = {
        let mut st = px.state();
        if let Some(conn) = st.conns.get_mut(&cid) {
            conn.client().feeder = None;
        }
        st.wake(cid);
        st.server(sid).sentinel
    };
    response_done(px, sid, sentinel).await;
}

/// A response whose header already went to the client cannot be finished:
/// the client gets what arrived, then its connection closes (a truncated
/// answer is never passed off as whole).
pub fn stream_broken(st: &mut State, sid: ConnId, cid: ConnId) {
    st.close(sid);
    if let Some(conn) = st.conns.get_mut(&cid) {
        let cl = conn.client();
        cl.feeder = None;
        cl.close_after_flush = true;
    }
    st.wake(cid);
}
