//! The buffers a worker thread lends to its connections.
//!
//! memcached's worker thread keeps one spare read buffer and one spare
//! write buffer (`thread->read`, `thread->write`) so that thousands of
//! idle connections do not each hold memory: a connection that needs a
//! buffer and has none borrows the thread's spare of that kind, or a new
//! one is made; an idle connection gives a clean buffer back to the slot
//! of its kind, or it is freed when the slot is taken. A write buffer
//! given back only ever goes to another connection's writes.
//!
//! A buffer is shared memory: a connection formats a response header into
//! it and hands the kernel a scatter/gather list that points *into* it.
//! Here that is an `Rc<RefCell<Vec<u8>>>` and a [`Slice`] that keeps the
//! `Rc`: if the buffer goes back to the thread while a slice still points
//! into it, the next borrower's bytes are what the slice reads. That is
//! the aliasing of MB-24634, in safe Rust.

use std::cell::RefCell;
use std::rc::Rc;

/// A buffer's memory.
pub type Memory = Rc<RefCell<Vec<u8>>>;

/// Bytes `offset..offset + len` of a buffer, read when sent.
#[derive(Clone, Debug)]
pub struct Slice {
    pub memory: Memory,
    pub offset: usize,
    pub len: usize,
}

/// The two kinds of buffer, each with its own spare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// One kind's spare and its accounting.
struct Slot {
    spare: Option<Memory>,
    bytes: usize,
    /// Buffers lent and not given back yet.
    lent: usize,
}

/// A worker thread's spare buffers (see the module docs).
pub struct ThreadBuffers {
    read: Slot,
    write: Slot,
}

impl ThreadBuffers {
    pub fn new(read_bytes: usize, write_bytes: usize) -> ThreadBuffers {
        for bytes in [read_bytes, write_bytes] {
            assert!(
                bytes >= crate::protocol::HEADER_LEN,
                "a buffer holds at least a header"
            );
        }
        let slot = |bytes| Slot {
            spare: None,
            bytes,
            lent: 0,
        };
        ThreadBuffers {
            read: slot(read_bytes),
            write: slot(write_bytes),
        }
    }

    fn slot(&mut self, kind: Kind) -> &mut Slot {
        match kind {
            Kind::Read => &mut self.read,
            Kind::Write => &mut self.write,
        }
    }

    /// A buffer for a connection that has none: the thread's spare, else
    /// a new one (memcached's `conn_loan_single_buffer`).
    pub fn lend(&mut self, kind: Kind) -> Memory {
        let slot = self.slot(kind);
        slot.lent += 1;
        let bytes = slot.bytes;
        slot.spare
            .take()
            .unwrap_or_else(|| Rc::new(RefCell::new(vec![0; bytes])))
    }

    /// A connection gives a buffer back: it becomes the spare of its kind,
    /// or is freed when the thread has one (memcached's
    /// `conn_return_single_buffer`).
    pub fn give_back(&mut self, kind: Kind, memory: Memory) {
        let slot = self.slot(kind);
        assert!(
            slot.lent > 0,
            "a {kind:?} buffer given back that was not lent"
        );
        assert_eq!(
            memory.borrow().len(),
            slot.bytes,
            "a {kind:?} buffer is {} bytes",
            slot.bytes
        );
        slot.lent -= 1;
        if slot.spare.is_none() {
            slot.spare = Some(memory);
        }
    }

    /// Whether the thread has a spare of this kind.
    pub fn has_spare(&self, kind: Kind) -> bool {
        match kind {
            Kind::Read => self.read.spare.is_some(),
            Kind::Write => self.write.spare.is_some(),
        }
    }

    /// Buffers of this kind lent and not given back.
    pub fn lent(&self, kind: Kind) -> usize {
        match kind {
            Kind::Read => self.read.lent,
            Kind::Write => self.write.lent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_buffer_given_back_only_reaches_another_connections_writes() {
        let mut thread = ThreadBuffers::new(64, 64);
        let written = thread.lend(Kind::Write);
        thread.give_back(Kind::Write, written.clone());
        let read = thread.lend(Kind::Read);
        assert!(!Rc::ptr_eq(&read, &written), "a read never gets it");
        let next_write = thread.lend(Kind::Write);
        assert!(Rc::ptr_eq(&next_write, &written), "the next write does");
        assert_eq!((thread.lent(Kind::Read), thread.lent(Kind::Write)), (1, 1));
    }

    #[test]
    fn the_thread_keeps_one_spare_of_each_kind_and_frees_the_rest() {
        let mut thread = ThreadBuffers::new(64, 128);
        let (a, b) = (thread.lend(Kind::Write), thread.lend(Kind::Write));
        thread.give_back(Kind::Write, a.clone());
        thread.give_back(Kind::Write, b.clone());
        assert!(thread.has_spare(Kind::Write) && !thread.has_spare(Kind::Read));
        let again = thread.lend(Kind::Write);
        assert!(Rc::ptr_eq(&again, &a), "the first one given back is kept");
        assert_eq!(Rc::strong_count(&b), 1, "the second one was freed");
        assert_eq!(again.borrow().len(), 128);
    }
}
