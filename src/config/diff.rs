//! What a reload changes: listeners, clusters and backends added, removed or changed, one
//! line each, for the reload's log line and the admin API.

use super::{ClusterConfig, Config, ListenerConfig};

/// What differs between `old` and `new`, one entry per listener, cluster or backend.
pub fn changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for l in &new.listeners {
        match old.listeners.iter().find(|o| o.name == l.name) {
            None => out.push(format!("listener {} added ({})", l.name, l.listen)),
            Some(o) => {
                if let Some(what) = listener_change(o, old, l, new) {
                    out.push(format!("listener {} changed: {what}", l.name));
                }
            }
        }
    }
    for o in &old.listeners {
        if !new.listeners.iter().any(|l| l.name == o.name) {
            out.push(format!("listener {} removed", o.name));
        }
    }
    for c in &new.clusters {
        match old.clusters.iter().find(|o| o.name() == c.name()) {
            None => out.push(format!(
                "cluster {} added ({} backends)",
                c.name(),
                c.balance.backends.len()
            )),
            Some(o) => cluster_changes(o, c, &mut out),
        }
    }
    for o in &old.clusters {
        if !new.clusters.iter().any(|c| c.name() == o.name()) {
            out.push(format!("cluster {} removed", o.name()));
        }
    }
    if old.buffer_budget != new.buffer_budget {
        out.push(format!(
            "buffer_budget {} → {}",
            old.buffer_budget, new.buffer_budget
        ));
    }
    if old.shutdown_timeout != new.shutdown_timeout {
        out.push(format!(
            "shutdown_timeout {:?} → {:?}",
            old.shutdown_timeout, new.shutdown_timeout
        ));
    }
    out
}

fn listener_change(
    o: &ListenerConfig,
    old: &Config,
    l: &ListenerConfig,
    new: &Config,
) -> Option<String> {
    let mut what = Vec::new();
    if o.listen != l.listen {
        what.push(format!("listen {} → {}", o.listen, l.listen));
    }
    let (oc, nc) = (
        old.clusters[o.cluster].name(),
        new.clusters[l.cluster].name(),
    );
    if oc != nc {
        what.push(format!("cluster {oc} → {nc}"));
    }
    if !o.same_protocol(l) {
        what.push("protocol".into());
    }
    let digest = |l: &ListenerConfig| l.tls.as_ref().map(|t| t.digest);
    if digest(o) != digest(l) {
        what.push(match (&o.tls, &l.tls) {
            (None, Some(_)) => "TLS on".into(),
            (Some(_), None) => "TLS off".into(),
            _ => "TLS certificates or settings".into(),
        });
    }
    if o.proxy_protocol != l.proxy_protocol {
        what.push(format!(
            "proxy_protocol {} → {}",
            o.proxy_protocol, l.proxy_protocol
        ));
    }
    if format!("{:?}", o.limits) != format!("{:?}", l.limits)
        || o.max_connections != l.max_connections
        || o.retry_on_backend_close != l.retry_on_backend_close
    {
        what.push("limits".into());
    }
    (!what.is_empty()).then(|| what.join(", "))
}

fn cluster_changes(o: &ClusterConfig, c: &ClusterConfig, out: &mut Vec<String>) {
    let name = c.name();
    for b in &c.balance.backends {
        match o.balance.backends.iter().find(|x| x.name == b.name) {
            None => out.push(format!("backend {name}/{} added ({})", b.name, b.address)),
            Some(x) => {
                let mut what = Vec::new();
                if x.address != b.address {
                    what.push(format!("address {} → {}", x.address, b.address));
                }
                if x.weight != b.weight {
                    what.push(format!("weight {} → {}", x.weight, b.weight));
                }
                if x.drain != b.drain {
                    what.push(if b.drain { "drained" } else { "undrained" }.to_string());
                }
                if !what.is_empty() {
                    out.push(format!(
                        "backend {name}/{} changed: {}",
                        b.name,
                        what.join(", ")
                    ));
                }
            }
        }
    }
    for x in &o.balance.backends {
        if !c.balance.backends.iter().any(|b| b.name == x.name) {
            out.push(format!("backend {name}/{} removed", x.name));
        }
    }
    let settings = |k: &ClusterConfig| {
        let b = &k.balance;
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            b.policy,
            b.persistence,
            b.hash_tag,
            k.pool,
            k.request_timeout,
            k.health,
            k.retry_on_connect_failure,
            b.on_backend_down,
            k.tls,
            k.proxy_protocol
        )
    };
    if settings(o) != settings(c) {
        out.push(format!("cluster {name} settings changed"));
    }
}
