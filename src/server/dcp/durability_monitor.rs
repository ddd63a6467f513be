//! The durability monitor: the synchronous writes each vbucket has in
//! flight, by seqno, until the replica acknowledges them or they time out
//! (kv_engine's `ActiveDurabilityMonitor`, one per vbucket there, one for
//! the node's vbuckets here).
//!
//! Plain data under the node's lock (`Dcp::durability`, in `conn_map.rs`):
//! it knows no node, so the store can consult it under its own locks (a key
//! with a prepare in flight takes no other write) and the conn map can
//! hold it. What drives it with the node, committing what the replica
//! acknowledged, is `durability.rs`, above the node.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::protocol::Status;

/// Most synchronous writes in flight per vbucket.
pub const MAX_TRACKED_PER_VBUCKET: usize = 65_536;

/// What a waiting writer hears: the committed CAS, or a status.
pub type Outcome = Result<u64, Status>;

/// A prepare in flight and its writer.
pub(super) struct SyncWrite {
    key: Bytes,
    /// `None` once the writer has been told.
    pub(super) waiter: Option<oneshot::Sender<Outcome>>,
}

/// The prepares of each vbucket still waiting for the replica, by seqno.
#[derive(Default)]
pub struct DurabilityMonitor {
    tracked: BTreeMap<u16, BTreeMap<u64, SyncWrite>>,
    /// Acknowledged prepares whose commit has not been made yet: their
    /// keys still take no other write (in kv_engine the pending item stays
    /// in the hash table until the commit replaces it).
    committing: BTreeMap<u16, BTreeMap<u64, Bytes>>,
}

impl DurabilityMonitor {
    /// Whether `key` has a prepare in flight (a second write to it must
    /// wait: SYNC_WRITE_IN_PROGRESS).
    pub fn in_progress(&self, vb: u16, key: &[u8]) -> bool {
        self.tracked
            .get(&vb)
            .is_some_and(|t| t.values().any(|w| w.key == key))
            || self
                .committing
                .get(&vb)
                .is_some_and(|c| c.values().any(|k| k == key))
    }

    /// The prepare at `seqno`, taken by [`take_through`](Self::take_through),
    /// is committed (or could not be): its key takes writes again.
    pub(super) fn committed(&mut self, vb: u16, seqno: u64) {
        let removed = self.committing.get_mut(&vb).and_then(|c| c.remove(&seqno));
        assert!(removed.is_some(), "a commit follows its acknowledgement");
    }

    /// Whether the vbucket can take another synchronous write.
    pub fn has_room(&self, vb: u16) -> bool {
        self.tracked
            .get(&vb)
            .is_none_or(|t| t.len() < MAX_TRACKED_PER_VBUCKET)
    }

    /// Tracks the prepare at `seqno`; the receiver hears its outcome.
    pub fn track(&mut self, vb: u16, seqno: u64, key: Bytes) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let previous = self.tracked.entry(vb).or_default().insert(
            seqno,
            SyncWrite {
                key,
                waiter: Some(tx),
            },
        );
        assert!(previous.is_none(), "a seqno is prepared once");
        rx
    }

    /// The prepare at `seqno` timed out: it is forgotten (never committed).
    pub fn abort(&mut self, vb: u16, seqno: u64) {
        if let Some(tracked) = self.tracked.get_mut(&vb) {
            tracked.remove(&seqno);
        }
    }

    /// Every prepare of the vbucket becomes ambiguous.
    pub fn abandon(&mut self, vb: u16) {
        for (_, mut write) in self.tracked.remove(&vb).unwrap_or_default() {
            if let Some(waiter) = write.waiter.take() {
                let _ = waiter.send(Err(Status::SYNC_WRITE_AMBIGUOUS));
            }
        }
    }

    /// Takes the prepares of `vb` up to `seqno`, oldest first: the
    /// replica acknowledged them. Their keys stay taken until
    /// [`committed`](Self::committed).
    pub(super) fn take_through(&mut self, vb: u16, seqno: u64) -> Vec<(u64, SyncWrite)> {
        let Some(tracked) = self.tracked.get_mut(&vb) else {
            return Vec::new();
        };
        let rest = tracked.split_off(&seqno.saturating_add(1));
        let done = std::mem::replace(tracked, rest);
        let committing = self.committing.entry(vb).or_default();
        for (seqno, write) in &done {
            committing.insert(*seqno, write.key.clone());
        }
        done.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_take_prepares_in_seqno_order() {
        let mut m = DurabilityMonitor::default();
        let _a = m.track(0, 3, Bytes::from_static(b"a"));
        let _b = m.track(0, 5, Bytes::from_static(b"b"));
        let _c = m.track(1, 4, Bytes::from_static(b"c"));
        assert!(m.in_progress(0, b"a") && !m.in_progress(1, b"a"));
        let done: Vec<u64> = m.take_through(0, 4).into_iter().map(|(s, _)| s).collect();
        assert_eq!(done, [3]);
        assert!(m.in_progress(0, b"a"), "taken, not committed yet");
        m.committed(0, 3);
        assert!(!m.in_progress(0, b"a") && m.in_progress(0, b"b"));
        assert!(m.take_through(0, 4).is_empty());
        assert_eq!(m.take_through(0, u64::MAX).len(), 1);
    }

    #[test]
    fn an_aborted_write_frees_its_key_and_never_commits() {
        let mut m = DurabilityMonitor::default();
        let _a = m.track(0, 3, Bytes::from_static(b"a"));
        let _b = m.track(0, 5, Bytes::from_static(b"b"));
        m.abort(0, 3);
        assert!(!m.in_progress(0, b"a") && m.in_progress(0, b"b"));
        let done: Vec<u64> = m.take_through(0, 9).into_iter().map(|(s, _)| s).collect();
        assert_eq!(
            done,
            [5],
            "a late acknowledgement commits only what is tracked"
        );
    }

    #[test]
    fn abandoned_writes_are_ambiguous() {
        let mut m = DurabilityMonitor::default();
        let mut rx = m.track(2, 1, Bytes::from_static(b"k"));
        m.abandon(2);
        assert_eq!(rx.try_recv(), Ok(Err(Status::SYNC_WRITE_AMBIGUOUS)));
        assert!(!m.in_progress(2, b"k"));
    }
}
