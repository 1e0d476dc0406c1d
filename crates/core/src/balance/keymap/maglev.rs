//! The `maglev` policy: Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer", NSDI 2016), with Envoy's weighting.
//!
//! A lookup table of [`MAGLEV_TABLE_SIZE`] (a prime) entries, each naming a backend. Every
//! backend has a preference list of all the entries, the permutation
//! `(offset + j × skip) mod M` for `j = 0, 1, …`, with `offset = h(OFFSET_SEED, name) mod M`
//! and `skip = h(SKIP_SEED, name) mod (M − 1) + 1`. Backends take turns, in config order; on
//! each turn a backend earns `weight / max_weight` of a slot and, per whole slot earned,
//! claims its next preferred entry that is still free, until the table is full. A key goes
//! to `table[h(KEY_SEED, key) mod M]`.
//!
//! `h(seed, bytes)` is fixed and documented so that every Switchyard instance, of any
//! version, builds the same table: the 64-bit FNV-1a of the bytes (basis
//! `0xcbf29ce484222325`, prime `0x100000001b3`), xor the seed, then MurmurHash3's 64-bit
//! finaliser (`fmix64`). Never a per-process random hasher.
//!
//! Removing a backend moves its keys and, by the paper's measure, only a small fraction of
//! the others'. Built once per cluster (on start and on every reload); a lookup is one hash
//! and one index.

use std::fmt;

/// Entries in a Maglev table: a prime, so every `skip` visits every entry.
pub const MAGLEV_TABLE_SIZE: usize = 65537;

/// Seed of the hash that gives a backend's first preferred entry.
pub const OFFSET_SEED: u64 = 0x6f66_6673_6574; // "offset"
/// Seed of the hash that gives a backend's stride through the table.
pub const SKIP_SEED: u64 = 0x736b_6970; // "skip"
/// Seed of the key hash.
pub const KEY_SEED: u64 = 0x6b_6579; // "key"

const FNV64_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;
const EMPTY: u32 = u32::MAX;

/// The fixed-seed 64-bit hash of the Maglev policy: `fmix64(FNV-1a-64(data) ^ seed)`.
pub fn maglev_hash(seed: u64, data: &[u8]) -> u64 {
    fmix64(fnv1a_64(data) ^ seed)
}

/// Standard 64-bit FNV-1a.
fn fnv1a_64(data: &[u8]) -> u64 {
    let mut h = FNV64_BASIS;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV64_PRIME);
    }
    h
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// A Maglev lookup table over a fixed list of backends (by index in that list).
#[derive(Clone)]
pub struct Maglev {
    table: Vec<u32>,
    backends: usize,
}

impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("backends", &self.backends)
            .field("entries", &self.table.len())
            .finish()
    }
}

impl Maglev {
    /// Builds the table for `backends`, each a name and a weight, in config order. A backend
    /// of weight 0 gets no entry; with no weight at all the table is empty.
    pub fn new<N: AsRef<[u8]>>(backends: &[(N, u32)]) -> Self {
        let m = MAGLEV_TABLE_SIZE as u64;
        let max_weight = backends.iter().map(|(_, w)| *w).max().unwrap_or(0);
        if max_weight == 0 {
            return Maglev {
                table: Vec::new(),
                backends: backends.len(),
            };
        }
        // Per backend: the next entry of its permutation, its stride, its earned credit.
        let mut next: Vec<u64> = Vec::with_capacity(backends.len());
        let mut skip: Vec<u64> = Vec::with_capacity(backends.len());
        for (name, _) in backends {
            let name = name.as_ref();
            next.push(maglev_hash(OFFSET_SEED, name) % m);
            skip.push(maglev_hash(SKIP_SEED, name) % (m - 1) + 1);
        }
        let mut credit = vec![0u64; backends.len()];
        let mut table = vec![EMPTY; MAGLEV_TABLE_SIZE];
        let mut filled = 0usize;
        'fill: loop {
            for (i, (_, weight)) in backends.iter().enumerate() {
                credit[i] += u64::from(*weight);
                if credit[i] < u64::from(max_weight) {
                    continue;
                }
                credit[i] -= u64::from(max_weight);
                // M is prime and 1 ≤ skip < M: the permutation reaches every free entry.
                let mut c = next[i];
                while table[c as usize] != EMPTY {
                    c = (c + skip[i]) % m;
                }
                table[c as usize] = i as u32;
                next[i] = (c + skip[i]) % m;
                filled += 1;
                if filled == MAGLEV_TABLE_SIZE {
                    break 'fill;
                }
            }
        }
        Maglev {
            table,
            backends: backends.len(),
        }
    }

    /// Entries each backend holds, by backend index.
    pub fn shares(&self) -> Vec<usize> {
        let mut counts = vec![0; self.backends];
        for &b in &self.table {
            counts[b as usize] += 1;
        }
        counts
    }

    /// The table entry `key` falls on.
    fn slot(key: &[u8]) -> usize {
        (maglev_hash(KEY_SEED, key) % MAGLEV_TABLE_SIZE as u64) as usize
    }

    /// The backend (index) of `key` with every backend usable.
    pub fn backend_for(&self, key: &[u8]) -> Option<usize> {
        self.table.get(Self::slot(key)).map(|&b| b as usize)
    }

    /// The backend for `key` among those `usable` accepts: its own if usable, else the
    /// backend of the next entry along the table that is. `None` if no backend is usable.
    /// Bounded by the table size.
    pub fn pick(&self, key: &[u8], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let start = Self::slot(key);
        let home = *self.table.get(start)? as usize;
        if usable(home) {
            return Some(home);
        }
        // Rare path: make sure the walk will end on a usable backend before taking it.
        if !(0..self.backends).any(|i| i != home && usable(i)) {
            return None;
        }
        let len = self.table.len();
        (1..len)
            .map(|step| self.table[(start + step) % len] as usize)
            .find(|&b| b != home && usable(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("key:{i}")).collect()
    }

    #[test]
    fn hash_is_fixed() {
        // FNV-1a 64 test vectors.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fmix64(0), 0);
        // The seeded hash itself, pinned.
        assert_eq!(maglev_hash(KEY_SEED, b"hello"), 0xd65a_eebf_87fa_4e72);
        assert_eq!(maglev_hash(OFFSET_SEED, b"b1"), 0x8285_f89f_ab2a_85e2);
        assert_eq!(maglev_hash(SKIP_SEED, b"b1"), 0x8df6_afc9_5257_5466);
    }

    #[test]
    fn table_is_full_and_weights_are_honoured() {
        let t = Maglev::new(&[("a", 1), ("b", 1), ("c", 2)]);
        let s = t.shares();
        assert_eq!(s.iter().sum::<usize>(), MAGLEV_TABLE_SIZE);
        // Turn-taking gives exact shares: c claims a slot every turn, a and b every other.
        let quarter = MAGLEV_TABLE_SIZE as f64 / 4.0;
        for (got, want) in s.iter().zip([quarter, quarter, 2.0 * quarter]) {
            assert!((*got as f64 - want).abs() <= 2.0, "{s:?}");
        }
        let even = Maglev::new(&[("a", 3), ("b", 3), ("c", 3), ("d", 3)]).shares();
        assert!(
            even.iter().all(|&x| x.abs_diff(MAGLEV_TABLE_SIZE / 4) <= 1),
            "{even:?}"
        );
        assert!(Maglev::new::<&str>(&[]).backend_for(b"k").is_none());
    }

    /// Golden output: the mapping of a fixed backend list. A refactor that changes it moves
    /// every deployed key: change it only on purpose, and say so in the release notes.
    #[test]
    fn golden_keys_and_shares() {
        let names = ["alpha", "beta", "gamma"];
        let t = Maglev::new(&[("alpha", 1), ("beta", 1), ("gamma", 2)]);
        assert_eq!(t.shares(), GOLDEN_SHARES);
        let got: Vec<&str> = keys(30)
            .iter()
            .map(|k| names[t.backend_for(k.as_bytes()).unwrap()])
            .collect();
        assert_eq!(got, GOLDEN_KEYS);
    }

    const GOLDEN_SHARES: [usize; 3] = [16384, 16384, 32769];
    /// Backends of `key:0` … `key:29`.
    const GOLDEN_KEYS: [&str; 30] = [
        "alpha", "gamma", "gamma", "gamma", "gamma", "alpha", "beta", "alpha", "alpha", "gamma",
        "alpha", "alpha", "alpha", "alpha", "alpha", "beta", "gamma", "beta", "gamma", "gamma",
        "gamma", "gamma", "beta", "beta", "gamma", "gamma", "alpha", "alpha", "alpha", "gamma",
    ];

    #[test]
    fn removing_one_of_five_moves_little_else() {
        let names = ["n0", "n1", "n2", "n3", "n4"];
        let all: Vec<(&str, u32)> = names.iter().map(|n| (*n, 1)).collect();
        let before = Maglev::new(&all);
        // Each removal in turn: only the removed backend's entries must move, plus at most
        // 3% of the table belonging to the others.
        for gone in 0..names.len() {
            let rest: Vec<(&str, u32)> = all
                .iter()
                .copied()
                .filter(|(n, _)| *n != names[gone])
                .collect();
            let after = Maglev::new(&rest);
            // Index in `rest` → index in `all`.
            let map: Vec<usize> = (0..names.len()).filter(|&i| i != gone).collect();
            let mut moved_others = 0;
            for slot in 0..MAGLEV_TABLE_SIZE {
                let was = before.table[slot] as usize;
                let now = map[after.table[slot] as usize];
                if was != gone && was != now {
                    moved_others += 1;
                }
            }
            let frac = moved_others as f64 / MAGLEV_TABLE_SIZE as f64;
            assert!(
                frac <= 0.03,
                "removing {}: {moved_others} entries of live backends moved ({frac:.4})",
                names[gone]
            );
            // Over keys: the removed backend's keys all move, few others do.
            let mut moved = 0;
            let ks = keys(5000);
            for k in &ks {
                let was = before.backend_for(k.as_bytes()).unwrap();
                let now = map[after.backend_for(k.as_bytes()).unwrap()];
                if was != gone && now != was {
                    moved += 1;
                }
            }
            assert!(
                moved * 100 <= ks.len() * 3,
                "{moved} keys of live backends moved"
            );
        }
    }

    #[test]
    fn adding_a_backend_takes_its_share_and_little_more() {
        let four: Vec<(&str, u32)> = ["n0", "n1", "n2", "n3"].iter().map(|n| (*n, 1)).collect();
        let mut five = four.clone();
        five.push(("n4", 1));
        let (before, after) = (Maglev::new(&four), Maglev::new(&five));
        let moved = (0..MAGLEV_TABLE_SIZE)
            .filter(|&s| after.table[s] != 4 && after.table[s] != before.table[s])
            .count();
        assert!(
            moved * 100 <= MAGLEV_TABLE_SIZE * 3,
            "{moved} entries moved between old backends"
        );
        let share = after.shares()[4];
        assert!(share.abs_diff(MAGLEV_TABLE_SIZE / 5) <= 1, "{share}");
    }

    #[test]
    fn unusable_backends_are_walked_past_and_keys_come_back() {
        let t = Maglev::new(&[("a", 1), ("b", 1), ("c", 1)]);
        let ks = keys(3000);
        let mut moved_to = [0usize; 3];
        for k in &ks {
            let home = t.backend_for(k.as_bytes()).unwrap();
            let got = t.pick(k.as_bytes(), &|i| i != 0).unwrap();
            if home == 0 {
                assert_ne!(got, 0);
                moved_to[got] += 1;
            } else {
                assert_eq!(got, home);
            }
            assert_eq!(t.pick(k.as_bytes(), &|_| true), Some(home));
        }
        assert!(moved_to[1] > 300 && moved_to[2] > 300, "{moved_to:?}");
        assert_eq!(t.pick(b"k", &|_| false), None);
        assert_eq!(t.pick(b"k", &|i| i == 2), Some(2));
    }
}
