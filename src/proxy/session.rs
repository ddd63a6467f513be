//! Client connections, backend connections and the requests between them.
//!
//! A client connection reads request packets into its buffer and handles
//! one at a time: NOOP, VERSION and STAT are answered here, keyed commands go to
//! the node active for the key's vbucket, FLUSH to every node in turn, the
//! rest is refused. A keyed
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
//! Every handler runs on its connection's thread and ends by deciding the
//! connection's polling (what it waits for). It borrows the shared state
//! only between awaits: where it awaits (the fd table's atomic operations,
//! the idle pool's lock), other threads may run.

use std::time::Duration;

use faultline_harness::Syscalls;
use faultline_harness::{Errno, Events};
use tokio::time::Instant;

use super::buffer::Buffer;
use super::conn::{
    CO_FL_ERROR, CO_FL_SOCK_RD_SH, CO_FL_SOCK_WR_SH, CO_FL_WAIT_L4_CONN, CO_FL_WAIT_ROOM, ConnId,
    Connection, check_connect, polling, set_polling,
};
use super::fd::Owner;
use super::pipe::Pipe;
use super::raw_sock::{rcv_buf, rcv_pipe, snd_buf, snd_pipe};
use super::{Conn, IdleConn, Lent, Proxy, ProxyConfig, VERSION};
use crate::bugs::HAP_SPLICE_SPIN;
use crate::protocol::{
    HEADER_LEN, Header, Limits, MAGIC_RESPONSE, Opcode, Packet, ProtocolError, Status, vbucket_of,
};

/// The opaque of the NOOP the proxy sends behind a quiet request: its
/// answer says the backend has said all it will about the request.
pub const SENTINEL_OPAQUE: u32 = 0x5e47_1e10;

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
    /// Response bytes not sent yet (after what `pipe` holds).
    pub out: Vec<u8>,
    /// The response channel's pipe, while a spliced body is in it: its
    /// bytes go out before those of `out`.
    pub pipe: Option<Pipe>,
    /// Splicing was found not to work on this connection (HAProxy clears
    /// `CF_KERN_SPLICING`): bodies go through the buffers.
    pub splice_off: bool,
    /// The backend connection streaming a response body to this client.
    pub feeder: Option<ConnId>,
    pub request: Option<Request>,
    /// Close once `out` is sent (after a refused packet or QUIT).
    pub close_after_flush: bool,
}

impl ClientSide {
    pub fn new(buffer_bytes: usize) -> ClientSide {
        ClientSide {
            inbuf: Buffer::new(buffer_bytes),
            out: Vec::new(),
            pipe: None,
            splice_off: false,
            feeder: None,
            request: None,
            close_after_flush: false,
        }
    }

    /// Response bytes not sent yet, in the pipe and in the buffer.
    fn pending_bytes(&self) -> usize {
        self.out.len() + self.pipe.map_or(0, |p| p.data_bytes)
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
    /// FLUSH goes to every server in turn: the servers still to flush
    /// after this one. The client is answered once the last one answered.
    pub flush_left: usize,
    /// A quiet request, forwarded quiet with a NOOP behind it: the NOOP's
    /// answer ends what the backend says (maybe nothing) about it.
    pub sentinel: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// In the pool.
    Idle,
    /// Carrying the request of a client connection.
    Busy(ConnId),
    /// The answer to a quiet request went to its client; the answer to the
    /// NOOP behind it is still to come.
    Draining,
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
    /// Body bytes of the response being streamed to the client still to
    /// forward (HAProxy's `to_forward`); 0 when none is.
    pub to_forward: usize,
    /// The request carries a NOOP behind it.
    pub sentinel: bool,
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

// The parts of a connection's role a transport function is lent (see
// `super::Lent`).

fn client_inbuf(role: &mut Role) -> &mut Buffer {
    match role {
        Role::Client(cl) => &mut cl.inbuf,
        _ => unreachable!("a client connection"),
    }
}

fn server_inbuf(role: &mut Role) -> &mut Buffer {
    match role {
        Role::Server(s) => &mut s.inbuf,
        _ => unreachable!("a backend connection"),
    }
}

/// The whole role: for the transport functions that need only the
/// connection.
pub(super) fn whole_role(role: &mut Role) -> &mut Role {
    role
}

/// Connection `id` with `part` of its role, lent to a transport function.
pub(super) fn lent<S: Syscalls, T>(
    px: &Proxy<S>,
    id: ConnId,
    part: fn(&mut Role) -> &mut T,
) -> Lent<'_, T> {
    Lent {
        state: px.state_cell(),
        id,
        part,
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

// ---------------------------------------------------------------------------
// Client side.
// ---------------------------------------------------------------------------

/// The client connection's handler. Answers whether it made progress.
pub async fn process_client<S: Syscalls + 'static>(px: &Proxy<S>, tid: usize, id: ConnId) -> bool {
    let mut progress = false;
    {
        let flags_before = match px.state().conns.get(&id) {
            Some(conn) => conn.c.flags,
            None => return false,
        };
        // Send what is pending.
        progress |= send_pending(px, id).await > 0;
        // Receive while there is room: ask for the free space.
        let room = {
            let mut st = px.state();
            let cl = client_of(st.conns.get_mut(&id).expect("present"));
            cl.inbuf.compact();
            cl.inbuf.room()
        };
        if room > 0 {
            let mut lent = lent(px, id, client_inbuf);
            let n = rcv_buf(&px.sys, &px.fdtab, &mut lent, room, &px.bugs).await;
            progress |= n > 0;
        }
        let mut st = px.state();
        let st = &mut *st;
        let conn = st.conns.get_mut(&id).expect("present");
        let feeder = client_of(conn).feeder;
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
            return true;
        }
    }
    // Handle the requests that arrived, one at a time.
    loop {
        let packet = {
            let mut st = px.state();
            let conn = st.conns.get_mut(&id).expect("present");
            let cl = client_of(conn);
            if cl.request.is_some() || cl.feeder.is_some() || cl.close_after_flush {
                break;
            }
            if cl.pending_bytes() >= px.config.buffer_bytes {
                // Answers the client has not read are bounded: one that
                // pipelines requests and does not read leaves the rest
                // waiting in its buffer (as HAProxy leaves a request in
                // its buffer while the response channel is full).
                break;
            }
            match Packet::try_parse(cl.inbuf.data(), &px.limits) {
                Ok(Some((packet, used))) => {
                    cl.inbuf.consume(used);
                    packet
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
        };
        progress = true;
        dispatch(px, tid, id, packet).await;
    }
    // Send what the requests produced (speculatively).
    let pending = {
        let mut st = px.state();
        client_of(st.conns.get_mut(&id).expect("present")).pending_bytes() > 0
    };
    if pending {
        progress |= send_pending(px, id).await > 0;
        let mut st = px.state();
        if st.conns[&id].c.has(CO_FL_ERROR) {
            abort_client(&mut st, id);
            return true;
        }
    }
    let wanted = {
        let mut st = px.state();
        let st = &mut *st;
        let conn = st.conns.get_mut(&id).expect("present");
        let Conn { c, role, .. } = conn;
        let Role::Client(cl) = role else {
            unreachable!()
        };
        let idle = cl.request.is_none() && cl.feeder.is_none() && cl.pending_bytes() == 0;
        let done_reading = c.has(CO_FL_SOCK_RD_SH) || cl.close_after_flush;
        if idle && done_reading {
            // The client closed (what is left of its input can never
            // become a packet) or must be closed, and nothing is pending.
            st.close(id);
            return true;
        }
        let want_recv = !cl.inbuf.is_full() && !cl.close_after_flush;
        let want_send = cl.pending_bytes() > 0;
        let wanted = polling(c, want_recv, want_send);
        if idle {
            let expire = Instant::now() + ms(px.config.client_timeout_ms);
            if progress || conn.expire.is_none() {
                st.set_timer(id, Some(expire));
            }
        } else if st.conns[&id].expire.is_some() {
            st.set_timer(id, None);
        }
        wanted
    };
    set_polling(&px.fdtab, wanted).await;
    progress
}

/// Sends what the client is owed: the pipe's bytes first, then the
/// buffer's (HAProxy's `si_conn_send`: while the pipe holds data, the
/// buffer waits). Answers the bytes sent.
/// (The pipe is the handler's own while its bytes go out, the buffer's
/// bytes are sent from a copy: nothing is borrowed across a syscall.)
async fn send_pending<S: Syscalls>(px: &Proxy<S>, id: ConnId) -> usize {
    let mut sent = 0;
    let pipe = client_of(px.state().conns.get_mut(&id).expect("present")).pipe;
    if let Some(mut pipe) = pipe {
        sent += snd_pipe(&px.sys, &px.fdtab, &mut lent(px, id, whole_role), &mut pipe).await;
        let flushed = {
            let mut st = px.state();
            let conn = st.conns.get_mut(&id).expect("present");
            let failed = conn.c.has(CO_FL_ERROR);
            let cl = client_of(conn);
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
        let cl = client_of(st.conns.get_mut(&id).expect("present"));
        (!cl.out.is_empty()).then(|| cl.out.clone())
    };
    if let Some(out) = out {
        let n = snd_buf(
            &px.sys,
            &px.fdtab,
            &mut lent(px, id, whole_role),
            &out,
            &px.bugs,
        )
        .await;
        client_of(px.state().conns.get_mut(&id).expect("present"))
            .out
            .drain(..n);
        sent += n;
    }
    sent
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
    let feeder = st
        .conns
        .get_mut(&id)
        .and_then(|c| client_of(c).feeder.take());
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
struct Seen {
    /// A keyed request: its vbucket, the server believed active for it,
    /// whether that server is up.
    route: Option<(u16, usize, bool)>,
    /// STAT and FLUSH: every server's state.
    up: Vec<bool>,
    spliced_bytes: u64,
}

impl Seen {
    async fn read<S: Syscalls + 'static>(px: &Proxy<S>, packet: &Packet) -> Seen {
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
fn accept_request<S: Syscalls + 'static>(
    px: &Proxy<S>,
    st: &mut super::State,
    id: ConnId,
    packet: Packet,
    seen: &Seen,
) -> bool {
    let h = packet.header;
    let cl = client_of(st.conns.get_mut(&id).expect("present"));
    if !h.is_request() {
        refuse(cl, Some(h), Status::EINVAL);
        return false;
    }
    let opcode = h.opcode.loud();
    if opcode == Opcode::STAT {
        let answer = stats(px, st, seen, &h, &packet.key);
        client_of(st.conns.get_mut(&id).expect("present"))
            .out
            .extend_from_slice(&answer);
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
fn flush_request(
    st: &mut super::State,
    id: ConnId,
    packet: Packet,
    seen: &Seen,
    retries: u32,
) -> bool {
    let h = packet.header;
    let servers = seen.up.len();
    assert!(servers > 0, "a proxy has at least one backend");
    let all_up = seen.up.iter().all(|up| *up);
    let cl = client_of(st.conns.get_mut(&id).expect("present"));
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
    st: &super::State,
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

/// Gives client `id`'s request a backend connection and starts sending it.
/// (Boxed: a retry attaches again.)
fn attach<'a, S: Syscalls + 'static>(
    px: &'a Proxy<S>,
    tid: usize,
    id: ConnId,
    force_new: bool,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
    Box::pin(async move {
        let server = {
            let mut st = px.state();
            client_of(st.conns.get_mut(&id).expect("present"))
                .request
                .as_ref()
                .expect("a request to attach")
                .server
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
        let st = &mut *st;
        let (bytes, sentinel) = {
            let r = client_of(st.conns.get_mut(&id).expect("present"))
                .request
                .as_mut()
                .expect("a request to attach");
            r.server_conn = Some(sid);
            (r.forwarded.clone(), r.sentinel)
        };
        {
            let s = server_of(st.conns.get_mut(&sid).expect("present"));
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
        let waiting = st.conns[&sid].c.has(CO_FL_WAIT_L4_CONN);
        let timeout = if waiting {
            px.config.connect_timeout_ms
        } else {
            px.config.server_timeout_ms
        };
        st.set_timer(sid, Some(Instant::now() + ms(timeout)));
        st.wake(sid);
    })
}

/// A backend connection for `server` on thread `tid`: an idle one of this
/// thread, else one taken over from another thread, else a new one. The
/// pool stays locked while a takeover is tried, as HAProxy's idle
/// connections lock does: a connection leaves it only once.
async fn server_conn<S: Syscalls + 'static>(
    px: &Proxy<S>,
    tid: usize,
    server: usize,
    force_new: bool,
) -> Result<ConnId, Errno> {
    if !force_new {
        let mut idle = px.idle[server].lock().await;
        if let Some(pos) = idle.iter().rposition(|i| i.conn.c.thread == tid) {
            let IdleConn { id, conn } = idle.remove(pos);
            let mut st = px.state();
            st.idle_here.remove(&id);
            st.conns.insert(id, conn);
            return Ok(id);
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
                return Ok(id);
            }
        }
    }
    let addr = px.backends[server].addr;
    let c = Connection::open(&px.sys, &px.fdtab, addr, tid, || px.state().new_conn_id()).await?;
    let (sid, fd) = (c.id, c.fd);
    tracing::debug!(target: "faultline::proxy", thread = tid, conn = sid, fd, %addr, "connecting");
    px.state().conns.insert(
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
                to_forward: 0,
                sentinel: false,
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
async fn backend_failed<S: Syscalls + 'static>(
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
        let Some(r) = client_of(conn).request.as_mut() else {
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

// ---------------------------------------------------------------------------
// Backend side.
// ---------------------------------------------------------------------------

/// The backend connection's handler. Answers whether it made progress.
pub async fn process_server<S: Syscalls + 'static>(
    px: &Proxy<S>,
    tid: usize,
    sid: ConnId,
    events: Option<Events>,
) -> bool {
    let mut progress = false;
    let (state, streaming) = {
        let (flags_before, to_send) = {
            let mut st = px.state();
            let Some(conn) = st.conns.get_mut(&sid) else {
                return false;
            };
            let Conn { c, role, .. } = conn;
            let Role::Server(s) = role else {
                unreachable!()
            };
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
            let mut lent = lent(px, sid, whole_role);
            let n = snd_buf(&px.sys, &px.fdtab, &mut lent, &data, &px.bugs).await;
            server_of(px.state().conns.get_mut(&sid).expect("present")).sent += n;
            progress |= n > 0;
        }
        let (streaming, room) = {
            let mut st = px.state();
            let conn = st.conns.get_mut(&sid).expect("present");
            let failed = conn.c.has(CO_FL_ERROR);
            let s = server_of(conn);
            let streaming = s.to_forward > 0;
            let room = (!failed && !streaming).then(|| header_wait_room(&px.config, &s.inbuf));
            (streaming, room)
        };
        if let Some(room) = room {
            let mut lent = lent(px, sid, server_inbuf);
            let n = rcv_buf(&px.sys, &px.fdtab, &mut lent, room, &px.bugs).await;
            if n > 0 {
                server_of(px.state().conns.get_mut(&sid).expect("present")).response_started = true;
                progress = true;
            }
        }
        let mut st = px.state();
        let conn = st.conns.get_mut(&sid).expect("present");
        progress |= conn.c.flags != flags_before;
        (server_of(conn).state, streaming)
    };
    if let (true, ServerState::Busy(cid)) = (streaming, state) {
        progress |= forward_body(px, sid, cid).await;
    }
    let (failed, ended, started, sent_all, to_forward) = {
        let mut st = px.state();
        let conn = st.conns.get_mut(&sid).expect("present");
        let (failed, ended) = (conn.c.has(CO_FL_ERROR), conn.c.has(CO_FL_SOCK_RD_SH));
        let s = server_of(conn);
        (
            failed,
            ended,
            s.response_started,
            s.sent == s.out.len(),
            s.to_forward,
        )
    };
    match state {
        ServerState::Idle => {
            let unexpected = {
                let mut st = px.state();
                failed
                    || ended
                    || !server_of(st.conns.get_mut(&sid).expect("present"))
                        .inbuf
                        .is_empty()
            };
            if unexpected {
                // Closed by the server, failed, or unexpected bytes (the
                // connection left its pool to be handled).
                px.state().close(sid);
                return true;
            }
            let wanted = polling(
                &mut px.state().conns.get_mut(&sid).expect("present").c,
                true,
                false,
            );
            set_polling(&px.fdtab, wanted).await;
            // Back into its pool (HAProxy's `h1_io_cb` puts it back
            // in the idle tree after handling it).
            pool_idle(px, sid).await;
        }
        ServerState::Draining => {
            drain_sentinel(px, sid, failed || ended).await;
            return true;
        }
        ServerState::Busy(client_id) if streaming => {
            if to_forward == 0 {
                // The body is all forwarded: the response is done.
                finish_stream(px, sid, client_id).await;
                return true;
            }
            let buffered = {
                let mut st = px.state();
                server_of(st.conns.get_mut(&sid).expect("present"))
                    .inbuf
                    .len()
            };
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
                let conn = st.conns.get_mut(&sid).expect("present");
                let s = server_of(conn);
                let room = s.inbuf.room() > 0
                    && s.inbuf.len() + out_bytes < px.config.response_buffer_bytes;
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
        }
        ServerState::Busy(client_id) => {
            if start_stream(px, &mut px.state(), sid, client_id) {
                return true;
            }
            let parsed = {
                let mut st = px.state();
                let s = server_of(st.conns.get_mut(&sid).expect("present"));
                match Packet::try_parse(s.inbuf.data(), &px.limits) {
                    Ok(Some((response, used))) => {
                        s.inbuf.consume(used);
                        Ok(Some(response))
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                }
            };
            match parsed {
                Ok(Some(response)) => {
                    deliver(px, tid, sid, client_id, response).await;
                    return true;
                }
                Ok(None) => {
                    let full = {
                        let mut st = px.state();
                        let full = server_of(st.conns.get_mut(&sid).expect("present"))
                            .inbuf
                            .is_full();
                        if failed || ended || full {
                            if full {
                                tracing::debug!(target: "faultline::proxy", conn = sid, "response larger than the buffer");
                            }
                            tracing::debug!(target: "faultline::proxy", conn = sid, errno = ?st.conns[&sid].c.errno, started, "backend connection failed");
                            st.close(sid);
                        }
                        full
                    };
                    if failed || ended || full {
                        backend_failed(px, tid, client_id, !started && !full).await;
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
                let conn = st.conns.get_mut(&sid).expect("present");
                let waiting_connect = conn.c.has(CO_FL_WAIT_L4_CONN);
                let wanted = polling(&mut conn.c, true, !sent_all);
                if sent_all && !waiting_connect && progress {
                    // Sent and connected: the server timeout runs from now.
                    let expire = Instant::now() + ms(px.config.server_timeout_ms);
                    st.set_timer(sid, Some(expire));
                }
                wanted
            };
            set_polling(&px.fdtab, wanted).await;
        }
    }
    progress
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

/// Starts streaming the response whose header is in backend connection
/// `sid`'s buffer, when splicing is on, its body is at least the minimum
/// splice size and has not all arrived, and it answers client `cid`'s
/// request as it is (not `NOT_MY_VBUCKET`): the header goes to the client
/// with what arrived of the body; the rest is forwarded as it comes
/// (`to_forward`). Answers whether it started.
fn start_stream<S: Syscalls + 'static>(
    px: &Proxy<S>,
    st: &mut super::State,
    sid: ConnId,
    cid: ConnId,
) -> bool {
    if !px.config.splice {
        return false;
    }
    let header = {
        let s = server_of(st.conns.get_mut(&sid).expect("present"));
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
    let arrived_bytes = server_of(st.conns.get_mut(&sid).expect("present"))
        .inbuf
        .len()
        - HEADER_LEN;
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
    let answers = answers_request(&header, request)
        && header.status() != Status::NOT_MY_VBUCKET
        && request.flush_left == 0;
    if !answers {
        return false;
    }
    let request = client_of(st.conns.get_mut(&cid).expect("present"))
        .request
        .take()
        .expect("seen above");
    let mut head = header;
    head.opcode = request.header.opcode;
    let s = server_of(st.conns.get_mut(&sid).expect("present"));
    let mut bytes = head.encode().to_vec();
    bytes.extend_from_slice(&s.inbuf.data()[HEADER_LEN..]);
    s.inbuf.clear();
    s.to_forward = body_bytes - arrived_bytes;
    tracing::debug!(target: "faultline::proxy", conn = sid, client = cid, body_bytes, to_forward = s.to_forward, "streaming a response body");
    faultline_harness::probe("proxy:stream-body");
    let cl = client_of(st.conns.get_mut(&cid).expect("present"));
    cl.out.extend_from_slice(&bytes);
    cl.feeder = Some(sid);
    st.wake(cid);
    // Go on at once: more of the body may wait in the socket.
    st.wake(sid);
    true
}

/// Whether a response with header `h` is the backend's answer to
/// `request` (else the stream is out of step, and the connection is lost).
fn answers_request(h: &Header, request: &Request) -> bool {
    h.magic == MAGIC_RESPONSE
        && h.opcode == forwarded_opcode(request)
        && h.opaque == request.header.opaque
}

/// The opcode the backend answers a request with: the loud one, unless the
/// request went quiet with a NOOP behind it.
fn forwarded_opcode(request: &Request) -> Opcode {
    if request.sentinel {
        request.header.opcode
    } else {
        request.header.opcode.loud()
    }
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
async fn forward_body<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId, cid: ConnId) -> bool {
    let (mut pipe, mut splice_off, out_bytes) = {
        let mut st = px.state();
        let Some(client) = st.conns.get_mut(&cid) else {
            return false;
        };
        let cl = client_of(client);
        (cl.pipe.take(), cl.splice_off, cl.out.len())
    };
    let mut moved = 0;
    let mut spliced = 0;
    'splice: {
        {
            let mut st = px.state();
            let conn = st.conns.get_mut(&sid).expect("present");
            let failed = conn.c.has(CO_FL_ERROR);
            let s = server_of(conn);
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
        let to_forward = server_of(px.state().conns.get_mut(&sid).expect("present")).to_forward;
        let mut lent = lent(px, sid, whole_role);
        match rcv_pipe(&px.sys, &px.fdtab, &mut lent, p, to_forward, &px.bugs).await {
            None => {
                tracing::debug!(target: "faultline::proxy", conn = sid, "splice not supported: the buffers take over");
                splice_off = true;
            }
            Some(n) => {
                let mut st = px.state();
                let s = server_of(st.conns.get_mut(&sid).expect("present"));
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
        let conn = st.conns.get_mut(&sid).expect("present");
        let Conn { c, role, .. } = conn;
        let Role::Server(s) = role else {
            unreachable!()
        };
        // Receiving into the buffer: an event splice() did not take must be
        // taken by recv(), unless the pipe is full (HAProxy commit 61d39a0e2).
        let may_recv = if px.bugs.is_buggy(HAP_SPLICE_SPIN) {
            // HAP-SPLICE-SPIN: no recv() while the pipe holds data. Below the
            // minimum splice size, nothing takes the event: the poller reports
            // it again and again until the client drained the pipe.
            pipe.is_none()
        } else {
            true
        };
        let may_recv = may_recv
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
        let mut lent = lent(px, sid, server_inbuf);
        moved += rcv_buf(&px.sys, &px.fdtab, &mut lent, room, &px.bugs).await;
    }
    if spliced > 0 {
        px.spliced_bytes.fetch_add(spliced as u64).await;
    }
    let mut st = px.state();
    let st = &mut *st;
    let s = server_of(st.conns.get_mut(&sid).expect("present"));
    // What the buffer holds of the body goes on to the client's buffer.
    let out_room = px.config.response_buffer_bytes.saturating_sub(out_bytes);
    let take = s.to_forward.min(s.inbuf.len()).min(out_room);
    let bytes = s.inbuf.data()[..take].to_vec();
    s.inbuf.consume(take);
    s.to_forward -= take;
    let cl = client_of(st.conns.get_mut(&cid).expect("present"));
    cl.out.extend_from_slice(&bytes);
    cl.pipe = pipe;
    cl.splice_off = splice_off;
    if moved > 0 || take > 0 {
        st.wake(cid);
    }
    moved > 0 || take > 0
}

/// The streamed body is all forwarded: client `cid`'s response is done.
async fn finish_stream<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId, cid: ConnId) {
    let sentinel = {
        let mut st = px.state();
        if let Some(conn) = st.conns.get_mut(&cid) {
            client_of(conn).feeder = None;
        }
        st.wake(cid);
        server_of(st.conns.get_mut(&sid).expect("present")).sentinel
    };
    response_done(px, sid, sentinel).await;
}

/// Backend connection `sid` is done with a response: behind a quiet
/// request it waits for the NOOP's answer, else it goes back to the pool.
/// One that is closing (it answered something else) goes nowhere: in the
/// pool, another request would take it.
async fn response_done<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId, sentinel: bool) {
    let closing = px.state().conns.get(&sid).is_none_or(|c| c.closing);
    if closing {
        return;
    }
    if sentinel {
        start_draining(px, sid).await;
    } else {
        release_backend(px, sid).await;
    }
}

/// A response whose header already went to the client cannot be finished:
/// the client gets what arrived, then its connection closes (a truncated
/// answer is never passed off as whole).
fn stream_broken(st: &mut super::State, sid: ConnId, cid: ConnId) {
    st.close(sid);
    if let Some(conn) = st.conns.get_mut(&cid) {
        let cl = client_of(conn);
        cl.feeder = None;
        cl.close_after_flush = true;
    }
    st.wake(cid);
}

/// The answer to a quiet request went to its client: backend connection
/// `sid` waits for the answer to the NOOP behind it.
async fn start_draining<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId) {
    {
        let mut st = px.state();
        let s = server_of(st.conns.get_mut(&sid).expect("present"));
        s.state = ServerState::Draining;
        let expire = Instant::now() + ms(px.config.server_timeout_ms);
        st.set_timer(sid, Some(expire));
    }
    let failed = {
        let st = px.state();
        st.conns[&sid].c.any(CO_FL_ERROR | CO_FL_SOCK_RD_SH)
    };
    drain_sentinel(px, sid, failed).await;
}

/// A draining backend connection: the NOOP's answer makes it idle again;
/// anything else, or its end, closes it.
async fn drain_sentinel<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId, failed: bool) {
    let parsed = {
        let mut st = px.state();
        let s = server_of(st.conns.get_mut(&sid).expect("present"));
        match Packet::try_parse(s.inbuf.data(), &px.limits) {
            Ok(Some((p, used))) => {
                s.inbuf.consume(used);
                Ok(Some(p))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    };
    match parsed {
        Ok(Some(p)) if p.header.opcode == Opcode::NOOP && p.header.opaque == SENTINEL_OPAQUE => {
            release_backend(px, sid).await;
        }
        Ok(None) if !failed => {
            let wanted = polling(
                &mut px.state().conns.get_mut(&sid).expect("present").c,
                true,
                false,
            );
            set_polling(&px.fdtab, wanted).await;
        }
        other => {
            tracing::debug!(target: "faultline::proxy", conn = sid, failed, unexpected = ?other.map(|p| p.map(|p| p.header.opcode)), "draining backend connection closed");
            px.state().close(sid);
        }
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
            .and_then(|c| client_of(c).request.take());
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
    st: &mut super::State,
    sid: ConnId,
    cid: ConnId,
    mut request: Request,
    response: Packet,
) -> (bool, bool, Option<(u16, usize)>) {
    {
        let h = response.header;
        let sentinel = request.sentinel;
        let forwarded_opcode = forwarded_opcode(&request);
        if !answers_request(&h, &request) {
            tracing::debug!(target: "faultline::proxy", conn = sid, opcode = %h.opcode, opaque = h.opaque, "a response that does not answer the request");
            st.close(sid);
            let cl = client_of(st.conns.get_mut(&cid).expect("present"));
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
            client_of(st.conns.get_mut(&cid).expect("present")).request = Some(request);
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
            client_of(st.conns.get_mut(&cid).expect("present")).request = Some(request);
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
            let cl = client_of(st.conns.get_mut(&cid).expect("present"));
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

/// A backend connection whose response was delivered goes back to the
/// pool if it is clean, else it is closed. It is made ready (timer,
/// polling) before it is published in the pool: from then on another
/// thread may take it over.
async fn release_backend<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId) {
    let wanted = {
        let mut st = px.state();
        let conn = st.conns.get_mut(&sid).expect("present");
        assert!(
            !conn.closing,
            "a closing connection is never released (response_done)"
        );
        let reusable = !conn
            .c
            .any(CO_FL_ERROR | CO_FL_SOCK_RD_SH | CO_FL_SOCK_WR_SH)
            && server_of(conn).inbuf.is_empty();
        if !reusable {
            st.close(sid);
            return;
        }
        {
            let s = server_of(conn);
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
    pool_idle(px, sid).await;
}

/// Publishes idle backend connection `sid` in its server's pool: from then
/// on the pool holds it, and another thread may take it over.
async fn pool_idle<S: Syscalls + 'static>(px: &Proxy<S>, sid: ConnId) {
    let (server, conn) = {
        let mut st = px.state();
        let conn = st.conns.remove(&sid).expect("present");
        let server = match &conn.role {
            Role::Server(s) => {
                assert_eq!(s.state, ServerState::Idle, "conn {sid}: pooled while busy");
                s.server
            }
            _ => unreachable!("a backend connection"),
        };
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

/// A client or backend connection's timer fired.
pub async fn on_timeout<S: Syscalls + 'static>(px: &Proxy<S>, tid: usize, id: ConnId) {
    enum Then {
        Nothing,
        CloseIdle,
        Failed { client: ConnId, retry: bool },
    }
    let then = {
        let mut st = px.state();
        let st = &mut *st;
        let Some(conn) = st.conns.get_mut(&id) else {
            return;
        };
        match &mut conn.role {
            Role::Client(cl) => {
                if cl.request.is_none() && cl.feeder.is_none() {
                    tracing::debug!(target: "faultline::proxy", conn = id, "client timeout");
                    st.close(id);
                }
                Then::Nothing
            }
            Role::Server(s) => match s.state {
                ServerState::Idle => Then::CloseIdle,
                ServerState::Draining => {
                    tracing::debug!(target: "faultline::proxy", conn = id, "no answer to the sentinel NOOP");
                    st.close(id);
                    Then::Nothing
                }
                ServerState::Busy(cid) if s.to_forward > 0 => {
                    tracing::debug!(target: "faultline::proxy", conn = id, to_forward = s.to_forward, "backend timeout inside a streamed body");
                    faultline_harness::probe("proxy:server-timeout");
                    stream_broken(st, id, cid);
                    Then::Nothing
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
                    Then::Failed {
                        client: cid,
                        retry: connecting && !started,
                    }
                }
            },
            Role::Check(_) => unreachable!("checks have their own timeout"),
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
