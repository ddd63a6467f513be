//! Fixed-size I/O buffers.
//!
//! A [`Buffer`] is a block of memory allocated once with its size, holding
//! the bytes between `head` and `tail`. Readers append at the tail (through
//! the transport's `rcv_buf`) and consumers take from the head. It never
//! grows: what does not fit must wait, or is refused by a limit.

/// A fixed-size byte buffer (see the module docs).
pub struct Buffer {
    storage: Box<[u8]>,
    head: usize,
    tail: usize,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("size", &self.size())
            .field("len", &self.len())
            .finish()
    }
}

impl Buffer {
    pub fn new(size_bytes: usize) -> Buffer {
        assert!(size_bytes > 0, "a buffer holds at least one byte");
        Buffer {
            storage: vec![0u8; size_bytes].into_boxed_slice(),
            head: 0,
            tail: 0,
        }
    }

    /// The buffer's whole size, in bytes.
    pub fn size(&self) -> usize {
        self.storage.len()
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    pub fn is_full(&self) -> bool {
        self.room() == 0 && self.head == 0
    }

    /// Free space after the tail, in bytes (what one receive may fill).
    pub fn room(&self) -> usize {
        self.storage.len() - self.tail
    }

    /// The bytes held.
    pub fn data(&self) -> &[u8] {
        &self.storage[self.head..self.tail]
    }

    /// Drops `n` bytes from the head.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consumed {n} of {} bytes", self.len());
        self.head += n;
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
    }

    /// Moves the bytes held to the start, so the free space is contiguous.
    pub fn compact(&mut self) {
        if self.head > 0 {
            self.storage.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
    }

    /// Forgets every byte held.
    pub fn clear(&mut self) {
        self.head = 0;
        self.tail = 0;
    }

    /// Appends `bytes` (they must fit).
    pub fn push(&mut self, bytes: &[u8]) {
        let end = self.tail + bytes.len();
        self.storage[self.tail..end].copy_from_slice(bytes);
        self.tail = end;
    }

    /// Lets `receive` write up to `try_bytes` at the tail and keeps what it
    /// wrote: `receive` answers how many bytes it wrote (or an error).
    ///
    /// This is the C contract of `recv(fd, tail, try)`: memory is written
    /// only as far as the bytes that arrived, so asking for more than the
    /// free space goes unnoticed until more bytes than the free space
    /// arrive. Then they land past the end of the buffer: here a
    /// bounds-checked copy, which panics (the original crashed, or
    /// overwrote whatever followed the buffer).
    pub fn fill_with<E>(
        &mut self,
        try_bytes: usize,
        receive: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        if try_bytes <= self.room() {
            let start = self.tail;
            let n = receive(&mut self.storage[start..start + try_bytes])?;
            assert!(n <= try_bytes, "received {n} bytes into {try_bytes}");
            self.tail += n;
            return Ok(n);
        }
        let mut landing = vec![0u8; try_bytes];
        let n = receive(&mut landing)?;
        assert!(n <= try_bytes, "received {n} bytes into {try_bytes}");
        let start = self.tail;
        // Past the end when n > room: the overflow.
        self.storage[start..start + n].copy_from_slice(&landing[..n]);
        self.tail += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_go_in_at_the_tail_and_out_at_the_head() {
        let mut b = Buffer::new(8);
        b.push(b"abcde");
        assert_eq!((b.len(), b.room()), (5, 3));
        b.consume(2);
        assert_eq!(b.data(), b"cde");
        assert_eq!(b.room(), 3, "no room is gained before compaction");
        b.compact();
        assert_eq!((b.data(), b.room()), (&b"cde"[..], 5));
        b.consume(3);
        assert!(b.is_empty());
        assert_eq!(b.room(), 8, "an emptied buffer starts over");
    }

    #[test]
    fn a_receive_within_the_free_space_keeps_what_arrived() {
        let mut b = Buffer::new(8);
        let n = b
            .fill_with(8, |dst| {
                dst[..3].copy_from_slice(b"xyz");
                Ok::<_, ()>(3)
            })
            .unwrap();
        assert_eq!((n, b.data()), (3, &b"xyz"[..]));
    }

    #[test]
    fn asking_for_more_than_the_free_space_is_harmless_until_more_arrives() {
        let mut b = Buffer::new(8);
        b.push(b"12345");
        // Asks for 8 with 3 free; 2 arrive: they fit.
        let n = b
            .fill_with(8, |dst| {
                dst[..2].copy_from_slice(b"67");
                Ok::<_, ()>(2)
            })
            .unwrap();
        assert_eq!((n, b.data()), (2, &b"1234567"[..]));
        // Asks for 8 with 1 free; 4 arrive: they would land past the end.
        let overflow = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            b.fill_with(8, |dst| {
                dst[..4].copy_from_slice(b"89ab");
                Ok::<_, ()>(4)
            })
        }));
        assert!(overflow.is_err(), "bytes past the end must not be kept");
    }
}
