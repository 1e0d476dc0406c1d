//! Active health checks, passive outlier ejection, drain and on_backend_down.

use crate::support::*;
use std::time::Duration;

fn keyless_round(proxy: &Proxy, n: u64) -> std::collections::HashMap<String, u64> {
    let r = run_clients(proxy.addr("app"), vec![plan(n, 8, vec![0], 1, false)]).remove(0);
    assert_clean(&r);
    r.per_backend
}

#[test]
fn failing_health_checks_take_a_backend_out_and_passing_ones_bring_it_back() {
    let bs = backends(2);
    let probe = {
        let mut v = Vec::new();
        switchyard::demo::proto::write_request(&mut v, 0, 0, b"PING");
        v.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let cfg = demo_config(
        &bs,
        1,
        "in_order",
        "round_robin",
        false,
        "",
        &format!(
            "[cluster.health]\ninterval = \"100ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\nsend_hex = \"{probe}\"\nexpect_regex = \"PING$\""
        ),
    );
    let proxy = Proxy::start(&cfg);
    assert_eq!(keyless_round(&proxy, 200).len(), 2);
    bs[1].set_sick(true);
    eventually("b2 to be taken out", Duration::from_secs(10), || {
        proxy
            .stderr()
            .contains("health check: backend taken out of service")
    });
    let spread = keyless_round(&proxy, 200);
    assert_eq!(spread.get("b2"), None, "{spread:?}");
    bs[1].set_sick(false);
    eventually("b2 to come back", Duration::from_secs(10), || {
        proxy
            .stderr()
            .contains("health check: backend is back in service")
    });
    assert_eq!(keyless_round(&proxy, 200).get("b2"), Some(&100));
    let log = proxy.stderr();
    assert!(
        log.contains("no passing answer within 200ms"),
        "the reason is logged: {log}"
    );
}

#[test]
fn outlier_detection_ejects_within_its_budget() {
    let mut bs = backends(3);
    let cfg = demo_config(
        &bs,
        1,
        "in_order",
        "round_robin",
        false,
        "",
        "pool = { reconnect_backoff_min = \"20ms\", reconnect_backoff_max = \"50ms\" }\n\
         [cluster.outlier]\nconsecutive_failures = 3\nbase_ejection = \"2s\"\nmax_ejected_percent = 34",
    );
    let proxy = Proxy::start(&cfg);
    assert_eq!(keyless_round(&proxy, 300).len(), 3);
    bs[0].stop();
    bs[1].stop();
    eventually("one ejection", Duration::from_secs(10), || {
        proxy
            .stderr()
            .contains("backend ejected by outlier detection")
    });
    eventually(
        "the budget to stop a second",
        Duration::from_secs(10),
        || {
            proxy
                .stderr()
                .contains("the cluster's ejection budget is spent")
        },
    );
    assert_eq!(
        proxy
            .stderr()
            .matches("backend ejected by outlier detection")
            .count(),
        1
    );
    // The ejected backend gets nothing while ejected even once it is reachable again.
    let log = proxy.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("backend ejected by outlier detection"))
        .unwrap();
    let ejected = if line.contains("backend=b1") { 0 } else { 1 };
    bs[ejected].restart().unwrap();
    let before = bs[ejected].messages();
    std::thread::sleep(Duration::from_millis(300));
    keyless_round(&proxy, 100);
    assert_eq!(
        bs[ejected].messages(),
        before,
        "an ejected backend got traffic"
    );
    // After the ejection period it is back.
    std::thread::sleep(Duration::from_millis(2200));
    let spread = keyless_round(&proxy, 200);
    assert!(spread.contains_key(&bs[ejected].name), "{spread:?}");
}

#[test]
fn on_backend_down_fail_closes_the_client_instead_of_moving_its_key() {
    let mut bs = backends(2);
    let cfg = demo_config(
        &bs,
        1,
        "by_id",
        "round_robin",
        true,
        "",
        "on_backend_down = \"fail\"\n[cluster.persistence]\nttl = \"1m\"",
    );
    let proxy = Proxy::start(&cfg);
    let addr = proxy.addr("app");
    let r = run_clients(addr, vec![plan(10, 1, vec![5], 1, true)]).remove(0);
    assert_clean(&r);
    let home = r.key_backends[&5].iter().next().unwrap().clone();
    let i = bs.iter().position(|b| b.name == home).unwrap();
    bs[i].stop();
    eventually("the proxy to see it down", Duration::from_secs(10), || {
        proxy.stderr().contains("backend is down")
    });
    let r = run_clients(addr, vec![plan(10, 1, vec![5], 2, true)]).remove(0);
    assert!(r.error.is_some(), "the client must be refused: {r:?}");
    eventually("the refusal to be logged", Duration::from_secs(5), || {
        proxy.stderr().contains("closing client connection")
    });
    assert!(
        proxy.stderr().contains("on_backend_down = \"fail\""),
        "{}",
        proxy.stderr()
    );
}
