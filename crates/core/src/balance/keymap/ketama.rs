//! The `ketama` policy: twemproxy's (nutcracker's) consistent hashing, reproduced so that
//! Switchyard maps every key to the same server as a twemproxy pool with `hash: fnv1a_64`
//! and `distribution: ketama` over the same server names and weights.
//!
//! The continuum: each server gets `floor(share × 160 / 4 × n) × 4` points, where `share` is
//! its weight over the total weight and `n` the number of servers, computed in single
//! precision exactly as twemproxy does (so a weighted pool gets the same point counts). The
//! points of a server come four at a time from the MD5 of `"NAME-I"` (`I` = 0, 1, …): each
//! 4-byte group of the digest, read little-endian, is one point. Points are sorted by value;
//! a key goes to the server of the first point whose value is ≥ the key's hash, wrapping to
//! the first point past the end.
//!
//! The key hash is twemproxy's `fnv1a_64`, which despite its name is a 32-bit FNV-1a with the
//! 64-bit constants truncated (basis `0x84222325`, prime `0x1b3`). twemproxy reads the key as
//! C `char`, which is signed on x86-64 (where the Debian package runs): a byte ≥ 0x80 is
//! sign-extended before the xor, and so it is here. An empty key hashes to 0, as in
//! twemproxy.
//!
//! Pure: no I/O, built once per cluster (on start and on every reload).

use std::fmt;

/// Points per server at an even share (twemproxy's `KETAMA_POINTS_PER_SERVER`).
pub const KETAMA_POINTS_PER_SERVER: u32 = 160;
/// Points taken from one MD5 digest.
const POINTS_PER_HASH: u32 = 4;

/// twemproxy's `fnv1a_64` key hash: 32-bit FNV-1a with truncated 64-bit constants, bytes
/// sign-extended as x86-64's signed `char`.
pub fn twemproxy_fnv1a_64(key: &[u8]) -> u32 {
    let mut hash: u32 = 0x8422_2325;
    for &b in key {
        hash ^= b as i8 as i32 as u32;
        hash = hash.wrapping_mul(0x1b3);
    }
    hash
}

/// The hash a key is dispatched by: [`twemproxy_fnv1a_64`], and 0 for an empty key (as
/// twemproxy's `server_pool_hash`).
pub fn ketama_key_hash(key: &[u8]) -> u32 {
    if key.is_empty() {
        0
    } else {
        twemproxy_fnv1a_64(key)
    }
}

/// Points twemproxy gives a server of `weight` out of `total_weight` among `servers` servers,
/// in twemproxy's float arithmetic: the product is single precision, the `1e-10` guard is
/// added in double precision and the sum rounded back to single before the floor.
pub fn points_per_server(weight: u32, total_weight: u32, servers: u32) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let product = pct * KETAMA_POINTS_PER_SERVER as f32 / POINTS_PER_HASH as f32 * servers as f32;
    let guarded = (f64::from(product) + 0.000_000_000_1) as f32;
    (guarded.floor() as u32) * POINTS_PER_HASH
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    value: u32,
    server: u32,
}

/// A ketama continuum over a fixed list of servers (by index in that list).
#[derive(Clone)]
pub struct Continuum {
    points: Vec<Point>,
    servers: usize,
}

impl fmt::Debug for Continuum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Continuum")
            .field("servers", &self.servers)
            .field("points", &self.points.len())
            .finish()
    }
}

impl Continuum {
    /// Builds the continuum of `servers`, each a name (the bytes twemproxy hashes: its
    /// server's name, or `host:port`) and a weight, in twemproxy's config order.
    ///
    /// Names longer than 80 bytes are hashed whole here; twemproxy truncates `"NAME-I"` to 85
    /// bytes in a fixed buffer, so such names cannot match a twemproxy pool.
    pub fn new<N: AsRef<[u8]>>(servers: &[(N, u32)]) -> Self {
        let total: u32 = servers.iter().map(|(_, w)| *w).sum();
        let n = servers.len() as u32;
        let mut points = Vec::new();
        if total > 0 {
            let mut label = Vec::new();
            for (index, (name, weight)) in servers.iter().enumerate() {
                let count = points_per_server(*weight, total, n);
                for i in 0..count / POINTS_PER_HASH {
                    label.clear();
                    label.extend_from_slice(name.as_ref());
                    label.push(b'-');
                    label.extend_from_slice(i.to_string().as_bytes());
                    let digest = md5::compute(&label).0;
                    for group in digest.chunks_exact(4) {
                        points.push(Point {
                            value: u32::from_le_bytes([group[0], group[1], group[2], group[3]]),
                            server: index as u32,
                        });
                    }
                }
            }
        }
        // Stable: equal values (vanishingly rare) keep config order.
        points.sort_by_key(|p| p.value);
        Continuum {
            points,
            servers: servers.len(),
        }
    }

    /// Number of points on the continuum.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether it has no points (no servers, or no weight).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Points each server holds, by server index.
    pub fn points_of(&self) -> Vec<usize> {
        let mut counts = vec![0; self.servers];
        for p in &self.points {
            counts[p.server as usize] += 1;
        }
        counts
    }

    /// The position on the continuum of the first point ≥ `hash`, wrapping to 0.
    fn position(&self, hash: u32) -> usize {
        let at = self.points.partition_point(|p| p.value < hash);
        if at == self.points.len() {
            0
        } else {
            at
        }
    }

    /// The server (index) twemproxy sends `key` to with every server live.
    pub fn server_for(&self, key: &[u8]) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        Some(self.points[self.position(ketama_key_hash(key))].server as usize)
    }

    /// The server for `key` among those `usable` accepts: its own if usable, else the server
    /// of the next point along the continuum that is. `None` if no server is usable.
    /// Bounded by the number of points.
    pub fn pick(&self, key: &[u8], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.position(ketama_key_hash(key));
        let home = self.points[start].server as usize;
        if usable(home) {
            return Some(home);
        }
        // Rare path: make sure the walk will end on a usable server before taking it.
        if !(0..self.servers).any(|i| i != home && usable(i)) {
            return None;
        }
        let len = self.points.len();
        (1..len)
            .map(|step| self.points[(start + step) % len].server as usize)
            .find(|&s| s != home && usable(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_64_is_twemproxys_32_bit_variant() {
        assert_eq!(twemproxy_fnv1a_64(b""), 0x8422_2325);
        // One step by hand: (basis ^ 'a') * 0x1b3, mod 2^32.
        assert_eq!(
            twemproxy_fnv1a_64(b"a"),
            (0x8422_2325u32 ^ 0x61).wrapping_mul(0x1b3)
        );
        // Bytes ≥ 0x80 are sign-extended, as x86-64's signed char.
        assert_eq!(
            twemproxy_fnv1a_64(&[0xe9]),
            (0x8422_2325u32 ^ 0xffff_ffe9).wrapping_mul(0x1b3)
        );
        assert_eq!(ketama_key_hash(b""), 0);
    }

    #[test]
    fn point_counts_follow_twemproxys_float_arithmetic() {
        // Even shares: 160 points each, whatever the count.
        for n in 1..=20 {
            assert_eq!(points_per_server(1, n, n), 160, "n={n}");
        }
        // …except where single precision lands below 40: 25 servers get 156 each.
        assert_eq!(points_per_server(1, 25, 25), 156);
        // Weighted 1/2/3: 80/160/240.
        assert_eq!(
            [1, 2, 3].map(|w| points_per_server(w, 6, 3)),
            [80, 160, 240]
        );
        // Single precision: 1/25 × 160 / 4 × 5 is 7.9999995, so 28 points, not 32.
        assert_eq!(points_per_server(1, 25, 5), 28);
        assert_eq!(points_per_server(12, 25, 5), 380);
        // A share too small for one hash gets no point at all.
        assert_eq!(points_per_server(1, 10_001, 2), 0);
        let c = Continuum::new(&[("a", 1), ("b", 2), ("c", 3)]);
        assert_eq!(c.points_of(), vec![80, 160, 240]);
        assert_eq!(c.len(), 480);
    }

    #[test]
    fn points_come_from_md5_of_name_dash_index_little_endian() {
        // The first 4-byte group of MD5("a-0"), read little-endian, is one of a's points.
        let d = md5::compute(b"a-0").0;
        let first = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        let c = Continuum::new(&[("a", 1)]);
        assert!(c.points.iter().any(|p| p.value == first));
        assert!(c.points.windows(2).all(|w| w[0].value <= w[1].value));
        // A hash past the last point wraps to the first.
        let last = c.points.last().unwrap().value;
        assert_eq!(c.position(last), c.len() - 1);
        if last < u32::MAX {
            assert_eq!(c.position(last + 1), 0);
        }
        assert_eq!(c.position(0), 0);
    }

    /// Pinned after the comparison with a real nutcracker passed (tests/it/ketama.rs), and
    /// each non-empty key checked against nutcracker 0.5.0 with the same pools: a refactor
    /// must not move a key.
    #[test]
    fn golden_keys() {
        let names = ["b1", "b2", "b3"];
        for (weights, want) in [([1, 1, 1], GOLDEN_EVEN), ([1, 2, 3], GOLDEN_WEIGHTED)] {
            let servers: Vec<(&str, u32)> = names.iter().copied().zip(weights).collect();
            let c = Continuum::new(&servers);
            let got: Vec<&str> = GOLDEN_KEYS
                .iter()
                .map(|k| names[c.server_for(k.as_bytes()).unwrap()])
                .collect();
            assert_eq!(got, want, "weights {weights:?}");
        }
    }

    const GOLDEN_KEYS: [&str; 16] = [
        "user:1",
        "user:2",
        "session:abc",
        "a",
        "foo",
        "bar",
        "baz",
        "caf\u{e9}",
        "\u{ff}",
        "k-0",
        "0123456789",
        "order/2024/000017",
        "MCrKpGF5bIx",
        "tail0",
        "x",
        "",
    ];
    const GOLDEN_EVEN: [&str; 16] = [
        "b1", "b1", "b3", "b2", "b3", "b3", "b3", "b2", "b1", "b3", "b1", "b3", "b1", "b3", "b2",
        "b1",
    ];
    const GOLDEN_WEIGHTED: [&str; 16] = [
        "b1", "b1", "b3", "b2", "b3", "b3", "b3", "b2", "b3", "b3", "b1", "b3", "b3", "b3", "b2",
        "b1",
    ];

    #[test]
    fn down_servers_keys_move_along_the_continuum_and_come_back() {
        let names = ["s1", "s2", "s3", "s4"];
        let servers: Vec<(&str, u32)> = names.iter().map(|n| (*n, 1)).collect();
        let c = Continuum::new(&servers);
        // Varied keys: twemproxy's small FNV prime leaves sequential keys' hashes clustered.
        let mut rng = fastrand::Rng::with_seed(1);
        let keys: Vec<String> = (0..2000).map(|_| format!("{:016x}", rng.u64(..))).collect();
        let home: Vec<usize> = keys
            .iter()
            .map(|k| c.server_for(k.as_bytes()).unwrap())
            .collect();
        // With s2 down, only s2's keys move, and they spread over the others.
        let mut moved_to = [0usize; 4];
        for (k, &h) in keys.iter().zip(&home) {
            let got = c.pick(k.as_bytes(), &|i| i != 1).unwrap();
            if h == 1 {
                assert_ne!(got, 1);
                moved_to[got] += 1;
            } else {
                assert_eq!(got, h, "{k} moved though its server is up");
            }
        }
        assert!(
            moved_to.iter().enumerate().all(|(i, &m)| i == 1 || m > 50),
            "{moved_to:?}"
        );
        // Up again: every key is home.
        for (k, &h) in keys.iter().zip(&home) {
            assert_eq!(c.pick(k.as_bytes(), &|_| true), Some(h));
        }
        // With equal weights, walking past a down server is what twemproxy's rebuild without
        // it does: the continuum of the other three, built alone, agrees.
        let without = Continuum::new(&[("s1", 1), ("s3", 1), ("s4", 1)]);
        let map = [0, 2, 3];
        for k in &keys {
            assert_eq!(
                c.pick(k.as_bytes(), &|i| i != 1),
                without.server_for(k.as_bytes()).map(|i| map[i])
            );
        }
        assert_eq!(c.pick(b"x", &|_| false), None);
        assert_eq!(c.pick(b"x", &|i| i == 3), Some(3));
    }
}
