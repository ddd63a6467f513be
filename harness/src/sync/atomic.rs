//! Atomic values: every operation is indivisible and preceded by a
//! preemption point.

use std::cell::Cell;
use std::fmt;

use crate::schedule::preempt;

/// A shared value updated with atomic operations (see the module docs).
pub struct Atomic<T> {
    name: &'static str,
    value: Cell<T>,
}

impl<T: Copy> Atomic<T> {
    /// A value known to the schedule as `name` (every value of one kind
    /// shares a name: `proxy.fdtab.update_mask`).
    pub const fn new(name: &'static str, value: T) -> Atomic<T> {
        Atomic {
            name,
            value: Cell::new(value),
        }
    }

    /// The name its preemption points carry.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Reads the value.
    pub async fn load(&self) -> T {
        preempt(self.name, "load").await;
        self.value.get()
    }

    /// Writes the value.
    pub async fn store(&self, value: T) {
        preempt(self.name, "store").await;
        self.value.set(value);
    }

    /// Stores `value`; answers the previous one.
    pub async fn swap(&self, value: T) -> T {
        preempt(self.name, "swap").await;
        self.value.replace(value)
    }

    /// Applies `f` to the value in one indivisible step; answers the
    /// previous value (a compare-exchange loop that never loses).
    pub async fn update(&self, f: impl FnOnce(T) -> T) -> T {
        preempt(self.name, "update").await;
        let old = self.value.get();
        self.value.set(f(old));
        old
    }

    /// The value, without a preemption point: for assertions, traces and
    /// tests, never to decide what the code does (that is a data race).
    pub fn unsync_load(&self) -> T {
        self.value.get()
    }

    /// The value, for the owner of the only reference.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

impl<T: Copy + PartialEq> Atomic<T> {
    /// Stores `new` if the value is `current`: `Ok(current)`; else
    /// `Err(value)`, and nothing changes.
    pub async fn compare_exchange(&self, current: T, new: T) -> Result<T, T> {
        preempt(self.name, "cas").await;
        let value = self.value.get();
        if value == current {
            self.value.set(new);
            Ok(value)
        } else {
            Err(value)
        }
    }
}

impl<T: Copy + fmt::Debug> fmt::Debug for Atomic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Atomic({}: {:?})", self.name, self.value.get())
    }
}

macro_rules! integer_ops {
    ($($t:ty),*) => {$(
        impl Atomic<$t> {
            /// Adds `v`; answers the previous value. Overflow is a bug: it panics.
            pub async fn fetch_add(&self, v: $t) -> $t {
                preempt(self.name, "add").await;
                let old = self.value.get();
                let new = old.checked_add(v).unwrap_or_else(|| {
                    panic!("{}: {old} + {v} overflows", self.name)
                });
                self.value.set(new);
                old
            }

            /// Subtracts `v`; answers the previous value. Underflow is a bug: it panics.
            pub async fn fetch_sub(&self, v: $t) -> $t {
                preempt(self.name, "sub").await;
                let old = self.value.get();
                let new = old.checked_sub(v).unwrap_or_else(|| {
                    panic!("{}: {old} - {v} underflows", self.name)
                });
                self.value.set(new);
                old
            }

            /// Sets the bits of `v`; answers the previous value.
            pub async fn fetch_or(&self, v: $t) -> $t {
                preempt(self.name, "or").await;
                let old = self.value.get();
                self.value.set(old | v);
                old
            }

            /// Keeps only the bits of `v`; answers the previous value.
            pub async fn fetch_and(&self, v: $t) -> $t {
                preempt(self.name, "and").await;
                let old = self.value.get();
                self.value.set(old & v);
                old
            }

            /// Sets bit `bit`; answers whether it was set already (x86's `bts`).
            pub async fn bit_test_and_set(&self, bit: u32) -> bool {
                preempt(self.name, "bts").await;
                let mask: $t = 1 << bit;
                let old = self.value.get();
                self.value.set(old | mask);
                old & mask != 0
            }

            /// Clears bit `bit`; answers whether it was set (x86's `btr`).
            pub async fn bit_test_and_reset(&self, bit: u32) -> bool {
                preempt(self.name, "btr").await;
                let mask: $t = 1 << bit;
                let old = self.value.get();
                self.value.set(old & !mask);
                old & mask != 0
            }
        }
    )*};
}

integer_ops!(u8, u16, u32, u64, usize);
