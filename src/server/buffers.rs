//! A connection's read and write buffers, taken from the worker's pool.

use bytes::Bytes;

use super::pool::{BufferPool, Memory, Slice};
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
/// given back to the pool only when both agree. Before the fix, "empty"
/// meant "no bytes stored", and the header path did not count the bytes it
/// stored, so a buffer with unsent header bytes could look empty.
pub struct WriteBuffer {
    pub memory: Memory,
    produced: usize,
    consumed: usize,
    bugs: Bugs,
}

impl WriteBuffer {
    pub fn new(memory: Memory, bugs: Bugs) -> WriteBuffer {
        WriteBuffer {
            memory,
            produced: 0,
            consumed: 0,
            bugs,
        }
    }

    /// Free bytes after what was formatted.
    pub fn space(&self) -> usize {
        self.memory.borrow().len() - self.produced
    }

    /// Copies a small response in whole; it counts what it stores.
    pub fn format(&mut self, bytes: &[u8]) -> Slice {
        let at = self.produced;
        self.memory.borrow_mut()[at..at + bytes.len()].copy_from_slice(bytes);
        self.produced += bytes.len();
        Slice {
            memory: self.memory.clone(),
            offset: at,
            len: bytes.len(),
        }
    }

    /// Formats the header of a response whose value is sent from the item.
    pub fn format_header(&mut self, header: &[u8]) -> Slice {
        let at = self.produced;
        self.memory.borrow_mut()[at..at + header.len()].copy_from_slice(header);
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

/// Gives a connection's buffers back when they hold nothing pending.
/// Returns whether the write buffer went back.
pub fn release_idle(
    pool: &mut BufferPool,
    read: &mut Option<ReadBuffer>,
    write: &mut Option<WriteBuffer>,
) -> bool {
    if read.as_ref().is_some_and(ReadBuffer::is_empty) {
        pool.release(read.take().expect("checked").memory);
    }
    if write.as_ref().is_some_and(WriteBuffer::is_empty) {
        pool.release(write.take().expect("checked").memory);
        return true;
    }
    false
}
