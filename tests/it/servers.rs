//! Real Redis and memcached servers from Debian's packages, on loopback ports, for the
//! tests that put Switchyard in front of them. `.ci/run` installs the packages.

use crate::support::eventually;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A free loopback port (bound and released; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed on drop.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    eventually(
        &format!("{what} to listen on {addr}"),
        Duration::from_secs(10),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{what} exited: {status}");
            }
            TcpStream::connect(addr).is_ok()
        },
    );
}

/// `redis-server` on a free port, no persistence; `password` sets requirepass.
pub fn redis(password: Option<&str>) -> Server {
    let port = free_port();
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ]);
    if let Some(p) = password {
        cmd.args(["--requirepass", p]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut child, "redis-server");
    Server { addr, child }
}

/// Names the test zone of [`nsd`] holds: `n0.example.test` … `n{NAMES-1}.example.test`.
pub const NAMES: u32 = 200;

pub use switchyard::demo::nsd::{address_of, Nsd};

/// `nsd` (Debian's authoritative DNS server) on a free port, TCP and UDP, serving the zone
/// `example.test` with an A record for each of `n0` … `n199`.
pub fn nsd() -> Nsd {
    Nsd::start(NAMES).unwrap_or_else(|e| panic!("nsd: {e} (apt-get install nsd)"))
}

/// `memcached` on a free port (TCP only).
pub fn memcached() -> Server {
    let port = free_port();
    let mut child = Command::new("memcached")
        .args([
            "-p",
            &port.to_string(),
            "-l",
            "127.0.0.1",
            "-U",
            "0",
            "-u",
            "root",
            "-m",
            "64",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("memcached (apt-get install memcached)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut child, "memcached");
    Server { addr, child }
}

/// A TCP relay in front of a server that counts the bytes its clients send through, so a
/// test sees a request reach the server even while the server executes nothing. A
/// connection the server closes, the relay closes on its client.
pub struct Relay {
    pub addr: SocketAddr,
    forwarded: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let forwarded = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (forwarded.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(target)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(client, server, Some(count.clone()));
                pipe(s2, c2, None);
            }
        });
        Relay {
            addr,
            forwarded,
            stop,
        }
    }

    /// Bytes passed on to the server so far (written to its socket).
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` until either ends, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            if let Some(c) = &count {
                c.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// Runs a command; returns (success, stdout).
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `redis-cli` against `addr`, one command; returns its output.
pub fn redis_cli(addr: SocketAddr, args: &[&str]) -> String {
    let port = addr.port().to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &port];
    all.extend_from_slice(args);
    run("redis-cli", &all).1.trim_end().to_string()
}

/// `redis-server` speaking only TLS on a free port, with `cert`/`key`; client certificates
/// are checked against `ca` and, with `auth_clients`, required.
pub fn redis_tls(cert: &Path, key: &Path, ca: &Path, auth_clients: bool) -> Server {
    let port = free_port();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--tls-cert-file")
        .arg(cert)
        .arg("--tls-key-file")
        .arg(key)
        .arg("--tls-ca-cert-file")
        .arg(ca)
        .args([
            "--tls-auth-clients",
            if auth_clients { "yes" } else { "no" },
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut child, "redis-server --tls-port");
    Server { addr, child }
}

/// Debian's `haproxy` in the foreground, with `sections` (frontends and backends, in
/// `mode tcp`) after a minimal `global`/`defaults`; waits for `wait_on` to listen.
pub fn haproxy(sections: &str, wait_on: SocketAddr) -> (Server, crate::support::TempFile) {
    let config = crate::support::TempFile::new(
        "haproxy.cfg",
        &format!(
            "global\n    maxconn 1000\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n{sections}"
        ),
    );
    let mut child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&config.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (apt-get install haproxy)");
    wait_listening(wait_on, &mut child, "haproxy");
    (
        Server {
            addr: wait_on,
            child,
        },
        config,
    )
}
