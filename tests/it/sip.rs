//! SIP calls through Switchyard, judged by SIPp (Debian's `sip-tester`): SIPp servers as
//! three backends, a SIPp client in front, `examples/scripts/sip.lua` framing, over one
//! long-lived connection and over one connection per call; the server hanging up; a server
//! killed mid-call; every server down; and a slow server. SIPp's own call counters (its
//! `-stf` statistics) are what the tests count. The scenarios are in `tests/it/sip/`.

use crate::admin::metrics;
use crate::servers::free_port;
use crate::support::{eventually, Proxy, TempFile};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/sip")
        .join(name)
}

/// SIPp opens RTP ports (the media port and the next ones) even for scenarios without media:
/// every process gets its own block, apart from every other test's.
fn media_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 30_000 + (std::process::id() % 100) as u16 * 100;
    base + NEXT.fetch_add(10, Ordering::Relaxed) % 1000
}

/// The common SIPp arguments: loopback only, no keyboard, statistics every second to `stf`.
fn sipp(scenario_file: &str, stf: &PathBuf) -> Command {
    let mut c = Command::new("sipp");
    c.arg("-sf")
        .arg(scenario(scenario_file))
        .args(["-i", "127.0.0.1", "-ci", "127.0.0.1", "-nostdin"])
        .args(["-max_socket", "1000", "-trace_stat", "-fd", "1"])
        .args(["-mp", &media_port().to_string()])
        .arg("-stf")
        .arg(stf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The last statistics row SIPp wrote: counter name → value.
fn stats(stf: &PathBuf) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(stf).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let (Some(head), Some(last)) = (lines.first(), lines.last()) else {
        return HashMap::new();
    };
    head.split(';')
        .zip(last.split(';'))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// A SIPp server (`-sn`-less: one of our scenarios) on its own port, long-running; stopped
/// with SIGTERM so that it writes its final counts.
struct SippServer {
    port: u16,
    child: Child,
    stf: PathBuf,
    _dir: TempFile,
}

impl SippServer {
    fn start(scenario_file: &str, extra: &[&str]) -> SippServer {
        let dir = TempFile::new("sipp-server", "");
        let port = free_port();
        let stf = dir.0.with_file_name(format!("server-{port}.csv"));
        let child = sipp(scenario_file, &stf)
            .args(["-t", "t1", "-p", &port.to_string(), "-timeout", "120s"])
            .args(extra)
            .current_dir(dir.0.parent().unwrap())
            .spawn()
            .expect("sipp (apt-get install sip-tester)");
        let s = SippServer {
            port,
            child,
            stf,
            _dir: dir,
        };
        eventually("the SIPp server to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        s
    }

    /// Stops it (SIGTERM: it writes its final statistics) and returns them.
    fn finish(mut self) -> HashMap<String, u64> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        stats(&self.stf)
    }

    /// Kills it at once, as a crash would.
    fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SippServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a SIPp client to `target` (bounded: `-timeout_error`); returns its exit code and
/// final statistics.
fn client(
    target: std::net::SocketAddr,
    scenario_file: &str,
    args: &[&str],
) -> (i32, HashMap<String, u64>) {
    let dir = TempFile::new("sipp-client", "");
    let stf = dir.0.with_file_name("client.csv");
    let status = sipp(scenario_file, &stf)
        .arg(target.to_string())
        .args(["-p", &free_port().to_string()])
        .args([
            "-recv_timeout",
            "10000",
            "-timeout",
            "90s",
            "-timeout_error",
        ])
        .args(args)
        .current_dir(dir.0.parent().unwrap())
        .status()
        .expect("sipp (apt-get install sip-tester)");
    (status.code().unwrap_or(-1), stats(&stf))
}

/// Switchyard in front of `servers`, balancing SIP by examples/sip.toml's rules, with
/// its admin listener for the counts.
fn proxy(servers: &[&SippServer], policy: &str) -> Proxy {
    let addrs: Vec<std::net::SocketAddr> = servers
        .iter()
        .map(|s| std::net::SocketAddr::from(([127, 0, 0, 1], s.port)))
        .collect();
    sip_proxy(
        &addrs,
        (2, policy),
        "",
        "[cluster.pool]\nreconnect_backoff_min = \"50ms\"\nreconnect_backoff_max = \"200ms\"",
    )
}

/// Switchyard running `examples/scripts/sip.lua` in front of `backends`: `workers`
/// workers, `policy`, `on_backend_down = "fail"`, pins, the admin listener; `listener` and
/// `cluster` are more lines of those tables.
fn sip_proxy(
    backends: &[std::net::SocketAddr],
    (workers, policy): (u32, &str),
    listener: &str,
    cluster: &str,
) -> Proxy {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/scripts/sip.lua");
    Proxy::start(&format!(
        r#"
workers = {workers}
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "sip"
listen = "127.0.0.1:0"
cluster = "sip"
{listener}
[listener.codec]
kind = "lua"
script = "{}"
[[cluster]]
name = "sip"
policy = "{policy}"
on_backend_down = "fail"
request_timeout = "32s"
backends = [{}]
[cluster.persistence]
ttl = "4h"
{cluster}
"#,
        script.display(),
        list.join(", ")
    ))
}

/// The value of `/metrics` sample `series` (name and labels as written), which must be there.
fn sample(text: &str, series: &str) -> f64 {
    crate::admin::sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Waits (5 s at most) for the proxy to hold no pins: every call's was released when it
/// ended.
fn every_pin_released(proxy: &Proxy) {
    let admin = proxy.admin.unwrap();
    eventually(
        "every call's pin to be released",
        Duration::from_secs(5),
        || sample(&metrics(admin), "switchyard_pins{cluster=\"sip\"}") == 0.0,
    );
}

fn created(s: &HashMap<String, u64>) -> u64 {
    s.get("TotalCallCreated").copied().unwrap_or(0)
}
fn succeeded(s: &HashMap<String, u64>) -> u64 {
    s.get("SuccessfulCall(C)").copied().unwrap_or(0)
}
fn failed(s: &HashMap<String, u64>) -> u64 {
    s.get("FailedCall(C)").copied().unwrap_or(0)
}

/// Every call completes, spread within 1.2× of even over the three servers, and every
/// call's pin is released when its BYE is answered.
fn calls_spread(transport: &str, calls: u64) {
    let servers: Vec<SippServer> = (0..3).map(|_| SippServer::start("uas.xml", &[])).collect();
    let proxy = proxy(&servers.iter().collect::<Vec<_>>(), "least_sessions");
    let n = calls.to_string();
    let (rc, c) = client(
        proxy.addr("sip"),
        "uac.xml",
        &["-t", transport, "-m", &n, "-r", "100", "-d", "100"],
    );
    assert_eq!(
        (rc, succeeded(&c), failed(&c)),
        (0, calls, 0),
        "client: {c:?}"
    );
    every_pin_released(&proxy);
    let per: Vec<u64> = servers
        .into_iter()
        .map(|s| {
            let st = s.finish();
            assert_eq!(
                succeeded(&st),
                created(&st),
                "every call a server took completed: {st:?}"
            );
            succeeded(&st)
        })
        .collect();
    assert_eq!(per.iter().sum::<u64>(), calls, "{per:?}");
    let even = calls as f64 / 3.0;
    for p in &per {
        assert!(
            (*p as f64) <= even * 1.2 && (*p as f64) >= even / 1.2,
            "spread {per:?}"
        );
    }
}

#[test]
fn sipp_calls_over_one_long_lived_connection_spread_over_three_servers() {
    calls_spread("t1", 600);
}

#[test]
fn sipp_calls_on_a_connection_each_spread_over_three_servers() {
    calls_spread("tn", 300);
}

#[test]
fn sipp_server_hangs_up_and_the_clients_answer_reaches_it() {
    let servers: Vec<SippServer> = (0..3)
        .map(|_| SippServer::start("uas_hangup.xml", &["-d", "100"]))
        .collect();
    let proxy = proxy(&servers.iter().collect::<Vec<_>>(), "least_sessions");
    let (rc, c) = client(
        proxy.addr("sip"),
        "uac_hangup_by_server.xml",
        &["-t", "t1", "-m", "300", "-r", "100"],
    );
    assert_eq!(
        (rc, succeeded(&c), failed(&c)),
        (0, 300, 0),
        "client: {c:?}"
    );
    every_pin_released(&proxy);
    let total: u64 = servers
        .into_iter()
        .map(|s| {
            let st = s.finish();
            // The server's BYE reached the client and the client's 200 came back to it.
            assert_eq!(succeeded(&st), created(&st), "{st:?}");
            succeeded(&st)
        })
        .collect::<Vec<_>>()
        .iter()
        .sum();
    assert_eq!(total, 300);
}

/// A server killed mid-call: its open calls fail — each of their requests is answered 503
/// by the proxy (the script's error_reply, from the request's own headers) — and no call on
/// the healthy servers is lost; new calls go to the live servers. The one shared client
/// connection stays up throughout.
#[test]
fn sipp_server_killed_mid_call_costs_only_its_own_calls() {
    let mut servers: Vec<SippServer> = (0..3).map(|_| SippServer::start("uas.xml", &[])).collect();
    let proxy = proxy(&servers.iter().collect::<Vec<_>>(), "least_sessions");
    let target = proxy.addr("sip");
    let run = std::thread::spawn(move || {
        client(
            target,
            "uac.xml",
            &["-t", "t1", "-m", "400", "-r", "100", "-d", "1500"],
        )
    });
    std::thread::sleep(Duration::from_millis(2000));
    servers[0].crash();
    let (rc, c) = run.join().unwrap();
    let dead = servers.remove(0);
    drop(dead);
    let healthy: Vec<HashMap<String, u64>> = servers.into_iter().map(SippServer::finish).collect();
    for st in &healthy {
        assert_eq!(
            succeeded(st),
            created(st),
            "a healthy server lost a call: {st:?}"
        );
    }
    // The calls the healthy servers did not take were the dead server's: some ended before
    // it died, the rest (its open calls) failed, each with an answer.
    let on_healthy: u64 = healthy.iter().map(succeeded).sum();
    let on_dead = 400 - healthy.iter().map(created).sum::<u64>();
    assert_eq!(succeeded(&c) + failed(&c), 400, "every call ended: {c:?}");
    assert!(
        failed(&c) > 0 && failed(&c) <= on_dead,
        "only the dead server's calls failed: {c:?}, {on_dead} were on it"
    );
    assert!(succeeded(&c) >= on_healthy, "{c:?}");
    assert_eq!(
        c.get("FailedTimeoutOnRecv(C)").copied().unwrap_or(0),
        0,
        "no request went unanswered: {c:?}"
    );
    assert_eq!(rc, 1, "SIPp says some calls failed");
    let text = metrics(proxy.admin.unwrap());
    assert_eq!(
        sample(
            &text,
            "switchyard_client_connections_closed_total{listener=\"sip\",reason=\"backend_lost\"}"
        ),
        0.0,
        "the shared client connection was not closed"
    );
    assert!(proxy.stderr().contains("backend connection lost"), "logged");
    // Every call that ended on a healthy server let its pin go; only the dead server's calls
    // keep theirs (their later messages must still get a 503, not a new server).
    let pins = sample(&text, "switchyard_pins{cluster=\"sip\"}");
    assert!(
        pins <= failed(&c) as f64,
        "{pins} pins left, {} calls failed",
        failed(&c)
    );
}

/// Every server down: no INVITE vanishes. Each is answered 503 at once (SIPp counts the
/// calls failed on an unexpected message, none on a receive timeout), and the proxy says
/// why in its log.
#[test]
fn sipp_every_server_down_answers_every_call() {
    let mut servers: Vec<SippServer> = (0..2).map(|_| SippServer::start("uas.xml", &[])).collect();
    let proxy = proxy(&servers.iter().collect::<Vec<_>>(), "least_sessions");
    for s in &mut servers {
        s.crash();
    }
    let (rc, c) = client(
        proxy.addr("sip"),
        "uac.xml",
        &["-t", "t1", "-m", "100", "-r", "100", "-d", "100"],
    );
    assert_eq!(rc, 1, "{c:?}");
    assert_eq!((succeeded(&c), failed(&c)), (0, 100), "{c:?}");
    assert_eq!(
        c.get("FailedUnexpectedMessage(C)").copied(),
        Some(100),
        "503s: {c:?}"
    );
    assert_eq!(c.get("FailedTimeoutOnRecv(C)").copied(), Some(0), "{c:?}");
    assert!(
        proxy.stderr().contains("backend is down"),
        "{}",
        proxy.stderr()
    );
}

/// One server answers a second late: under `least_sessions` it holds its calls longer and
/// so gets fewer new ones (with `correlation = "none"` it got exactly a third).
#[test]
fn sipp_slow_server_gets_fewer_calls_under_least_sessions() {
    let servers = [
        SippServer::start("uas.xml", &[]),
        SippServer::start("uas.xml", &[]),
        SippServer::start("uas_slow.xml", &[]),
    ];
    let proxy = proxy(&servers.iter().collect::<Vec<_>>(), "least_sessions");
    let (rc, c) = client(
        proxy.addr("sip"),
        "uac.xml",
        &["-t", "t1", "-m", "600", "-r", "150", "-d", "100"],
    );
    assert_eq!((rc, succeeded(&c)), (0, 600), "{c:?}");
    let [a, b, slow] = servers.map(|s| succeeded(&s.finish()));
    assert_eq!(a + b + slow, 600);
    assert!(
        (slow as f64) < 600.0 * 0.2,
        "the slow server took {slow} of 600 calls (fast ones {a}, {b})"
    );
}

/// A proxy for the plain-TCP SIP tests: one worker, one connection per backend, so two
/// clients' requests share it; `extra` goes in the listener's table.
fn plain_proxy(backends: &[std::net::SocketAddr], extra: &str) -> Proxy {
    sip_proxy(
        backends,
        (1, "least_sessions"),
        extra,
        "[cluster.pool]\nconnections_per_backend = 1",
    )
}

fn invite(call: &str, cseq: u32) -> Vec<u8> {
    switchyard::demo::sip::request("INVITE", call, cseq, None)
}

/// Reads one SIP message (skipping keep-alive CRLFs) from `r`, within 10 s.
fn read_message(r: &mut std::io::BufReader<std::net::TcpStream>) -> switchyard::demo::sip::Message {
    use std::io::Read;
    r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    loop {
        if let Some((len, m)) = switchyard::demo::sip::parse(&buf).unwrap() {
            buf.drain(..len);
            if let Some(m) = m {
                assert!(buf.is_empty(), "one message at a time here");
                return m;
            }
            continue;
        }
        let mut b = [0u8; 1];
        r.read_exact(&mut b).expect("a SIP message");
        buf.push(b[0]);
    }
}

/// Keep-alives and OPTIONS pings addressed to the proxy are answered by the proxy itself,
/// on the client side and on a backend connection; no backend sees the client's.
#[test]
fn keep_alives_and_next_hop_options_are_answered_by_the_proxy() {
    use std::io::{Read, Write};
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = plain_proxy(&[backend.local_addr().unwrap()], "");
    let (mut w, mut r) = crate::support::connect_split(proxy.addr("sip"));
    w.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    r.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
    let ping = "OPTIONS sip:proxy SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKp\r\nMax-Forwards: 0\r\nFrom: <sip:a@a>;tag=1\r\nTo: <sip:proxy>\r\nCall-ID: ping-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    w.write_all(ping.as_bytes()).unwrap();
    let m = read_message(&mut r);
    assert_eq!(m.status(), Some(200), "{m:?}");
    assert_eq!(m.header("call-id"), Some("ping-1"));
    assert_eq!(m.header("to"), Some("<sip:proxy>;tag=switchyard"));
    // A call opens the backend connection; the backend pings it and gets its pong.
    w.write_all(&invite("call-1", 1)).unwrap();
    let (mut b, _) = backend.accept().unwrap();
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    while switchyard::demo::sip::parse(&got).unwrap().is_none() {
        let mut chunk = [0u8; 4096];
        let n = b.read(&mut chunk).unwrap();
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(
        got.starts_with(b"INVITE "),
        "the backend saw only the call, not the pings"
    );
    b.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    b.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
    let text = metrics(proxy.admin.unwrap());
    assert_eq!(
        sample(
            &text,
            "switchyard_messages_local_total{listener=\"sip\",kind=\"local\"}"
        ),
        2.0
    );
}

/// Under `by_id_as_sent` a request whose id is already awaiting an answer on the same
/// backend connection is its own client's error (answered 503), and never takes the other
/// request's answer.
#[test]
fn a_duplicate_transaction_is_its_own_clients_error() {
    use std::io::{Read, Write};
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = plain_proxy(&[backend.local_addr().unwrap()], "");
    let (mut w1, mut r1) = crate::support::connect_split(proxy.addr("sip"));
    let (mut w2, mut r2) = crate::support::connect_split(proxy.addr("sip"));
    w1.write_all(&invite("same-call", 1)).unwrap();
    let (mut b, _) = backend.accept().unwrap();
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let first = loop {
        if let Some((_, Some(m))) = switchyard::demo::sip::parse(&got).unwrap() {
            break m;
        }
        let mut chunk = [0u8; 4096];
        let n = b.read(&mut chunk).unwrap();
        got.extend_from_slice(&chunk[..n]);
    };
    // The second client sends the same Call-ID and CSeq while the first awaits its answer.
    w2.write_all(&invite("same-call", 1)).unwrap();
    let m2 = read_message(&mut r2);
    assert_eq!(m2.status(), Some(503), "{m2:?}");
    assert!(
        m2.header("warning")
            .unwrap_or("")
            .contains("already awaiting an answer"),
        "{m2:?}"
    );
    b.write_all(&first.answer("200 OK", "t")).unwrap();
    let m1 = read_message(&mut r1);
    assert_eq!(
        (m1.status(), m1.header("cseq")),
        (Some(200), Some("1 INVITE"))
    );
    r2.get_ref()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut more = [0u8; 1];
    assert!(
        r2.read(&mut more).is_err(),
        "the second client got nothing else"
    );
}

/// The report's silent loss, with `correlation = "none"` (every message one-way): with the
/// server down, each INVITE used to vanish with no answer, no close and no log line. Now
/// each is dropped with a log line and counted by reason; the client stays connected.
#[test]
fn with_correlation_none_and_the_server_down_nothing_vanishes_unsaid() {
    let server = SippServer::start("uas.xml", &[]);
    let port = server.port;
    drop(server);
    let proxy = plain_proxy(
        &[std::net::SocketAddr::from(([127, 0, 0, 1], port))],
        "correlation = \"none\"",
    );
    let (rc, c) = client(
        proxy.addr("sip"),
        "uac.xml",
        &["-t", "t1", "-m", "20", "-r", "50", "-recv_timeout", "1500"],
    );
    assert_eq!((rc, succeeded(&c), failed(&c)), (1, 0, 20), "{c:?}");
    let text = metrics(proxy.admin.unwrap());
    assert_eq!(
        sample(
            &text,
            "switchyard_messages_dropped_total{listener=\"sip\",reason=\"no_backend\"}"
        ) + sample(
            &text,
            "switchyard_messages_dropped_total{listener=\"sip\",reason=\"key_down\"}"
        ),
        20.0,
        "every INVITE counted"
    );
    assert!(
        proxy.stderr().contains("dropping a one-way message"),
        "{}",
        proxy.stderr()
    );
    assert_eq!(
        sample(
            &text,
            "switchyard_client_connections_closed_total{listener=\"sip\",reason=\"no_backend\"}"
        ),
        0.0
    );
}
