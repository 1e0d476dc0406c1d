//! The `ketama` policy against a real twemproxy: nutcracker on 127.0.0.1 with a
//! `hash: fnv1a_64`, `distribution: ketama` memcache pool over small backends that answer
//! every `get KEY` with their own name, so nutcracker's answer says where it sent the key.
//! Switchyard's continuum (as a library) must pick the same backend for every key, and so
//! must the proxy itself with `policy = "ketama"`.
//!
//! Needs the `nutcracker` binary (Debian: `apt-get install nutcracker`); without it the tests
//! fail with that hint, as the redis and memcached tests do.

use crate::support::{wait_for, Proxy, TempFile};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use switchyard_core::balance::Continuum;

/// A memcached-text backend on its own thread, serving `l` as `name`: `get K1 K2…` is
/// answered with one `VALUE K 0 N` per key whose data is the name, then `END`; `whoami K`
/// (the single-line form the Switchyard side uses) with the name alone. Ends with the test
/// process.
fn serve_names(l: TcpListener, name: String) {
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            let name = name.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let text = line.strip_suffix(b"\r\n").unwrap_or(&line);
                    let mut words = text.split(|&b| b == b' ').filter(|w| !w.is_empty());
                    let mut out = Vec::new();
                    match words.next() {
                        Some(b"get") | Some(b"gets") => {
                            for key in words {
                                out.extend_from_slice(b"VALUE ");
                                out.extend_from_slice(key);
                                out.extend_from_slice(
                                    format!(" 0 {}\r\n{name}\r\n", name.len()).as_bytes(),
                                );
                            }
                            out.extend_from_slice(b"END\r\n");
                        }
                        Some(b"whoami") => out.extend_from_slice(format!("{name}\r\n").as_bytes()),
                        _ => out.extend_from_slice(b"ERROR\r\n"),
                    }
                    if w.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// The nutcracker binary, if installed (Debian puts it in /usr/sbin).
fn nutcracker_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join("nutcracker"))
        .find(|p| p.is_file())
}

/// The binary; an absent one fails the test with the install hint (a test that compared
/// nothing must not report `ok`).
pub(crate) fn nutcracker() -> PathBuf {
    nutcracker_bin().unwrap_or_else(|| {
        panic!(
            "nutcracker (twemproxy) is not installed, so Switchyard's ketama cannot be compared \
             with it: `apt-get install -y nutcracker` (the README's test command installs it)"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running nutcracker, killed on drop.
pub(crate) struct Nutcracker {
    /// Its stats port.
    pub(crate) stats: SocketAddr,
    child: Child,
    addr: SocketAddr,
    _conf: TempFile,
}

impl Drop for Nutcracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nutcracker {
    /// Starts nutcracker with one ketama/fnv1a_64 memcache pool over `servers` (the lines
    /// of its `servers:` list, e.g. `127.0.0.1:PORT:1 b1`) and waits until it accepts.
    pub(crate) fn start(bin: &PathBuf, servers: &[String], hash_tag: Option<&str>) -> Nutcracker {
        // The ports are picked free and released: retry if one was taken meanwhile.
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let stats = free_port();
            let list: String = servers.iter().map(|s| format!("   - {s}\n")).collect();
            let tag = hash_tag.map_or(String::new(), |t| format!("  hash_tag: \"{t}\"\n"));
            let yaml = format!(
                "switchyard_ketama:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  \
                 distribution: ketama\n  redis: false\n  auto_eject_hosts: false\n  \
                 timeout: 5000\n{tag}  servers:\n{list}"
            );
            let conf = TempFile::new("nutcracker.yml", &yaml);
            let dir = conf.0.parent().unwrap().to_path_buf();
            let log = dir.join("nutcracker.log");
            let mut child = Command::new(bin)
                .arg("-c")
                .arg(&conf.0)
                .args(["-s", &stats.to_string(), "-a", "127.0.0.1", "-v", "6"])
                .arg("-o")
                .arg(&log)
                .arg("-p")
                .arg(dir.join("nutcracker.pid"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nutcracker");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            // Listening, or exited (its port taken meanwhile).
            let started = wait_for(Duration::from_secs(10), || {
                if let Some(status) = child.try_wait().unwrap() {
                    return Some(Err(status));
                }
                TcpStream::connect(addr).is_ok().then_some(Ok(()))
            });
            match started {
                Some(Ok(())) => {
                    return Nutcracker {
                        stats: format!("127.0.0.1:{stats}").parse().unwrap(),
                        child,
                        addr,
                        _conf: conf,
                    }
                }
                Some(Err(status)) => {
                    last_log = std::fs::read_to_string(&log).unwrap_or_default();
                    eprintln!("nutcracker exited at start ({status}); retrying");
                }
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "nutcracker did not listen on {addr}; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        panic!("nutcracker would not start; last log:\n{last_log}");
    }
}

/// The 200 keys sent: sequential, structured, pseudo-random, long, and with bytes ≥ 0x80
/// (twemproxy sign-extends those in its hash).
fn keys() -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(0x6b65_7461_6d61);
    let mut keys = Vec::new();
    for i in 0..50 {
        keys.push(format!("key:{i}"));
    }
    for i in 0..40 {
        keys.push(format!("user:{}:profile", i * 7919));
    }
    for _ in 0..60 {
        let len = rng.usize(1..40);
        keys.push((0..len).map(|_| rng.alphanumeric()).collect());
    }
    for i in 0..20 {
        keys.push(format!(
            "caf\u{e9}-{i}-\u{43a}\u{43b}\u{44e}\u{447}-\u{1f600}"
        ));
    }
    for i in 0..20 {
        keys.push(format!("{}{i}", "x".repeat(180 + i)));
    }
    for k in ["a", "b", "z", "0", "~", "\u{ff}", "session:abc"] {
        keys.push(k.to_string());
    }
    keys.extend((0..3).map(|i| format!("tail{i}")));
    assert_eq!(keys.len(), 200);
    keys
}

/// Where nutcracker sends each key (the name in its answer).
fn nutcracker_choices(nc: &Nutcracker, keys: &[String]) -> Vec<String> {
    let conn = TcpStream::connect(nc.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    keys.iter()
        .map(|k| {
            w.write_all(format!("get {k}\r\n").as_bytes()).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            let header = format!("VALUE {k} 0 ");
            assert!(
                line.starts_with(&header),
                "key {k:?}: nutcracker answered {line:?}"
            );
            line.clear();
            r.read_line(&mut line).unwrap();
            let name = line.trim_end().to_string();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "END\r\n", "key {k:?}");
            name
        })
        .collect()
}

/// Where Switchyard with `policy = "ketama"` sends each key: `whoami KEY` lines through the
/// real proxy (delimiter codec, the key is token 1), answered with the backend's name.
fn switchyard_choices(
    pool: &[(String, u32, SocketAddr)],
    keys: &[String],
    hash_tag: Option<&str>,
) -> Vec<String> {
    let list: Vec<String> = pool
        .iter()
        .map(|(n, w, a)| format!("{{ address = \"{a}\", name = \"{n}\", weight = {w} }}"))
        .collect();
    let cfg = format!(
        r#"workers = 2
[[listener]]
name = "kv"
listen = "127.0.0.1:0"
cluster = "kv"
[listener.codec]
kind = "delimiter"
delimiter = "\r\n"
key_token = 1

[[cluster]]
name = "kv"
policy = "ketama"
backends = [{}]
{}
"#,
        list.join(", "),
        hash_tag.map_or(String::new(), |t| format!("hash_tag = \"{t}\""))
    );
    let proxy = Proxy::start(&cfg);
    let conn = TcpStream::connect(proxy.addr("kv")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    keys.iter()
        .map(|k| {
            w.write_all(format!("whoami {k}\r\n").as_bytes()).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            line.trim_end().to_string()
        })
        .collect()
}

/// One pool of backends, each (name, weight, named in nutcracker's config); an unnamed one
/// is hashed by twemproxy as `host:port`, so its name is its address. Asserts that
/// nutcracker, Switchyard's continuum and the Switchyard proxy agree on all 200 keys.
fn compare(bin: &PathBuf, backends: &[(&str, u32, bool)]) {
    compare_keys(bin, backends, &keys(), None);
}

/// As [`compare`], for `keys`, with twemproxy's `hash_tag` set on both sides if given (the
/// continuum alone, which sees whole keys, is then not compared).
fn compare_keys(
    bin: &PathBuf,
    backends: &[(&str, u32, bool)],
    keys: &[String],
    hash_tag: Option<&str>,
) {
    let pool: Vec<(String, u32, SocketAddr)> = backends
        .iter()
        .map(|&(n, w, named)| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let a = l.local_addr().unwrap();
            let name = if named { n.to_string() } else { a.to_string() };
            serve_names(l, name.clone());
            (name, w, a)
        })
        .collect();
    let servers: Vec<String> = pool
        .iter()
        .zip(backends)
        .map(|((n, w, a), &(_, _, named))| {
            if named {
                format!("{a}:{w} {n}")
            } else {
                format!("{a}:{w}")
            }
        })
        .collect();
    let nc = Nutcracker::start(bin, &servers, hash_tag);
    let theirs = nutcracker_choices(&nc, keys);
    let named: Vec<(&str, u32)> = pool.iter().map(|(n, w, _)| (n.as_str(), *w)).collect();
    let continuum = Continuum::new(&named);
    let ours: Vec<String> = keys
        .iter()
        .map(|k| pool[continuum.server_for(k.as_bytes()).unwrap()].0.clone())
        .collect();
    let differ: Vec<String> = keys
        .iter()
        .zip(theirs.iter().zip(&ours))
        .filter(|_| hash_tag.is_none())
        .filter(|(_, (t, o))| t != o)
        .map(|(k, (t, o))| format!("{k:?}: nutcracker {t}, switchyard {o}"))
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} keys differ over {servers:?}, e.g. {:?}",
        differ.len(),
        keys.len(),
        &differ[..differ.len().min(5)]
    );
    // Not vacuous: every backend got keys.
    for (n, _, _) in &pool {
        assert!(theirs.contains(n), "no key went to {n}: {theirs:?}");
    }
    // The proxy itself, routing by the key bytes of each message, agrees too.
    let proxied = switchyard_choices(&pool, keys, hash_tag);
    assert_eq!(
        proxied, theirs,
        "the proxy's ketama routing differs from nutcracker's"
    );
    println!(
        "ketama: nutcracker, the continuum and the proxy agree on all {} keys over {servers:?}",
        keys.len()
    );
}

#[test]
fn ketama_matches_nutcracker_three_named_servers() {
    let bin = nutcracker();
    compare(&bin, &[("b1", 1, true), ("b2", 1, true), ("b3", 1, true)]);
}

#[test]
fn ketama_matches_nutcracker_weighted_1_2_3() {
    let bin = nutcracker();
    compare(&bin, &[("b1", 1, true), ("b2", 2, true), ("b3", 3, true)]);
}

#[test]
fn ketama_matches_nutcracker_unnamed_servers_hash_host_port() {
    let bin = nutcracker();
    compare(&bin, &[("", 1, false), ("", 1, false), ("", 2, false)]);
}

/// Weights where twemproxy's single-precision arithmetic gives a server fewer points than
/// exact arithmetic would (1/25 × 40 × 5 comes out as 7.9999995: 28 points, not 32).
#[test]
fn ketama_matches_nutcracker_float_rounding_of_point_counts() {
    let bin = nutcracker();
    compare(
        &bin,
        &[
            ("s1", 1, true),
            ("s2", 1, true),
            ("s3", 1, true),
            ("s4", 10, true),
            ("s5", 12, true),
        ],
    );
}

/// twemproxy's `hash_tag`: keys are placed by the part between the tags when there is one
/// (the first `{`, then the first `}` after it, non-empty), else by the whole key. Keys
/// sharing a tag land together, and both proxies agree on every key, including the edge
/// cases (empty tag, no closing tag, closing before opening, nested).
#[test]
fn ketama_with_hash_tag_matches_nutcracker() {
    let bin = nutcracker();
    let mut keys = keys();
    for user in 0..30 {
        for field in ["following", "followers", "profile"] {
            keys.push(format!("{{user{user}}}.{field}"));
            keys.push(format!("cache:{{user{user}}}:{field}"));
        }
    }
    for k in [
        "a{}b", "x{y", "}{z}", "{{a}}", "{a}{b}", "}x{", "{", "}", "{}",
    ] {
        keys.push(k.to_string());
    }
    compare_keys(
        &bin,
        &[("b1", 1, true), ("b2", 1, true), ("b3", 1, true)],
        &keys,
        Some("{}"),
    );
}
