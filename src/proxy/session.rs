//! Client connections, backend connections and the requests between them.
//!
//! A client connection reads request packets into its buffer and handles
//! one at a time: NOOP, VERSION and STAT are answered here, keyed commands go to
//! the node active for the key's vbucket, the rest is refused. A keyed
//! request takes a backend connection: an idle one of this thread, else an
//! idle one of another thread (its fd is taken over and migrates), else a
//! new one. The request is sent at once (speculatively, even while the
//! connect is in progress) and the response read into the backend
//! connection's buffer; once whole, it goes back to the client (quiet
//! commands answer only what they must) and the backend connection returns
//! to the pool.
//!
//! A connection error before any byte of the response (connect failure or
//! timeout, reset, close) is retried on a new connection, `retries` times;
//! then, or after a timeout once the request was sent, the client gets
//! `ETMPFAIL`.
//!
//! Every handler runs without awaiting, on its connection's thread, and
//! ends by deciding the connection's polling (what it waits for).

use std::time::Duration;

use faultline_harness::Syscalls;
use faultline_harness::{Errno, Events};
use tokio::time::Instant;

use super::buffer::Buffer;
use super::conn::{
    CO_FL_ERROR, CO_FL_SOCK_RD_SH, CO_FL_SOCK_WR_SH, CO_FL_WAIT_L4_CONN, ConnId, Connection,
};
use super::fd::{Owner, bit};
use super::raw_sock::{rcv_buf, snd_buf};
use super::{Conn, Proxy, VERSION};
use crate::protocol::{Header, MAGIC_RESPONSE, Opcode, Packet, ProtocolError, Status, vbucket_of};

/// What a connection is for.
pub enum Role {
    Client(ClientSide),
    Server(ServerSide),
    Check(super::check::CheckSide),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Client,
    Server,
    Check,
}

impl Role {
    pub fn kind(&self) -> Kind {
        match self {
            Role::Client(_) => Kind::Client,
            Role::Server(_) => Kind::Server,
            Role::Check(_) => Kind::Check,
        }
    }
}

/// A client connection.
pub struct ClientSide {
    pub inbuf: Buffer,
    /// Response bytes not sent yet.
    pub out: Vec<u8>,
    pub request: Option<Request>,
    /// Close once `out` is sent (after a refused packet or QUIT).
    pub close_after_flush: bool,
}

impl ClientSide {
    pub fn new(buffer_bytes: usize) -> ClientSide {
        ClientSide {
            inbuf: Buffer::new(buffer_bytes),
            out: Vec::new(),
            request: None,
            close_after_flush: false,
        }
    }
}

/// A request on its way to a backend.
pub struct Request {
    /// The client's header (opcode, opaque).
    pub header: Header,
    /// The packet as forwarded (loud opcode, the key's vbucket).
    pub forwarded: Vec<u8>,
    /// The key's vbucket.
    pub vb: u16,
    pub server: usize,
    pub server_conn: Option<ConnId>,
    pub retries_left: u32,
    /// Other servers still to try when one answers `NOT_MY_VBUCKET`.
    pub moves_left: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// In the pool.
    Idle,
    /// Carrying the request of a client connection.
    Busy(ConnId),
}

/// A backend connection.
pub struct ServerSide {
    pub server: usize,
    pub inbuf: Buffer,
    pub out: Vec<u8>,
    pub sent: usize,
    pub state: ServerState,
    /// A byte of the response arrived: no retry any more.
    pub response_started: bool,
}

fn client_of(conn: &mut Conn) -> &mut ClientSide {
    match &mut conn.role {
        Role::Client(c) => c,
        _ => unreachable!("a client connection"),
    }
}

fn server_of(conn: &mut Conn) -> &mut ServerSide {
    match &mut conn.role {
        Role::Server(s) => s,
        _ => unreachable!("a backend connection"),
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Checks a pending connect after a poll report: `SO_ERROR` says whether
/// it failed; writability says it completed.
pub fn check_connect<S: Syscalls>(sys: &S, c: &mut Connection, events: Option<Events>) {
    let Some(ev) = events else {
        return;
    };
    if !c.has(CO_FL_WAIT_L4_CONN) || !ev.intersects(Events::OUT | Events::ERR | Events::HUP) {
        return;
    }
    match sys.take_error(c.fd) {
        Ok(Some(errno)) => c.fail(Some(errno)),
        Err(errno) => c.fail(Some(errno)),
        Ok(None) if ev.contains(Events::ERR) => c.fail(None),
        Ok(None) if ev.contains(Events::OUT) => c.flags &= !CO_FL_WAIT_L4_CONN,
        Ok(None) => {}
    }
}

/// Updates an fd's polling from what the connection waits for.
fn set_polling<S: Syscalls>(px: &Proxy<S>, c: &Connection, recv: bool, send: bool) {
    if !c.ctrl_ready() {
        return;
    }
    let mut t = px.fdtab.borrow_mut();
    let (recv, send) = if c.has(CO_FL_ERROR) {
        (false, false)
    } else {
        (
            recv && !c.has(CO_FL_SOCK_RD_SH),
            send && !c.has(CO_FL_SOCK_WR_SH),
        )
    };
    if recv {
        t.want_recv(c.fd, c.thread);
    } else {
        t.stop_recv(c.fd, c.thread);
    }
    if send {
        t.want_send(c.fd, c.thread);
    } else {
        t.stop_send(c.fd, c.thread);
    }
}

// ---------------------------------------------------------------------------
// Client side.
// ---------------------------------------------------------------------------

/// The client connection's handler. Answers whether it made progress.
pub fn process_client<S: Syscalls + 'static>(px: &Proxy<S>, tid: usize, id: ConnId) -> bool {
    let mut progress = false;
    let mut st = px.state.borrow_mut();
    let st = &mut *st;
    let Some(conn) = st.conns.get_mut(&id) else {
        return false;
    };
    let flags_before = conn.c.flags;
    // Send what is pending.
    {
        let Conn { c, role, .. } = conn;
        let Role::Client(cl) = role else {
            unreachable!()
        };
        if !cl.out.is_empty() {
            let n = snd_buf(&px.sys, &mut px.fdtab.borrow_mut(), c, &cl.out, &px.bugs);
            cl.out.drain(..n);
            progress |= n > 0;
        }
        // Receive while there is room: ask for the free space.
        cl.inbuf.compact();
        if cl.inbuf.room() > 0 {
            let room = cl.inbuf.room();
            let n = rcv_buf(
                &px.sys,
                &mut px.fdtab.borrow_mut(),
                c,
                &mut cl.inbuf,
                room,
                &px.bugs,
            );
            progress |= n > 0;
        }
    }
    progress |= conn.c.flags != flags_before;
    if conn.c.has(CO_FL_ERROR) {
        tracing::debug!(target: "faultline::proxy", conn = id, errno = ?conn.c.errno, "client connection failed");
        abort_client(st, id);
        return true;
    }
    // Handle the requests that arrived, one at a time.
    loop {
        let conn = st.conns.get_mut(&id).expect("present");
        let cl = client_of(conn);
        if cl.request.is_some() || cl.close_after_flush {
            break;
        }
        let parsed = Packet::try_parse(cl.inbuf.data(), &px.limits);
        match parsed {
            Ok(Some((packet, used))) => {
                cl.inbuf.consume(used);
                progress = true;
                dispatch(px, st, tid, id, packet);
            }
            Ok(None) => {
                if cl.inbuf.is_full() {
                    // A packet larger than the buffer: refused.
                    let header = peek_header(cl.inbuf.data());
                    refuse(cl, header, Status::E2BIG);
                    progress = true;
                }
                break;
            }
            Err(e) => {
                let status = match e {
                    ProtocolError::BodyTooLarge { .. } => Status::E2BIG,
                    _ => Status::EINVAL,
                };
                let header = peek_header(cl.inbuf.data());
                tracing::debug!(target: "faultline::proxy", conn = id, error = %e, "malformed request");
                refuse(cl, header, status);
                progress = true;
                break;
            }
        }
    }
    let conn = st.conns.get_mut(&id).expect("present");
    let Conn { c, role, .. } = conn;
    let Role::Client(cl) = role else {
        unreachable!()
    };
    // Send what the requests produced (speculatively).
    if !cl.out.is_empty() {
        let n = snd_buf(&px.sys, &mut px.fdtab.borrow_mut(), c, &cl.out, &px.bugs);
        cl.out.drain(..n);
        progress |= n > 0;
        if c.has(CO_FL_ERROR) {
            abort_client(st, id);
            return true;
        }
    }
    let idle = cl.request.is_none() && cl.out.is_empty();
    let done_reading = c.has(CO_FL_SOCK_RD_SH) || cl.close_after_flush;
    if idle && done_reading {
        // The client closed (what is left of its input can never become
        // a packet) or must be closed, and nothing is pending.
        st.close(id);
        return true;
    }
    let want_recv = !cl.inbuf.is_full() && !cl.close_after_flush;
    let want_send = !cl.out.is_empty();
    set_polling(px, c, want_recv, want_send);
    if idle {
        let expire = Instant::now() + ms(px.config.client_timeout_ms);
        if progress || conn.expire.is_none() {
            st.set_timer(id, Some(expire));
        }
    } else if st.conns[&id].expire.is_some() {
        st.set_timer(id, None);
    }
    progress
}

fn peek_header(bytes: &[u8]) -> Option<Header> {
    let head: &[u8; crate::protocol::HEADER_LEN] =
        bytes.get(..crate::protocol::HEADER_LEN)?.try_into().ok()?;
    Header::parse(head).ok()
}

/// Answers a packet that cannot be handled, then closes: the next packet
/// boundary is unknown.
fn refuse(cl: &mut ClientSide, header: Option<Header>, status: Status) {
    if let Some(h) = header {
        if h.is_request() {
            Packet::response(&h, status).encode_into(&mut cl.out);
        }
    }
    cl.inbuf.clear();
    cl.close_after_flush = true;
}

/// The client connection failed: close it, and the backend connection
/// carrying its request (the response would have nowhere to go).
fn abort_client(st: &mut super::State, id: ConnId) {
    let request = st
        .conns
        .get_mut(&id)
        .and_then(|c| client_of(c).request.take());
    if let Some(sid) = request.and_then(|r| r.server_conn) {
        st.close(sid);
    }
    st.close(id);
}

/// Handles one request packet of client connection `id`.
fn dispatch<S: Syscalls + 'static>(
    px: &Proxy<S>,
    st: &mut super::State,
    tid: usize,
    id: ConnId,
    packet: Packet,
) {
    let h = packet.header;
    let cl = client_of(st.conns.get_mut(&id).expect("present"));
    if !h.is_request() {
        refuse(cl, Some(h), Status::EINVAL);
        return;
    }
    let opcode = h.opcode.loud();
    if opcode == Opcode::STAT {
        let answer = stats(px, st, &h, &packet.key);
        client_of(st.conns.get_mut(&id).expect("present"))
            .out
            .extend_from_slice(&answer);
        return;
    }
    match opcode {
        Opcode::NOOP => {
            Packet::response(&h, Status::SUCCESS).encode_into(&mut cl.out);
            return;
        }
        Opcode::VERSION => {
            Packet::response(&h, Status::SUCCESS)
                .value(VERSION.as_bytes().to_vec())
                .encode_into(&mut cl.out);
            return;
        }
        Opcode::QUIT => {
            if !h.opcode.is_quiet() {
                Packet::response(&h, Status::SUCCESS).encode_into(&mut cl.out);
            }
            cl.close_after_flush = true;
            return;
        }
        Opcode::GET
        | Opcode::GETK
        | Opcode::SET
        | Opcode::ADD
        | Opcode::REPLACE
        | Opcode::APPEND
        | Opcode::PREPEND
        | Opcode::DELETE
        | Opcode::INCREMENT
        | Opcode::DECREMENT => {}
        _ => {
            Packet::response(&h, Status::NOT_SUPPORTED).encode_into(&mut cl.out);
            return;
        }
    }
    if packet.key.is_empty() {
        Packet::response(&h, Status::EINVAL).encode_into(&mut cl.out);
        return;
    }
    let vb = vbucket_of(&packet.key, px.config.vbuckets);
    let server = st.vbmap[usize::from(vb)];
    if !st.servers[server].up {
        faultline_harness::probe("proxy:server-down");
        Packet::response(&h, Status::ETMPFAIL).encode_into(&mut cl.out);
        return;
    }
    let mut forwarded = packet.clone();
    forwarded.header.opcode = opcode;
    forwarded.header.vbucket_or_status = vb;
    cl.request = Some(Request {
        header: h,
        forwarded: forwarded.encode(),
        vb,
        server,
        server_conn: None,
        retries_left: px.config.retries,
        moves_left: (st.servers.len() - 1) as u32,
    });
    attach(px, st, tid, id, false);
}

/// The proxy's own statistics (STAT without a group): one packet per
/// statistic, then an empty one; an unknown group is `KEY_ENOENT`.
fn stats<S: Syscalls + 'static>(
    px: &Proxy<S>,
    st: &super::State,
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
    let up = st.servers.iter().filter(|s| s.up).count();
    let entries = [
        ("version", VERSION.to_string()),
        ("threads", px.config.threads.to_string()),
        ("curr_connections", clients.to_string()),
        ("backends", st.servers.len().to_string()),
        ("backends_up", up.to_string()),
    ];
    for (key, value) in entries {
        Packet::response(h, Status::SUCCESS)
            .key(key.as_bytes().to_vec())
            .value(value.into_bytes())
            .encode_into(&mut out);
    }
    Packet::response(h, Status::SUCCESS).encode_into(&mut out);
    out
}

/// Gives client `id`'s request a backend connection and starts sending it.
fn attach<S: Syscalls + 'static>(
    px: &Proxy<S>,
    st: &mut super::State,
    tid: usize,
    id: ConnId,
    force_new: bool,
) {
    let (server, bytes) = {
        let r = client_of(st.conns.get_mut(&id).expect("present"))
            .request
            .as_ref()
            .expect("a request to attach");
        (r.server, r.forwarded.clone())
    };
    let sid = match server_conn(px, st, tid, server, force_new) {
        Ok(sid) => sid,
        Err(errno) => {
            tracing::debug!(target: "faultline::proxy", conn = id, server, error = %errno, "no backend connection");
            request_failed(st, id);
            return;
        }
    };
    {
        let s = server_of(st.conns.get_mut(&sid).expect("present"));
        s.state = ServerState::Busy(id);
        s.out = bytes;
        s.sent = 0;
        s.response_started = false;
        s.inbuf.clear();
    }
    if let Some(r) = client_of(st.conns.get_mut(&id).expect("present"))
        .request
        .as_mut()
    {
        r.server_conn = Some(sid);
    }
    let waiting = st.conns[&sid].c.has(CO_FL_WAIT_L4_CONN);
    let timeout = if waiting {
        px.config.connect_timeout_ms
    } else {
        px.config.server_timeout_ms
    };
    st.set_timer(sid, Some(Instant::now() + ms(timeout)));
    st.wake(sid);
}

/// A backend connection for `server` on thread `tid`: an idle one of this
/// thread, else one taken over from another thread, else a new one.
fn server_conn<S: Syscalls + 'static>(
    px: &Proxy<S>,
    st: &mut super::State,
    tid: usize,
    server: usize,
    force_new: bool,
) -> Result<ConnId, Errno> {
    if !force_new {
        let idle = &st.servers[server].idle;
        if let Some(pos) = idle.iter().rposition(|c| st.conns[c].c.thread == tid) {
            let sid = st.servers[server].idle.remove(pos);
            return Ok(sid);
        }
        for pos in (0..st.servers[server].idle.len()).rev() {
            let sid = st.servers[server].idle[pos];
            let fd = st.conns[&sid].c.fd;
            if px.fdtab.borrow_mut().takeover(fd, tid, Owner::Conn(sid)) {
                st.servers[server].idle.remove(pos);
                let from = st.conns[&sid].c.thread;
                st.migrate(sid, tid);
                faultline_harness::probe("proxy:takeover");
                tracing::debug!(target: "faultline::proxy", conn = sid, fd, from, to = tid, "idle backend connection taken over");
                return Ok(sid);
            }
        }
    }
    let addr = st.servers[server].addr;
    let fd = px.sys.socket()?;
    let in_progress = match px.sys.connect(fd, addr) {
        Ok(()) => false,
        Err(Errno::EINPROGRESS) => true,
        Err(e) => {
            // The control layer was never initialised: close the socket itself.
            let _ = px.sys.close(fd);
            return Err(e);
        }
    };
    let sid = st.new_conn_id();
    let mut c = Connection::new(sid, tid);
    c.ctrl_init(&mut px.fdtab.borrow_mut(), fd, bit(tid));
    c.xprt_init();
    if in_progress {
        c.flags |= CO_FL_WAIT_L4_CONN;
    }
    tracing::debug!(target: "faultline::proxy", thread = tid, conn = sid, fd, %addr, "connecting");
    st.conns.insert(
        sid,
        Conn {
            c,
            role: Role::Server(ServerSide {
                server,
                inbuf: Buffer::new(px.config.buffer_bytes),
                out: Vec::new(),
                sent: 0,
                state: ServerState::Idle,
                response_started: false,
            }),
            expire: None,
            closing: false,
        },
    );
    Ok(sid)
}

/// Client `id`'s request cannot be served: `ETMPFAIL`.
fn request_failed(st: &mut super::State, id: ConnId) {
    let Some(conn) = st.conns.get_mut(&id) else {
        return;
    };
    let cl = client_of(conn);
    if let Some(r) = cl.request.take() {
        Packet::response(&r.header, Status::ETMPFAIL).encode_into(&mut cl.out);
    }
    st.wake(id);
}

/// The backend connection carrying client `id`'s request failed.
/// `before_response`: no byte of the response arrived (a retry is safe).
fn backend_failed<S: Syscalls + 'static>(
    px: &Proxy<S>,
    st: &mut super::State,
    tid: usize,
    id: ConnId,
    before_response: bool,
) {
    let retry = {
        let Some(conn) = st.conns.get_mut(&id) else {
            return;
        };
        let Some(r) = client_of(conn).request.as_mut() else {
            return;
        };
        r.server_conn = None;
        if before_response && r.retries_left > 0 {
            r.retries_left -= 1;
            true
        } else {
            false
        }
    };
    if retry {
        faultline_harness::probe("proxy:retry");
        attach(px, st, tid, id, true);
    } else {
        request_failed(st, id);
    }
}

// ---------------------------------------------------------------------------
// Backend side.
// ---------------------------------------------------------------------------

/// The backend connection's handler. Answers whether it made progress.
pub fn process_server<S: Syscalls + 'static>(
    px: &Proxy<S>,
    tid: usize,
    sid: ConnId,
    events: Option<Events>,
) -> bool {
    let mut progress = false;
    let mut st = px.state.borrow_mut();
    let st = &mut *st;
    let Some(conn) = st.conns.get_mut(&sid) else {
        return false;
    };
    let flags_before = conn.c.flags;
    let sent_all;
    {
        let Conn { c, role, .. } = conn;
        let Role::Server(s) = role else {
            unreachable!()
        };
        check_connect(&px.sys, c, events);
        if s.sent < s.out.len() && !c.has(CO_FL_ERROR) {
            let n = snd_buf(
                &px.sys,
                &mut px.fdtab.borrow_mut(),
                c,
                &s.out[s.sent..],
                &px.bugs,
            );
            s.sent += n;
            progress |= n > 0;
        }
        sent_all = s.sent == s.out.len();
        if !c.has(CO_FL_ERROR) {
            let room = s.inbuf.room();
            let n = rcv_buf(
                &px.sys,
                &mut px.fdtab.borrow_mut(),
                c,
                &mut s.inbuf,
                room,
                &px.bugs,
            );
            if n > 0 {
                s.response_started = true;
                progress = true;
            }
        }
    }
    progress |= conn.c.flags != flags_before;
    let (state, failed, ended, started) = {
        let (failed, ended) = (conn.c.has(CO_FL_ERROR), conn.c.has(CO_FL_SOCK_RD_SH));
        let s = server_of(conn);
        (s.state, failed, ended, s.response_started)
    };
    match state {
        ServerState::Idle => {
            let s = server_of(st.conns.get_mut(&sid).expect("present"));
            if failed || ended || !s.inbuf.is_empty() {
                // Closed by the server, failed, or unexpected bytes.
                st.close(sid);
                return true;
            }
            let c = &st.conns[&sid].c;
            set_polling(px, c, true, false);
        }
        ServerState::Busy(client_id) => {
            let parsed = {
                let s = server_of(st.conns.get_mut(&sid).expect("present"));
                Packet::try_parse(s.inbuf.data(), &px.limits)
            };
            match parsed {
                Ok(Some((response, used))) => {
                    server_of(st.conns.get_mut(&sid).expect("present"))
                        .inbuf
                        .consume(used);
                    deliver(px, st, tid, sid, client_id, response);
                    return true;
                }
                Ok(None) => {
                    let full = server_of(st.conns.get_mut(&sid).expect("present"))
                        .inbuf
                        .is_full();
                    if failed || ended || full {
                        if full {
                            tracing::debug!(target: "faultline::proxy", conn = sid, "response larger than the buffer");
                        }
                        tracing::debug!(target: "faultline::proxy", conn = sid, errno = ?st.conns[&sid].c.errno, started, "backend connection failed");
                        st.close(sid);
                        backend_failed(px, st, tid, client_id, !started && !full);
                        return true;
                    }
                }
                Err(e) => {
                    tracing::debug!(target: "faultline::proxy", conn = sid, error = %e, "malformed response");
                    st.close(sid);
                    backend_failed(px, st, tid, client_id, false);
                    return true;
                }
            }
            let conn = &st.conns[&sid];
            let waiting_connect = conn.c.has(CO_FL_WAIT_L4_CONN);
            set_polling(px, &conn.c, true, !sent_all || waiting_connect);
            if sent_all && !waiting_connect && progress {
                // Sent and connected: the server timeout runs from now.
                let expire = Instant::now() + ms(px.config.server_timeout_ms);
                st.set_timer(sid, Some(expire));
            }
        }
    }
    progress
}

/// A whole response arrived on backend connection `sid` for client `cid`.
fn deliver<S: Syscalls + 'static>(
    px: &Proxy<S>,
    st: &mut super::State,
    tid: usize,
    sid: ConnId,
    cid: ConnId,
    response: Packet,
) {
    let request = st
        .conns
        .get_mut(&cid)
        .and_then(|c| client_of(c).request.take());
    let Some(mut request) = request else {
        st.close(sid);
        return;
    };
    let h = response.header;
    let forwarded_opcode = request.header.opcode.loud();
    if h.magic != MAGIC_RESPONSE
        || h.opcode != forwarded_opcode
        || h.opaque != request.header.opaque
    {
        tracing::debug!(target: "faultline::proxy", conn = sid, opcode = %h.opcode, opaque = h.opaque, "a response that does not answer the request");
        st.close(sid);
        let cl = client_of(st.conns.get_mut(&cid).expect("present"));
        Packet::response(&request.header, Status::EINTERNAL).encode_into(&mut cl.out);
        st.wake(cid);
        return;
    }
    let status = h.status();
    if status == Status::NOT_MY_VBUCKET && request.moves_left > 0 {
        // The vbucket moved (a rebalance): try the next server, and
        // remember where it answered.
        let next = (request.server + 1) % st.servers.len();
        tracing::debug!(target: "faultline::proxy", conn = cid, vb = request.vb, from = request.server, to = next, "not my vbucket: trying the next server");
        faultline_harness::probe("proxy:not-my-vbucket");
        st.vbmap[usize::from(request.vb)] = next;
        request.server = next;
        request.server_conn = None;
        request.moves_left -= 1;
        request.retries_left = px.config.retries;
        client_of(st.conns.get_mut(&cid).expect("present")).request = Some(request);
        release_backend(px, st, sid);
        attach(px, st, tid, cid, false);
        return;
    }
    // Quiet commands: GETQ/GETKQ answer hits only, the others failures only.
    let quiet = request.header.opcode.is_quiet();
    let silent = quiet
        && match forwarded_opcode {
            Opcode::GET | Opcode::GETK => !status.is_success(),
            _ => status.is_success(),
        };
    {
        let cl = client_of(st.conns.get_mut(&cid).expect("present"));
        if !silent {
            let mut back = response;
            back.header.opcode = request.header.opcode;
            back.encode_into(&mut cl.out);
        }
    }
    st.wake(cid);
    release_backend(px, st, sid);
}

/// A backend connection whose response was delivered goes back to the
/// pool if it is clean, else it is closed.
fn release_backend<S: Syscalls + 'static>(px: &Proxy<S>, st: &mut super::State, sid: ConnId) {
    let conn = st.conns.get_mut(&sid).expect("present");
    let reusable = !conn
        .c
        .any(CO_FL_ERROR | CO_FL_SOCK_RD_SH | CO_FL_SOCK_WR_SH)
        && server_of(conn).inbuf.is_empty();
    if !reusable {
        st.close(sid);
        return;
    }
    let server_index = {
        let s = server_of(conn);
        s.state = ServerState::Idle;
        s.out.clear();
        s.sent = 0;
        s.response_started = false;
        s.server
    };
    set_polling(px, &conn.c, true, false);
    st.servers[server_index].idle.push(sid);
    let expire = Instant::now() + ms(px.config.keepalive_timeout_ms);
    st.set_timer(sid, Some(expire));
}

/// A client or backend connection's timer fired.
pub fn on_timeout<S: Syscalls + 'static>(px: &Proxy<S>, tid: usize, id: ConnId) {
    let mut st = px.state.borrow_mut();
    let st = &mut *st;
    let Some(conn) = st.conns.get_mut(&id) else {
        return;
    };
    match &mut conn.role {
        Role::Client(cl) => {
            if cl.request.is_none() {
                tracing::debug!(target: "faultline::proxy", conn = id, "client timeout");
                st.close(id);
            }
        }
        Role::Server(s) => match s.state {
            ServerState::Idle => {
                st.close(id);
            }
            ServerState::Busy(cid) => {
                let connecting = conn.c.has(CO_FL_WAIT_L4_CONN);
                let started = server_of(conn).response_started;
                tracing::debug!(target: "faultline::proxy", conn = id, connecting, "backend timeout");
                faultline_harness::probe(if connecting {
                    "proxy:connect-timeout"
                } else {
                    "proxy:server-timeout"
                });
                st.close(id);
                // A connect that timed out never carried the request.
                backend_failed(px, st, tid, cid, connecting && !started);
            }
        },
        Role::Check(_) => unreachable!("checks have their own timeout"),
    }
}
