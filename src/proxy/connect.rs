//! A request's backend connection (HAProxy's `connect_server`): an idle
//! one of this thread, else one taken over from another thread, else a
//! new one; the request is sent at once, speculatively, even while the
//! connect is in progress. A connection error before any byte of the
//! response (connect failure or timeout, reset, close) is retried on a
//! new connection, `retries` times; then, or after a timeout once the
//! request was sent, the client gets `ETMPFAIL`.

use faultline_harness::{sys::Errno, sys::Syscalls};
use tokio::time::Instant;

use super::config::ms;
use super::conn::{CO_FL_WAIT_L4_CONN, ConnId, Connection};
use super::idle;
use super::process::Proxy;
use super::role::{Conn, Role, ServerSide, ServerState};
use super::state::State;
use crate::protocol::{Packet, Status};

/// Gives client `id`'s request a backend connection and starts sending it.
/// (Boxed: a retry attaches again.)
pub fn attach<'a, S: Syscalls + 'static>(
    px: &'a Proxy<S>,
    tid: usize,
    id: ConnId,
    force_new: bool,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
    Box::pin(async move {
        let server = {
            let mut st = px.state();
            st.client(id).request().server
        };
        let sid = match server_conn(px, tid, server, force_new).await {
            Ok(sid) => sid,
            Err(errno) => {
                tracing::debug!(target: "faultline::proxy", conn = id, server, error = %errno, "no backend connection");
                request_failed(&mut px.state(), id);
                return;
            }
        };
        let mut st = px.state();
        let (bytes, sentinel) = {
            let r = st.client(id).request();
            r.server_conn = Some(sid);
            (r.forwarded.clone(), r.sentinel)
        };
        {
            let s = st.server(sid);
            assert_eq!(
                s.to_forward, 0,
                "an idle backend connection streams nothing"
            );
            s.state = ServerState::Busy(id);
            s.out = bytes;
            s.sent = 0;
            s.response_started = false;
            s.sentinel = sentinel;
            s.inbuf.clear();
        }
        let waiting = st.conn(sid).c.has(CO_FL_WAIT_L4_CONN);
        let timeout = if waiting {
            px.config.connect_timeout_ms
        } else {
            px.config.server_timeout_ms
        };
        st.set_timer(sid, Some(Instant::now() + ms(timeout)));
        st.wake(sid);
    })
}

/// A backend connection for `server` on thread `tid`: an idle one (see
/// [`idle::take`]) unless `force_new` (a retry), else a new one.
async fn server_conn<S: Syscalls + 'static>(
    px: &Proxy<S>,
    tid: usize,
    server: usize,
    force_new: bool,
) -> Result<ConnId, Errno> {
    if !force_new {
        if let Some(sid) = idle::take(px, tid, server).await {
            return Ok(sid);
        }
    }
    let addr = px.backends[server].addr;
    let c = Connection::open(&px.sys, &px.fdtab, addr, tid, || px.state().new_conn_id()).await?;
    let (sid, fd) = (c.id, c.fd);
    tracing::debug!(target: "faultline::proxy", thread = tid, conn = sid, fd, %addr, "connecting");
    px.state().conns.insert(
        sid,
        Conn::new(
            c,
            Role::Server(ServerSide::new(server, px.config.buffer_bytes)),
        ),
    );
    Ok(sid)
}

/// Client `id`'s request cannot be served: `ETMPFAIL`.
pub fn request_failed(st: &mut State, id: ConnId) {
    let Some(conn) = st.conns.get_mut(&id) else {
        return;
    };
    let cl = conn.client();
    if let Some(r) = cl.request.take() {
        Packet::response(&r.header, Status::ETMPFAIL).encode_into(&mut cl.out);
    }
    st.wake(id);
}

/// The backend connection carrying client `id`'s request failed.
/// `before_response`: no byte of the response arrived (a retry is safe).
pub async fn backend_failed<S: Syscalls + 'static>(
    px: &Proxy<S>,
    tid: usize,
    id: ConnId,
    before_response: bool,
) {
    let retry = {
        let mut st = px.state();
        let st = &mut *st;
        let Some(conn) = st.conns.get_mut(&id) else {
            return;
        };
        let Some(r) = conn.client().request.as_mut() else {
            return;
        };
        r.server_conn = None;
        let retry = before_response && r.retries_left > 0;
        if retry {
            r.retries_left -= 1;
        } else {
            request_failed(st, id);
        }
        retry
    };
    if retry {
        faultline_harness::probe("proxy:retry");
        attach(px, tid, id, true).await;
    }
}
