//! Switchyard in front of three real memcached instances, driven by libmemcached's tools
//! and raw text: answers are right, multi-key gets are split and merged, keys live on one
//! backend each, bad commands get the protocol's own error line.

use crate::servers::{memcached, run, Server};
use crate::support::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

fn proxy_for(servers: &[Server]) -> Proxy {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ address = \"{}\" }}", s.addr))
        .collect();
    Proxy::start(&format!(
        r#"workers = 2
[[listener]]
name = "mc"
listen = "127.0.0.1:0"
cluster = "mc"
[listener.codec]
kind = "memcache"

[[cluster]]
name = "mc"
policy = "round_robin"
backends = [{}]
[cluster.persistence]
ttl = "1h"
"#,
        list.join(", ")
    ))
}

/// Sends `request` and reads until a line equal to one of `ends`.
fn ask(s: &mut BufReader<TcpStream>, request: &str, ends: &[&str]) -> String {
    s.get_mut().write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    loop {
        let mut line = String::new();
        assert!(s.read_line(&mut line).unwrap() > 0, "closed after {out:?}");
        out.push_str(&line);
        if ends
            .iter()
            .any(|e| line.trim_end() == *e || line.starts_with(e))
        {
            return out;
        }
    }
}

fn items(server: &Server) -> u64 {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s);
    let stats = ask(&mut r, "stats\r\n", &["END"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("STAT curr_items "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn text_protocol_through_the_proxy() {
    let servers: Vec<Server> = (0..3).map(|_| memcached()).collect();
    let proxy = proxy_for(&servers);
    let s = TcpStream::connect(proxy.addr("mc")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c = BufReader::new(s);
    for i in 0..60 {
        assert_eq!(
            ask(
                &mut c,
                &format!("set key{i} 5 0 6\r\nvalue{}\r\n", i % 10),
                &["STORED"]
            ),
            "STORED\r\n"
        );
    }
    assert_eq!(
        ask(&mut c, "get key1\r\n", &["END"]),
        "VALUE key1 5 6\r\nvalue1\r\nEND\r\n"
    );
    // A multi-key get spans backends: split per key, merged in key order, one END.
    assert_eq!(
        ask(&mut c, "get key3 missing key12 key7\r\n", &["END"]),
        "VALUE key3 5 6\r\nvalue3\r\nVALUE key12 5 6\r\nvalue2\r\nVALUE key7 5 6\r\nvalue7\r\nEND\r\n"
    );
    let gets = ask(&mut c, "gets key3 key4\r\n", &["END"]);
    assert!(
        gets.starts_with("VALUE key3 5 6 ") && gets.contains("VALUE key4 5 6 "),
        "{gets}"
    );
    assert_eq!(
        ask(&mut c, "add key1 0 0 1\r\nx\r\n", &["NOT_STORED"]),
        "NOT_STORED\r\n"
    );
    assert_eq!(
        ask(&mut c, "append key1 0 0 2\r\n!!\r\n", &["STORED"]),
        "STORED\r\n"
    );
    assert_eq!(
        ask(&mut c, "prepend key1 0 0 2\r\n>>\r\n", &["STORED"]),
        "STORED\r\n"
    );
    assert_eq!(
        ask(&mut c, "get key1\r\n", &["END"]),
        "VALUE key1 5 10\r\n>>value1!!\r\nEND\r\n"
    );
    assert_eq!(
        ask(&mut c, "set n 0 0 1\r\n5\r\n", &["STORED"]),
        "STORED\r\n"
    );
    assert_eq!(ask(&mut c, "incr n 10\r\n", &["15"]), "15\r\n");
    assert_eq!(ask(&mut c, "decr n 3\r\n", &["12"]), "12\r\n");
    assert_eq!(ask(&mut c, "touch n 100\r\n", &["TOUCHED"]), "TOUCHED\r\n");
    // noreply: no answer comes, and the next answer is still the next request's.
    c.get_mut()
        .write_all(b"set quiet 0 0 1 noreply\r\nq\r\ndelete key2 noreply\r\n")
        .unwrap();
    assert_eq!(
        ask(&mut c, "get quiet key2\r\n", &["END"]),
        "VALUE quiet 0 1\r\nq\r\nEND\r\n"
    );
    assert_eq!(ask(&mut c, "delete key5\r\n", &["DELETED"]), "DELETED\r\n");
    assert_eq!(
        ask(&mut c, "delete key5\r\n", &["NOT_FOUND"]),
        "NOT_FOUND\r\n"
    );
    // cas with the unique from gets.
    let g = ask(&mut c, "gets key6\r\n", &["END"]);
    let unique = g
        .lines()
        .next()
        .unwrap()
        .split(' ')
        .nth(4)
        .unwrap()
        .to_string();
    assert_eq!(
        ask(
            &mut c,
            &format!("cas key6 0 0 1 {unique}\r\nz\r\n"),
            &["STORED"]
        ),
        "STORED\r\n"
    );
    assert_eq!(
        ask(
            &mut c,
            &format!("cas key6 0 0 1 {unique}\r\nz\r\n"),
            &["EXISTS"]
        ),
        "EXISTS\r\n"
    );
    // Bad commands get the protocol's own error lines, and the connection goes on.
    assert_eq!(ask(&mut c, "bogus command\r\n", &["ERROR"]), "ERROR\r\n");
    assert_eq!(
        ask(&mut c, "set k notanumber 0 1\r\n", &["CLIENT_ERROR"]),
        "CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(
        ask(&mut c, "get key8\r\n", &["END"]),
        "VALUE key8 5 6\r\nvalue8\r\nEND\r\n"
    );
    // Each key on exactly one backend, and the keys spread.
    let counts: Vec<u64> = servers.iter().map(items).collect();
    // key0..key59, n and quiet, less key2 and key5.
    assert_eq!(counts.iter().sum::<u64>(), 60 + 2 - 2, "{counts:?}");
    assert!(counts.iter().all(|n| *n >= 10), "{counts:?}");
}

#[test]
fn libmemcached_tools_through_the_proxy() {
    let servers: Vec<Server> = (0..3).map(|_| memcached()).collect();
    let proxy = proxy_for(&servers);
    let target = format!("--servers={}", proxy.addr("mc"));
    let dir = TempFile::new("a.txt", "alpha contents");
    let b = dir.0.with_file_name("b.txt");
    std::fs::write(&b, "bravo contents").unwrap();
    let (ok, out) = run(
        "memccp",
        &[&target, dir.0.to_str().unwrap(), b.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let (ok, out) = run("memccat", &[&target, "a.txt", "b.txt"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("alpha contents") && out.contains("bravo contents"),
        "{out}"
    );
    let (ok, out) = run("memcexist", &[&target, "a.txt"]);
    assert!(ok, "{out}");
    let (ok, out) = run("memcrm", &[&target, "a.txt"]);
    assert!(ok, "{out}");
    let (ok, _) = run("memccat", &[&target, "a.txt"]);
    assert!(!ok, "a.txt still readable after memcrm");
    let counts: Vec<u64> = servers.iter().map(items).collect();
    assert_eq!(
        counts.iter().sum::<u64>(),
        1,
        "b.txt alone is left, on one backend: {counts:?}"
    );
}

/// With its backend gone, each request is answered `SERVER_ERROR …` in its place (a
/// multi-key get too), and the client's connection stays open for the next one.
#[test]
fn requests_without_a_backend_get_server_error_and_the_connection_stays() {
    let server = memcached();
    let proxy = proxy_for(std::slice::from_ref(&server));
    let s = TcpStream::connect(proxy.addr("mc")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = BufReader::new(s);
    assert_eq!(
        ask(&mut s, "set a 0 0 1\r\nx\r\n", &["STORED"]),
        "STORED\r\n"
    );
    drop(server);
    for request in [
        "get a\r\n",
        "get a b c\r\n",
        "set b 0 0 1\r\ny\r\n",
        "get a\r\n",
    ] {
        let answer = ask(&mut s, request, &["SERVER_ERROR", "END", "STORED"]);
        assert!(
            answer.starts_with("SERVER_ERROR "),
            "{request:?}: {answer:?}"
        );
    }
}

#[test]
fn an_oversized_set_is_answered_as_memcached_does_and_the_connection_goes_on() {
    let server = memcached();
    let list = format!("{{ address = \"{}\" }}", server.addr);
    let proxy = Proxy::start(&format!(
        "[[listener]]\nname = \"mc\"\nlisten = \"127.0.0.1:0\"\ncluster = \"mc\"\nmax_frame_size = 65536\n\
         [listener.codec]\nkind = \"memcache\"\n[[cluster]]\nname = \"mc\"\nbackends = [{list}]\n"
    ));
    let s = TcpStream::connect(proxy.addr("mc")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s);
    // 200 KB of data, sent in pieces: swallowed, answered, and the next command served.
    let data = vec![b'z'; 200_000];
    r.get_mut()
        .write_all(format!("set big 0 0 {}\r\n", data.len()).as_bytes())
        .unwrap();
    for piece in data.chunks(7_000) {
        r.get_mut().write_all(piece).unwrap();
    }
    let answer = ask(&mut r, "\r\nset small 0 0 2\r\nhi\r\n", &["STORED"]);
    assert_eq!(
        answer,
        "SERVER_ERROR object too large for cache\r\nSTORED\r\n"
    );
    assert_eq!(
        ask(&mut r, "get small big\r\n", &["END"]),
        "VALUE small 0 2\r\nhi\r\nEND\r\n"
    );
    // A get line of 400 keys (3 KB), sent in two writes, is one request (a 2 KiB cap once
    // applied only to lines still incomplete).
    let mut line = "get".to_string();
    for i in 0..400 {
        line.push_str(&format!(" k{i:04}"));
    }
    line.push_str("\r\n");
    r.get_mut().write_all(&line.as_bytes()[..2100]).unwrap();
    // The second write only once the proxy has read the first: two reads for one line.
    eventually(
        "the proxy to read the first part of the line",
        Duration::from_secs(5),
        || unread_by_peer(r.get_ref()) == Some(0),
    );
    assert_eq!(ask(&mut r, &line[2100..], &["END"]), "END\r\n");
}
