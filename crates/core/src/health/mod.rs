//! Health verdicts, pure: [`active`] turns probe results into in/out of service (HAProxy's
//! rise/fall); [`passive`] turns failures seen on real traffic into ejections (Envoy's
//! outlier detection). The probes themselves (sockets, timers) are the proxy's; this
//! module only decides.

pub mod active;
pub mod passive;
