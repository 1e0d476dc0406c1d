//! The key-hashing policies: a map from key bytes to a backend, built once per cluster
//! from the backends' names and weights, so that every instance with the same backends
//! places a key alike with no table at all. One file per map.

pub mod ketama;
pub mod maglev;

pub use ketama::Continuum;
pub use maglev::Maglev;

use crate::settings::{BalanceSettings, PolicyKind};

/// Where a key-hashing policy places a key.
pub trait KeyMap: Send + Sync + std::fmt::Debug {
    /// The backend (index) for `key` among those `usable` accepts: its own if usable, else
    /// the next along the map that is; `None` if none is. Bounded by the map's size.
    fn place(&self, key: &[u8], usable: &dyn Fn(usize) -> bool) -> Option<usize>;
}

impl KeyMap for Continuum {
    fn place(&self, key: &[u8], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.pick(key, usable)
    }
}

impl KeyMap for Maglev {
    fn place(&self, key: &[u8], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.pick(key, usable)
    }
}

/// The map of a cluster whose policy hashes keys; `None` for the other policies.
pub fn build(settings: &BalanceSettings) -> Option<Box<dyn KeyMap>> {
    let named: Vec<(&str, u32)> = settings
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.weight))
        .collect();
    match settings.policy {
        PolicyKind::Ketama => Some(Box::new(Continuum::new(&named))),
        PolicyKind::Maglev => Some(Box::new(Maglev::new(&named))),
        _ => None,
    }
}
