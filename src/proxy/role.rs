//! Connection roles: what a connection is for (HAProxy's stream
//! connector on each side, and a check), with the state each role keeps.
//!
//! A connection's role never changes. Code that looks at a connection it
//! knows the role of takes it with [`Conn::client`], [`Conn::server`] or
//! [`Conn::check`]: one assert there, with the connection and what it was
//! instead, rather than a `match` and an `unreachable!` at every step.
//!
//! This file knows the connection layer and the buffers, not the proxy
//! nor any handler: every handler file may use it.

use super::buffer::Buffer;
use super::conn::{ConnId, Connection};
use super::pipe::Pipe;
use crate::protocol::{Header, Limits, MAGIC_RESPONSE, Opcode, Packet, ProtocolError, Status};
use tokio::time::Instant;

/// The opaque of the NOOP the proxy sends behind a quiet request: its
/// answer says the backend has said all it will about the request.
pub const SENTINEL_OPAQUE: u32 = 0x5e47_1e10;

/// One connection and what it is for.
pub struct Conn {
    pub c: Connection,
    pub role: Role,
    /// When its current timeout fires.
    pub expire: Option<Instant>,
    /// Being closed: no more processing.
    pub closing: bool,
}

impl Conn {
    /// A new connection, with no timeout yet.
    pub fn new(c: Connection, role: Role) -> Conn {
        Conn {
            c,
            role,
            expire: None,
            closing: false,
        }
    }

    /// The client side of a connection its caller knows is a client's.
    pub fn client(&mut self) -> &mut ClientSide {
        self.role.client()
    }

    /// The backend side of a connection its caller knows is a backend
    /// connection.
    pub fn server(&mut self) -> &mut ServerSide {
        self.role.server()
    }

    /// The check of a connection its caller knows is a check's.
    pub fn check(&mut self) -> &mut CheckSide {
        self.role.check()
    }
}

/// An idle backend connection, held by its server's pool while it waits
/// (HAProxy's idle trees hold the connection itself): the thread that put
/// it there takes it out to handle its events, another thread takes it
/// over.
pub struct IdleConn {
    pub id: ConnId,
    pub conn: Conn,
}

/// What a connection is for.
pub enum Role {
    Client(ClientSide),
    Server(ServerSide),
    Check(CheckSide),
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

    /// See [`Conn::client`].
    pub fn client(&mut self) -> &mut ClientSide {
        match self {
            Role::Client(cl) => cl,
            other => panic!("a client connection expected, found a {:?}", other.kind()),
        }
    }

    /// See [`Conn::server`].
    pub fn server(&mut self) -> &mut ServerSide {
        match self {
            Role::Server(s) => s,
            other => panic!("a backend connection expected, found a {:?}", other.kind()),
        }
    }

    /// See [`Conn::check`].
    pub fn check(&mut self) -> &mut CheckSide {
        match self {
            Role::Check(check) => check,
            other => panic!("a check connection expected, found a {:?}", other.kind()),
        }
    }
}

// The parts of a connection's role a transport function is lent (see
// `super::process::Lent`): plain functions, as the lend stores a `fn`.

/// A client connection's input buffer.
pub fn client_inbuf(role: &mut Role) -> &mut Buffer {
    &mut role.client().inbuf
}

/// A backend connection's input buffer.
pub fn server_inbuf(role: &mut Role) -> &mut Buffer {
    &mut role.server().inbuf
}

/// The whole role: for the transport functions that need only the
/// connection.
pub fn whole_role(role: &mut Role) -> &mut Role {
    role
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
    pub fn pending_bytes(&self) -> usize {
        self.out.len() + self.pipe.map_or(0, |p| p.data_bytes)
    }

    /// The request in progress, which its caller knows there is (it is
    /// attaching it to a backend).
    pub fn request(&mut self) -> &mut Request {
        match &mut self.request {
            Some(request) => request,
            None => panic!("a client connection without a request in progress"),
        }
    }

    /// Answers a packet that cannot be handled, then closes: the next
    /// packet boundary is unknown.
    pub fn refuse(&mut self, header: Option<Header>, status: Status) {
        if let Some(h) = header {
            if h.is_request() {
                Packet::response(&h, status).encode_into(&mut self.out);
            }
        }
        self.inbuf.clear();
        self.close_after_flush = true;
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

impl Request {
    /// Whether a response with header `h` is the backend's answer to this
    /// request (else the stream is out of step, and the connection is
    /// lost).
    pub fn answered_by(&self, h: &Header) -> bool {
        h.magic == MAGIC_RESPONSE
            && h.opcode == self.forwarded_opcode()
            && h.opaque == self.header.opaque
    }

    /// The opcode the backend answers the request with: the loud one,
    /// unless the request went quiet with a NOOP behind it.
    pub fn forwarded_opcode(&self) -> Opcode {
        if self.sentinel {
            self.header.opcode
        } else {
            self.header.opcode.loud()
        }
    }
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

impl ServerSide {
    /// Takes the next whole packet out of the input buffer, if one
    /// arrived.
    pub fn take_packet(&mut self, limits: &Limits) -> Result<Option<Packet>, ProtocolError> {
        match Packet::try_parse(self.inbuf.data(), limits) {
            Ok(Some((packet, used))) => {
                self.inbuf.consume(used);
                Ok(Some(packet))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A new backend connection to `server`, idle until a request is
    /// attached.
    pub fn new(server: usize, buffer_bytes: usize) -> ServerSide {
        ServerSide {
            server,
            inbuf: Buffer::new(buffer_bytes),
            out: Vec::new(),
            sent: 0,
            state: ServerState::Idle,
            response_started: false,
            to_forward: 0,
            sentinel: false,
        }
    }
}

/// A check in progress.
pub struct CheckSide {
    pub server: usize,
    /// The fixed-size check buffer.
    pub buf: Buffer,
    pub request: Vec<u8>,
    pub sent: usize,
}
