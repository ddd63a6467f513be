//! Seeds and named random streams.
//!
//! One `u64` seed determines a whole run. Every consumer of randomness (a
//! fault, a workload, the system under test) draws from a *named stream*:
//! a generator seeded from `(seed, name)`. Adding a random choice to one
//! component therefore never shifts the choices of another, which keeps
//! recorded seeds meaningful while the code evolves.
//!
//! The generator is ChaCha8 (`rand_chacha`), whose output is specified and
//! portable: the same seed gives the same numbers on every machine.

use rand::SeedableRng;

/// The generator behind every named stream.
pub type SimRng = rand_chacha::ChaCha8Rng;

/// FNV-1a, 64 bit: a stable, named hash for stream names.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// SplitMix64's finaliser: spreads the bits of `x` over the whole word.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of the stream `name` in the run with seed `seed`: the same
/// for the same pair, different for another name or seed (a unit test
/// below).
pub fn derive(seed: u64, name: &str) -> u64 {
    splitmix64(seed ^ splitmix64(fnv1a64(name.as_bytes())))
}

/// A fresh generator for the stream `name` of the run with seed `seed`.
pub fn stream(seed: u64, name: &str) -> SimRng {
    SimRng::seed_from_u64(derive(seed, name))
}

/// A half-open range of seeds, `start..end`, as the CLI writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedRange {
    /// The first seed.
    pub start: u64,
    /// One past the last seed.
    pub end: u64,
}

impl SeedRange {
    /// How many seeds the range holds.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no seed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The seeds, in order.
    pub fn iter(&self) -> std::ops::Range<u64> {
        self.start..self.end
    }

    /// The `index`-th (0-based) of `count` disjoint parts of this range.
    /// Seeds are dealt round-robin so that every shard gets a similar mix of
    /// cheap and expensive seeds; the union of all shards is the range.
    pub fn shard(&self, index: u64, count: u64) -> Vec<u64> {
        assert!(
            count > 0 && index < count,
            "shard {index}/{count} is out of range"
        );
        self.iter()
            .filter(|seed| (seed - self.start) % count == index)
            .collect()
    }
}

impl std::str::FromStr for SeedRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (start, end) = text
            .split_once("..")
            .ok_or_else(|| format!("seed range `{text}` must look like A..B (half-open)"))?;
        let start: u64 = start
            .trim()
            .parse()
            .map_err(|_| format!("seed range `{text}`: `{start}` is not a whole number"))?;
        let end: u64 = end
            .trim()
            .parse()
            .map_err(|_| format!("seed range `{text}`: `{end}` is not a whole number"))?;
        if end < start {
            return Err(format!("seed range `{text}` ends before it starts"));
        }
        Ok(SeedRange { start, end })
    }
}

impl std::fmt::Display for SeedRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn derive_separates_names_and_seeds() {
        use super::derive;
        assert_eq!(derive(7, "net"), derive(7, "net"));
        assert_ne!(derive(7, "net"), derive(7, "disk"));
        assert_ne!(derive(7, "net"), derive(8, "net"));
    }

    use super::*;
    use rand::Rng;

    #[test]
    fn fnv_matches_published_vectors() {
        // Test vectors from the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn named_streams_are_independent_of_each_other() {
        // Drawing from stream "a" must not change what stream "b" yields.
        let mut b_alone = stream(7, "b");
        let expected: Vec<u64> = (0..8).map(|_| b_alone.random()).collect();

        let mut a = stream(7, "a");
        let mut b = stream(7, "b");
        for _ in 0..100 {
            let _: u64 = a.random();
        }
        let got: Vec<u64> = (0..8).map(|_| b.random()).collect();
        assert_eq!(expected, got);

        // Different names and different seeds give different streams.
        let mut a = stream(7, "a");
        let mut b = stream(7, "b");
        let mut a8 = stream(8, "a");
        let (x, y, z): (u64, u64, u64) = (a.random(), b.random(), a8.random());
        assert_ne!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn seed_ranges_parse_and_shard() {
        let range: SeedRange = "10..20".parse().unwrap();
        assert_eq!(range.len(), 10);
        assert!("20..10".parse::<SeedRange>().is_err());
        assert!("x..10".parse::<SeedRange>().is_err());
        assert!("10".parse::<SeedRange>().is_err());
        let mut all: Vec<u64> = (0..3).flat_map(|k| range.shard(k, 3)).collect();
        all.sort();
        assert_eq!(all, range.iter().collect::<Vec<_>>());
    }
}
