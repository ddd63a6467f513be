//! The server side: a backend connection's handler (HAProxy's
//! `process_stream` on the server side and its `h1_io_cb`). Each pass
//! sends what is left of the request, receives, then does what the
//! connection's state asks: an idle one goes back to its pool, a draining
//! one looks for its NOOP's answer, a busy one streams a body or waits
//! for the whole response and delivers it.
//!
//! A whole response goes to the client ([`deliver`]): as it is, or not at
//! all (quiet commands), or the request goes on to another server
//! (`NOT_MY_VBUCKET`, FLUSH's next server).

use faultline_harness::{sys::Events, sys::Syscalls};
use tokio::time::Instant;

use super::buffer::Buffer;
use super::config::{ProxyConfig, ms};
use super::conn::{
    CO_FL_ERROR, CO_FL_SOCK_RD_SH, CO_FL_WAIT_L4_CONN, CO_FL_WAIT_ROOM, ConnId, check_connect,
    polling, set_polling,
};
use super::connect::{attach, backend_failed};
use super::drain::{drain_sentinel, response_done};
use super::idle;
use super::process::Proxy;
use super::raw_sock::{rcv_buf, snd_buf};
use super::role::{Request, Role, SENTINEL_OPAQUE, ServerState, server_inbuf, whole_role};
use super::splice::{finish_stream, forward_body, start_stream, stream_broken};
use super::state::State;
use crate::protocol::{Opcode, Packet, Status};

/// The backend connection's handler. Answers whether it made progress.
pub async fn process_server<S: Syscalls + 'static>(
    px: &Proxy<S>,
    tid: usize,
    sid: ConnId,
    events: Option<Events>,
) -> bool {
    let Some((mut progress, state, streaming)) = exchange(px, sid, events).await else {
        return false;
    };
    if let (true, ServerState::Busy(cid)) = (streaming, state) {
        progress |= forward_body(px, sid, cid).await;
    }
    let pass = Pass::read(&mut px.state(), sid);
    match state {
        ServerState::Idle => idle_pass(px, sid, &pass, progress).await,
        ServerState::Draining => {
            drain_sentinel(px, sid, pass.failed || pass.ended).await;
            true
        }
        ServerState::Busy(client_id) if streaming => {
            streaming_pass(px, sid, client_id, &pass, progress).await
        }
        ServerState::Busy(client_id) => {
            response_pass(px, tid, sid, client_id, &pass, progress).await
        }
    }
}

/// The handler's I/O step: probes a pending connect, sends what is left
/// of the request, and, unless a body streams (`forward_body` moves it),
/// receives the response. Answers (progress, the connection's state,
/// whether a body streams); `None` when the connection is gone.
async fn exchange<S: Syscalls + 'static>(
    px: &Proxy<S>,
    sid: ConnId,
    events: Option<Events>,
) -> Option<(bool, ServerState, bool)> {
    let mut progress = false;
    let (flags_before, to_send) = {
        let mut st = px.state();
        let conn = st.conns.get_mut(&sid)?;
        let c = &mut conn.c;
        let s = conn.role.server();
        // What stopped the last pass is looked at again.
        c.flags &= !CO_FL_WAIT_ROOM;
        let flags_before = c.flags;
        check_connect(&px.sys, c, events);
        // (Sent from a copy: nothing is borrowed across a syscall.)
        let to_send =
            (s.sent < s.out.len() && !c.has(CO_FL_ERROR)).then(|| s.out[s.sent..].to_vec());
        (flags_before, to_send)
    };
    if let Some(data) = to_send {
        let mut lent = px.lent(sid, whole_role);
        let n = snd_buf(&px.sys, &px.fdtab, &mut lent, &data, &px.bugs).await;
        px.state().server(sid).sent += n;
        progress |= n > 0;
    }
    let (streaming, room) = {
        let mut st = px.state();
        let conn = st.conn(sid);
        let failed = conn.c.has(CO_FL_ERROR);
        let s = conn.server();
        let streaming = s.to_forward > 0;
        let room = (!failed && !streaming).then(|| header_wait_room(&px.config, &s.inbuf));
        (streaming, room)
    };
    if let Some(room) = room {
        let mut lent = px.lent(sid, server_inbuf);
        let n = rcv_buf(&px.sys, &px.fdtab, &mut lent, room, &px.bugs).await;
        if n > 0 {
            px.state().server(sid).response_started = true;
            progress = true;
        }
    }
    let mut st = px.state();
    let conn = st.conn(sid);
    progress |= conn.c.flags != flags_before;
    Some((progress, conn.server().state, streaming))
}

/// Where a backend connection stands after its I/O step.
struct Pass {
    failed: bool,
    /// The backend's end of stream was seen.
    ended: bool,
    /// A byte of the response arrived.
    started: bool,
    /// The whole request went out.
    sent_all: bool,
    to_forward: usize,
}

impl Pass {
    fn read(st: &mut State, sid: ConnId) -> Pass {
        let conn = st.conn(sid);
        let (failed, ended) = (conn.c.has(CO_FL_ERROR), conn.c.has(CO_FL_SOCK_RD_SH));
        let s = conn.server();
        Pass {
            failed,
            ended,
            started: s.response_started,
            sent_all: s.sent == s.out.len(),
            to_forward: s.to_forward,
        }
    }
}

/// An idle connection's events (it left its pool to be handled): it goes
/// back, unless the server closed it, it failed, or bytes came that no
/// request asked for.
async fn idle_pass<S: Syscalls + 'static>(
    px: &Proxy<S>,
    sid: ConnId,
    pass: &Pass,
    progress: bool,
) -> bool {
    let unexpected = {
        let mut st = px.state();
        pass.failed || pass.ended || !st.server(sid).inbuf.is_empty()
    };
    if unexpected {
        // Closed by the server, failed, or unexpected bytes (the
        // connection left its pool to be handled).
        px.state().close(sid);
        return true;
    }
    let wanted = polling(&mut px.state().conn(sid).c, true, false);
    set_polling(&px.fdtab, wanted).await;
    // Back into its pool (HAProxy's `h1_io_cb` puts it back
    // in the idle tree after handling it).
    idle::put(px, sid).await;
    progress
}

/// A connection streaming a body to client `client_id`: done once the body
/// is all forwarded, broken if the backend ends or fails inside it, else
/// it receives while the client has room.
async fn streaming_pass<S: Syscalls + 'static>(
    px: &Proxy<S>,
    sid: ConnId,
    client_id: ConnId,
    pass: &Pass,
    progress: bool,
) -> bool {
    let Pass {
        failed,
        ended,
        sent_all,
        to_forward,
        ..
    } = *pass;
    if to_forward == 0 {
        // The body is all forwarded: the response is done.
        finish_stream(px, sid, client_id).await;
        return true;
    }
    let buffered = px.state().server(sid).inbuf.len();
    // After the end of the stream, the buffer may still hold the
    // rest of the body (it waits for room at the client).
    if failed || (ended && buffered < to_forward) {
        tracing::debug!(target: "faultline::proxy", conn = sid, to_forward, "backend connection ended inside a streamed body");
        stream_broken(&mut px.state(), sid, client_id);
        return true;
    }
    let wanted = {
        let mut st = px.state();
        let out_bytes = st.conns.get(&client_id).map_or(0, |c| match &c.role {
            Role::Client(cl) => cl.out.len(),
            _ => 0,
        });
        let conn = st.conn(sid);
        let s = conn.server();
        let room =
            s.inbuf.room() > 0 && s.inbuf.len() + out_bytes < px.config.response_buffer_bytes;
        // A full pipe or buffer: no receiving until the client
        // made room (it wakes this connection).
        let want_recv = room && !conn.c.has(CO_FL_WAIT_ROOM);
        let wanted = polling(&mut conn.c, want_recv, !sent_all);
        if progress {
            let expire = Instant::now() + ms(px.config.server_timeout_ms);
            st.set_timer(sid, Some(expire));
        }
        wanted
    };
    set_polling(&px.fdtab, wanted).await;
    progress
}

/// A connection carrying client `client_id`'s request: a large body
/// starts streaming, a whole response is delivered, a broken connection
/// fails the request (maybe retried), else it waits for more.
async fn response_pass<S: Syscalls + 'static>(
    px: &Proxy<S>,
    tid: usize,
    sid: ConnId,
    client_id: ConnId,
    pass: &Pass,
    progress: bool,
) -> bool {
    if start_stream(px, &mut px.state(), sid, client_id) {
        return true;
    }
    let parsed = px.state().server(sid).take_packet(&px.limits);
    match parsed {
        Ok(Some(response)) => {
            deliver(px, tid, sid, client_id, response).await;
            return true;
        }
        Ok(None) => {
            if incomplete_response(px, tid, sid, client_id, pass).await {
                return true;
            }
        }
        Err(e) => {
            tracing::debug!(target: "faultline::proxy", conn = sid, error = %e, "malformed response");
            px.state().close(sid);
            backend_failed(px, tid, client_id, false).await;
            return true;
        }
    }
    let wanted = {
        let mut st = px.state();
        let conn = st.conn(sid);
        let waiting_connect = conn.c.has(CO_FL_WAIT_L4_CONN);
        let wanted = polling(&mut conn.c, true, !pass.sent_all);
        if pass.sent_all && !waiting_connect && progress {
            // Sent and connected: the server timeout runs from now.
            let expire = Instant::now() + ms(px.config.server_timeout_ms);
            st.set_timer(sid, Some(expire));
        }
        wanted
    };
    set_polling(&px.fdtab, wanted).await;
    progress
}

/// The response is not whole yet: a connection that failed, ended, or
/// whose buffer is full can never complete it, and fails the request
/// (retried only if no byte of the response came). Answers whether it
/// did.
async fn incomplete_response<S: Syscalls + 'static>(
    px: &Proxy<S>,
    tid: usize,
    sid: ConnId,
    client_id: ConnId,
    pass: &Pass,
) -> bool {
    let Pass {
        failed,
        ended,
        started,
        ..
    } = *pass;
    let full = {
        let mut st = px.state();
        let full = st.server(sid).inbuf.is_full();
        if failed || ended || full {
            if full {
                tracing::debug!(target: "faultline::proxy", conn = sid, "response larger than the buffer");
            }
            tracing::debug!(target: "faultline::proxy", conn = sid, errno = ?st.conn(sid).c.errno, started, "backend connection failed");
            st.close(sid);
        }
        full
    };
    if failed || ended || full {
        backend_failed(px, tid, client_id, !started && !full).await;
        return true;
    }
    false
}

/// How much a backend connection reads while no body streams. With
/// splicing on, at most the response buffer's size (HAProxy's `bufsize`):
/// a large body already in the socket then stays there for `splice()`,
/// instead of being read whole into the buffer. Past that size the
/// response in the buffer is one that is not streamed (its body is
/// small, or it does not answer the request as it is), and the whole
/// buffer may fill.
fn header_wait_room(config: &ProxyConfig, inbuf: &Buffer) -> usize {
    let bounded = config.splice && inbuf.len() < config.response_buffer_bytes;
    if bounded {
        (config.response_buffer_bytes - inbuf.len()).min(inbuf.room())
    } else {
        inbuf.room()
    }
}

/// A whole response arrived on backend connection `sid` for client `cid`.
async fn deliver<S: Syscalls + 'static>(
    px: &Proxy<S>,
    tid: usize,
    sid: ConnId,
    cid: ConnId,
    response: Packet,
) {
    let (moved, sentinel, learned) = {
        let mut st = px.state();
        let st = &mut *st;
        let request = st
            .conns
            .get_mut(&cid)
            .and_then(|c| c.client().request.take());
        let Some(request) = request else {
            st.close(sid);
            return;
        };
        let h = response.header;
        let sentinel = request.sentinel;
        if sentinel && h.opcode == Opcode::NOOP && h.opaque == SENTINEL_OPAQUE {
            // The quiet request's answer is silence, and the backend
            // is done with it.
            st.wake(cid);
            (false, false, None)
        } else {
            deliver_answer(px, st, sid, cid, request, response)
        }
    };
    if let Some((vb, server)) = learned {
        px.vbmap[usize::from(vb)].store(server).await;
    }
    response_done(px, sid, sentinel).await;
    if moved {
        attach(px, tid, cid, false).await;
    }
}

/// [`deliver`]'s answer to a request: what goes to the client, or where the
/// request goes next. Answers (moved to another server, sentinel behind,
/// the server a `NOT_MY_VBUCKET` says to try for the request's vbucket).
fn deliver_answer<S: Syscalls + 'static>(
    px: &Proxy<S>,
    st: &mut State,
    sid: ConnId,
    cid: ConnId,
    mut request: Request,
    response: Packet,
) -> (bool, bool, Option<(u16, usize)>) {
    {
        let h = response.header;
        let sentinel = request.sentinel;
        let forwarded_opcode = request.forwarded_opcode();
        if !request.answered_by(&h) {
            tracing::debug!(target: "faultline::proxy", conn = sid, opcode = %h.opcode, opaque = h.opaque, "a response that does not answer the request");
            st.close(sid);
            let cl = st.client(cid);
            Packet::response(&request.header, Status::EINTERNAL).encode_into(&mut cl.out);
            st.wake(cid);
            return (false, false, None);
        }
        let status = h.status();
        if status == Status::NOT_MY_VBUCKET && request.moves_left > 0 {
            // The vbucket moved (a rebalance): try the next server, and
            // remember where it answered.
            let next = (request.server + 1) % px.backends.len();
            tracing::debug!(target: "faultline::proxy", conn = cid, vb = request.vb, from = request.server, to = next, "not my vbucket: trying the next server");
            faultline_harness::probe("proxy:not-my-vbucket");
            request.server = next;
            request.server_conn = None;
            request.moves_left -= 1;
            request.retries_left = px.config.retries;
            let vb = request.vb;
            st.client(cid).request = Some(request);
            (true, sentinel, Some((vb, next)))
        } else if status.is_success() && request.flush_left > 0 {
            // This server is flushed: the next one.
            request.server += 1;
            assert!(
                request.server < px.backends.len(),
                "flush_left counts servers"
            );
            request.server_conn = None;
            request.flush_left -= 1;
            request.retries_left = px.config.retries;
            st.client(cid).request = Some(request);
            (true, sentinel, None)
        } else {
            // Quiet commands forwarded loud (FLUSHQ): GETQ/GETKQ answer
            // hits only, the others failures only.
            let quiet = request.header.opcode.is_quiet() && !sentinel;
            let silent = quiet
                && match forwarded_opcode {
                    Opcode::GET | Opcode::GETK => !status.is_success(),
                    _ => status.is_success(),
                };
            let cl = st.client(cid);
            if !silent {
                let mut back = response;
                back.header.opcode = request.header.opcode;
                back.encode_into(&mut cl.out);
            }
            st.wake(cid);
            (false, sentinel, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_a_header_reads_at_most_the_response_buffer_when_splicing() {
        let config = ProxyConfig {
            splice: true,
            buffer_bytes: 65536,
            response_buffer_bytes: 4096,
            ..ProxyConfig::default()
        };
        let mut inbuf = Buffer::new(config.buffer_bytes);
        assert_eq!(header_wait_room(&config, &inbuf), 4096);
        inbuf.push(&[0; 1000]);
        assert_eq!(header_wait_room(&config, &inbuf), 3096);
        // A response that is not streamed may fill the whole buffer.
        inbuf.push(&[0; 3096]);
        assert_eq!(header_wait_room(&config, &inbuf), 65536 - 4096);
        let whole = ProxyConfig {
            splice: false,
            ..config
        };
        let empty = Buffer::new(whole.buffer_bytes);
        assert_eq!(header_wait_room(&whole, &empty), 65536);
    }
}
