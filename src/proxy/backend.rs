//! Backends: where a key goes (its vbucket, then the node active for it),
//! and each node's health (its idle connections are the proxy's
//! `idle` pools).

use std::net::SocketAddr;

use crate::server::VbRange;

/// The vbuckets node `index` of `nodes` is active for: the bucket split in
/// equal consecutive ranges.
pub fn active_range(index: usize, nodes: usize, vbuckets: u16) -> VbRange {
    assert!(index < nodes, "node {index} of {nodes}");
    let v = usize::from(vbuckets);
    VbRange {
        start: (index * v / nodes) as u16,
        end: ((index + 1) * v / nodes) as u16,
    }
}

/// The node active for `vb`.
pub fn node_of(vb: u16, nodes: usize, vbuckets: u16) -> usize {
    (0..nodes)
        .find(|&i| active_range(i, nodes, vbuckets).contains(vb))
        .expect("the ranges cover the bucket")
}

/// One kv node as the proxy sees it.
#[derive(Clone, Debug)]
pub struct Server {
    pub name: String,
    pub addr: SocketAddr,
    /// Health as the checks judge it; servers start up.
    pub up: bool,
    /// Consecutive check results of the kind that would change `up`.
    pub streak: u32,
    pub checks_passed: u64,
    pub checks_failed: u64,
}

impl Server {
    pub fn new(name: String, addr: SocketAddr) -> Server {
        Server {
            name,
            addr,
            up: true,
            streak: 0,
            checks_passed: 0,
            checks_failed: 0,
        }
    }

    /// Records a check result; answers the new state when it changed. Down
    /// after `fall` failures in a row, up after `rise` successes in a row.
    pub fn record_check(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.checks_passed += 1;
        } else {
            self.checks_failed += 1;
        }
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { rise } else { fall };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vbucket_has_exactly_one_active_node() {
        for nodes in 1..=5 {
            let mut counts = vec![0; nodes];
            for vb in 0..64 {
                counts[node_of(vb, nodes, 64)] += 1;
            }
            assert_eq!(counts.iter().sum::<usize>(), 64);
            assert!(counts.iter().all(|c| *c >= 64 / nodes), "{counts:?}");
        }
    }

    #[test]
    fn a_server_goes_down_after_fall_failures_and_up_after_rise_successes() {
        let mut s = Server::new("kv-0".into(), "10.0.0.1:1".parse().unwrap());
        assert_eq!(s.record_check(false, 2, 3), None);
        assert_eq!(
            s.record_check(true, 2, 3),
            None,
            "a success resets the streak"
        );
        assert_eq!(s.record_check(false, 2, 3), None);
        assert_eq!(s.record_check(false, 2, 3), None);
        assert_eq!(s.record_check(false, 2, 3), Some(false));
        assert!(!s.up);
        assert_eq!(s.record_check(true, 2, 3), None);
        assert_eq!(s.record_check(true, 2, 3), Some(true));
        assert_eq!((s.checks_passed, s.checks_failed), (3, 4));
    }
}
