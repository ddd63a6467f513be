//! A connection's read and write buffers, lent by its worker thread.

use bytes::Bytes;

use super::thread_buffers::{Kind, Memory, Slice, ThreadBuffers};
use crate::bugs::{Bugs, MB_24634};

/// Where received bytes wait to be parsed.
pub struct ReadBuffer {
    pub memory: Memory,
    /// Unparsed bytes are `start..end`.
    pub start: usize,
    pub end: usize,
}

impl ReadBuffer {
    pub fn new(memory: Memory) -> ReadBuffer {
        ReadBuffer {
            memory,
            start: 0,
            end: 0,
        }
    }

    pub fn unparsed(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.unparsed() == 0
    }

    /// Moves the unparsed bytes to the front to make room at the end.
    pub fn compact(&mut self) {
        if self.start > 0 {
            let mut memory = self.memory.borrow_mut();
            memory.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    pub fn capacity(&self) -> usize {
        self.memory.borrow().len()
    }
}

/// Where response headers are formatted before the scatter/gather send.
///
/// MB-24634: the buffer tracks how many bytes were formatted into it
/// (`produced`) and how many of those were sent (`consumed`); it may be
/// given back to the thread only when both agree. Before the fix (the
/// original, kv_engine's `mcbp_add_header`, formatted each response header
/// into the write buffer without counting it), "empty" meant "no bytes
/// counted", so a buffer with unsent header bytes looked empty.
pub struct WriteBuffer {
    pub memory: Memory,
    /// Where the next bytes go.
    end: usize,
    produced: usize,
    consumed: usize,
    bugs: Bugs,
}

impl WriteBuffer {
    pub fn new(memory: Memory, bugs: Bugs) -> WriteBuffer {
        WriteBuffer {
            memory,
            end: 0,
            produced: 0,
            consumed: 0,
            bugs,
        }
    }

    /// Free bytes after what was formatted.
    pub fn space(&self) -> usize {
        self.memory.borrow().len() - self.end
    }

    /// Formats a response's header (with its extras and key) for a
    /// scatter/gather send; the value goes out from elsewhere.
    pub fn format_header(&mut self, header: &[u8]) -> Slice {
        let at = self.end;
        self.memory.borrow_mut()[at..at + header.len()].copy_from_slice(header);
        self.end += header.len();
        // MB-24634: the old header path stored the bytes without counting them.
        if !self.bugs.is_buggy(MB_24634) {
            self.produced += header.len();
        }
        Slice {
            memory: self.memory.clone(),
            offset: at,
            len: header.len(),
        }
    }

    /// `bytes` of the buffer's contents were sent.
    pub fn consumed(&mut self, bytes: usize) {
        self.consumed += bytes;
        if !self.bugs.is_buggy(MB_24634) {
            assert!(
                self.consumed <= self.produced,
                "sent more than was formatted"
            );
        }
    }

    /// Whether the buffer holds nothing still to be sent.
    pub fn is_empty(&self) -> bool {
        if self.bugs.is_buggy(MB_24634) {
            // MB-24634: before the fix, "empty" meant "no bytes stored".
            self.produced == 0
        } else {
            self.consumed == self.produced
        }
    }

    /// Everything was sent: start again at the front.
    pub fn reset(&mut self) {
        if !self.bugs.is_buggy(MB_24634) {
            assert_eq!(
                self.consumed, self.produced,
                "everything formatted was sent"
            );
        }
        self.end = 0;
        self.produced = 0;
        self.consumed = 0;
    }
}

/// One piece of a scatter/gather send.
#[derive(Clone, Debug)]
pub enum Piece {
    /// Bytes in the write buffer (a response header, a small response).
    Buffer(Slice),
    /// Bytes owned elsewhere: an item's value, a large response.
    Owned(Bytes),
}

impl Piece {
    pub fn len(&self) -> usize {
        match self {
            Piece::Buffer(s) => s.len,
            Piece::Owned(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the first `n` bytes (they were sent).
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.len());
        match self {
            Piece::Buffer(s) => {
                s.offset += n;
                s.len -= n;
            }
            Piece::Owned(b) => {
                let _ = b.split_to(n);
            }
        }
    }
}

/// Gives a connection's buffers back to its thread when they hold nothing
/// pending (memcached's `conn_return_buffers`). Returns whether the write
/// buffer went back.
pub fn give_back_idle(
    thread: &mut ThreadBuffers,
    read: &mut Option<ReadBuffer>,
    write: &mut Option<WriteBuffer>,
) -> bool {
    if read.as_ref().is_some_and(ReadBuffer::is_empty) {
        thread.give_back(Kind::Read, read.take().expect("checked").memory);
    }
    if write.as_ref().is_some_and(WriteBuffer::is_empty) {
        thread.give_back(Kind::Write, write.take().expect("checked").memory);
        return true;
    }
    false
}
