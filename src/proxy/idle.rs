//! The idle connection pools: a backend connection between requests
//! waits in its server's pool, where any thread may take it (HAProxy's
//! `idle_conns` trees under their lock, `srv_add_to_idle_list` and
//! `conn_backend_get`). The thread that pooled it still handles its
//! events and timers, taking it out of the pool first ([`reclaim`]);
//! another thread takes it over ([`take`]): its fd migrates to that
//! thread (`fd_takeover`).
//!
//! A pooled connection is in no thread's state: it leaves the pool only
//! under the pool's lock, so only once.

use faultline_harness::sys::Syscalls;
use tokio::time::Instant;

use super::config::ms;
use super::conn::{CO_FL_ERROR, CO_FL_SOCK_RD_SH, CO_FL_SOCK_WR_SH, ConnId, polling, set_polling};
use super::fd::Owner;
use super::process::Proxy;
use super::role::{IdleConn, ServerState};

/// An idle backend connection for `server`, for thread `tid`: one this
/// thread pooled, else one taken over from another thread. The pool stays
/// locked while a takeover is tried, as HAProxy's idle connections lock
/// does: a connection leaves it only once.
pub async fn take<S: Syscalls + 'static>(
    px: &Proxy<S>,
    tid: usize,
    server: usize,
) -> Option<ConnId> {
    let mut idle = px.idle[server].lock().await;
    if let Some(pos) = idle.iter().rposition(|i| i.conn.c.thread == tid) {
        let IdleConn { id, conn } = idle.remove(pos);
        let mut st = px.state();
        st.idle_here.remove(&id);
        st.conns.insert(id, conn);
        return Some(id);
    }
    for pos in (0..idle.len()).rev() {
        let (sid, fd) = (idle[pos].id, idle[pos].conn.c.fd);
        if px.fdtab.takeover(fd, tid, Owner::Conn(sid)).await {
            let IdleConn { id, mut conn } = idle.remove(pos);
            let from = conn.c.thread;
            conn.c.thread = tid;
            // The takeover stopped the fd's polling; the old
            // thread's timer is left to find it gone.
            conn.c.polling_reset();
            conn.expire = None;
            let mut st = px.state();
            st.idle_here.remove(&id);
            st.conns.insert(id, conn);
            faultline_harness::probe("proxy:takeover");
            tracing::debug!(target: "faultline::proxy", conn = id, fd, from, to = tid, "idle backend connection taken over");
            return Some(id);
        }
    }
    None
}

/// Makes connection `id` this thread's to handle: an idle backend
/// connection this thread pooled comes out of its pool, as HAProxy's
/// `h1_io_cb` takes it out of the idle tree under the lock before it
/// handles its events (and finds it gone when another thread took it
/// over). `timer`: only if its timeout is still that one (a timer
/// entry may be older than a move to another thread and back).
/// Answers whether the connection is in this thread's state.
pub async fn reclaim<S: Syscalls + 'static>(
    px: &Proxy<S>,
    tid: usize,
    id: ConnId,
    timer: Option<Instant>,
) -> bool {
    let server = {
        let st = px.state();
        if st.conns.contains_key(&id) {
            return true;
        }
        match st.idle_here.get(&id) {
            Some(server) => *server,
            None => return false,
        }
    };
    let mut pool = px.idle[server].lock().await;
    let pos = pool
        .iter()
        .position(|i| i.id == id && i.conn.c.thread == tid);
    let mut st = px.state();
    match pos {
        Some(pos) if timer.is_none() || pool[pos].conn.expire == timer => {
            let idle = pool.remove(pos);
            st.idle_here.remove(&id);
            st.conns.insert(id, idle.conn);
            true
        }
        Some(_) => false,
        None => {
            tracing::trace!(target: "faultline::proxy", thread = tid, conn = id, "idle connection taken over by another thread");
            st.idle_here.remove(&id);
            false
        }
    }
}

/// A backend connection whose response was delivered goes back to the
/// pool if it is clean, else it is closed. It is made ready (timer,
/// polling) before it is published in the pool: from then on another
/// thread may take it over.
pub async fn release<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId) {
    let wanted = {
        let mut st = px.state();
        let conn = st.conn(sid);
        assert!(
            !conn.closing,
            "a closing connection is never released (response_done)"
        );
        let reusable = !conn
            .c
            .any(CO_FL_ERROR | CO_FL_SOCK_RD_SH | CO_FL_SOCK_WR_SH)
            && conn.server().inbuf.is_empty();
        if !reusable {
            st.close(sid);
            return;
        }
        {
            let s = conn.server();
            assert_eq!(
                s.to_forward, 0,
                "a backend connection is released between responses"
            );
            s.state = ServerState::Idle;
            s.out.clear();
            s.sent = 0;
            s.response_started = false;
            s.sentinel = false;
        }
        let wanted = polling(&mut conn.c, true, false);
        let expire = Instant::now() + ms(px.config.keepalive_timeout_ms);
        st.set_timer(sid, Some(expire));
        wanted
    };
    set_polling(&px.fdtab, wanted).await;
    put(px, sid).await;
}

/// Publishes idle backend connection `sid` in its server's pool: from then
/// on the pool holds it, and another thread may take it over.
pub async fn put<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId) {
    let (server, conn) = {
        let mut st = px.state();
        let mut conn = st.remove(sid);
        let s = conn.server();
        assert_eq!(s.state, ServerState::Idle, "conn {sid}: pooled while busy");
        let server = s.server;
        assert!(
            st.idle_here.insert(sid, server).is_none(),
            "conn {sid}: pooled twice"
        );
        (server, conn)
    };
    px.idle[server]
        .lock()
        .await
        .push(IdleConn { id: sid, conn });
}
