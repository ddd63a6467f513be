//! Routing: what the proxy answers itself (NOOP, VERSION, QUIT, STAT),
//! what it refuses, and where a request goes: a keyed one to the server
//! active for its key's vbucket, FLUSH to every server in turn. A request
//! that must go to a backend becomes the client's [`Request`].

use faultline_harness::sys::Syscalls;

use super::conn::ConnId;
use super::process::Proxy;
use super::role::{Kind, Request, SENTINEL_OPAQUE};
use super::state::State;
use crate::protocol::{Header, Opcode, Packet, Status, vbucket_of};

/// What the proxy answers to VERSION.
pub const VERSION: &str = "faultline-proxy-1.0";

/// The keyed requests, routed by their key's vbucket.
fn keyed(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::GET
            | Opcode::GETK
            | Opcode::SET
            | Opcode::ADD
            | Opcode::REPLACE
            | Opcode::APPEND
            | Opcode::PREPEND
            | Opcode::DELETE
            | Opcode::INCREMENT
            | Opcode::DECREMENT
    )
}

/// What handling a request reads of what the threads share (the vbucket
/// map, the servers' states, the counters), read before it is handled:
/// each read is an atomic load, a point where other threads may run.
#[derive(Default)]
pub struct Seen {
    /// A keyed request: its vbucket, the server believed active for it,
    /// whether that server is up.
    route: Option<(u16, usize, bool)>,
    /// STAT and FLUSH: every server's state.
    up: Vec<bool>,
    spliced_bytes: u64,
}

impl Seen {
    pub async fn read<S: Syscalls + 'static>(px: &Proxy<S>, packet: &Packet) -> Seen {
        let h = &packet.header;
        if !h.is_request() {
            return Seen::default();
        }
        let opcode = h.opcode.loud();
        let mut seen = Seen::default();
        if opcode == Opcode::STAT || opcode == Opcode::FLUSH {
            for b in &px.backends {
                seen.up.push(b.up.load().await);
            }
            if opcode == Opcode::STAT {
                seen.spliced_bytes = px.spliced_bytes.load().await;
            }
        } else if keyed(opcode) && !packet.key.is_empty() {
            let vb = vbucket_of(&packet.key, px.config.vbuckets);
            let server = px.vbmap[usize::from(vb)].load().await;
            let up = px.backends[server].up.load().await;
            seen.route = Some((vb, server, up));
        }
        seen
    }
}

/// Answers what the proxy answers itself; a keyed request becomes the
/// client's request (answers whether it must go to a backend).
pub fn accept_request<S: Syscalls + 'static>(
    px: &Proxy<S>,
    st: &mut State,
    id: ConnId,
    packet: Packet,
    seen: &Seen,
) -> bool {
    let h = packet.header;
    let cl = st.client(id);
    if !h.is_request() {
        cl.refuse(Some(h), Status::EINVAL);
        return false;
    }
    let opcode = h.opcode.loud();
    if opcode == Opcode::STAT {
        let answer = stats(px, st, seen, &h, &packet.key);
        st.client(id).out.extend_from_slice(&answer);
        return false;
    }
    match opcode {
        Opcode::NOOP => {
            Packet::response(&h, Status::SUCCESS).encode_into(&mut cl.out);
            return false;
        }
        Opcode::VERSION => {
            Packet::response(&h, Status::SUCCESS)
                .value(VERSION.as_bytes().to_vec())
                .encode_into(&mut cl.out);
            return false;
        }
        Opcode::QUIT => {
            if !h.opcode.is_quiet() {
                Packet::response(&h, Status::SUCCESS).encode_into(&mut cl.out);
            }
            cl.close_after_flush = true;
            return false;
        }
        Opcode::FLUSH => return flush_request(st, id, packet, seen, px.config.retries),
        op if keyed(op) => {}
        _ => {
            Packet::response(&h, Status::NOT_SUPPORTED).encode_into(&mut cl.out);
            return false;
        }
    }
    if packet.key.is_empty() {
        Packet::response(&h, Status::EINVAL).encode_into(&mut cl.out);
        return false;
    }
    let (vb, server, up) = seen.route.expect("a keyed request's route was read");
    if !up {
        faultline_harness::probe("proxy:server-down");
        Packet::response(&h, Status::ETMPFAIL).encode_into(&mut cl.out);
        return false;
    }
    let mut forwarded = packet.clone();
    forwarded.header.vbucket_or_status = vb;
    let mut bytes = forwarded.encode();
    let sentinel = h.opcode.is_quiet();
    if sentinel {
        // Quiet as the client asked (the backend knows what a quiet
        // command answers), with a NOOP behind it: its answer says the
        // backend is done with the request.
        let mut noop = Packet::request(Opcode::NOOP);
        noop.header.opaque = SENTINEL_OPAQUE;
        noop.encode_into(&mut bytes);
    }
    cl.request = Some(Request {
        header: h,
        forwarded: bytes,
        vb,
        server,
        server_conn: None,
        retries_left: px.config.retries,
        moves_left: (px.backends.len() - 1) as u32,
        flush_left: 0,
        sentinel,
    });
    true
}

/// FLUSH empties every server: it goes to the first, then, as each one
/// answers success, to the next; the client hears the last answer (or the
/// first failure). A server that is down cannot be flushed: `ETMPFAIL`
/// before any is, so that a flush is never half done by choice.
fn flush_request(st: &mut State, id: ConnId, packet: Packet, seen: &Seen, retries: u32) -> bool {
    let h = packet.header;
    let servers = seen.up.len();
    assert!(servers > 0, "a proxy has at least one backend");
    let all_up = seen.up.iter().all(|up| *up);
    let cl = st.client(id);
    if !all_up {
        faultline_harness::probe("proxy:flush-server-down");
        Packet::response(&h, Status::ETMPFAIL).encode_into(&mut cl.out);
        return false;
    }
    let mut forwarded = packet;
    forwarded.header.opcode = Opcode::FLUSH;
    cl.request = Some(Request {
        header: h,
        forwarded: forwarded.encode(),
        vb: 0,
        server: 0,
        server_conn: None,
        retries_left: retries,
        moves_left: 0,
        flush_left: servers - 1,
        sentinel: false,
    });
    true
}

/// The proxy's own statistics (STAT without a group): one packet per
/// statistic, then an empty one; an unknown group is `KEY_ENOENT`.
fn stats<S: Syscalls + 'static>(
    px: &Proxy<S>,
    st: &State,
    seen: &Seen,
    h: &Header,
    group: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    if !group.is_empty() {
        Packet::response(h, Status::KEY_ENOENT).encode_into(&mut out);
        return out;
    }
    let clients = st
        .conns
        .values()
        .filter(|c| c.role.kind() == Kind::Client)
        .count();
    let up = seen.up.iter().filter(|up| **up).count();
    let mut entries = vec![
        ("version".to_string(), VERSION.to_string()),
        ("threads".into(), px.config.threads.to_string()),
        ("curr_connections".into(), clients.to_string()),
        ("backends".into(), px.backends.len().to_string()),
        ("backends_up".into(), up.to_string()),
        ("spliced_bytes".into(), seen.spliced_bytes.to_string()),
    ];
    entries.extend(px.backends.iter().zip(&seen.up).map(|(b, up)| {
        let state = if *up { "up" } else { "down" };
        (format!("server:{}", b.name), state.to_string())
    }));
    for (key, value) in entries {
        Packet::response(h, Status::SUCCESS)
            .key(key.as_bytes().to_vec())
            .value(value.into_bytes())
            .encode_into(&mut out);
    }
    Packet::response(h, Status::SUCCESS).encode_into(&mut out);
    out
}
