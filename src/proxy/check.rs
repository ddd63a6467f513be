//! Health checks: every `interval_ms`, thread 0 connects to each backend.
//! A connect check passes once the connection is established. A STAT check
//! sends `STAT` and reads the answer into a fixed-size check buffer; it
//! passes when the first packet is a successful `STAT` response, judged
//! once the answer is complete (the empty terminating packet), the buffer
//! is full (what fits is enough), or the server closed. A server goes down
//! after `fall` failed checks in a row and up after `rise` passed ones.
//!
//! The handler runs as HAProxy's connection handler did: receive, send,
//! then, while the connect is still pending, the connect probe
//! (`SO_ERROR`). A pending connect is polled for write only, so a refused
//! one is reported as OUT|ERR|HUP, and the receive path, called on ERR and
//! HUP, reads those poll flags first (HAP-CONNERR).

use std::time::Duration;

use faultline_harness::sys::Syscalls;
use faultline_harness::{sys::Errno, sys::Events};
use tokio::time::Instant;

use super::buffer::Buffer;
use super::config::CheckKind;
use super::conn::{CO_FL_ERROR, CO_FL_SOCK_RD_SH, CO_FL_WAIT_L4_CONN, ConnId, Connection};
use super::conn::{check_connect, polling, set_polling};
use super::process::Proxy;
use super::raw_sock::{rcv_buf, snd_buf};
use super::role::{CheckSide, Conn, Role};
use crate::protocol::{HEADER_LEN, Header, MAGIC_RESPONSE, Opcode, Packet};

/// What the bytes read so far say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Not enough bytes yet.
    Incomplete,
    Pass,
    Fail,
}

/// Judges a check buffer: the first packet must be a successful STAT
/// response; the answer is complete at the empty packet that ends it, or
/// when the buffer is full.
pub fn judge(buf: &[u8], full: bool) -> CheckResult {
    let mut offset = 0;
    let mut first = true;
    while let Some(head) = buf.get(offset..offset + HEADER_LEN) {
        let Ok(h) = Header::parse(head.try_into().expect("a header's length")) else {
            return CheckResult::Fail;
        };
        if first
            && (h.magic != MAGIC_RESPONSE || h.opcode != Opcode::STAT || !h.status().is_success())
        {
            return CheckResult::Fail;
        }
        first = false;
        let end = offset + HEADER_LEN + h.body_len as usize;
        if end > buf.len() {
            break;
        }
        if h.key_len == 0 {
            return CheckResult::Pass;
        }
        offset = end;
    }
    if full && !first {
        return CheckResult::Pass;
    }
    CheckResult::Incomplete
}

/// Starts the checks that are due (thread 0).
pub async fn start_due_checks<S: Syscalls + 'static>(px: &Proxy<S>, tid: usize) {
    let now = Instant::now();
    let due: Vec<usize> = {
        let st = px.state();
        (0..st.next_check.len())
            .filter(|&i| st.next_check[i] <= now)
            .collect()
    };
    for server in due {
        let interval = Duration::from_millis(px.config.check.interval_ms);
        px.state().next_check[server] = now + interval;
        if let Err(errno) = start(px, tid, server).await {
            tracing::debug!(target: "faultline::proxy", server, error = %errno, "check could not start");
            record(px, server, false).await;
        }
    }
}

async fn start<S: Syscalls + 'static>(
    px: &Proxy<S>,
    tid: usize,
    server: usize,
) -> Result<(), Errno> {
    let addr = px.backends[server].addr;
    let c = Connection::open(&px.sys, &px.fdtab, addr, tid, || px.state().new_conn_id()).await?;
    let (id, fd) = (c.id, c.fd);
    let mut st = px.state();
    st.conns.insert(
        id,
        Conn::new(
            c,
            Role::Check(CheckSide {
                server,
                buf: Buffer::new(px.config.check.buffer_bytes),
                request: match px.config.check.kind {
                    CheckKind::Connect => Vec::new(),
                    CheckKind::Stat => Packet::request(Opcode::STAT).opaque(0xc4ec).encode(),
                },
                sent: 0,
            }),
        ),
    );
    let expire = Instant::now() + Duration::from_millis(px.config.check.timeout_ms);
    st.set_timer(id, Some(expire));
    st.wake(id);
    tracing::debug!(target: "faultline::proxy", conn = id, fd, server, "check started");
    Ok(())
}

// The parts of a check's role its transport functions are lent.

fn check_of(role: &mut Role) -> &mut CheckSide {
    role.check()
}

fn check_buf(role: &mut Role) -> &mut Buffer {
    &mut role.check().buf
}

/// Records a check result in thread 0's health record; a change of state
/// is published to every thread (HAProxy's `srv->cur_state`).
async fn record<S: Syscalls + 'static>(px: &Proxy<S>, server: usize, ok: bool) {
    let changed = {
        let mut st = px.state();
        let (rise, fall) = (px.config.check.rise, px.config.check.fall);
        let s = &mut st.health[server];
        s.record_check(ok, rise, fall)
    };
    if let Some(up) = changed {
        px.backends[server].up.store(up).await;
        tracing::info!(target: "faultline::proxy", server = px.backends[server].name.as_str(), up, "server state changed");
        faultline_harness::probe(if up {
            "proxy:server-up"
        } else {
            "proxy:server-down"
        });
    }
}

/// The check connection's handler.
pub async fn process_check<S: Syscalls + 'static>(
    px: &Proxy<S>,
    _tid: usize,
    id: ConnId,
    events: Option<Events>,
) -> bool {
    let (server, verdict, progress, wanted) = {
        let (flags_before, size) = {
            let mut st = px.state();
            let Some(conn) = st.conns.get_mut(&id) else {
                return false;
            };
            let failed = conn.c.has(CO_FL_ERROR);
            let check = conn.check();
            // Asks for the buffer's whole size (both variants): rcv_buf
            // bounds it by the free space (the old one trusted its caller).
            let size = (!failed && !check.buf.is_full()).then(|| check.buf.size());
            (conn.c.flags, size)
        };
        let mut progress = false;
        if let Some(size) = size {
            let mut lent = px.lent(id, check_buf);
            let n = rcv_buf(&px.sys, &px.fdtab, &mut lent, size, &px.bugs).await;
            progress |= n > 0;
        }
        // (Sent from a copy: nothing is borrowed across a syscall.)
        let to_send = {
            let mut st = px.state();
            let conn = st.conn(id);
            let failed = conn.c.has(CO_FL_ERROR);
            let check = conn.check();
            (check.sent < check.request.len() && !failed)
                .then(|| check.request[check.sent..].to_vec())
        };
        if let Some(data) = to_send {
            let mut lent = px.lent(id, check_of);
            let n = snd_buf(&px.sys, &px.fdtab, &mut lent, &data, &px.bugs).await;
            px.state().conn(id).check().sent += n;
            progress |= n > 0;
        }
        let mut st = px.state();
        let conn = st.conn(id);
        let c = &mut conn.c;
        let check = conn.role.check();
        if !c.has(CO_FL_ERROR) {
            check_connect(&px.sys, c, events);
        }
        progress |= c.flags != flags_before;
        let mut verdict = match px.config.check.kind {
            CheckKind::Connect if c.has(CO_FL_ERROR) => CheckResult::Fail,
            CheckKind::Connect if !c.has(CO_FL_WAIT_L4_CONN) => CheckResult::Pass,
            CheckKind::Connect => CheckResult::Incomplete,
            CheckKind::Stat => judge(check.buf.data(), check.buf.is_full()),
        };
        if verdict == CheckResult::Pass && check.buf.is_full() {
            faultline_harness::probe("proxy:check-judged-on-full-buffer");
        }
        if verdict == CheckResult::Incomplete && c.any(CO_FL_ERROR | CO_FL_SOCK_RD_SH) {
            verdict = CheckResult::Fail;
        }
        let wanted = (verdict == CheckResult::Incomplete)
            .then(|| polling(c, true, check.sent < check.request.len()));
        (check.server, verdict, progress, wanted.flatten())
    };
    set_polling(&px.fdtab, wanted).await;
    if verdict != CheckResult::Incomplete {
        if verdict == CheckResult::Fail {
            let errno = px.state().conns.get(&id).and_then(|c| c.c.errno);
            tracing::debug!(target: "faultline::proxy", conn = id, server, errno = ?errno, "check failed");
        }
        record(px, server, verdict == CheckResult::Pass).await;
        px.state().close(id);
        return true;
    }
    progress
}

/// A check timed out.
pub async fn on_timeout<S: Syscalls + 'static>(px: &Proxy<S>, _tid: usize, id: ConnId) {
    let server = match px.state().conns.get(&id).map(|c| &c.role) {
        Some(Role::Check(check)) => check.server,
        _ => return,
    };
    tracing::debug!(target: "faultline::proxy", conn = id, server, "check timed out");
    record(px, server, false).await;
    px.state().close(id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Status;

    fn stat(key: &str, value: &str) -> Vec<u8> {
        let request = Packet::request(Opcode::STAT).opaque(1);
        Packet::response(&request.header, Status::SUCCESS)
            .key(key.as_bytes().to_vec())
            .value(value.as_bytes().to_vec())
            .encode()
    }

    #[test]
    fn a_whole_stat_answer_passes_and_a_partial_one_waits() {
        let mut answer = stat("version", "1.6");
        answer.extend(stat("uptime", "3"));
        assert_eq!(judge(&answer, false), CheckResult::Incomplete);
        answer.extend(stat("", ""));
        assert_eq!(judge(&answer, false), CheckResult::Pass);
        assert_eq!(judge(&answer[..30], false), CheckResult::Incomplete);
    }

    #[test]
    fn a_full_buffer_is_judged_on_what_fits() {
        let mut answer = stat("version", "1.6");
        answer.extend(stat("uptime", "3"));
        // The first packet and part of the second fit: enough.
        assert_eq!(judge(&answer[..40], true), CheckResult::Pass);
        assert_eq!(judge(&answer[..10], true), CheckResult::Incomplete);
    }

    #[test]
    fn an_error_status_or_garbage_fails() {
        let request = Packet::request(Opcode::STAT).opaque(1);
        let refused = Packet::response(&request.header, Status::EINTERNAL).encode();
        assert_eq!(judge(&refused, false), CheckResult::Fail);
        assert_eq!(judge(&[0x42; 24], false), CheckResult::Fail);
    }
}
