//! The buffer pool a worker's connections share.
//!
//! memcached gives an idle connection's read and write buffers back to a
//! pool so that thousands of idle connections do not each hold memory. A
//! buffer is shared memory: a connection formats a response header into
//! it and hands the kernel a scatter/gather list that points *into* it.
//! Here that is an `Rc<RefCell<Vec<u8>>>` and a [`Slice`] that keeps the
//! `Rc`: if the buffer goes back to the pool while a slice still points
//! into it, the next owner's bytes are what the slice reads. That is the
//! aliasing of MB-24634, in safe Rust.

use std::cell::RefCell;
use std::rc::Rc;

/// A pooled buffer's memory.
pub type Memory = Rc<RefCell<Vec<u8>>>;

/// Bytes `offset..offset + len` of a pooled buffer, read when sent.
#[derive(Clone, Debug)]
pub struct Slice {
    pub memory: Memory,
    pub offset: usize,
    pub len: usize,
}

/// Free buffers of one size, reused last-in first-out (as a free list is).
pub struct BufferPool {
    free: Vec<Memory>,
    buffer_bytes: usize,
    max_free_buffers: usize,
    /// Buffers handed out and not yet returned.
    pub in_use: usize,
}

impl BufferPool {
    pub fn new(buffer_bytes: usize, max_free_buffers: usize) -> BufferPool {
        assert!(
            buffer_bytes >= crate::protocol::HEADER_LEN,
            "a buffer holds at least a header"
        );
        BufferPool {
            free: Vec::new(),
            buffer_bytes,
            max_free_buffers,
            in_use: 0,
        }
    }

    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    pub fn acquire(&mut self) -> Memory {
        self.in_use += 1;
        self.free
            .pop()
            .unwrap_or_else(|| Rc::new(RefCell::new(vec![0; self.buffer_bytes])))
    }

    pub fn release(&mut self, memory: Memory) {
        assert!(self.in_use > 0, "released a buffer that was not handed out");
        assert_eq!(
            memory.borrow().len(),
            self.buffer_bytes,
            "a pool holds buffers of one size"
        );
        self.in_use -= 1;
        if self.free.len() < self.max_free_buffers {
            self.free.push(memory);
        }
    }

    pub fn free_buffers(&self) -> usize {
        self.free.len()
    }
}
