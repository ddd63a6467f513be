//! A tiny echo service: the worked example of a scenario.
//!
//! It reads what a client sends and writes it back. Its one bug is the
//! oldest in network programming: treating `write` as "write everything".
//! A socket's `write` may accept fewer bytes than asked (a short write)
//! when the send buffer is nearly full; the buggy variant ignores the
//! count and loses the rest. With turmoil's plain streams every write is
//! accepted whole, so the bug stays latent until the harness shrinks the
//! send buffer.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest read per call, in bytes.
pub const READ_CHUNK_BYTES: usize = 4096;

/// Which lines of the write path run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePath {
    /// One `write` per message; a short count is ignored.
    IgnoreShortWrites,
    /// `write_all`: retry until every byte is accepted.
    WriteAll,
}

/// Echoes one connection until the peer closes it.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    path: WritePath,
) -> io::Result<u64> {
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut echoed = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(echoed);
        }
        match path {
            WritePath::IgnoreShortWrites => {
                let written = stream.write(&buf[..n]).await?;
                if written < n {
                    tracing::debug!(target: "faultline::echo", read = n, written, "short write ignored");
                }
            }
            WritePath::WriteAll => stream.write_all(&buf[..n]).await?,
        }
        echoed += n as u64;
    }
}
