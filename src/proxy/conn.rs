//! Connections: a control layer (the fd, registered in the fd table) and a
//! transport layer (the raw socket), each with a ready flag.
//!
//! The two sides set them up in different orders:
//!
//! * accept side: the fd exists first, then the control layer is
//!   initialised ([`Connection::ctrl_init`]: the fd enters the table), then
//!   the transport ([`Connection::xprt_init`]); teardown is the reverse;
//! * connect side: the socket is created and `connect()` started before
//!   the control layer is initialised; a socket whose connect failed at
//!   once is closed directly, never having entered the table.
//!
//! The flags, not the presence of an fd, say what remains to be undone:
//! `CTRL_READY` from `ctrl_init` until the fd left the table,
//! `XPRT_READY` from `xprt_init` until `xprt_close`.
//!
//! Both outgoing kinds, backend connections and health checks, are opened
//! by [`Connection::open`]: one connect path, so the two cannot drift
//! apart. What a connection asks of the poller is decided here too
//! ([`polling`], passed on by [`set_polling`]), against what it asked
//! last, and a pending connect is probed with [`check_connect`].
//!
//! This is the bottom of the connection layer: it knows the fd table, not
//! what a connection is for (`role`) nor the proxy that holds it.

use std::net::SocketAddr;

use faultline_harness::{sys::Errno, sys::Events, sys::Fd, sys::Syscalls};

use super::fd::{FdTable, Owner, ThreadMask, bit};

pub type ConnId = u64;

/// The control layer (fd) is registered in the fd table.
pub const CO_FL_CTRL_READY: u32 = 0x0001;
/// The transport layer is initialised.
pub const CO_FL_XPRT_READY: u32 = 0x0002;
/// A connect is in progress (layer 4 not confirmed yet).
pub const CO_FL_WAIT_L4_CONN: u32 = 0x0004;
/// The connection failed: no more I/O on it.
pub const CO_FL_ERROR: u32 = 0x0008;
/// The socket's read side is shut (the peer's end of stream was seen).
pub const CO_FL_SOCK_RD_SH: u32 = 0x0010;
/// The socket's write side is shut.
pub const CO_FL_SOCK_WR_SH: u32 = 0x0020;
/// At least one byte went out: the peer is reachable.
pub const CO_FL_CONNECTED: u32 = 0x0040;
/// The connection last asked its fd to poll for reading (HAProxy's
/// `CO_FL_CURR_RD_ENA`): polling changes are computed against these two,
/// not against the fd, so what the poller did to the fd behind the
/// connection's back stays until the connection changes its mind.
pub const CO_FL_CURR_RD_ENA: u32 = 0x0080;
/// The connection last asked its fd to poll for writing.
pub const CO_FL_CURR_WR_ENA: u32 = 0x0100;
/// The receiving side stopped because where it puts bytes is full (the
/// pipe, mostly): no receive until the consumer made room.
pub const CO_FL_WAIT_ROOM: u32 = 0x0200;

/// One connection's layers and flags.
#[derive(Debug)]
pub struct Connection {
    pub id: ConnId,
    /// Meaningful while `CO_FL_CTRL_READY` is set.
    pub fd: Fd,
    /// The fd's incarnation in the table.
    pub generation: u64,
    pub flags: u32,
    /// The thread that owns it.
    pub thread: usize,
    /// The errno of the failure, when a syscall reported one (0 when the
    /// error is pending in `SO_ERROR`).
    pub errno: Option<Errno>,
}

impl Connection {
    pub fn new(id: ConnId, thread: usize) -> Connection {
        Connection {
            id,
            fd: -1,
            generation: 0,
            flags: 0,
            thread,
            errno: None,
        }
    }

    pub fn has(&self, flags: u32) -> bool {
        self.flags & flags == flags
    }

    pub fn any(&self, flags: u32) -> bool {
        self.flags & flags != 0
    }

    pub fn ctrl_ready(&self) -> bool {
        self.has(CO_FL_CTRL_READY)
    }

    pub fn xprt_ready(&self) -> bool {
        self.has(CO_FL_XPRT_READY)
    }

    /// Marks a hard failure: the socket may not be used any more.
    pub fn fail(&mut self, errno: Option<Errno>) {
        self.flags |= CO_FL_ERROR | CO_FL_SOCK_RD_SH | CO_FL_SOCK_WR_SH;
        if self.errno.is_none() {
            self.errno = errno;
        }
    }

    /// Opens an outgoing connection to `addr` on thread `thread`, for a
    /// backend request or a health check alike (HAProxy's
    /// `tcp_connect_server`). The socket is created and its connect
    /// started before the control layer exists: a connect that fails at
    /// once closes the bare socket, which never entered the table, and the
    /// connection gets no id (`new_id` is called only once the connect is
    /// under way). A connect still in progress is `CO_FL_WAIT_L4_CONN`.
    pub async fn open<S: Syscalls>(
        sys: &S,
        table: &FdTable,
        addr: SocketAddr,
        thread: usize,
        new_id: impl FnOnce() -> ConnId,
    ) -> Result<Connection, Errno> {
        let fd = sys.socket().await?;
        let in_progress = match sys.connect(fd, addr).await {
            Ok(()) => false,
            Err(Errno::EINPROGRESS) => true,
            Err(e) => {
                // The control layer was never initialised: close the socket itself.
                let _ = sys.close(fd).await;
                return Err(e);
            }
        };
        let mut c = Connection::new(new_id(), thread);
        c.ctrl_init(table, fd, bit(thread)).await;
        c.xprt_init();
        if in_progress {
            c.flags |= CO_FL_WAIT_L4_CONN;
        }
        Ok(c)
    }

    /// Registers `fd` in the table for this connection (owned by the
    /// threads of `mask`).
    pub async fn ctrl_init(&mut self, table: &FdTable, fd: Fd, mask: ThreadMask) {
        assert!(
            !self.ctrl_ready(),
            "conn {} ctrl initialised twice",
            self.id
        );
        assert!(
            !self.xprt_ready(),
            "conn {}: the transport comes after the control layer",
            self.id
        );
        self.fd = fd;
        self.generation = table.insert(fd, Owner::Conn(self.id), mask).await;
        self.flags |= CO_FL_CTRL_READY;
    }

    /// Initialises the transport (raw socket: nothing to allocate).
    pub fn xprt_init(&mut self) {
        assert!(
            self.ctrl_ready(),
            "conn {}: the transport needs the control layer",
            self.id
        );
        assert!(
            !self.xprt_ready(),
            "conn {} xprt initialised twice",
            self.id
        );
        self.flags |= CO_FL_XPRT_READY;
    }

    /// The fd's polling was reset (a takeover): nothing is asked any more.
    pub fn polling_reset(&mut self) {
        self.flags &= !(CO_FL_CURR_RD_ENA | CO_FL_CURR_WR_ENA);
    }

    /// Releases the transport; the control layer stays.
    pub fn xprt_close(&mut self) {
        self.flags &= !CO_FL_XPRT_READY;
    }

    /// Whether the fd must still leave the table (`ctrl_close`): only once
    /// the transport is closed.
    pub fn must_close_ctrl(&self) -> bool {
        self.ctrl_ready() && !self.xprt_ready()
    }

    /// The fd left the table and was closed.
    pub fn ctrl_closed(&mut self) {
        assert!(
            !self.xprt_ready(),
            "conn {}: the control layer closes after the transport",
            self.id
        );
        self.flags &= !CO_FL_CTRL_READY;
        self.fd = -1;
    }
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

/// The polling changes a connection asks of its fd (`None`: unchanged).
#[derive(Clone, Copy, Debug)]
pub struct Polling {
    fd: Fd,
    thread: usize,
    recv: Option<bool>,
    send: Option<bool>,
}

/// The polling a connection wants now, as changes to what it asked last
/// (HAProxy's `conn_cond_update_polling`): a failed connection stops both
/// directions whatever it asked (`conn_stop_polling`); a pending connect
/// polls for write only; otherwise only a direction whose wish changed is
/// passed on. `None` without a control layer.
pub fn polling(c: &mut Connection, recv: bool, send: bool) -> Option<Polling> {
    if !c.ctrl_ready() {
        return None;
    }
    if c.has(CO_FL_ERROR) {
        c.polling_reset();
        return Some(Polling {
            fd: c.fd,
            thread: c.thread,
            recv: Some(false),
            send: Some(false),
        });
    }
    // While the connect is pending the socket layer's polling applies,
    // not the data layer's: send only, "for connect status" (HAProxy's
    // `conn_cond_update_polling` with `CO_FL_POLL_SOCK`, and
    // `tcp_connect_server`'s `conn_sock_want_send`, at commit c0e98868f).
    // The first receive stays speculative.
    let connecting = c.has(CO_FL_WAIT_L4_CONN);
    let recv = recv && !connecting && !c.has(CO_FL_SOCK_RD_SH);
    let send = (send || connecting) && !c.has(CO_FL_SOCK_WR_SH);
    let mut change = |flag: u32, wanted: bool| {
        if c.has(flag) == wanted {
            return None;
        }
        c.flags ^= flag;
        Some(wanted)
    };
    let recv = change(CO_FL_CURR_RD_ENA, recv);
    let send = change(CO_FL_CURR_WR_ENA, send);
    Some(Polling {
        fd: c.fd,
        thread: c.thread,
        recv,
        send,
    })
}

/// Passes a connection's polling changes to its fd.
pub async fn set_polling(t: &FdTable, polling: Option<Polling>) {
    let Some(p) = polling else {
        return;
    };
    match p.recv {
        Some(true) => t.want_recv(p.fd, p.thread).await,
        Some(false) => t.stop_recv(p.fd, p.thread).await,
        None => {}
    }
    match p.send {
        Some(true) => t.want_send(p.fd, p.thread).await,
        Some(false) => t.stop_send(p.fd, p.thread).await,
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bugs::Bugs;
    use crate::proxy::fd::bit;

    #[test]
    fn layers_come_up_control_first_and_go_down_transport_first() {
        let table = FdTable::new(2, Bugs::fixed());
        let mut c = Connection::new(1, 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(c.ctrl_init(&table, 4, bit(0)));
        assert!(c.ctrl_ready() && !c.xprt_ready());
        assert!(table.is_open(4));
        c.xprt_init();
        assert!(!c.must_close_ctrl(), "the transport is still up");
        c.xprt_close();
        assert!(c.must_close_ctrl());
        c.ctrl_closed();
        assert_eq!((c.flags, c.fd), (0, -1));
    }

    #[test]
    fn a_transport_without_control_layer_is_refused() {
        let mut c = Connection::new(2, 0);
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.xprt_init()));
        assert!(refused.is_err());
    }

    #[test]
    fn a_failure_shuts_both_sides_and_keeps_the_first_errno() {
        let mut c = Connection::new(3, 0);
        c.fail(Some(Errno::ECONNRESET));
        c.fail(Some(Errno::EPIPE));
        assert!(c.has(CO_FL_ERROR | CO_FL_SOCK_RD_SH | CO_FL_SOCK_WR_SH));
        assert_eq!(c.errno, Some(Errno::ECONNRESET));
    }

    #[test]
    fn polling_passes_on_changes_only_and_a_failure_stops_both() {
        let mut c = Connection::new(1, 0);
        c.fd = 5;
        c.flags |= CO_FL_CTRL_READY;
        let p = polling(&mut c, true, false).expect("a control layer");
        assert_eq!((p.recv, p.send), (Some(true), None));
        let p = polling(&mut c, true, false).expect("a control layer");
        assert_eq!((p.recv, p.send), (None, None), "nothing changed");
        c.flags |= CO_FL_SOCK_RD_SH;
        let p = polling(&mut c, true, false).expect("a control layer");
        assert_eq!((p.recv, p.send), (Some(false), None), "read side shut");
        c.fail(None);
        let p = polling(&mut c, false, false).expect("a control layer");
        assert_eq!(
            (p.recv, p.send),
            (Some(false), Some(false)),
            "whatever was asked before"
        );
    }
}
