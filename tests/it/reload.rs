//! Hot reload on SIGHUP: backends, weights, policies and listeners change without dropping
//! an established connection or an in-flight message; a bad file is refused and the old
//! config keeps running; pins survive for backends that stay.

use crate::support::*;
use std::collections::HashMap;
use std::time::Duration;
use switchyard::demo::backend::TestBackend;
use switchyard::demo::client::{self, ClientPlan};

fn cluster_cfg(backends: &[&TestBackend], policy: &str, extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| {
            format!(
                "{{ address = \"{}\", name = \"{}\" {extra} }}",
                b.addr, b.name
            )
        })
        .collect();
    format!(
        r#"workers = 1
[[listener]]
name = "app"
listen = "127.0.0.1:0"
cluster = "app"
correlation = "by_id"
[listener.codec]
kind = "length_field"
length_width = 4
key = {{ offset = 4, width = 8 }}
id = {{ offset = 12, width = 4 }}

[[cluster]]
name = "app"
policy = "{policy}"
backends = [{}]
[cluster.persistence]
ttl = "10m"
"#,
        list.join(", ")
    )
}

#[test]
fn reload_changes_backends_under_a_live_connection_and_keeps_pins() {
    let bs = backends(3);
    let proxy = Proxy::start(&cluster_cfg(&[&bs[0], &bs[1]], "round_robin", ""));
    let addr = proxy.addr("app");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // One long-lived client connection, paced, across three reloads.
    let plan = ClientPlan {
        messages: u64::MAX,
        depth: 4,
        keys: (0..40).collect(),
        payload: 32,
        deadline: Some(std::time::Instant::now() + Duration::from_secs(4)),
        rate: Some(2000),
        any_order: true,
        answer_timeout: Duration::from_secs(5),
        tag: 1,
        prefix: None,
    };
    let long = std::thread::spawn(move || rt.block_on(client::run(addr, plan)));
    eventually(
        "the long-lived client's 40 keys to be pinned",
        Duration::from_secs(3),
        || pins(&bs).len() == 40,
    );
    let pins_before: HashMap<u64, String> = pins(&bs);
    // 1. A bad file is refused; the old config keeps serving.
    proxy.reload("this is not toml = [");
    eventually("the refusal", Duration::from_secs(5), || {
        proxy.stderr().contains("reload refused")
    });
    // 2. Add b3 and drain b1: new keys never go to b1, keys pinned there stay.
    let mut cfg = cluster_cfg(&[&bs[0], &bs[1], &bs[2]], "round_robin", "");
    cfg = cfg.replace("name = \"b1\" ", "name = \"b1\" , drain = true");
    proxy.reload(&cfg);
    eventually("the reload", Duration::from_secs(5), || {
        proxy.stderr().contains("config reloaded")
    });
    // The long-lived connection goes on under the drain: each of its keys pinned to b1
    // reaches b1 again (twice: one message may have been in flight before the reload).
    let on_b1 = |key: &u64| {
        let per_key = bs[0].log.per_key.lock().unwrap();
        per_key.get(key).copied().unwrap_or(0)
    };
    let drained: Vec<(u64, u64)> = pins_before
        .iter()
        .filter(|(_, home)| *home == "b1")
        .map(|(key, _)| (*key, on_b1(key)))
        .collect();
    eventually(
        "the keys pinned to b1 to reach it while it drains",
        Duration::from_secs(3),
        || drained.iter().all(|(key, n)| on_b1(key) >= n + 2),
    );
    // New keys on a fresh connection spread over b2 and b3 only.
    let fresh = run_clients(addr, vec![plan_keys((1000..1060).collect())]).remove(0);
    assert_clean(&fresh);
    assert!(
        !fresh.per_backend.contains_key("b1"),
        "{:?}",
        fresh.per_backend
    );
    assert!(
        fresh.per_backend.contains_key("b3"),
        "{:?}",
        fresh.per_backend
    );
    // 3. Remove b2 from the file entirely: its keys move, nothing in flight is lost.
    proxy.reload(&cluster_cfg(&[&bs[0], &bs[2]], "least_outstanding", ""));
    eventually("the second reload", Duration::from_secs(5), || {
        proxy.stderr().matches("config reloaded").count() >= 2
    });
    let report = long.join().unwrap();
    assert!(
        report.error.is_none(),
        "the long-lived connection saw {:?}",
        report.error
    );
    assert!(report.mismatches.is_empty());
    assert_eq!(
        report.answered, report.sent,
        "every in-flight message answered across reloads"
    );
    // Pins to b1 (drained, then kept) survived both reloads.
    for (key, home) in &pins_before {
        if home == "b1" {
            assert_eq!(
                report.key_backends[key].len(),
                1,
                "key {key} left b1: {:?}",
                report.key_backends[key]
            );
        }
    }
    assert!(proxy
        .stderr()
        .contains("backend removed: retiring its connection"));
}

#[test]
fn reload_adds_and_removes_listeners_without_dropping_connections() {
    let bs = backends(1);
    let one = cluster_cfg(&[&bs[0]], "round_robin", "");
    let mut proxy = Proxy::start(&one);
    let addr = proxy.addr("app");
    let mut held = std::net::TcpStream::connect(addr).unwrap();
    // One exchange first, so the proxy has accepted `held` (a connection still in the
    // backlog of a listener that is removed is reset by the kernel).
    assert_eq!(round_trip(&mut held, 3, 76, b"still here"), 76);
    let two = one.clone()
        + r#"
[[listener]]
name = "second"
listen = "127.0.0.1:0"
cluster = "app"
correlation = "by_id"
[listener.codec]
kind = "length_field"
length_width = 4
id = { offset = 12, width = 4 }
"#;
    // Listeners are matched by name; `app` keeps its socket.
    proxy.reload(&two);
    let (name, second) = proxy
        .next_listening(Duration::from_secs(5))
        .expect("the new listener is announced");
    assert_eq!(name, "second");
    assert_clean(&run_clients(second, vec![plan_keys(vec![1])]).remove(0));
    // Remove `app`: no new connections, the open one still works.
    proxy.reload(
        &two.replacen("name = \"app\"\nlisten", "name = \"gone\"\nlisten", 1)
            .replace(
                "name = \"gone\"\nlisten = \"127.0.0.1:0\"",
                "name = \"third\"\nlisten = \"127.0.0.1:0\"",
            ),
    );
    eventually("the reload", Duration::from_secs(5), || {
        proxy.stderr().matches("config reloaded").count() >= 2
    });
    eventually(
        "the removed listener's socket to close",
        Duration::from_secs(5),
        || !listening_on(addr),
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "removed listener still accepts"
    );
    assert_eq!(round_trip(&mut held, 3, 77, b"still here"), 77);
}

fn plan_keys(keys: Vec<u64>) -> ClientPlan {
    plan(keys.len() as u64 * 3, 8, keys, 9, true)
}

/// Where each key is pinned, from the backends' own logs.
fn pins(bs: &[TestBackend]) -> HashMap<u64, String> {
    let mut m = HashMap::new();
    for b in bs {
        for k in b.log.per_key.lock().unwrap().keys() {
            m.insert(*k, b.name.clone());
        }
    }
    m
}
