//! The `store-model` oracle's model: what a key-value store may answer to a
//! read, given the writes the workload made and which of them were
//! acknowledged. Each workload keeps one and checks every read against it.

use std::collections::BTreeMap;

#[cfg(doc)]
use faultline_harness::oracle;

use crate::protocol::show;

/// A model of a key-value store that checks every read against the writes
/// that could have produced it.
///
/// A write whose outcome is unknown (the connection broke before the answer)
/// stays possible until a later write is acknowledged.
#[derive(Default, Debug)]
pub struct KvModel {
    keys: BTreeMap<Vec<u8>, KeyState>,
}

#[derive(Default, Debug)]
struct KeyState {
    /// The acknowledged value (`None`: absent).
    acked: Option<Vec<u8>>,
    /// Values that may or may not have been applied since.
    uncertain: Vec<Option<Vec<u8>>>,
}

impl KvModel {
    /// An empty model: every key is absent.
    pub fn new() -> KvModel {
        KvModel::default()
    }

    /// A write (or delete, with `None`) was acknowledged.
    pub fn acked(&mut self, key: &[u8], value: Option<&[u8]>) {
        let state = self.keys.entry(key.to_vec()).or_default();
        state.acked = value.map(<[u8]>::to_vec);
        state.uncertain.clear();
    }

    /// A write's outcome is unknown.
    pub fn uncertain(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.keys
            .entry(key.to_vec())
            .or_default()
            .uncertain
            .push(value.map(<[u8]>::to_vec));
    }

    /// The value the model holds for `key` if it is certain.
    pub fn expected(&self, key: &[u8]) -> Option<&[u8]> {
        self.keys.get(key).and_then(|s| s.acked.as_deref())
    }

    /// Checks a read; on disagreement returns the message (and the caller
    /// usually passes it to [`oracle::fail`] with the `store-model` oracle).
    pub fn check_read(&self, key: &[u8], got: Option<&[u8]>) -> Result<(), String> {
        let state = self.keys.get(key);
        let acked = state.and_then(|s| s.acked.as_deref());
        if acked == got {
            return Ok(());
        }
        if state.is_some_and(|s| s.uncertain.iter().any(|v| v.as_deref() == got)) {
            return Ok(());
        }
        Err(format!(
            "read of {} returned {} but the model holds {}",
            show(key),
            got.map(show).unwrap_or_else(|| "nothing".into()),
            acked.map(show).unwrap_or_else(|| "nothing".into())
        ))
    }

    /// How many keys hold a certain (acknowledged) value.
    pub fn len(&self) -> usize {
        self.keys.values().filter(|s| s.acked.is_some()).count()
    }

    /// Whether no key holds a certain value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key with a certain value.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.keys
            .iter()
            .filter_map(|(k, s)| s.acked.as_deref().map(|v| (k.as_slice(), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_accepts_acked_and_uncertain_values_only() {
        let mut model = KvModel::new();
        assert!(model.check_read(b"k", None).is_ok());
        model.acked(b"k", Some(b"v1"));
        assert!(model.check_read(b"k", Some(b"v1")).is_ok());
        assert!(model.check_read(b"k", Some(b"v2")).is_err());
        model.uncertain(b"k", Some(b"v2"));
        assert!(model.check_read(b"k", Some(b"v2")).is_ok());
        assert!(model.check_read(b"k", Some(b"v1")).is_ok());
        model.acked(b"k", None);
        assert!(model.check_read(b"k", Some(b"v2")).is_err());
        assert!(model.check_read(b"k", None).is_ok());
    }
}
