//! `source`: the client's address hashed onto the backends (HAProxy's `balance source`),
//! so that one client's unpinned messages all go to one backend, and every instance of
//! the proxy sends a client to the same one. Behind an L4 spreader this is the real
//! client's address, from the PROXY protocol header. Weighted rendezvous hashing over the
//! backends' names: a backend that goes away moves only its own clients, and a client
//! whose backend cannot take messages goes to its next choice.

use super::Policy;
use crate::balance::keymap::maglev::maglev_hash;
use crate::balance::Backend;
use std::sync::Arc;

#[derive(Debug, Default)]
pub(super) struct Source {
    /// The current client's address, hashed.
    source: u64,
}

/// The seed of a client address's hash ("source").
const SOURCE_SEED: u64 = 0x736f_7572_6365;

impl Policy for Source {
    fn source(&mut self, source: u64) {
        self.source = source;
    }

    fn pick(
        &mut self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        // Highest random weight, by weight: score = w / -ln(u), u uniform in (0, 1).
        let mut best: Option<(f64, usize)> = None;
        for (i, b) in backends.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            // Fixed, documented hashes (Maglev's: FNV-1a 64, MurmurHash3's finaliser), the
            // same in every process and every build: instances must agree.
            let h = maglev_hash(self.source, b.name.as_bytes());
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = f64::from(b.weight().max(1)) / -u.ln();
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

/// The hash [`Policy::source`] takes for a client at `addr`: its IP address, not its
/// port (a client's connections share a backend).
pub fn source_hash(addr: std::net::IpAddr) -> u64 {
    match addr {
        std::net::IpAddr::V4(a) => maglev_hash(SOURCE_SEED, &a.octets()),
        std::net::IpAddr::V6(a) => maglev_hash(SOURCE_SEED, &a.octets()),
    }
}
