//! Timeouts: each thread's timers, and what a client or backend
//! connection's timeout does (a check's is the check's own, see
//! `check::on_timeout`). HAProxy's `wake_expired_tasks` and the timeouts
//! `process_stream` handles: `timeout client`, `timeout connect`,
//! `timeout server`, and an idle connection's keep-alive.

use faultline_harness::sys::Syscalls;
use tokio::time::Instant;

use super::conn::{CO_FL_WAIT_L4_CONN, ConnId};
use super::connect::backend_failed;
use super::process::Proxy;
use super::role::{Kind, ServerState};
use super::splice::stream_broken;
use super::state::State;
use super::{check, idle};

/// Runs thread `tid`'s expired timers. A connection another thread took
/// over, or whose timeout changed since the entry was made, has nothing
/// to do.
pub async fn run_timers<S: Syscalls + 'static>(px: &Proxy<S>, tid: usize) {
    let now = Instant::now();
    loop {
        let expired = {
            let mut st = px.state();
            match st.timers.first() {
                Some((at, _)) if *at <= now => st.timers.pop_first(),
                _ => None,
            }
        };
        let Some((at, id)) = expired else {
            return;
        };
        if !idle::reclaim(px, tid, id, Some(at)).await {
            continue;
        }
        let kind = {
            let mut st = px.state();
            match st.conns.get_mut(&id) {
                Some(c) if c.expire == Some(at) => {
                    c.expire = None;
                    (!c.closing).then(|| c.role.kind())
                }
                _ => None,
            }
        };
        match kind {
            Some(Kind::Check) => check::on_timeout(px, tid, id).await,
            Some(_) => on_timeout(px, tid, id).await,
            None => {}
        }
    }
}

/// What a timeout leaves to do once the thread's state is no longer
/// borrowed (it awaits).
enum Then {
    Nothing,
    CloseIdle,
    Failed { client: ConnId, retry: bool },
}

/// A client or backend connection's timer fired.
async fn on_timeout<S: Syscalls + 'static>(px: &Proxy<S>, tid: usize, id: ConnId) {
    let then = {
        let mut st = px.state();
        let Some(conn) = st.conns.get(&id) else {
            return;
        };
        match conn.role.kind() {
            Kind::Client => {
                client_timeout(&mut st, id);
                Then::Nothing
            }
            Kind::Server => server_timeout(&mut st, id),
            Kind::Check => unreachable!("checks have their own timeout"),
        }
    };
    match then {
        Then::Nothing => {}
        Then::CloseIdle => {
            // Out of its pool already (its thread reclaimed it for the
            // timer): no other thread can take it over now.
            px.state().close(id);
        }
        Then::Failed { client, retry } => backend_failed(px, tid, client, retry).await,
    }
}

/// A client connection idle for `client_timeout_ms` is closed; one with a
/// request in progress is the backend side's to time out.
fn client_timeout(st: &mut State, id: ConnId) {
    let cl = st.client(id);
    if cl.request.is_none() && cl.feeder.is_none() {
        tracing::debug!(target: "faultline::proxy", conn = id, "client timeout");
        st.close(id);
    }
}

/// A backend connection's timeout: idle (keep-alive), draining, inside a
/// streamed body, or waiting for a connect or a response.
fn server_timeout(st: &mut State, id: ConnId) -> Then {
    let conn = st.conn(id);
    let (state, to_forward) = {
        let s = conn.server();
        (s.state, s.to_forward)
    };
    match state {
        ServerState::Idle => Then::CloseIdle,
        ServerState::Draining => {
            tracing::debug!(target: "faultline::proxy", conn = id, "no answer to the sentinel NOOP");
            st.close(id);
            Then::Nothing
        }
        ServerState::Busy(cid) if to_forward > 0 => {
            tracing::debug!(target: "faultline::proxy", conn = id, to_forward, "backend timeout inside a streamed body");
            faultline_harness::probe("proxy:server-timeout");
            stream_broken(st, id, cid);
            Then::Nothing
        }
        ServerState::Busy(cid) => {
            let connecting = conn.c.has(CO_FL_WAIT_L4_CONN);
            let started = conn.server().response_started;
            tracing::debug!(target: "faultline::proxy", conn = id, connecting, "backend timeout");
            faultline_harness::probe(if connecting {
                "proxy:connect-timeout"
            } else {
                "proxy:server-timeout"
            });
            st.close(id);
            // A connect that timed out never carried the request.
            Then::Failed {
                client: cid,
                retry: connecting && !started,
            }
        }
    }
}
