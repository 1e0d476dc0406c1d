//! Protocol scripts end to end: every example script through the real proxy with real TCP
//! backends and clients, and misbehaving scripts closing only their own connection.

use crate::support::*;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn examples_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scripts")
}

fn lua_config(
    listener_extra: &str,
    script: &std::path::Path,
    backends: &[String],
    cluster_extra: &str,
) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        r#"workers = 2
[[listener]]
name = "app"
listen = "127.0.0.1:0"
cluster = "app"
{listener_extra}
[listener.codec]
kind = "lua"
script = "{}"

[[cluster]]
name = "app"
policy = "round_robin"
backends = [{}]
[cluster.persistence]
ttl = "1m"
{cluster_extra}
"#,
        script.display(),
        list.join(", ")
    )
}

#[test]
fn example_a_binary_protocol_with_a_64_bit_key() {
    let bs = backends(3);
    let addrs: Vec<String> = bs.iter().map(|b| b.addr.to_string()).collect();
    let proxy = Proxy::start(&lua_config(
        "",
        &examples_dir().join("binary64.lua"),
        &addrs,
        "",
    ));
    // 32 clients with colliding ids (the script declares by_id), 4 keys each.
    let plans = (0..32)
        .map(|c| plan(300, 16, (0..4).map(|k| (c << 40) | k).collect(), c, true))
        .collect();
    let reports = run_clients(proxy.addr("app"), plans);
    let mut homes: HashMap<u64, HashSet<String>> = HashMap::new();
    for r in &reports {
        assert_clean(r);
        for (k, v) in &r.key_backends {
            homes.entry(*k).or_default().extend(v.iter().cloned());
        }
    }
    assert!(
        homes.values().all(|h| h.len() == 1),
        "a 64-bit key reached two backends"
    );
    let used: HashSet<_> = homes.values().flatten().collect();
    assert_eq!(used.len(), 3);
    let total: u64 = bs.iter().map(|b| b.messages()).sum();
    assert_eq!(total, 32 * 300, "each message arrived once");
}

/// A SIP-like backend: answers each request with 200 OK, echoing Call-ID and CSeq, naming
/// itself in X-Backend.
fn sip_backend(name: &'static str) -> SocketAddr {
    serve_each(move |conn| {
        let mut w = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        loop {
            let (mut call, mut cseq, mut len) = (String::new(), String::new(), 0usize);
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("Call-ID:") {
                    call = v.trim().to_string();
                } else if let Some(v) = l.strip_prefix("CSeq:") {
                    cseq = v.trim().to_string();
                } else if let Some(v) = l.strip_prefix("Content-Length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).unwrap();
            let answer = format!(
                "SIP/2.0 200 OK\r\nCall-ID: {call}\r\nCSeq: {cseq}\r\nX-Backend: {name}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let mut out = answer.into_bytes();
            out.extend_from_slice(&body);
            if w.write_all(&out).is_err() {
                return;
            }
        }
    })
}

fn read_sip(r: &mut BufReader<TcpStream>) -> (HashMap<String, String>, Vec<u8>) {
    let mut headers = HashMap::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.to_string(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("Content-Length")
        .map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    (headers, body)
}

#[test]
fn example_b_sip_like_calls_stick_and_cseq_is_restored() {
    let addrs = vec![
        sip_backend("S1").to_string(),
        sip_backend("S2").to_string(),
        sip_backend("S3").to_string(),
    ];
    let proxy = Proxy::start(&lua_config("", &examples_dir().join("sip.lua"), &addrs, ""));
    let addr = proxy.addr("app");
    let handles: Vec<_> = (0..12)
        .map(|c| {
            std::thread::spawn(move || {
                let (mut w, mut r) = connect_split(addr);
                let mut homes: HashMap<String, HashSet<String>> = HashMap::new();
                for round in 0..20 {
                    // Three calls per client, pipelined; CSeq numbers collide across clients.
                    let mut batch = Vec::new();
                    for call in 0..3 {
                        let body = format!("v=0 {c}/{round}/{call}");
                        batch.extend_from_slice(
                            format!(
                                "INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: call-{c}-{call}@host\r\nCSeq: {} INVITE\r\nContent-Length: {}\r\n\r\n{body}",
                                round * 3 + call + 1,
                                body.len()
                            )
                            .as_bytes(),
                        );
                    }
                    w.write_all(&batch).unwrap();
                    let mut got = Vec::new();
                    for _ in 0..3 {
                        got.push(read_sip(&mut r));
                    }
                    got.sort_by_key(|(h, _)| h["CSeq"].clone());
                    for (h, body) in got {
                        let call = h["Call-ID"].clone();
                        let n: usize = call.trim_start_matches(&format!("call-{c}-")).trim_end_matches("@host").parse().unwrap();
                        assert_eq!(h["CSeq"], format!("{} INVITE", round * 3 + n + 1), "CSeq restored");
                        assert_eq!(body, format!("v=0 {c}/{round}/{n}").into_bytes(), "its own answer");
                        homes.entry(call).or_default().insert(h["X-Backend"].clone());
                    }
                }
                homes
            })
        })
        .collect();
    let mut used = HashSet::new();
    for h in handles {
        for (call, names) in h.join().unwrap() {
            assert_eq!(names.len(), 1, "call {call} reached {names:?}");
            used.extend(names);
        }
    }
    assert_eq!(used.len(), 3);
}

fn tlv(typ: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![typ];
    v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn tlv_message(tlvs: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = tlvs.concat();
    let mut m = (body.len() as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&body);
    m
}

/// Parses a TLV message into (type → value).
fn parse_tlv(m: &[u8]) -> HashMap<u8, Vec<u8>> {
    let mut out = HashMap::new();
    let mut t = 4;
    while t < m.len() {
        let len = u16::from_be_bytes([m[t + 1], m[t + 2]]) as usize;
        out.insert(m[t], m[t + 3..t + 3 + len].to_vec());
        t += 3 + len;
    }
    out
}

/// A TLV backend: echoes each message with a type-9 TLV naming itself appended.
fn tlv_backend(name: &'static str) -> SocketAddr {
    serve_each(move |mut conn| loop {
        let mut head = [0u8; 4];
        if conn.read_exact(&mut head).is_err() {
            return;
        }
        let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
        conn.read_exact(&mut body).unwrap();
        body.extend_from_slice(&tlv(9, name.as_bytes()));
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        if conn.write_all(&out).is_err() {
            return;
        }
    })
}

#[test]
fn example_c_tlv_key_and_id_found_by_walking() {
    let addrs = vec![tlv_backend("T1").to_string(), tlv_backend("T2").to_string()];
    let proxy = Proxy::start(&lua_config("", &examples_dir().join("tlv.lua"), &addrs, ""));
    let addr = proxy.addr("app");
    let handles: Vec<_> = (0..8u32)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut homes: HashMap<Vec<u8>, HashSet<Vec<u8>>> = HashMap::new();
                for i in 0..200u32 {
                    let key = format!("user-{c}-{}", i % 5).into_bytes();
                    // TLVs in varying order: the script must walk them.
                    let mut tlvs = vec![
                        tlv(3, format!("payload {c} {i}").as_bytes()),
                        tlv(1, &key),
                        tlv(2, &i.to_be_bytes()),
                    ];
                    tlvs.rotate_left((i % 3) as usize);
                    s.write_all(&tlv_message(&tlvs)).unwrap();
                    let mut head = [0u8; 4];
                    s.read_exact(&mut head).unwrap();
                    let mut rest = vec![0u8; u32::from_be_bytes(head) as usize];
                    s.read_exact(&mut rest).unwrap();
                    let mut whole = head.to_vec();
                    whole.extend_from_slice(&rest);
                    let m = parse_tlv(&whole);
                    assert_eq!(m[&2], i.to_be_bytes().to_vec(), "id restored");
                    assert_eq!(m[&3], format!("payload {c} {i}").into_bytes());
                    homes.entry(key).or_default().insert(m[&9].clone());
                }
                homes
            })
        })
        .collect();
    for h in handles {
        for (key, names) in h.join().unwrap() {
            assert_eq!(names.len(), 1, "{key:?} reached {names:?}");
        }
    }
}

#[test]
fn misbehaving_scripts_close_only_their_connection() {
    let dir = TempFile::new(
        "bad.lua",
        r#"
-- frame and u32be come from the prelude
return {
  correlation = "by_id",
  scan = function(data, len, out)
    local pos, n = 0, 0
    while len - pos >= 16 do
      local size = 4 + u32be(data, pos)
      if len - pos < size then return n, size end
      local op = buffer.readstring(data, pos + 16, math.min(4, size - 16))
      if op == "LOOP" then while true do end end
      if op == "BOOM" then local t = {} for i = 1, 1e9 do t[i] = buffer.create(4 * 1024 * 1024) end end
      if op == "FAIL" then error("refusing " .. op) end
      frame(out, n, size, pos + 4, 8, pos + 12, 4)
      n += 1
      pos += size
    end
    return n
  end,
}
"#,
    );
    let bs = backends(2);
    let addrs: Vec<String> = bs.iter().map(|b| b.addr.to_string()).collect();
    let cfg = lua_config("", &dir.0, &addrs, "").replace(
        &format!("script = \"{}\"", dir.0.display()),
        &format!(
            "script = \"{}\"\ntime_limit = \"50ms\"\nmemory_limit = 16777216",
            dir.0.display()
        ),
    );
    let proxy = Proxy::start(&cfg);
    let addr = proxy.addr("app");
    let good = std::thread::spawn(move || {
        run_clients(
            addr,
            (0..4).map(|c| plan(2000, 8, vec![c], c, true)).collect(),
        )
    });
    for op in ["LOOP", "BOOM", "FAIL"] {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut req = Vec::new();
        switchyard::demo::proto::write_request(&mut req, 1, 1, op.as_bytes());
        s.write_all(&req).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        assert!(
            matches!(s.read(&mut buf), Ok(0) | Err(_)),
            "{op}: connection not closed"
        );
    }
    for r in good.join().unwrap() {
        assert_clean(&r);
    }
    let log = proxy.stderr();
    let file = dir.0.display().to_string();
    assert!(
        log.contains(&format!("{file}:11: time limit 50ms exceeded")),
        "{log}"
    );
    assert!(log.contains("out of memory"), "{log}");
    assert!(log.contains(&format!("{file}:13: refusing FAIL")), "{log}");
    // A script that fails is the script's fault, not the client's.
    for line in log
        .lines()
        .filter(|l| l.contains("closing client connection"))
    {
        assert!(line.contains("fault=script"), "{line}");
    }
    assert!(log.contains("closing client connection"), "{log}");
}

#[test]
fn a_script_that_keeps_failing_is_suspended_and_other_listeners_keep_serving() {
    let looping = TempFile::new(
        "loop.lua",
        "return { correlation = 'by_id', scan = function(data, len, out) while true do end end }\n",
    );
    let bs = backends(2);
    let list = backend_list(&bs);
    let cfg = format!(
        r#"workers = 1
[[listener]]
name = "native"
listen = "127.0.0.1:0"
cluster = "app"
correlation = "by_id"
[listener.codec]
kind = "length_field"
length_width = 4
key = {{ offset = 4, width = 8 }}
id = {{ offset = 12, width = 4 }}

[[listener]]
name = "looping"
listen = "127.0.0.1:0"
cluster = "app"
[listener.codec]
kind = "lua"
script = "{}"

[[cluster]]
name = "app"
policy = "round_robin"
backends = {list}
"#,
        looping.0.display()
    );
    let proxy = Proxy::start(&cfg);
    let (native, bad) = (proxy.addr("native"), proxy.addr("looping"));
    // Eight clients keep connecting to the looping listener and sending a request, for as
    // long as the good clients run (bounded: 3 000 connections at most).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer: Vec<_> = (0..8)
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 375 {
                    let Ok(mut s) = TcpStream::connect(bad) else {
                        continue;
                    };
                    let mut req = Vec::new();
                    switchyard::demo::proto::write_request(&mut req, c, 1, b"anything");
                    let _ = s.write_all(&req);
                    assert!(closed_within(&s, Duration::from_secs(10)));
                    n += 1;
                }
                n
            })
        })
        .collect();
    let reports = run_clients(
        native,
        (0..4).map(|c| plan(3000, 8, vec![c], c, true)).collect(),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tried: usize = hammer.into_iter().map(|h| h.join().unwrap()).sum();
    for r in reports {
        assert_clean(&r);
    }
    let log = proxy.stderr();
    assert!(tried >= 16, "only {tried} connections were tried");
    assert!(
        log.contains("protocol script failed 5 calls in a row"),
        "{log}"
    );
    assert!(
        log.contains("refusing new connections until the script's suspension ends"),
        "{log}"
    );
    // The script ran a few times per suspension, not once per connection; the refusals
    // are one line per suspension.
    let suspensions = log.matches("failed 5 calls in a row").count();
    let refusals = log.matches("refusing new connections until").count();
    assert!(refusals <= suspensions, "{refusals} refusal lines:\n{log}");
    let closes = log.matches("closing client connection").count();
    assert!(
        closes < 20,
        "{closes} close lines for {tried} connections:\n{log}"
    );
}

/// An answer script that fails drops that backend connection (its stream cannot be framed
/// any more), but it is the script's fault, not the backend's: outlier detection does not
/// count it, and the backend goes on serving.
#[test]
fn a_failing_answer_script_does_not_eject_the_backend() {
    let dir = TempFile::new(
        "answers.lua",
        r#"
local function frames(data, len, out, check)
  local pos, n = 0, 0
  while len - pos >= 16 do
    local size = 4 + u32be(data, pos)
    if len - pos < size then return n, size end
    if check then
      local name = buffer.readu8(data, pos + 16)
      local at = pos + 17 + name
      if at + 4 <= pos + size and buffer.readstring(data, at, 4) == "FAIL" then
        error("cannot read this answer")
      end
    end
    frame(out, n, size, pos + 4, 8, pos + 12, 4)
    n += 1
    pos += size
  end
  return n
end
return {
  correlation = "by_id",
  scan = function(data, len, out) return frames(data, len, out, false) end,
  answers = function(data, len, out) return frames(data, len, out, true) end,
}
"#,
    );
    let bs = backends(2);
    let addrs: Vec<String> = bs.iter().map(|b| b.addr.to_string()).collect();
    let cfg = lua_config(
        "",
        &dir.0,
        &addrs,
        "[cluster.outlier]\nconsecutive_failures = 1\nmax_ejected_percent = 100\n",
    )
    .replace("workers = 2", "workers = 1");
    let proxy = Proxy::start(&cfg);
    let addr = proxy.addr("app");
    // Keys 1 and 2 land on different backends (round robin, pinned): each gets a request
    // whose answer the script fails on.
    for key in [1u64, 2] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = Vec::new();
        switchyard::demo::proto::write_request(&mut req, key, 7, b"FAIL");
        s.write_all(&req).unwrap();
        let mut buf = [0u8; 64];
        assert!(
            matches!(s.read(&mut buf), Ok(0) | Err(_)),
            "key {key}: the failed request's client is closed (no error answer configured)"
        );
    }
    eventually("both connections dropped", Duration::from_secs(5), || {
        proxy.stderr().matches("the answer script failed").count() >= 2
    });
    // The backends still serve, and nothing was ejected.
    let before: u64 = bs.iter().map(|b| b.messages()).sum();
    let report = run_clients(
        addr,
        (0..2).map(|c| plan(200, 4, vec![c], c, true)).collect(),
    );
    for r in &report {
        assert_clean(r);
    }
    let after: u64 = bs.iter().map(|b| b.messages()).sum();
    assert_eq!(after - before, 400);
    let log = proxy.stderr();
    assert!(!log.contains("ejected by outlier detection"), "{log}");
}
