//! The data: vbuckets of items, with CAS, flags, expiry on the node's
//! clock, and per-vbucket sequence numbers that replication streams read.
//!
//! Front-end connections, DCP consumers and the executor's tasks are
//! different threads in the engine; here they are tasks of one host, and
//! the per-vbucket state is shared under the harness's locks as kv_engine
//! shares it (every lock and atomic operation a preemption point):
//!
//! * `kv.vbucket.state_lock` ([`RwLock`], `VBucket::stateLock`): the
//!   vbucket's state and uuid. Front-end operations and replicated
//!   mutations hold it shared for the whole operation; a state change
//!   holds it exclusive.
//! * `kv.vbucket.hash_table` ([`Mutex`]): the vbucket's items. kv_engine
//!   locks one hash bucket of the table (`HashBucketLock`); here one lock
//!   guards a vbucket's whole table (coarser: two keys of one vbucket
//!   never proceed in parallel).
//! * `kv.vbucket.checkpoint_manager.queue_lock` ([`Mutex`],
//!   `CheckpointManager::queueLock`): the mutation log and the high seqno.
//! * `kv.store.next_cas`, `kv.store.flush` and `kv.stats.total_items`
//!   ([`Atomic`]s): the bucket's next CAS, the flush point, a counter.
//!
//! Lock order (the node's, with the DCP locks of `server::dcp`): vbucket
//! state -> conn map -> producer streams -> stream lock -> hash table ->
//! checkpoint queue -> durability monitor. No lock is held across a
//! network await.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use faultline_harness::sync::{Atomic, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use tokio::sync::oneshot;

use crate::server::dcp::durability_monitor::{DurabilityMonitor, Outcome};

/// Expiry values up to this many seconds are relative to now; larger ones
/// are absolute Unix times (memcached's rule).
///
/// (memcached's `REALTIME_MAXDELTA`; kv_engine `daemon/mc_time.cc` at
/// commit 32c0ae9f1.)
pub const RELATIVE_EXPIRY_MAX_S: u32 = 30 * 24 * 60 * 60;

/// Most mutations a vbucket keeps for streams that start late.
pub const MAX_LOG_ENTRIES: usize = 100_000;

/// A stable uuid for a vbucket's history, derived from the node and vbucket.
pub fn vbucket_uuid(seed: u64, vb: u16) -> u64 {
    mix64(seed ^ (u64::from(vb) << 32) ^ 0x5642_5555_4944)
}

/// SplitMix64's finalizer: a fixed, well-mixed function of the node's seed
/// and the vbucket, so that uuids differ between vbuckets and runs yet
/// replay exactly (kv_engine draws them at random; a simulation cannot).
fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A vbucket's role on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VbState {
    /// Serves reads and writes.
    Active,
    /// Receives a replication stream; refuses client access.
    Replica,
    /// Being moved here (takeover in progress); refuses client access.
    Pending,
    /// Not here.
    Dead,
}

impl VbState {
    /// The state's code on the wire (`SET_VBUCKET_STATE`).
    pub fn wire(self) -> u8 {
        use crate::protocol::dcp::vbucket_state as w;
        match self {
            VbState::Active => w::ACTIVE,
            VbState::Replica => w::REPLICA,
            VbState::Pending => w::PENDING,
            VbState::Dead => w::DEAD,
        }
    }

    pub fn from_wire(code: u8) -> Option<VbState> {
        use crate::protocol::dcp::vbucket_state as w;
        match code {
            w::ACTIVE => Some(VbState::Active),
            w::REPLICA => Some(VbState::Replica),
            w::PENDING => Some(VbState::Pending),
            w::DEAD => Some(VbState::Dead),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            VbState::Active => "active",
            VbState::Replica => "replica",
            VbState::Pending => "pending",
            VbState::Dead => "dead",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub value: Bytes,
    pub flags: u32,
    /// Expires at this node-clock time; never when `None`.
    pub expires_at: Option<Duration>,
    pub cas: u64,
    /// The vbucket sequence number of the mutation that wrote it.
    pub seqno: u64,
}

/// One entry of a vbucket's mutation log, as a replication stream sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    Set {
        key: Bytes,
        value: Bytes,
        flags: u32,
        expiration_s: u32,
        seqno: u64,
        cas: u64,
    },
    Delete {
        key: Bytes,
        seqno: u64,
    },
    /// A synchronous write waiting for the replicas (DCP_PREPARE).
    Prepare {
        key: Bytes,
        value: Bytes,
        flags: u32,
        seqno: u64,
        cas: u64,
    },
    /// A prepared write that is now durable (DCP_COMMIT).
    Commit {
        key: Bytes,
        prepared_seqno: u64,
        seqno: u64,
    },
}

impl Mutation {
    pub fn seqno(&self) -> u64 {
        match self {
            Mutation::Set { seqno, .. }
            | Mutation::Delete { seqno, .. }
            | Mutation::Prepare { seqno, .. }
            | Mutation::Commit { seqno, .. } => *seqno,
        }
    }
}

/// What a vbucket's state lock guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VbMeta {
    pub state: VbState,
    /// A unique id of this vbucket's history (DCP failover log).
    pub uuid: u64,
}

/// The items of a vbucket (under its hash table lock).
type HashTable = BTreeMap<Bytes, Item>;

/// A vbucket's checkpoint manager: its log (under the queue lock).
pub struct CheckpointManager {
    pub high_seqno: u64,
    /// Mutations by seqno, oldest first (bounded by [`MAX_LOG_ENTRIES`]).
    log: VecDeque<Mutation>,
}

impl CheckpointManager {
    fn append(&mut self, mutation: Mutation) {
        assert_eq!(
            mutation.seqno(),
            self.high_seqno,
            "the log is in seqno order"
        );
        if self.log.len() == MAX_LOG_ENTRIES {
            self.log.pop_front();
        }
        self.log.push_back(mutation);
    }

    /// Up to `max_entries` mutations with a seqno above `after`, oldest
    /// first. `None` when the log no longer reaches back that far.
    pub fn mutations_after(&self, after: u64, max_entries: usize) -> Option<Vec<Mutation>> {
        if let Some(first) = self.log.front() {
            if first.seqno() > after.saturating_add(1) {
                return None;
            }
        } else if after < self.high_seqno {
            return None;
        }
        // The log is in seqno order: find the first entry past `after`.
        let start = self.log.partition_point(|m| m.seqno() <= after);
        Some(self.log.range(start..).take(max_entries).cloned().collect())
    }
}

pub struct VBucket {
    id: u16,
    state_lock: RwLock<VbMeta>,
    hash_table: Mutex<HashTable>,
    checkpoints: Mutex<CheckpointManager>,
}

impl VBucket {
    fn new(id: u16, state: VbState, uuid: u64) -> VBucket {
        VBucket {
            id,
            state_lock: RwLock::new("kv.vbucket.state_lock", VbMeta { state, uuid }),
            hash_table: Mutex::new("kv.vbucket.hash_table", BTreeMap::new()),
            checkpoints: Mutex::new(
                "kv.vbucket.checkpoint_manager.queue_lock",
                CheckpointManager {
                    high_seqno: 0,
                    log: VecDeque::new(),
                },
            ),
        }
    }

    /// The state lock, shared: the state cannot change while it is held.
    pub async fn state_read(&self) -> RwLockReadGuard<'_, VbMeta> {
        self.state_lock.read().await
    }

    pub async fn state(&self) -> VbState {
        self.state_lock.read().await.state
    }

    pub async fn meta(&self) -> VbMeta {
        *self.state_lock.read().await
    }

    /// The checkpoint manager, under its queue lock.
    pub async fn checkpoints(&self) -> MutexGuard<'_, CheckpointManager> {
        self.checkpoints.lock().await
    }

    pub async fn high_seqno(&self) -> u64 {
        self.checkpoints.lock().await.high_seqno
    }

    pub async fn len(&self) -> usize {
        self.hash_table.lock().await.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.hash_table.lock().await.is_empty()
    }

    /// Every live item, in key order.
    pub async fn items(&self) -> Vec<(Bytes, Item)> {
        let ht = self.hash_table.lock().await;
        ht.iter().map(|(k, i)| (k.clone(), i.clone())).collect()
    }
}

/// The outcome of a store operation, in protocol terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    NotFound,
    Exists,
    NotStored,
    NotMyVbucket,
    NonNumeric,
    TooLarge,
    /// The key has a durable write in flight (SYNC_WRITE_IN_PROGRESS).
    SyncWriteInProgress,
    /// The vbucket tracks as many durable writes as it may (ETMPFAIL).
    TempFail,
}

/// How a store operation treats an existing item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

pub struct Store {
    vbuckets: Vec<VBucket>,
    next_cas: Atomic<u64>,
    max_value_bytes: usize,
    /// Flush: items with a CAS up to `.1` are gone from time `.0`.
    flush: Atomic<Option<(Duration, u64)>>,
    pub total_items: Atomic<u64>,
}

/// What a front-end operation holds: the vbucket's state lock, shared,
/// with the vbucket active.
type Active<'a> = (&'a VBucket, RwLockReadGuard<'a, VbMeta>);

impl Store {
    pub fn new(
        vbuckets: u16,
        active: impl Fn(u16) -> VbState,
        max_value_bytes: usize,
        uuid_seed: u64,
    ) -> Store {
        assert!(vbuckets > 0, "a node has at least one vbucket");
        Store {
            vbuckets: (0..vbuckets)
                .map(|vb| VBucket::new(vb, active(vb), vbucket_uuid(uuid_seed, vb)))
                .collect(),
            next_cas: Atomic::new("kv.store.next_cas", 1),
            max_value_bytes,
            flush: Atomic::new("kv.store.flush", None),
            total_items: Atomic::new("kv.stats.total_items", 0),
        }
    }

    pub fn vbucket_count(&self) -> u16 {
        self.vbuckets.len() as u16
    }

    pub fn vbucket(&self, vb: u16) -> Option<&VBucket> {
        self.vbuckets.get(usize::from(vb))
    }

    /// Sets the state under the state lock, exclusive; answers the old one.
    pub async fn set_state(&self, vb: u16, state: VbState) -> Option<VbState> {
        let v = self.vbuckets.get(usize::from(vb))?;
        let mut meta = v.state_lock.write().await;
        let old = meta.state;
        meta.state = state;
        Some(old)
    }

    /// A replica takes the uuid of the history it follows (from the
    /// producer's failover log), so that a later stream resumes it.
    pub async fn set_uuid(&self, vb: u16, uuid: u64) {
        if let Some(v) = self.vbuckets.get(usize::from(vb)) {
            v.state_lock.write().await.uuid = uuid;
        }
    }

    async fn next_cas(&self) -> u64 {
        self.next_cas.fetch_add(1).await
    }

    /// The vbucket, if active here, with its state lock held shared.
    async fn active(&self, vb: u16) -> Result<Active<'_>, StoreError> {
        let Some(v) = self.vbuckets.get(usize::from(vb)) else {
            return Err(StoreError::NotMyVbucket);
        };
        let meta = v.state_lock.read().await;
        if meta.state != VbState::Active {
            return Err(StoreError::NotMyVbucket);
        }
        Ok((v, meta))
    }

    fn is_live(flush: Option<(Duration, u64)>, item: &Item, now: Duration) -> bool {
        if item.expires_at.is_some_and(|at| at <= now) {
            return false;
        }
        !flush.is_some_and(|(at, max_cas)| at <= now && item.cas <= max_cas)
    }

    /// A key whose durable write is in flight takes no other write until
    /// that write commits or aborts (SET, ADD, DELETE, INCR, ...: each is
    /// answered SYNC_WRITE_IN_PROGRESS, as kv_engine's hash table answers
    /// for a pending item), so no write slips in between a prepare and its
    /// commit. Asked with the vbucket's hash table lock held, which every
    /// prepare of the key holds too: the answer stays true until the write.
    async fn refuse_if_pending(
        durability: &Mutex<DurabilityMonitor>,
        vb: u16,
        key: &[u8],
    ) -> Result<(), StoreError> {
        if durability.lock().await.in_progress(vb, key) {
            return Err(StoreError::SyncWriteInProgress);
        }
        Ok(())
    }

    pub async fn get(
        &self,
        vb: u16,
        key: &[u8],
        now: Duration,
    ) -> Result<Option<Item>, StoreError> {
        let (v, _state) = self.active(vb).await?;
        let ht = v.hash_table.lock().await;
        let flush = self.flush.load().await;
        Ok(ht
            .get(key)
            .filter(|i| Self::is_live(flush, i, now))
            .cloned())
    }

    /// SET/ADD/REPLACE/APPEND/PREPEND: the new CAS.
    #[allow(clippy::too_many_arguments)]
    pub async fn store(
        &self,
        mode: StoreMode,
        vb: u16,
        key: Bytes,
        value: Bytes,
        flags: u32,
        expires_at: Option<Duration>,
        expiration_s: u32,
        cas: u64,
        now: Duration,
        durability: &Mutex<DurabilityMonitor>,
    ) -> Result<u64, StoreError> {
        let (v, _state) = self.active(vb).await?;
        let mut ht = v.hash_table.lock().await;
        Self::refuse_if_pending(durability, vb, &key).await?;
        // The CAS is drawn under the hash table's lock, as the engine
        // draws it under the hash bucket's: the writes of a key take
        // increasing CAS values in the order they are made.
        let new_cas = self.next_cas().await;
        let write = Write {
            mode,
            key,
            value,
            flags,
            expires_at,
            expiration_s,
            cas,
        };
        self.store_locked(v, &mut ht, write, new_cas, now).await
    }

    /// A store with the vbucket's state lock (shared) and hash table lock
    /// held.
    async fn store_locked(
        &self,
        v: &VBucket,
        ht: &mut HashTable,
        write: Write,
        new_cas: u64,
        now: Duration,
    ) -> Result<u64, StoreError> {
        let Write {
            mode,
            key,
            value,
            flags,
            expires_at,
            expiration_s,
            cas,
        } = write;
        let flush = self.flush.load().await;
        let existing = ht
            .get(&key)
            .filter(|i| Self::is_live(flush, i, now))
            .cloned();
        if cas != 0 {
            match &existing {
                None => return Err(StoreError::NotFound),
                Some(i) if i.cas != cas => return Err(StoreError::Exists),
                Some(_) => {}
            }
        }
        let (value, flags, expires_at) = match (mode, &existing) {
            (StoreMode::Add, Some(_)) => return Err(StoreError::Exists),
            (StoreMode::Replace, None) => return Err(StoreError::NotFound),
            (StoreMode::Append | StoreMode::Prepend, None) => return Err(StoreError::NotStored),
            (StoreMode::Append, Some(old)) => {
                let mut joined = old.value.to_vec();
                joined.extend_from_slice(&value);
                (Bytes::from(joined), old.flags, old.expires_at)
            }
            (StoreMode::Prepend, Some(old)) => {
                let mut joined = value.to_vec();
                joined.extend_from_slice(&old.value);
                (Bytes::from(joined), old.flags, old.expires_at)
            }
            _ => (value, flags, expires_at),
        };
        if value.len() > self.max_value_bytes {
            return Err(StoreError::TooLarge);
        }
        let seqno = {
            let mut cm = v.checkpoints.lock().await;
            cm.high_seqno += 1;
            let seqno = cm.high_seqno;
            cm.append(Mutation::Set {
                key: key.clone(),
                value: value.clone(),
                flags,
                expiration_s,
                seqno,
                cas: new_cas,
            });
            seqno
        };
        ht.insert(
            key,
            Item {
                value,
                flags,
                expires_at,
                cas: new_cas,
                seqno,
            },
        );
        self.total_items.fetch_add(1).await;
        Ok(new_cas)
    }

    pub async fn delete(
        &self,
        vb: u16,
        key: &[u8],
        cas: u64,
        now: Duration,
        durability: &Mutex<DurabilityMonitor>,
    ) -> Result<(), StoreError> {
        let (v, _state) = self.active(vb).await?;
        let mut ht = v.hash_table.lock().await;
        Self::refuse_if_pending(durability, vb, key).await?;
        let flush = self.flush.load().await;
        let Some(existing) = ht.get(key).filter(|i| Self::is_live(flush, i, now)) else {
            return Err(StoreError::NotFound);
        };
        if cas != 0 && existing.cas != cas {
            return Err(StoreError::Exists);
        }
        let key = Bytes::copy_from_slice(key);
        ht.remove(&key);
        let mut cm = v.checkpoints.lock().await;
        cm.high_seqno += 1;
        let seqno = cm.high_seqno;
        cm.append(Mutation::Delete { key, seqno });
        Ok(())
    }

    /// INCREMENT/DECREMENT: (new value, new CAS). Read and write under one
    /// hold of the hash table lock.
    #[allow(clippy::too_many_arguments)]
    pub async fn arith(
        &self,
        vb: u16,
        key: Bytes,
        incr: bool,
        delta: u64,
        initial: u64,
        expiration_s: u32,
        expires_at: Option<Duration>,
        now: Duration,
        durability: &Mutex<DurabilityMonitor>,
    ) -> Result<(u64, u64), StoreError> {
        let (v, _state) = self.active(vb).await?;
        let mut ht = v.hash_table.lock().await;
        Self::refuse_if_pending(durability, vb, &key).await?;
        let flush = self.flush.load().await;
        let existing = ht
            .get(&key)
            .filter(|i| Self::is_live(flush, i, now))
            .cloned();
        let (number, flags, expires) = match existing {
            None if expiration_s == u32::MAX => return Err(StoreError::NotFound),
            None => (initial, 0, expires_at),
            Some(item) => {
                let text = std::str::from_utf8(&item.value).map_err(|_| StoreError::NonNumeric)?;
                if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(StoreError::NonNumeric);
                }
                let current: u64 = text.parse().map_err(|_| StoreError::NonNumeric)?;
                let next = if incr {
                    current.wrapping_add(delta)
                } else {
                    current.saturating_sub(delta)
                };
                (next, item.flags, item.expires_at)
            }
        };
        let value = Bytes::from(number.to_string());
        let new_cas = self.next_cas().await;
        let write = Write {
            mode: StoreMode::Set,
            key,
            value,
            flags,
            expires_at: expires,
            expiration_s,
            cas: 0,
        };
        let cas = self.store_locked(v, &mut ht, write, new_cas, now).await?;
        Ok((number, cas))
    }

    /// Forgets every item now, or from `at` on.
    pub async fn flush(&self, at: Duration) {
        let max_cas = self.next_cas.load().await - 1;
        self.flush.store(Some((at, max_cas))).await;
    }

    pub async fn live_items(&self, now: Duration) -> usize {
        let flush = self.flush.load().await;
        let mut n = 0;
        for v in &self.vbuckets {
            let ht = v.hash_table.lock().await;
            n += ht.values().filter(|i| Self::is_live(flush, i, now)).count();
        }
        n
    }

    pub async fn live_bytes(&self, now: Duration) -> usize {
        let flush = self.flush.load().await;
        let mut n = 0;
        for v in &self.vbuckets {
            let ht = v.hash_table.lock().await;
            n += ht
                .iter()
                .filter(|(_, i)| Self::is_live(flush, i, now))
                .map(|(k, i)| k.len() + i.value.len())
                .sum::<usize>();
        }
        n
    }

    // --- replication ---

    /// Applies a mutation received from a replication stream (the vbucket
    /// is a replica or pending here). Keeps the producer's seqnos.
    pub async fn apply_replicated(
        &self,
        vb: u16,
        mutation: Mutation,
        now: Duration,
    ) -> Result<(), StoreError> {
        let Some(v) = self.vbuckets.get(usize::from(vb)) else {
            return Err(StoreError::NotMyVbucket);
        };
        let state = v.state_lock.read().await;
        if !matches!(state.state, VbState::Replica | VbState::Pending) {
            return Err(StoreError::NotMyVbucket);
        }
        let seqno = mutation.seqno();
        if let Mutation::Set { cas, .. } | Mutation::Prepare { cas, .. } = &mutation {
            // Items keep the producer's CAS; ours continue past it.
            let next = cas.saturating_add(1);
            self.next_cas.update(|c| c.max(next)).await;
        }
        let mut ht = v.hash_table.lock().await;
        let mut cm = v.checkpoints.lock().await;
        if seqno <= cm.high_seqno {
            // Already have it (a restarted stream resends): ignore.
            return Ok(());
        }
        match &mutation {
            Mutation::Set {
                key,
                value,
                flags,
                expiration_s,
                cas,
                ..
            } => {
                let expires_at = expiry(*expiration_s, now, 0);
                ht.insert(
                    key.clone(),
                    Item {
                        value: value.clone(),
                        flags: *flags,
                        expires_at,
                        cas: *cas,
                        seqno,
                    },
                );
            }
            Mutation::Delete { key, .. } => {
                ht.remove(key);
            }
            // A prepare becomes visible only when committed.
            Mutation::Prepare { .. } => {}
            Mutation::Commit {
                key,
                prepared_seqno,
                ..
            } => {
                let prepared = cm
                    .log
                    .iter()
                    .find(|m| m.seqno() == *prepared_seqno)
                    .cloned();
                if let Some(Mutation::Prepare {
                    value, flags, cas, ..
                }) = prepared
                {
                    ht.insert(
                        key.clone(),
                        Item {
                            value,
                            flags,
                            expires_at: None,
                            cas,
                            seqno,
                        },
                    );
                }
            }
        }
        cm.high_seqno = seqno;
        if cm.log.len() == MAX_LOG_ENTRIES {
            cm.log.pop_front();
        }
        cm.log.push_back(mutation);
        Ok(())
    }

    /// A durable SET's prepare, under the vbucket's hash table lock from
    /// its checks to its tracking, as kv_engine's `processSet` runs under
    /// the hash bucket lock: refused while the key has a durable write in
    /// flight or the vbucket tracks its maximum, refused on a CAS mismatch,
    /// else appended to the log and tracked by the durability monitor
    /// before the checkpoint's queue lock is let go (no stream sees it, and
    /// no acknowledgement covers it, untracked). The caller holds the
    /// vbucket's state lock (shared).
    #[allow(clippy::too_many_arguments)]
    pub async fn prepare(
        &self,
        v: &VBucket,
        key: Bytes,
        value: Bytes,
        flags: u32,
        cas: u64,
        now: Duration,
        durability: &Mutex<DurabilityMonitor>,
    ) -> Result<(u64, oneshot::Receiver<Outcome>), StoreError> {
        if value.len() > self.max_value_bytes {
            return Err(StoreError::TooLarge);
        }
        let ht = v.hash_table.lock().await;
        {
            let monitor = durability.lock().await;
            if monitor.in_progress(v.id, &key) {
                return Err(StoreError::SyncWriteInProgress);
            }
            if !monitor.has_room(v.id) {
                return Err(StoreError::TempFail);
            }
        }
        if cas != 0 {
            let flush = self.flush.load().await;
            match ht.get(&key).filter(|i| Self::is_live(flush, i, now)) {
                Some(item) if item.cas == cas => {}
                Some(_) => return Err(StoreError::Exists),
                None => return Err(StoreError::NotFound),
            }
        }
        let new_cas = self.next_cas().await;
        let mut cm = v.checkpoints.lock().await;
        cm.high_seqno += 1;
        let seqno = cm.high_seqno;
        cm.append(Mutation::Prepare {
            key: key.clone(),
            value,
            flags,
            seqno,
            cas: new_cas,
        });
        let outcome = durability.lock().await.track(v.id, seqno, key);
        drop(cm);
        drop(ht);
        Ok((seqno, outcome))
    }

    /// Makes a prepared write visible; returns (commit seqno, CAS).
    pub async fn commit(&self, vb: u16, prepared_seqno: u64) -> Result<(u64, u64), StoreError> {
        let v = self
            .vbuckets
            .get(usize::from(vb))
            .ok_or(StoreError::NotMyVbucket)?;
        let _state = v.state_lock.read().await;
        let mut ht = v.hash_table.lock().await;
        let mut cm = v.checkpoints.lock().await;
        let Some(Mutation::Prepare {
            key,
            value,
            flags,
            cas,
            ..
        }) = cm.log.iter().find(|m| m.seqno() == prepared_seqno).cloned()
        else {
            return Err(StoreError::NotFound);
        };
        cm.high_seqno += 1;
        let seqno = cm.high_seqno;
        cm.append(Mutation::Commit {
            key: key.clone(),
            prepared_seqno,
            seqno,
        });
        drop(cm);
        ht.insert(
            key,
            Item {
                value,
                flags,
                expires_at: None,
                cas,
                seqno,
            },
        );
        drop(ht);
        self.total_items.fetch_add(1).await;
        Ok((seqno, cas))
    }
}

/// A store operation's arguments.
struct Write {
    mode: StoreMode,
    key: Bytes,
    value: Bytes,
    flags: u32,
    expires_at: Option<Duration>,
    expiration_s: u32,
    cas: u64,
}

/// The node-clock time at which an item with this protocol expiry value
/// expires: 0 never; up to 30 days, seconds from now; else a Unix time.
pub fn expiry(expiration_s: u32, now: Duration, unix_now_s: u64) -> Option<Duration> {
    match expiration_s {
        0 => None,
        s if s <= RELATIVE_EXPIRY_MAX_S => Some(now + Duration::from_secs(u64::from(s))),
        s => {
            let from_now = u64::from(s).saturating_sub(unix_now_s);
            Some(now + Duration::from_secs(from_now))
        }
    }
}
