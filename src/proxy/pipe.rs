//! Kernel pipes for zero-copy forwarding (HAProxy's `struct pipe`): a
//! response body moves backend socket -> pipe -> client socket with
//! `splice()`, never through a user-space buffer.
//!
//! A pipe belongs to a client connection's response channel while it holds
//! data and is released once it is empty, as HAProxy puts pipes back.
//! `data_bytes` is what the proxy believes the pipe holds: it counts what
//! the splices moved in and out.

use faultline_harness::{sys::Errno, sys::Fd, sys::Syscalls};

/// HAProxy's `SPLICE_FULL_HINT` (`src/raw_sock.c`, the same from commit
/// c0e98868f to 237e6a0d6): a pipe holds 16 buffers, and with TCP
/// timestamps segments of 1448 bytes are common, so a pipe holding this
/// much is taken as full enough to stop receiving for this pass.
pub const SPLICE_FULL_HINT_BYTES: usize = 16 * 1448;

/// HAProxy's `MAX_SPLICE_AT_ONCE` (`src/raw_sock.c`, commit 61d39a0e2):
/// the most one `splice()` is asked for.
pub const MAX_SPLICE_AT_ONCE_BYTES: usize = 1 << 30;

/// HAProxy's `tune.recv_enough`, whose default is `MIN_RECV_AT_ONCE_ENOUGH`
/// (`include/common/defaults.h`, commit 61d39a0e2: more than 7 segments
/// of 1448 bytes): a receive this large is enough for one pass.
pub const RECV_ENOUGH_BYTES: usize = 7 * 1448;

/// One pipe: bytes go in at `prod`, out at `cons`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pipe {
    pub prod: Fd,
    pub cons: Fd,
    pub data_bytes: usize,
}

impl Pipe {
    /// A new, empty pipe (HAProxy's `get_pipe`).
    pub async fn get<S: Syscalls>(sys: &S) -> Result<Pipe, Errno> {
        let (cons, prod) = sys.pipe().await?;
        assert_ne!(cons, prod, "a pipe has two ends");
        Ok(Pipe {
            prod,
            cons,
            data_bytes: 0,
        })
    }

    /// Releases the pipe (HAProxy's `put_pipe`). Bytes still in it are
    /// lost: only a connection that is being closed releases a pipe that
    /// is not empty.
    pub async fn put<S: Syscalls>(self, sys: &S) {
        for fd in [self.prod, self.cons] {
            if let Err(e) = sys.close(fd).await {
                tracing::warn!(target: "faultline::proxy", fd, error = %e, "pipe close failed");
            }
        }
    }
}
