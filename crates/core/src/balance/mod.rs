//! Balancing, in four parts kept apart (tower's split of load, discovery and balance):
//! [`load`] measures each backend's live load; [`backend`] and [`cluster`] say which
//! backends there are and which may take messages (membership); [`policy`] and [`keymap`]
//! choose among them; [`Cluster::report_failure`] ejects outliers; [`router`] walks one message through pin, placement and the outcome,
//! returning a [`Route`] value that is carried to the send.

pub mod backend;
pub mod cluster;
pub mod keymap;
pub mod load;
mod outlier;
pub mod policy;
pub mod router;

pub use backend::Backend;
pub use cluster::Cluster;
pub use keymap::{Continuum, KeyMap, Maglev};
pub use load::Load;
pub use policy::{picker, source_hash, Policy};
pub use router::{How, Reach, Route, Routed};

#[cfg(test)]
mod tests;
