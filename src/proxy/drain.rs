//! Quiet commands: a quiet request goes to its backend with a NOOP behind
//! it, whose answer says the backend has said all it will about the
//! request. Once the client has its answer (maybe none), the backend
//! connection drains up to that NOOP's answer before it may go back to
//! the pool: a late answer would otherwise reach the next request.

use faultline_harness::sys::Syscalls;
use tokio::time::Instant;

use super::config::ms;
use super::conn::{CO_FL_ERROR, CO_FL_SOCK_RD_SH, ConnId, polling, set_polling};
use super::idle;
use super::process::Proxy;
use super::role::{SENTINEL_OPAQUE, ServerState};
use crate::protocol::Opcode;

/// Backend connection `sid` is done with a response: behind a quiet
/// request it waits for the NOOP's answer, else it goes back to the pool.
/// One that is closing (it answered something else) goes nowhere: in the
/// pool, another request would take it.
pub async fn response_done<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId, sentinel: bool) {
    let closing = px.state().conns.get(&sid).is_none_or(|c| c.closing);
    if closing {
        return;
    }
    if sentinel {
        start_draining(px, sid).await;
    } else {
        idle::release(px, sid).await;
    }
}

/// The answer to a quiet request went to its client: backend connection
/// `sid` waits for the answer to the NOOP behind it.
async fn start_draining<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId) {
    {
        let mut st = px.state();
        let s = st.server(sid);
        s.state = ServerState::Draining;
        let expire = Instant::now() + ms(px.config.server_timeout_ms);
        st.set_timer(sid, Some(expire));
    }
    let failed = {
        let mut st = px.state();
        st.conn(sid).c.any(CO_FL_ERROR | CO_FL_SOCK_RD_SH)
    };
    drain_sentinel(px, sid, failed).await;
}

/// A draining backend connection: the NOOP's answer makes it idle again;
/// anything else, or its end, closes it.
pub async fn drain_sentinel<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId, failed: bool) {
    let parsed = px.state().server(sid).take_packet(&px.limits);
    match parsed {
        Ok(Some(p)) if p.header.opcode == Opcode::NOOP && p.header.opaque == SENTINEL_OPAQUE => {
            idle::release(px, sid).await;
        }
        Ok(None) if !failed => {
            let wanted = polling(&mut px.state().conn(sid).c, true, false);
            set_polling(&px.fdtab, wanted).await;
        }
        other => {
            tracing::debug!(target: "faultline::proxy", conn = sid, failed, unexpected = ?other.map(|p| p.map(|p| p.header.opcode)), "draining backend connection closed");
            px.state().close(sid);
        }
    }
}
