//! The admin listener under real traffic: `/metrics`, the JSON API, `switchyard where`,
//! `top --once`, the twemproxy stats port and the access log agree with what the backends
//! themselves counted; drain, weight and reload at run time; bad input to the admin port
//! gets a clear HTTP error and nothing else.

use crate::support::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use switchyard::demo::client::{self, ClientPlan};

/// `GET` or `POST` on the admin listener: status and JSON body.
pub fn call(method: &str, admin: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let url = format!("http://{admin}{path}");
    let mut req = ureq::request(method, &url).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = if method == "POST" {
        req.send_string("")
    } else {
        req.call()
    };
    match resp {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

pub fn get(admin: SocketAddr, path: &str) -> Value {
    let (status, v) = call("GET", admin, path, None);
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

/// The `/metrics` text.
pub fn metrics(admin: SocketAddr) -> String {
    ureq::get(&format!("http://{admin}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

/// The value of the sample `name{labels}` (labels as written, in order), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn backend<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no backend {name} in {v}"))
}

#[test]
fn metrics_api_where_top_and_stats_port_agree_with_the_backends() {
    let s = Scenario::new()
        .workers(2)
        .policy("least_outstanding")
        .persistence("10m");
    let bs = backends(3);
    let log = TempFile::new("access.log", "");
    let cfg = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\ntwemproxy_stats = \"127.0.0.1:0\"\n[admin.access_log]\npath = \"{}\"\nsample = 1.0\n",
        s.toml(&bs),
        log.0.display()
    );
    let proxy = Proxy::start(&cfg);
    let admin = proxy.admin.expect("the admin line");
    // Two clients on (likely) both workers, 10 keys each, 2000 messages each.
    let plans = (0..2)
        .map(|c| {
            plan(
                2000,
                8,
                (0..10).map(|k| 100 * (c + 1) + k).collect(),
                c,
                true,
            )
        })
        .collect();
    for r in run_clients(proxy.addr("app"), plans) {
        assert_clean(&r);
    }
    let served: Vec<u64> = bs.iter().map(|b| b.messages()).collect();
    assert_eq!(served.iter().sum::<u64>(), 4000);

    // The API, against each backend's own count.
    let api = get(admin, "/api/backends");
    for b in &bs {
        let row = backend(&api, &b.name);
        assert_eq!(row["requests"], b.messages(), "{row}");
        assert_eq!(row["answers"], b.messages(), "{row}");
        assert_eq!(row["state"], "up");
        assert!(
            row["connections"].as_u64().unwrap() >= 2,
            "one or more per worker: {row}"
        );
    }
    // /metrics says the same.
    let text = metrics(admin);
    for b in &bs {
        let series = format!(
            "switchyard_backend_messages_total{{cluster=\"app\",backend=\"{}\",direction=\"request\"}}",
            b.name
        );
        assert_eq!(
            sample(&text, &series),
            Some(b.messages() as f64),
            "{series}"
        );
        let count = format!(
            "switchyard_backend_answer_latency_seconds_count{{cluster=\"app\",backend=\"{}\"}}",
            b.name
        );
        assert_eq!(sample(&text, &count), Some(b.messages() as f64), "{count}");
    }
    let listener = |dir: &str| {
        sample(
            &text,
            &format!("switchyard_listener_messages_total{{listener=\"app\",direction=\"{dir}\"}}"),
        )
    };
    assert_eq!(listener("in"), Some(4000.0));
    assert_eq!(listener("out"), Some(4000.0));
    assert_eq!(
        sample(&text, "switchyard_pins{cluster=\"app\"}"),
        Some(20.0)
    );
    let pins = |o: &str| {
        sample(
            &text,
            &format!("switchyard_pin_lookups_total{{cluster=\"app\",outcome=\"{o}\"}}"),
        )
    };
    assert_eq!(pins("new"), Some(20.0));
    assert_eq!(pins("hit"), Some(3980.0));
    assert_eq!(
        sample(
            &text,
            "switchyard_client_connections_opened_total{listener=\"app\"}"
        ),
        Some(2.0)
    );
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");

    // Every key's pin, through the API and `switchyard where`, against the backend that
    // answered it (and its hit count: 2000 messages over 10 keys = 200 each).
    for key in [100u64, 109, 205] {
        let owner = bs
            .iter()
            .find(|b| b.log.per_key.lock().unwrap().contains_key(&key))
            .unwrap();
        let v = get(admin, &format!("/api/sessions/{key}"));
        let pin = &v["clusters"][0];
        assert_eq!(pin["backend"], owner.name.as_str(), "{v}");
        assert_eq!(pin["hits"], 200, "{v}");
        assert_eq!(pin["read_as"], "integer");
        let out = std::process::Command::new(bin())
            .args(["where", "--admin", &admin.to_string(), &key.to_string()])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{said}");
        assert!(
            said.contains(&format!("backend {} (", owner.name)) && said.contains("200 hits"),
            "{said}"
        );
    }
    let (status, v) = call("GET", admin, "/api/sessions/999999", None);
    assert_eq!(status, 404, "{v}");

    // `top --once`: the same numbers, as text.
    let out = std::process::Command::new(bin())
        .args([
            "top",
            "--once",
            "--interval",
            "200ms",
            "--admin",
            &admin.to_string(),
        ])
        .output()
        .unwrap();
    let top = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{top}");
    for b in &bs {
        assert!(
            top.lines().any(|l| l.contains(&format!("app/{}", b.name))
                && l.contains(&format!("requests {:>10}", b.messages()))),
            "{top}"
        );
    }

    // The twemproxy stats port: one JSON document per connection.
    let mut raw = String::new();
    TcpStream::connect(proxy.stats.expect("the stats line"))
        .unwrap()
        .read_to_string(&mut raw)
        .unwrap();
    let stats: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(stats["service"], "nutcracker");
    for b in &bs {
        assert_eq!(
            stats["app"][b.name.as_str()]["requests"],
            b.messages(),
            "{stats}"
        );
        assert_eq!(stats["app"][b.name.as_str()]["responses"], b.messages());
    }

    // The access log: every request sampled (one at a time per client), each record the
    // backend that really has the key.
    let records = wait_for(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log.0).ok()?;
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines.len() >= 20).then_some(lines)
    })
    .expect("access log records");
    for r in &records {
        assert_eq!(r["listener"], "app");
        assert_eq!(r["outcome"], "answered");
        // A binary key field is logged as hex.
        let key = u64::from_str_radix(r["key"].as_str().unwrap(), 16).unwrap();
        let owner = bs
            .iter()
            .find(|b| b.log.per_key.lock().unwrap().contains_key(&key))
            .unwrap_or_else(|| panic!("no backend has the key of {r}"));
        assert_eq!(r["backend"], owner.name.as_str(), "{r}");
        assert!(r["latency_us"].as_u64().is_some(), "{r}");
    }
}

/// A paced client of the keyless demo protocol for `secs` seconds, in the background.
pub fn paced(
    addr: SocketAddr,
    secs: u64,
    rate: u64,
) -> std::thread::JoinHandle<client::ClientReport> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(client::run(
            addr,
            ClientPlan {
                messages: u64::MAX,
                depth: 4,
                keys: vec![0],
                payload: 16,
                deadline: Some(Instant::now() + Duration::from_secs(secs)),
                rate: Some(rate),
                any_order: true,
                answer_timeout: Duration::from_secs(5),
                tag: 7,
                prefix: None,
            },
        ))
    })
}

/// Waits until `b`'s own count stays put for `quiet` while the others' grow.
pub fn traffic_moved_off(
    bs: &[switchyard::demo::backend::TestBackend],
    name: &str,
    quiet: Duration,
) {
    let counts = || {
        bs.iter()
            .map(|b| (b.name.clone(), b.messages()))
            .collect::<Vec<_>>()
    };
    let done = wait_for(Duration::from_secs(10), || {
        let before = counts();
        std::thread::sleep(quiet);
        let after = counts();
        let mine = |c: &[(String, u64)]| c.iter().find(|(n, _)| n == name).unwrap().1;
        let others = |c: &[(String, u64)]| {
            c.iter()
                .filter(|(n, _)| n != name)
                .map(|x| x.1)
                .sum::<u64>()
        };
        (mine(&after) == mine(&before) && others(&after) > others(&before)).then_some(())
    });
    assert!(
        done.is_some(),
        "traffic did not move off {name}: {:?}",
        counts()
    );
}

#[test]
fn drain_weight_and_reload_at_run_time() {
    let s = Scenario::new().keyless().policy("weighted_round_robin");
    let bs = backends(3);
    let base = s.toml(&bs);
    let cfg = format!("{base}\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    let proxy = Proxy::start(&cfg);
    let admin = proxy.admin.unwrap();
    let load = paced(proxy.addr("app"), 8, 1500);
    eventually("traffic on every backend", Duration::from_secs(5), || {
        bs.iter().all(|b| b.messages() > 50)
    });

    // Drain b1 at run time: its own count stops while the others go on.
    let (status, v) = call("POST", admin, "/api/backends/b1/drain", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["draining"], true);
    traffic_moved_off(&bs, "b1", Duration::from_millis(400));
    let b1 = backend(&get(admin, "/api/backends"), "b1").clone();
    assert_eq!(b1["state"], "draining");
    assert_eq!(
        b1["runtime_override"]["drain"], true,
        "shown as a run-time change: {b1}"
    );
    assert_eq!(b1["configured_drain"], false);
    // A change is POST only.
    let (status, _) = call("GET", admin, "/api/backends/b1/undrain", None);
    assert_eq!(status, 405);
    // Another web page the operator's browser opens cannot use it: not by naming another
    // host (DNS rebinding), not from another origin (CSRF).
    let port = admin.port();
    let (out, _) = raw(
        admin,
        format!("GET /api/config HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 403"), "{out:.300}");
    let (out, _) = raw(admin, format!("POST /api/backends/b2/drain HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\n\r\n").as_bytes(), Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 403"), "{out:.300}");
    assert_eq!(
        backend(&get(admin, "/api/backends"), "b2")["draining"],
        false
    );
    let (status, v) = call("POST", admin, "/api/backends/b2/weight?weight=abc", None);
    assert_eq!(status, 400);
    assert!(v["error"].as_str().is_some(), "a JSON error: {v}");
    let (status, v) = call("POST", admin, "/api/backends/nope/drain", None);
    assert_eq!(status, 404, "{v}");
    let (status, _) = call("POST", admin, "/api/backends/b1/undrain", None);
    assert_eq!(status, 200);
    let before = bs[0].messages();
    eventually("b1 to take traffic again", Duration::from_secs(5), || {
        bs[0].messages() > before + 20
    });

    // A weight: b2 gets about 5 of every 7.
    let (status, v) = call("POST", admin, "/api/backends/b2/weight?weight=5", None);
    assert_eq!(status, 200, "{v}");
    let (status, v) = call("POST", admin, "/api/backends/b2/weight?weight=0", None);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("1 to 10000"), "{v}");
    let start: Vec<u64> = bs.iter().map(|b| b.messages()).collect();
    std::thread::sleep(Duration::from_millis(1200));
    let d: Vec<u64> = bs
        .iter()
        .zip(&start)
        .map(|(b, s)| b.messages() - s)
        .collect();
    let share = d[1] as f64 / d.iter().sum::<u64>() as f64;
    assert!(
        (0.6..0.8).contains(&share),
        "b2's share at weight 5 of 7: {share} ({d:?})"
    );
    assert_eq!(
        backend(&get(admin, "/api/backends"), "b2")["runtime_override"]["weight"],
        5
    );

    // A refused reload says why; an applied one says what changed and clears run-time
    // changes (the file's weights apply again).
    std::fs::write(proxy.config_path(), "this is not toml = [").unwrap();
    let (status, v) = call("POST", admin, "/api/reload", None);
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["applied"], false);
    assert!(
        v["error"].as_str().unwrap().contains("switchyard.toml"),
        "names the file: {v}"
    );
    let b4 = switchyard::demo::backend::TestBackend::start("b4", false).unwrap();
    let grown = base.replace(
        &backend_list(&bs),
        &format!(
            "{}, {{ address = \"{}\", name = \"b4\" }}]",
            backend_list(&bs).trim_end_matches(']'),
            b4.addr
        ),
    );
    std::fs::write(
        proxy.config_path(),
        format!("{grown}\n[admin]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let (status, v) = call("POST", admin, "/api/reload", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["applied"], true);
    assert_eq!(v["generation"], 1);
    assert!(
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str() == Some(&*format!("backend app/b4 added ({})", b4.addr))),
        "{v}"
    );
    let after = get(admin, "/api/backends");
    assert!(
        backend(&after, "b2")["runtime_override"].is_null(),
        "{after}"
    );
    assert_eq!(backend(&after, "b2")["weight"], 1);
    eventually("b4 to take traffic", Duration::from_secs(5), || {
        b4.messages() > 0
    });
    let reloads = get(admin, "/api/reloads");
    assert_eq!(reloads[0]["applied"], true);
    assert_eq!(reloads[1]["applied"], false);
    let text = metrics(admin);
    assert_eq!(
        sample(&text, "switchyard_reloads_total{result=\"applied\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "switchyard_reloads_total{result=\"refused\"}"),
        Some(1.0)
    );
    // The log line says what changed.
    eventually("the reload line", Duration::from_secs(5), || {
        proxy.stderr().contains("backend app/b4 added")
    });
    // The effective config.
    let c = get(admin, "/api/config");
    assert_eq!(
        c["clusters"][0]["backends"].as_array().unwrap().len(),
        4,
        "{c}"
    );
    assert_eq!(c["listeners"][0]["name"], "app");
    let r = load.join().unwrap();
    assert!(r.error.is_none(), "the client saw: {:?}", r.error);
    assert!(r.mismatches.is_empty());
}

/// Sends `bytes` to the admin port and returns what comes back before it closes (at most
/// `wait`).
fn raw(admin: SocketAddr, bytes: &[u8], wait: Duration) -> (String, Duration) {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let start = Instant::now();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

#[test]
fn bad_input_to_the_admin_port_gets_a_clear_error_and_nothing_else() {
    let token = "s3cret-token-of-some-length";
    let s = Scenario::new().keyless();
    let bs = backends(2);
    // Not loopback: the token is required.
    let cfg = format!(
        "{}\n[admin]\nlisten = \"0.0.0.0:0\"\ntoken = \"{token}\"\n",
        s.toml(&bs)
    );
    let proxy = Proxy::start(&cfg);
    let port = proxy.admin.unwrap().port();
    let admin: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let load = paced(proxy.addr("app"), 12, 1000);

    // Tokens.
    let (status, v) = call("GET", admin, "/api/backends", None);
    assert_eq!(status, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("missing token"));
    let (status, _) = call("GET", admin, "/metrics", Some("wrong-token-wrong-token"));
    assert_eq!(status, 401);
    let (status, _) = call("POST", admin, "/api/backends/b1/drain", Some("nope"));
    assert_eq!(status, 401);
    let (status, v) = call("GET", admin, "/api/backends", Some(token));
    assert_eq!(status, 200, "{v}");
    // The page itself carries no data: it loads without the token (and asks for it).
    let (page, _) = raw(
        admin,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page:.200}");
    // The token is redacted from the effective config.
    let (_, c) = call("GET", admin, "/api/config", Some(token));
    assert_eq!(c["admin"]["token"], "<redacted>");
    assert!(!c.to_string().contains(token));

    // A malformed request.
    let (out, _) = raw(admin, b"THIS IS NOT HTTP\r\n\r\n", Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 400"), "{out:.200}");
    // A huge header.
    let mut big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 << 10));
    big.extend_from_slice(b"\r\n\r\n");
    let (out, _) = raw(admin, &big, Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 431"), "{out:.200}");
    // A slow client: half a request head, then nothing; closed after the head timeout.
    let (out, took) = raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost:",
        Duration::from_secs(15),
    );
    assert!(took < Duration::from_secs(12), "closed after {took:?}");
    assert!(
        out.is_empty() || out.starts_with("HTTP/1.1 408"),
        "{out:.200}"
    );
    // A body too large for a change.
    let mut body = format!(
        "POST /api/backends/b1/weight HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        1 << 20
    )
    .into_bytes();
    body.extend(std::iter::repeat_n(b'{', 1 << 20));
    let (out, _) = raw(admin, &body, Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 413"), "{out:.200}");

    // None of it reached a worker: the data listener served on, and still does.
    let r = load.join().unwrap();
    assert!(r.error.is_none(), "{:?}", r.error);
    assert!(r.mismatches.is_empty());
    assert!(r.answered > 5000, "{}", r.answered);
    let (status, _) = call("GET", admin, "/metrics", Some(token));
    assert_eq!(status, 200);
}

#[test]
fn a_public_stats_port_must_be_asked_for() {
    let cfg = TempFile::new(
        "c.toml",
        "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\ncluster = \"c\"\n[listener.codec]\nkind = \"length_field\"\nlength_width = 4\n[[cluster]]\nname = \"c\"\nbackends = [{ address = \"127.0.0.1:1\", name = \"b\" }]\n[admin]\nlisten = \"127.0.0.1:9901\"\ntwemproxy_stats = \"0.0.0.0:22222\"\n",
    );
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg.0)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("admin.twemproxy_stats") && err.contains("twemproxy_stats_public"),
        "{err}"
    );
}

#[test]
fn a_public_admin_address_needs_a_token() {
    let cfg = TempFile::new(
        "c.toml",
        "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\ncluster = \"c\"\n[listener.codec]\nkind = \"length_field\"\nlength_width = 4\n[[cluster]]\nname = \"c\"\nbackends = [{ address = \"127.0.0.1:1\", name = \"b\" }]\n[admin]\nlisten = \"0.0.0.0:9901\"\n",
    );
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg.0)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("admin.listen")
            && err.contains("not a loopback address")
            && err.contains("c.toml"),
        "{err}"
    );
    assert!(!err.contains("backtrace"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn the_stats_port_speaks_nutcrackers_json() {
    // nutcracker's own document, for its field names at each level.
    let servers = ["127.0.0.1:1:1 s1".to_string()];
    let nc = crate::ketama::Nutcracker::start(&crate::ketama::nutcracker(), &servers, None);
    let mut raw = String::new();
    TcpStream::connect(nc.stats)
        .unwrap()
        .read_to_string(&mut raw)
        .unwrap();
    let theirs: Value = serde_json::from_str(&raw).unwrap();
    let s = Scenario::new();
    let bs = backends(1);
    let cfg = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\ntwemproxy_stats = \"127.0.0.1:0\"\n",
        s.toml(&bs)
    );
    let proxy = Proxy::start(&cfg);
    let mut raw = String::new();
    TcpStream::connect(proxy.stats.unwrap())
        .unwrap()
        .read_to_string(&mut raw)
        .unwrap();
    let ours: Value = serde_json::from_str(&raw).unwrap();
    let pool_name = |v: &Value, p: &str| v.as_object().unwrap().get(p).cloned().unwrap();
    let top = |v: &Value, pool: &str| {
        keys(v)
            .into_iter()
            .filter(|k| k != pool)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        top(&ours, "app"),
        top(&theirs, "switchyard_ketama"),
        "top-level fields"
    );
    let (our_pool, their_pool) = (
        pool_name(&ours, "app"),
        pool_name(&theirs, "switchyard_ketama"),
    );
    assert_eq!(top(&our_pool, "b1"), top(&their_pool, "s1"), "pool fields");
    assert_eq!(
        keys(&our_pool["b1"]),
        keys(&their_pool["s1"]),
        "server fields"
    );
}

/// Every string under `v` whose key is `expr` or `query` (PromQL in a Grafana dashboard).
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    (_, x) => queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| queries(x, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_queries_only_series_that_exist() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grafana/switchyard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "{} queries", exprs.len());
    let names: std::collections::BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| {
            let bytes = e.as_bytes();
            let mut found = Vec::new();
            let mut i = 0;
            while let Some(at) = e[i..].find("switchyard_") {
                let start = i + at;
                let end = start
                    + bytes[start..]
                        .iter()
                        .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || **b == b'_')
                        .count();
                found.push(e[start..end].to_string());
                i = end;
            }
            found
        })
        .collect();
    // A proxy with every feature a series needs: pins, the access log.
    let s = Scenario::new().persistence("10m");
    let bs = backends(1);
    let log = TempFile::new("access.log", "");
    let cfg = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n[admin.access_log]\npath = \"{}\"\n",
        s.toml(&bs),
        log.0.display()
    );
    let proxy = Proxy::start(&cfg);
    let text = metrics(proxy.admin.unwrap());
    let exposed: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !exposed.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries series /metrics does not have: {missing:?}"
    );
    assert!(names.len() > 25, "{names:?}");
}

#[test]
fn json_logs_name_connections_readably_and_reloads_say_what_changed() {
    let s = Scenario::new().max_frame_size(1024);
    let bs = backends(2);
    let cfg = format!("{}\n[admin]\nlisten = \"127.0.0.1:0\"\n", s.toml(&bs));
    let proxy = Proxy::start_args(&cfg, &["--log-format", "json"]);
    let admin = proxy.admin.unwrap();
    // A frame far over max_frame_size: that client is closed, with a logged reason.
    let mut c = TcpStream::connect(proxy.addr("app")).unwrap();
    c.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).unwrap();
    assert!(closed_within(&c, Duration::from_secs(5)));
    // A reload through the API that changes a weight.
    std::fs::write(
        proxy.config_path(),
        cfg.replace(
            &format!("name = \"{}\" }}", bs[1].name),
            &format!("name = \"{}\", weight = 3 }}", bs[1].name),
        ),
    )
    .unwrap();
    let (status, v) = call("POST", admin, "/api/reload", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["summary"], "backend app/b2 changed: weight 1 → 3", "{v}");
    let lines = wait_for(Duration::from_secs(5), || {
        let log = proxy.stderr();
        (log.contains("closing client connection") && log.contains("config reloaded"))
            .then_some(log)
    })
    .expect("both log lines");
    let mut seen = (false, false);
    for line in lines.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
        if v["message"] == "closing client connection" {
            // The connection's span: its listener, peer and a readable id.
            let conn = v["span"]["conn"].as_str().unwrap_or_default();
            assert!(conn.starts_with("w0#"), "{v}");
            assert_eq!(v["span"]["listener"], "app", "{v}");
            assert!(
                v["reason"].as_str().unwrap().contains("max_frame_size")
                    || v["reason"].as_str().unwrap().contains("1024"),
                "{v}"
            );
            seen.0 = true;
        }
        if v["message"] == "config reloaded" {
            assert_eq!(v["changes"], "backend app/b2 changed: weight 1 → 3", "{v}");
            assert_eq!(v["source"], "api");
            seen.1 = true;
        }
    }
    assert_eq!(seen, (true, true), "{lines}");
}

#[test]
fn an_api_reload_binds_and_announces_new_listeners() {
    let s = Scenario::new();
    let bs = backends(1);
    let base = s.toml(&bs);
    let cfg = format!("{base}\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    let mut proxy = Proxy::start(&cfg);
    let admin = proxy.admin.unwrap();
    // A second listener, the same codec, on a free port.
    let listener = base[base.find("[[listener]]").unwrap()..base.find("[[cluster]]").unwrap()]
        .replace("name = \"app\"", "name = \"extra\"");
    let two = base.replacen("[[cluster]]", &format!("{listener}[[cluster]]"), 1);
    std::fs::write(
        proxy.config_path(),
        format!("{two}\n[admin]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let (status, v) = call("POST", admin, "/api/reload", None);
    assert_eq!(status, 200, "{v}");
    assert!(
        v["changes"][0]
            .as_str()
            .unwrap()
            .starts_with("listener extra added"),
        "{v}"
    );
    let (name, addr) = proxy
        .next_listening(Duration::from_secs(5))
        .expect("a listening line for the new listener");
    assert_eq!(name, "extra");
    assert_eq!(v["bound"][0][1], addr.to_string());
    let mut c = TcpStream::connect(addr).unwrap();
    assert_eq!(round_trip(&mut c, 5, 1, b"hello"), 1);
}
