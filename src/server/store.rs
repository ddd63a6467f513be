//! The data: vbuckets of items, with CAS, flags, expiry on the node's
//! clock, and per-vbucket sequence numbers that replication streams read.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

/// Expiry values up to this many seconds are relative to now; larger ones
/// are absolute Unix times (memcached's rule).
pub const RELATIVE_EXPIRY_MAX_S: u32 = 30 * 24 * 60 * 60;

/// Most mutations a vbucket keeps for streams that start late.
pub const MAX_LOG_ENTRIES: usize = 100_000;

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

pub struct VBucket {
    pub state: VbState,
    items: BTreeMap<Bytes, Item>,
    pub high_seqno: u64,
    /// Mutations by seqno, oldest first (bounded by [`MAX_LOG_ENTRIES`]).
    log: VecDeque<Mutation>,
    /// A unique id of this vbucket's history (DCP failover log).
    pub uuid: u64,
}

impl VBucket {
    fn new(state: VbState, uuid: u64) -> VBucket {
        VBucket {
            state,
            items: BTreeMap::new(),
            high_seqno: 0,
            log: VecDeque::new(),
            uuid,
        }
    }

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

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every live item, in key order.
    pub fn items(&self) -> impl Iterator<Item = (&Bytes, &Item)> {
        self.items.iter()
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
    next_cas: u64,
    max_value_bytes: usize,
    /// Flush: items with a CAS up to `.1` are gone from time `.0`.
    flush: Option<(Duration, u64)>,
    pub total_items: u64,
}

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
                .map(|vb| VBucket::new(active(vb), crate::server::vbucket_uuid(uuid_seed, vb)))
                .collect(),
            next_cas: 1,
            max_value_bytes,
            flush: None,
            total_items: 0,
        }
    }

    pub fn vbucket_count(&self) -> u16 {
        self.vbuckets.len() as u16
    }

    pub fn vbucket(&self, vb: u16) -> Option<&VBucket> {
        self.vbuckets.get(usize::from(vb))
    }

    pub fn set_state(&mut self, vb: u16, state: VbState) {
        if let Some(v) = self.vbuckets.get_mut(usize::from(vb)) {
            v.state = state;
        }
    }

    /// A replica takes the uuid of the history it follows (from the
    /// producer's failover log), so that a later stream resumes it.
    pub fn set_uuid(&mut self, vb: u16, uuid: u64) {
        if let Some(v) = self.vbuckets.get_mut(usize::from(vb)) {
            v.uuid = uuid;
        }
    }

    fn next_cas(&mut self) -> u64 {
        let cas = self.next_cas;
        self.next_cas += 1;
        cas
    }

    /// The vbucket, if active here.
    fn active(&mut self, vb: u16) -> Result<&mut VBucket, StoreError> {
        match self.vbuckets.get_mut(usize::from(vb)) {
            Some(v) if v.state == VbState::Active => Ok(v),
            _ => Err(StoreError::NotMyVbucket),
        }
    }

    fn is_live(flush: Option<(Duration, u64)>, item: &Item, now: Duration) -> bool {
        if item.expires_at.is_some_and(|at| at <= now) {
            return false;
        }
        !flush.is_some_and(|(at, max_cas)| at <= now && item.cas <= max_cas)
    }

    pub fn get(&mut self, vb: u16, key: &[u8], now: Duration) -> Result<Option<Item>, StoreError> {
        let flush = self.flush;
        let v = self.active(vb)?;
        Ok(v.items
            .get(key)
            .filter(|i| Self::is_live(flush, i, now))
            .cloned())
    }

    /// SET/ADD/REPLACE/APPEND/PREPEND: the new CAS.
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &mut self,
        mode: StoreMode,
        vb: u16,
        key: Bytes,
        value: Bytes,
        flags: u32,
        expires_at: Option<Duration>,
        expiration_s: u32,
        cas: u64,
        now: Duration,
    ) -> Result<u64, StoreError> {
        let max = self.max_value_bytes;
        let flush = self.flush;
        let new_cas = self.next_cas();
        let v = self.active(vb)?;
        let existing = v
            .items
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
        if value.len() > max {
            return Err(StoreError::TooLarge);
        }
        v.high_seqno += 1;
        let seqno = v.high_seqno;
        v.append(Mutation::Set {
            key: key.clone(),
            value: value.clone(),
            flags,
            expiration_s,
            seqno,
            cas: new_cas,
        });
        v.items.insert(
            key,
            Item {
                value,
                flags,
                expires_at,
                cas: new_cas,
                seqno,
            },
        );
        self.total_items += 1;
        Ok(new_cas)
    }

    pub fn delete(
        &mut self,
        vb: u16,
        key: &[u8],
        cas: u64,
        now: Duration,
    ) -> Result<(), StoreError> {
        let flush = self.flush;
        let v = self.active(vb)?;
        let Some(existing) = v.items.get(key).filter(|i| Self::is_live(flush, i, now)) else {
            return Err(StoreError::NotFound);
        };
        if cas != 0 && existing.cas != cas {
            return Err(StoreError::Exists);
        }
        let key = Bytes::copy_from_slice(key);
        v.items.remove(&key);
        v.high_seqno += 1;
        let seqno = v.high_seqno;
        v.append(Mutation::Delete { key, seqno });
        Ok(())
    }

    /// INCREMENT/DECREMENT: (new value, new CAS).
    #[allow(clippy::too_many_arguments)]
    pub fn arith(
        &mut self,
        vb: u16,
        key: Bytes,
        incr: bool,
        delta: u64,
        initial: u64,
        expiration_s: u32,
        expires_at: Option<Duration>,
        now: Duration,
    ) -> Result<(u64, u64), StoreError> {
        let flush = self.flush;
        let v = self.active(vb)?;
        let existing = v
            .items
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
        let cas = self.store(
            StoreMode::Set,
            vb,
            key,
            value,
            flags,
            expires,
            expiration_s,
            0,
            now,
        )?;
        Ok((number, cas))
    }

    /// Forgets every item now, or from `at` on.
    pub fn flush(&mut self, at: Duration) {
        let max_cas = self.next_cas - 1;
        self.flush = Some((at, max_cas));
    }

    pub fn live_items(&self, now: Duration) -> usize {
        self.vbuckets
            .iter()
            .map(|v| {
                v.items
                    .values()
                    .filter(|i| Self::is_live(self.flush, i, now))
                    .count()
            })
            .sum()
    }

    pub fn live_bytes(&self, now: Duration) -> usize {
        self.vbuckets
            .iter()
            .flat_map(|v| v.items.iter())
            .filter(|(_, i)| Self::is_live(self.flush, i, now))
            .map(|(k, i)| k.len() + i.value.len())
            .sum()
    }

    // --- replication ---

    /// Applies a mutation received from a replication stream (the vbucket
    /// is a replica or pending here). Keeps the producer's seqnos.
    pub fn apply_replicated(
        &mut self,
        vb: u16,
        mutation: Mutation,
        now: Duration,
    ) -> Result<(), StoreError> {
        let v = match self.vbuckets.get_mut(usize::from(vb)) {
            Some(v) if matches!(v.state, VbState::Replica | VbState::Pending) => v,
            _ => return Err(StoreError::NotMyVbucket),
        };
        let seqno = mutation.seqno();
        if let Mutation::Set { cas, .. } | Mutation::Prepare { cas, .. } = &mutation {
            // Items keep the producer's CAS; ours continue past it.
            self.next_cas = self.next_cas.max(cas.saturating_add(1));
        }
        if seqno <= v.high_seqno {
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
                v.items.insert(
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
                v.items.remove(key);
            }
            // A prepare becomes visible only when committed.
            Mutation::Prepare { .. } => {}
            Mutation::Commit {
                key,
                prepared_seqno,
                ..
            } => {
                let prepared = v.log.iter().find(|m| m.seqno() == *prepared_seqno).cloned();
                if let Some(Mutation::Prepare {
                    value, flags, cas, ..
                }) = prepared
                {
                    v.items.insert(
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
        v.high_seqno = seqno;
        if v.log.len() == MAX_LOG_ENTRIES {
            v.log.pop_front();
        }
        v.log.push_back(mutation);
        Ok(())
    }

    /// Starts a synchronous write: logs a prepare; the item is not visible
    /// until [`Store::commit`]. Returns the prepare's seqno.
    pub fn prepare(
        &mut self,
        vb: u16,
        key: Bytes,
        value: Bytes,
        flags: u32,
    ) -> Result<u64, StoreError> {
        let max = self.max_value_bytes;
        if value.len() > max {
            return Err(StoreError::TooLarge);
        }
        let cas = self.next_cas();
        let v = self.active(vb)?;
        v.high_seqno += 1;
        let seqno = v.high_seqno;
        v.append(Mutation::Prepare {
            key,
            value,
            flags,
            seqno,
            cas,
        });
        Ok(seqno)
    }

    /// Makes a prepared write visible; returns (commit seqno, CAS).
    pub fn commit(&mut self, vb: u16, prepared_seqno: u64) -> Result<(u64, u64), StoreError> {
        let v = self
            .vbuckets
            .get_mut(usize::from(vb))
            .ok_or(StoreError::NotMyVbucket)?;
        let Some(Mutation::Prepare {
            key,
            value,
            flags,
            cas,
            ..
        }) = v.log.iter().find(|m| m.seqno() == prepared_seqno).cloned()
        else {
            return Err(StoreError::NotFound);
        };
        v.high_seqno += 1;
        let seqno = v.high_seqno;
        v.append(Mutation::Commit {
            key: key.clone(),
            prepared_seqno,
            seqno,
        });
        v.items.insert(
            key,
            Item {
                value,
                flags,
                expires_at: None,
                cas,
                seqno,
            },
        );
        self.total_items += 1;
        Ok((seqno, cas))
    }
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
