//! DNS over TCP through Switchyard, in front of real `nsd` servers (Debian's package):
//! the built-in `dns` protocol with pipelined queries whose ids collide across clients;
//! queries a server closes on (short, garbage, QR set) refused before any server sees them;
//! the same poison through a plain `length_field` listener, where it reaches nsd and kills
//! the shared connection, and costs the clients sharing it nothing; and a short `dnsperf`
//! run.

use crate::servers::{address_of, nsd, run, Nsd, NAMES};
use crate::support::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use switchyard_proto::dns::query;

/// A DNS answer, as far as the tests read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    id: u16,
    rcode: u8,
    /// The question's name, dotted, as the answer repeats it.
    name: String,
    /// The first A record's address.
    a: Option<[u8; 4]>,
}

/// Reads a name at `at` (following compression pointers); returns it and where the name's
/// bytes end at `at`.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *msg.get(at)? as usize;
        if len & 0xc0 == 0xc0 {
            end.get_or_insert(at + 2);
            at = ((len & 0x3f) << 8) | *msg.get(at + 1)? as usize;
            continue;
        }
        if len == 0 {
            return Some((labels.join("."), end.unwrap_or(at + 1)));
        }
        labels.push(String::from_utf8_lossy(msg.get(at + 1..at + 1 + len)?).into_owned());
        at += 1 + len;
    }
    None
}

/// Parses one DNS message (without its length).
fn parse(msg: &[u8]) -> Option<Answer> {
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let rcode = msg[3] & 0x0f;
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    let an = u16::from_be_bytes([msg[6], msg[7]]);
    if qd != 1 {
        return Some(Answer {
            id,
            rcode,
            name: String::new(),
            a: None,
        });
    }
    let (name, mut at) = read_name(msg, 12)?;
    at += 4;
    let mut a = None;
    for _ in 0..an {
        let (_, end) = read_name(msg, at)?;
        let rtype = u16::from_be_bytes([msg[end], msg[end + 1]]);
        let rdlen = u16::from_be_bytes([msg[end + 8], msg[end + 9]]) as usize;
        let rdata = msg.get(end + 10..end + 10 + rdlen)?;
        if rtype == 1 && rdlen == 4 && a.is_none() {
            a = Some([rdata[0], rdata[1], rdata[2], rdata[3]]);
        }
        at = end + 10 + rdlen;
    }
    Some(Answer { id, rcode, name, a })
}

/// Reads whole DNS messages off `s` into `buf`; `None` on EOF or a timeout.
fn read_messages(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<Vec<u8>>> {
    let mut chunk = [0u8; 16 << 10];
    let n = match s.read(&mut chunk) {
        Ok(0) | Err(_) => return None,
        Ok(n) => n,
    };
    buf.extend_from_slice(&chunk[..n]);
    let mut out = Vec::new();
    while buf.len() >= 2 {
        let len = 2 + u16::from_be_bytes([buf[0], buf[1]]) as usize;
        if buf.len() < len {
            break;
        }
        out.push(buf[2..len].to_vec());
        buf.drain(..len);
    }
    Some(out)
}

/// What one DNS client saw.
#[derive(Debug, Default)]
struct Report {
    sent: usize,
    right: usize,
    wrong: Vec<String>,
    error: Option<String>,
}

/// A client that pipelines `count` queries (at most `depth` outstanding; none sent after
/// `until`), for names picked by `seed`, with ids counting from 0 (so ids collide across
/// clients), and checks that each answer carries the id, the question and the address of
/// its own query.
fn dns_client(addr: SocketAddr, seed: u32, count: usize, depth: usize) -> Report {
    dns_client_until(addr, seed, count, depth, None)
}

fn dns_client_until(
    addr: SocketAddr,
    seed: u32,
    count: usize,
    depth: usize,
    until: Option<Instant>,
) -> Report {
    let mut r = Report::default();
    let Ok(mut s) = TcpStream::connect(addr) else {
        r.error = Some("connect".into());
        return r;
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut waiting: HashMap<u16, u32> = HashMap::new();
    let mut buf = Vec::new();
    let mut next = 0usize;
    loop {
        let stop = next >= count || until.is_some_and(|u| Instant::now() >= u);
        if stop && waiting.is_empty() {
            break;
        }
        let mut batch = Vec::new();
        while !stop && next < count && waiting.len() < depth {
            let id = (next % 65536) as u16;
            let i = (seed.wrapping_mul(7919) + next as u32 * 13) % NAMES;
            batch.extend_from_slice(&query(id, &format!("n{i}.example.test"), 1));
            waiting.insert(id, i);
            next += 1;
            r.sent += 1;
        }
        if !batch.is_empty() && s.write_all(&batch).is_err() {
            r.error = Some("write".into());
            return r;
        }
        let Some(msgs) = read_messages(&mut s, &mut buf) else {
            r.error = Some(format!(
                "closed or timed out with {} outstanding",
                waiting.len()
            ));
            return r;
        };
        for m in msgs {
            let Some(a) = parse(&m) else {
                r.wrong.push("unparsable answer".into());
                continue;
            };
            match waiting.remove(&a.id) {
                Some(i)
                    if a.rcode == 0
                        && a.name == format!("n{i}.example.test")
                        && a.a == Some(address_of(i)) =>
                {
                    r.right += 1
                }
                Some(i) => r.wrong.push(format!("query n{i} (id {}) got {a:?}", a.id)),
                None => r.wrong.push(format!("answer {a:?} for no query")),
            }
        }
    }
    r
}

/// Runs `n` clients at once.
fn clients(addr: SocketAddr, n: u32, count: usize, depth: usize) -> Vec<Report> {
    clients_for(addr, n, count, depth, None)
}

/// Runs `n` clients at once, sending nothing new after `run_for`.
fn clients_for(
    addr: SocketAddr,
    n: u32,
    count: usize,
    depth: usize,
    run_for: Option<Duration>,
) -> Vec<Report> {
    let until = run_for.map(|d| Instant::now() + d);
    let threads: Vec<_> = (0..n)
        .map(|c| std::thread::spawn(move || dns_client_until(addr, c + 1, count, depth, until)))
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn assert_all_right(reports: &[Report]) {
    for (i, r) in reports.iter().enumerate() {
        assert!(r.error.is_none(), "client {i}: {:?}", r.error);
        assert!(
            r.wrong.is_empty(),
            "client {i}: {:?}",
            &r.wrong[..r.wrong.len().min(5)]
        );
        assert_eq!(r.right, r.sent, "client {i}");
    }
}

/// nsd servers, each answering (its zone loaded) before the test goes on.
fn servers(n: usize) -> Vec<Nsd> {
    let servers: Vec<Nsd> = (0..n).map(|_| nsd()).collect();
    for s in &servers {
        eventually(
            "nsd to answer from its zone",
            Duration::from_secs(10),
            || dns_client(s.addr, 0, 1, 1).right == 1,
        );
    }
    servers
}

/// One worker; `listener` is the listener's extra lines and codec table.
fn proxy(servers: &[Nsd], listener: &str, cluster: &str) -> Proxy {
    let list: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{{ address = \"{}\", name = \"ns{i}\" }}", s.addr))
        .collect();
    Proxy::start(&format!(
        r#"workers = 1
[[listener]]
name = "dns"
listen = "127.0.0.1:0"
cluster = "dns"
{listener}

[[cluster]]
name = "dns"
backends = [{}]
{cluster}
"#,
        list.join(", ")
    ))
}

const DNS_CODEC: &str = "[listener.codec]\nkind = \"dns\"\nkey = \"qname\"";

#[test]
fn pipelined_queries_with_colliding_ids_each_get_their_own_answer() {
    let servers = servers(3);
    let p = proxy(&servers, DNS_CODEC, "policy = \"maglev\"");
    let reports = clients(p.addr("dns"), 8, 2000, 32);
    assert_all_right(&reports);
    // Each name lives on one server (maglev on the question name), so their caches split.
    let log = p.stderr();
    assert!(!log.contains("WARN"), "{log}");
}

/// A query a server would close its connection on (shorter than a header, the QR bit set,
/// random bytes, an opcode other than QUERY, two questions). `None`: the proxy must close.
fn poisons() -> Vec<(&'static str, Vec<u8>)> {
    let q = query(4242, "n1.example.test", 1);
    let mut qr = q.clone();
    qr[4] |= 0x80;
    let mut update = q.clone();
    update[4] = 0x28;
    let mut two = q.clone();
    two[7] = 2;
    let mut garbage = vec![0u8; 256 << 10];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in garbage.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    vec![
        ("short", vec![0, 4, 0xde, 0xad, 0xbe, 0xef]),
        ("QR set", qr),
        ("garbage", garbage),
        ("opcode UPDATE", update),
        ("two questions", two),
    ]
}

/// Sends `bytes` on a connection of its own; whether the proxy closed it within 10 s,
/// and what came back before.
fn send_poison(addr: SocketAddr, bytes: &[u8]) -> (bool, Vec<Vec<u8>>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.write_all(bytes);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match read_messages(&mut s, &mut buf) {
            Some(m) => got.extend(m),
            None => return (true, got),
        }
    }
    (false, got)
}

#[test]
fn the_dns_protocol_refuses_what_a_server_would_close_on_before_any_server_sees_it() {
    let servers = servers(1);
    let p = proxy(
        &servers,
        DNS_CODEC,
        "[cluster.pool]\nconnections_per_backend = 1",
    );
    let addr = p.addr("dns");
    let load =
        std::thread::spawn(move || clients_for(addr, 6, 1 << 30, 16, Some(Duration::from_secs(3))));
    for (what, bytes) in poisons() {
        let (closed, answers) = send_poison(addr, &bytes);
        assert!(closed, "{what}: the proxy closes the poisoning client");
        assert!(answers.is_empty(), "{what}: nothing answered");
    }
    assert_all_right(&load.join().unwrap());
    let log = p.stderr();
    assert!(
        !log.contains("backend connection lost"),
        "no poison reached the server: {log}"
    );
    for why in [
        "shorter than its 12-byte header",
        "QR (response) bit",
        "opcode 5",
        "exactly one question",
    ] {
        assert!(log.contains(why), "{why}: {log}");
    }
}

/// The issue's setup: a generic `length_field` listener with `by_id`, and a SERVFAIL
/// template, over shared connections to nsd. Each poison reaches nsd, which closes the
/// shared connection; the clients sharing it lose nothing, each getting its right answer.
#[test]
fn through_length_field_a_poison_that_kills_nsds_connection_costs_other_clients_nothing() {
    let servers = servers(1);
    let listener = r#"correlation = "by_id"
retry_on_backend_close = true
error_reply_hex = "0000 {id} 8182 0000 0000 0000 0000"
[listener.codec]
kind = "length_field"
length_width = 2
id = { offset = 2, width = 2 }"#;
    let p = proxy(
        &servers,
        listener,
        "[cluster.pool]\nconnections_per_backend = 1",
    );
    let addr = p.addr("dns");
    let load =
        std::thread::spawn(move || clients_for(addr, 6, 1 << 30, 16, Some(Duration::from_secs(5))));
    let mut answered = Vec::new();
    for (what, bytes) in poisons().into_iter().take(3) {
        // Spaced so that each is logged (one line of a kind a second).
        std::thread::sleep(Duration::from_millis(1100));
        let (_, answers) = send_poison(addr, &bytes);
        answered.push((what, answers.len()));
    }
    assert_all_right(&load.join().unwrap());
    let log = p.stderr();
    assert!(
        log.contains("backend connection lost"),
        "the poison reached nsd: {log}"
    );
    assert!(
        occurrences(&log, "closed its backend connection again when sent alone") >= 3,
        "each poison is found and named: {log}"
    );
    // The short and QR-set queries are answered SERVFAIL (the template), then closed.
    assert_eq!(answered[0], ("short", 1));
    assert_eq!(answered[1], ("QR set", 1));
}

/// The same listener checks requests itself (`min_frame_size`, `must` on the QR bit and
/// opcode): the poison never reaches nsd.
#[test]
fn length_field_checks_refuse_the_poison_at_the_proxy() {
    let servers = servers(1);
    let listener = r#"correlation = "by_id"
[listener.codec]
kind = "length_field"
length_width = 2
id = { offset = 2, width = 2 }
min_frame_size = 14
must = { offset = 4, mask = 0xf8, value = 0 }"#;
    let p = proxy(
        &servers,
        listener,
        "[cluster.pool]\nconnections_per_backend = 1",
    );
    let addr = p.addr("dns");
    let load = std::thread::spawn(move || clients(addr, 4, 2000, 16));
    for (what, bytes) in poisons().into_iter().take(2) {
        let (closed, answers) = send_poison(addr, &bytes);
        assert!(closed && answers.is_empty(), "{what}");
    }
    assert_all_right(&load.join().unwrap());
    let log = p.stderr();
    assert!(!log.contains("backend connection lost"), "{log}");
    assert!(log.contains("shorter than min_frame_size 14"), "{log}");
    assert!(log.contains("`must` wants (byte & 0xf8) == 0x00"), "{log}");
}

/// `dnsperf -m tcp` (Debian's package) through the proxy: every query answered.
#[test]
fn dnsperf_over_tcp_through_the_proxy_loses_nothing() {
    let servers = servers(3);
    let p = proxy(&servers, DNS_CODEC, "policy = \"least_outstanding\"");
    let addr = p.addr("dns");
    let data = TempFile::new(
        "queries.txt",
        &(0..NAMES)
            .map(|i| format!("n{i}.example.test A\n"))
            .collect::<String>(),
    );
    let (ok, out) = run(
        "dnsperf",
        &[
            "-m",
            "tcp",
            "-s",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "-d",
            data.0.to_str().unwrap(),
            "-c",
            "4",
            "-q",
            "64",
            "-n",
            "20",
            "-l",
            "10",
        ],
    );
    assert!(ok, "dnsperf failed (apt-get install dnsperf): {out}");
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` in dnsperf's output: {out}"))
    };
    assert_eq!(field("Queries sent:"), u64::from(NAMES) * 20, "{out}");
    assert_eq!(field("Queries completed:"), u64::from(NAMES) * 20, "{out}");
    assert_eq!(field("Queries lost:"), 0, "{out}");
    assert!(out.contains("NOERROR 4000"), "{out}");
}

/// nsd leaves Nagle's algorithm on: on a connection many clients pipeline over, its answers
/// wait for the proxy's delayed ACKs. The proxy notices the stall and ACKs each read at once
/// from then on (`pool.quick_ack = "auto"`).
#[test]
fn answers_held_for_a_delayed_ack_turn_quick_acks_on() {
    let servers = servers(1);
    let p = proxy(
        &servers,
        DNS_CODEC,
        "[cluster.pool]\nconnections_per_backend = 1",
    );
    assert_all_right(&clients_for(
        p.addr("dns"),
        4,
        1 << 30,
        32,
        Some(Duration::from_secs(3)),
    ));
    let log = p.stderr();
    assert!(
        log.contains("answers stalled while more were due"),
        "the stall was seen and quick ACKs turned on: {log}"
    );
}

/// EDNS (an OPT record, here with the TCP keep-alive option of RFC 7828) passes through
/// untouched both ways: through the proxy, the answer is nsd's own answer to the same
/// query, byte for byte, but for the id.
#[test]
fn edns_and_tcp_keepalive_pass_through_untouched() {
    let servers = servers(1);
    let p = proxy(&servers, DNS_CODEC, "");
    let mut q = query(0x4242, "n7.example.test", 1);
    q[13] = 1; // ARCOUNT 1: the OPT record below
               // root name, type OPT (41), UDP size 4096, no extended rcode/flags, one option:
               // edns-tcp-keepalive (11), empty in a query.
    q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 4, 0, 11, 0, 0]);
    let len = (q.len() - 2) as u16;
    q[..2].copy_from_slice(&len.to_be_bytes());
    let ask = |addr: SocketAddr| -> Vec<u8> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&q).unwrap();
        let mut buf = Vec::new();
        loop {
            if let Some(mut m) = read_messages(&mut s, &mut buf).and_then(|m| m.into_iter().next())
            {
                return std::mem::take(&mut m);
            }
        }
    };
    let direct = ask(servers[0].addr);
    let proxied = ask(p.addr("dns"));
    assert_eq!(&proxied[..2], &[0x42, 0x42], "the client's id");
    assert_eq!(proxied, direct, "nsd's answer, untouched");
    let opt = [0, 0, 41];
    assert!(
        proxied.windows(3).any(|w| w == opt),
        "the answer carries nsd's OPT record: {proxied:02x?}"
    );
}
