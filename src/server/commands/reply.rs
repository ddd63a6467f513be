//! How a command answers: what the connection does after it, the status
//! a store error answers with, and the quiet variants' silence on
//! success. Shared by the command families (and the dispatch in
//! `mod.rs`), which is why it is a file of its own: they use it, it uses
//! none of them.

use crate::protocol::{Packet, Status};
use crate::server::conn::{Conn, ServerStream};
use crate::server::dcp::DcpConn;
use crate::server::store::StoreError;

/// What the connection does after a command.
pub enum Flow {
    Continue,
    /// Send what is queued, then close.
    Close,
    /// Send what is queued, then serve the connection as a DCP connection
    /// (`DCP_OPEN` succeeded).
    StartDcp(DcpConn),
}

/// The status a store error answers with.
pub fn status_of(error: StoreError) -> Status {
    match error {
        StoreError::NotFound => Status::KEY_ENOENT,
        StoreError::Exists => Status::KEY_EEXISTS,
        StoreError::NotStored => Status::NOT_STORED,
        StoreError::NotMyVbucket => Status::NOT_MY_VBUCKET,
        StoreError::NonNumeric => Status::DELTA_BADVAL,
        StoreError::TooLarge => Status::E2BIG,
        StoreError::SyncWriteInProgress => Status::SYNC_WRITE_IN_PROGRESS,
        StoreError::TempFail => Status::ETMPFAIL,
    }
}

/// Answers a status, unless the request is quiet and succeeded.
pub fn answer<S: ServerStream>(conn: &mut Conn<S>, request: &Packet, response: Packet) -> Flow {
    let quiet = request.header.opcode.is_quiet();
    if !(quiet && response.header.status().is_success()) {
        conn.respond(response);
    }
    Flow::Continue
}
