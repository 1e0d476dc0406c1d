//! Active health checks, passive outlier ejection, drain and on_backend_down.

use crate::support::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn keyless_round(proxy: &Proxy, n: u64) -> HashMap<String, u64> {
    let r = run_clients(proxy.addr("app"), vec![plan(n, 8, vec![0], 1, false)]).remove(0);
    assert_clean(&r);
    r.per_backend
}

/// Whether the proxy's last word in `log` on backend `name`'s reachability is "down".
fn seen_down(log: &str, name: &str) -> bool {
    let field = format!("backend={name} ");
    log.lines()
        .rev()
        .filter(|l| l.contains(&field))
        .filter_map(|l| {
            if l.contains("backend is down") {
                Some(true)
            } else if l.contains("backend is up") {
                Some(false)
            } else {
                None
            }
        })
        .next()
        .unwrap_or(false)
}

#[test]
fn failing_health_checks_take_a_backend_out_and_passing_ones_bring_it_back() {
    let probe = {
        let mut v = Vec::new();
        switchyard::demo::proto::write_request(&mut v, 0, 0, b"PING");
        v.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let Running {
        proxy,
        backends: bs,
    } = Scenario::new()
        .correlation("in_order")
        .keyless()
        .health(Health {
            interval: "100ms",
            timeout: "200ms",
            rise: 2,
            fall: 2,
            send_hex: &probe,
            expect_regex: "PING$",
        })
        .start(2);
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
    let Running {
        proxy,
        backends: mut bs,
    } = Scenario::new()
        .correlation("in_order")
        .keyless()
        .reconnect_backoff("20ms", "50ms")
        .outlier(Outlier {
            consecutive_failures: 3,
            base_ejection: "2s",
            max_ejected_percent: 34,
        })
        .start(3);
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
    let name = bs[ejected].name.clone();
    let connections = bs[ejected].log.connections.load(Ordering::Relaxed);
    bs[ejected].restart().unwrap();
    let before = bs[ejected].messages();
    // Reachable again for the proxy: it has reconnected, and its last word on the backend
    // is not "down". Only then does a round that avoids it show the ejection at work.
    eventually(
        "the proxy to reconnect to the ejected backend",
        Duration::from_secs(10),
        || {
            bs[ejected].log.connections.load(Ordering::Relaxed) > connections
                && !seen_down(&proxy.stderr(), &name)
        },
    );
    keyless_round(&proxy, 100);
    assert_eq!(
        bs[ejected].messages(),
        before,
        "an ejected backend got traffic"
    );
    // After the ejection period (base_ejection, 2 s) it is back: traffic reaches it again.
    let mut spread = HashMap::new();
    let back = wait_for(Duration::from_secs(10), || {
        spread = keyless_round(&proxy, 200);
        spread.contains_key(&name).then_some(())
    });
    assert!(back.is_some(), "{spread:?}");
}

#[test]
fn on_backend_down_fail_closes_the_client_instead_of_moving_its_key() {
    let Running {
        proxy,
        backends: mut bs,
    } = Scenario::new()
        .on_backend_down("fail")
        .listener_toml("on_unanswerable = \"close\"")
        .persistence("1m")
        .start(2);
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
