//! The PROXY protocol through the real binary: real HAProxy (`send-proxy`,
//! `send-proxy-v2`) in front of listeners that take it, clients from several loopback
//! addresses, the `source` policy keeping each address on one real redis-server; a bad or
//! missing header closing only its connection; headers sent to backends that require them
//! (HAProxy `accept-proxy` in front of redis).

use crate::admin::{metrics, sample};
use crate::servers::{free_port, haproxy, redis, redis_cli};
use crate::support::*;
use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One RESP command; the first line of the answer (`closed` if the connection ended).
fn command(s: &mut TcpStream, args: &[&str]) -> String {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req += &format!("${}\r\n{a}\r\n", a.len());
    }
    if s.write_all(req.as_bytes()).is_err() {
        return "closed".into();
    }
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return "closed".into(),
        }
    }
    String::from_utf8_lossy(&line).trim_end().to_string()
}

fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

fn wait_logged(p: &Proxy, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pred(&p.stderr()) {
        assert!(
            Instant::now() < deadline,
            "{what}; the log:\n{}",
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A proxy whose listener `pp` (resp) requires a PROXY header within 1 s, in front of
/// the cluster `redis` of `backends` (TOML inline tables) under `policy`.
fn listening_for_headers(workers: usize, policy: &str, backends: &str) -> String {
    format!(
        r#"workers = {workers}
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "pp"
listen = "127.0.0.1:0"
cluster = "redis"
proxy_protocol = true
handshake_timeout = "1s"
[listener.codec]
kind = "resp"

[[cluster]]
name = "redis"
policy = "{policy}"
backends = [{backends}]
"#
    )
}

#[test]
fn haproxy_send_proxy_v1_and_v2_name_the_real_client_and_the_source_policy_follows_it() {
    let servers = [redis(None), redis(None), redis(None)];
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ address = \"{}\" }}", s.addr))
        .collect();
    let p = Proxy::start(&listening_for_headers(2, "source", &list.join(", ")));
    let sy = p.addr("pp");
    let (v1, v2) = (free_port(), free_port());
    let (_haproxy, _cfg) = haproxy(
        &format!(
            "frontend v1\n    bind 127.0.0.1:{v1}\n    default_backend sy1\n\
             frontend v2\n    bind 127.0.0.1:{v2}\n    default_backend sy2\n\
             backend sy1\n    server s {sy} send-proxy\n\
             backend sy2\n    server s {sy} send-proxy-v2\n"
        ),
        SocketAddr::from(([127, 0, 0, 1], v2)),
    );
    let fronts = [
        SocketAddr::from(([127, 0, 0, 1], v1)),
        SocketAddr::from(([127, 0, 0, 1], v2)),
    ];
    // Twelve client addresses, each through both versions, ten keys each.
    let ips: Vec<Ipv4Addr> = (2..14).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    for ip in &ips {
        for (f, front) in fronts.iter().enumerate() {
            let mut c = connect_from(*ip, *front);
            for k in 0..10 {
                let key = format!("{ip}-v{}-{k}", f + 1);
                assert_eq!(command(&mut c, &["SET", &key, "1"]), "+OK", "{key}");
            }
        }
    }
    // Each address's keys, from both versions, are on one backend; the addresses spread.
    let mut used = std::collections::HashSet::new();
    for ip in &ips {
        let holders: Vec<usize> = (0..servers.len())
            .filter(|&b| {
                let n = redis_cli(servers[b].addr, &["EXISTS", &format!("{ip}-v1-0")]);
                n == "1"
            })
            .collect();
        assert_eq!(holders.len(), 1, "{ip} on one backend: {holders:?}");
        let b = servers[holders[0]].addr;
        for f in 1..=2 {
            for k in 0..10 {
                let key = format!("{ip}-v{f}-{k}");
                assert_eq!(
                    redis_cli(b, &["EXISTS", &key]),
                    "1",
                    "{key} beside its address's others"
                );
            }
        }
        used.insert(holders[0]);
    }
    assert!(
        used.len() >= 2,
        "twelve addresses spread over the backends: {used:?}"
    );

    // The log names the real client: a malformed frame from 127.0.0.7, through HAProxy.
    let mut bad = connect_from(Ipv4Addr::new(127, 0, 0, 7), fronts[1]);
    bad.write_all(b"*2\r\n$3\r\nGET\r\n$x\r\n").unwrap();
    assert!(closed(&mut bad));
    wait_logged(&p, "the bad client's real address logged", |log| {
        log.lines()
            .any(|l| l.contains("peer=127.0.0.7:") && l.contains("WARN"))
    });
    let m = metrics(p.admin.unwrap());
    let failed = sample(
        &m,
        "switchyard_connections_failed_prelude_total{listener=\"pp\",reason=\"proxy_header\"}",
    );
    assert_eq!(failed, Some(0.0), "no header was refused");
}

#[test]
fn a_missing_or_bad_header_closes_only_that_connection_with_the_reason() {
    let backend = redis(None);
    let p = Proxy::start(&listening_for_headers(
        1,
        "round_robin",
        &format!("{{ address = \"{}\" }}", backend.addr),
    ));
    let sy = p.addr("pp");
    let front = free_port();
    let (_haproxy, _cfg) = haproxy(
        &format!("frontend f\n    bind 127.0.0.1:{front}\n    default_backend sy\nbackend sy\n    server s {sy} send-proxy-v2\n"),
        SocketAddr::from(([127, 0, 0, 1], front)),
    );
    let mut good = connect_from(
        Ipv4Addr::new(127, 0, 0, 20),
        SocketAddr::from(([127, 0, 0, 1], front)),
    );
    assert_eq!(command(&mut good, &["SET", "good", "1"]), "+OK");

    // No header: the protocol's bytes where the header belongs.
    let mut direct = TcpStream::connect(sy).unwrap();
    direct
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(command(&mut direct, &["SET", "direct", "1"]), "closed");
    // A v1 header that names no addresses it can parse.
    let mut garbled = TcpStream::connect(sy).unwrap();
    garbled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbled
        .write_all(b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n")
        .unwrap();
    assert!(closed(&mut garbled));
    // A v2 signature with a length past the bound.
    let mut long = TcpStream::connect(sy).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    long.write_all(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff")
        .unwrap();
    assert!(closed(&mut long));
    // Nothing at all: closed after handshake_timeout.
    let mut silent = TcpStream::connect(sy).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(closed(&mut silent));

    wait_logged(&p, "each refusal logged with its reason", |log| {
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("closing connection before its protocol started"))
            .collect();
        refusals.len() >= 4 && refusals.iter().any(|l| l.contains("not done within 1s"))
    });
    // The client behind HAProxy never noticed.
    assert_eq!(command(&mut good, &["GET", "good"]), "$1");
    assert_eq!(redis_cli(backend.addr, &["EXISTS", "direct"]), "0");
    let m = metrics(p.admin.unwrap());
    let reason = |r: &str| {
        sample(
            &m,
            &format!(
                "switchyard_connections_failed_prelude_total{{listener=\"pp\",reason=\"{r}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(reason("proxy_header"), 3.0);
    assert_eq!(reason("timeout"), 1.0);
}

#[test]
fn headers_v1_and_v2_are_sent_to_backends_that_require_them() {
    let backend = redis(None);
    let (h1, h2) = (free_port(), free_port());
    let b = backend.addr;
    let (_haproxy, _cfg) = haproxy(
        &format!(
            "frontend v1\n    bind 127.0.0.1:{h1} accept-proxy\n    default_backend r\n\
             frontend v2\n    bind 127.0.0.1:{h2} accept-proxy\n    default_backend r\n\
             backend r\n    server redis {b}\n"
        ),
        SocketAddr::from(([127, 0, 0, 1], h2)),
    );
    // HAProxy with accept-proxy refuses a connection without a header.
    let mut bare = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], h1))).unwrap();
    bare.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        command(&mut bare, &["PING"]),
        "closed",
        "accept-proxy needs the header"
    );

    let listener = |name: &str| {
        format!("[[listener]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\ncluster = \"{name}\"\n[listener.codec]\nkind = \"resp\"\n")
    };
    let p = Proxy::start(&format!(
        "workers = 1\n{}{}\
         [[cluster]]\nname = \"v1\"\nproxy_protocol = \"v1\"\nbackends = [{{ address = \"127.0.0.1:{h1}\" }}]\n\
         [[cluster]]\nname = \"v2\"\nproxy_protocol = \"v2\"\nbackends = [{{ address = \"127.0.0.1:{h2}\" }}]\n",
        listener("v1"),
        listener("v2"),
    ));
    for v in ["v1", "v2"] {
        for i in 0..20 {
            let key = format!("{v}-{i}");
            assert_eq!(redis_cli(p.addr(v), &["SET", &key, v]), "OK", "{key}");
            assert_eq!(redis_cli(p.addr(v), &["GET", &key]), v);
        }
    }
    assert_eq!(redis_cli(b, &["GET", "v2-19"]), "v2");
}
