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

use faultline_harness::{Errno, Fd};

use super::fd::{FdTable, Owner, ThreadMask};

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
}
