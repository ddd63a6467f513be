//! Synchronous writes (durability level majority) on the active node.
//!
//! A durable SET appends a prepare to the vbucket's log and waits here.
//! With one replica, a majority is the active node plus the replica: the
//! write is durable once the replica's `DCP_SEQNO_ACKNOWLEDGED` covers the
//! prepare's seqno. Then the prepare is committed (a commit entry in the
//! log, the item visible) and the waiting connection answers SUCCESS.
//!
//! A write not acknowledged within the durability timeout is aborted: it
//! is no longer tracked, can never commit (a late acknowledgement finds
//! nothing to commit), and its key takes writes again; its writer answers
//! SYNC_WRITE_AMBIGUOUS (the client cannot know what the replica saw). A
//! vbucket that stops being active abandons its prepares: their writers
//! hear SYNC_WRITE_AMBIGUOUS.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::notify_vbucket;
use crate::protocol::Status;
use crate::server::node::Node;

/// Most synchronous writes in flight per vbucket.
pub const MAX_TRACKED_PER_VBUCKET: usize = 65_536;

/// What a waiting writer hears: the committed CAS, or a status.
pub type Outcome = Result<u64, Status>;

struct SyncWrite {
    key: Bytes,
    /// `None` once the writer has been told.
    waiter: Option<oneshot::Sender<Outcome>>,
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

    /// The prepare at `seqno`, taken by [`seqno_acknowledged`], is
    /// committed (or could not be): its key takes writes again.
    fn committed(&mut self, vb: u16, seqno: u64) {
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

    /// Takes the prepares of `vb` up to `seqno`, oldest first.
    fn take_through(&mut self, vb: u16, seqno: u64) -> Vec<(u64, SyncWrite)> {
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

/// The replica holds every prepare of `vb` up to `seqno`: commit them, in
/// seqno order, and tell their writers.
pub async fn seqno_acknowledged(node: &Rc<Node>, vb: u16, seqno: u64) {
    let durable = node.dcp.durability.lock().await.take_through(vb, seqno);
    if durable.is_empty() {
        return;
    }
    for (prepared, mut write) in durable {
        let outcome = node
            .store
            .commit(vb, prepared)
            .await
            .map(|(_, cas)| cas)
            .map_err(|_| Status::SYNC_WRITE_AMBIGUOUS);
        node.dcp.durability.lock().await.committed(vb, prepared);
        tracing::trace!(target: "faultline::dcp", vb, prepared, ok = outcome.is_ok(), "sync write committed");
        if let Some(waiter) = write.waiter.take() {
            // The writer may have stopped waiting (its timeout).
            let _ = waiter.send(outcome);
        }
    }
    // The commits go to the replica too.
    notify_vbucket(node, vb).await;
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
