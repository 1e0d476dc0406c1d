//! Test harness: the real `switchyard` binary on 127.0.0.1 with a config written to a
//! temporary file, real TCP demo backends, and bounded demo clients.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use switchyard::demo::backend::TestBackend;
use switchyard::demo::client::{self, ClientPlan, ClientReport};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A temporary file removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-it-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The real binary, running a config.
pub struct Proxy {
    pub child: Child,
    pub addrs: HashMap<String, SocketAddr>,
    pub stderr_path: PathBuf,
    lines: std::sync::mpsc::Receiver<String>,
    config: TempFile,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

impl Proxy {
    /// Starts `switchyard run` and waits (bounded) for every listener to be bound.
    pub fn start(config: &str) -> Proxy {
        Self::start_limited(config, None)
    }

    /// Like [`Proxy::start`], with the open-file limit set to `nofile` if given.
    pub fn start_limited(config: &str, nofile: Option<u32>) -> Proxy {
        Self::spawn(config, nofile, &[])
    }

    /// Like [`Proxy::start`], with extra arguments to `run`.
    pub fn start_args(config: &str, args: &[&str]) -> Proxy {
        Self::spawn(config, None, args)
    }

    fn spawn(config: &str, nofile: Option<u32>, extra: &[&str]) -> Proxy {
        let file = TempFile::new("switchyard.toml", config);
        let stderr_path = file.0.with_file_name("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = match nofile {
            None => Command::new(bin()),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin());
                c
            }
        };
        let mut child = cmd
            .args(["run", "--config"])
            .arg(&file.0)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn switchyard");
        let expected = config.matches("[[listener]]").count();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while addrs.len() < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let parts: Vec<&str> = line.split_whitespace().collect();
                    if let ["listening", name, addr] = parts[..] {
                        addrs.insert(name.to_string(), addr.parse().unwrap());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "switchyard did not report its listeners; stderr:\n{}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                }
            }
        }
        Proxy {
            child,
            addrs,
            stderr_path,
            lines: rx,
            config: file,
        }
    }

    /// Writes a new config and sends SIGHUP.
    pub fn reload(&self, config: &str) {
        std::fs::write(&self.config.0, config).unwrap();
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    }

    /// The next `listening NAME ADDR` line (after a reload), within `wait`.
    pub fn next_listening(&mut self, wait: Duration) -> Option<(String, SocketAddr)> {
        let deadline = Instant::now() + wait;
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok()?;
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let ["listening", name, addr] = parts[..] {
                let addr: SocketAddr = addr.parse().unwrap();
                self.addrs.insert(name.to_string(), addr);
                return Some((name.to_string(), addr));
            }
        }
    }

    /// Resident memory of the proxy, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// User + system CPU time of the proxy, in clock ticks (1/100 s).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addrs[listener]
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "switchyard did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` recording demo backends on free loopback ports.
pub fn backends(n: usize) -> Vec<TestBackend> {
    (1..=n)
        .map(|i| TestBackend::start(&format!("b{i}"), true).unwrap())
        .collect()
}

/// TOML for `backends`.
pub fn backend_list(backends: &[TestBackend]) -> String {
    let items: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{}\", name = \"{}\" }}", b.addr, b.name))
        .collect();
    format!("[{}]", items.join(", "))
}

/// A config for the demo protocol: one listener `app`, one cluster `app`.
pub fn demo_config(
    backends: &[TestBackend],
    workers: usize,
    correlation: &str,
    policy: &str,
    with_key: bool,
    extra_listener: &str,
    extra_cluster: &str,
) -> String {
    let key = if with_key {
        "key = { offset = 4, width = 8 }\n"
    } else {
        ""
    };
    format!(
        r#"workers = {workers}
shutdown_timeout = "5s"

[[listener]]
name = "app"
listen = "127.0.0.1:0"
cluster = "app"
correlation = "{correlation}"
{extra_listener}
[listener.codec]
kind = "length_field"
length_width = 4
{key}id = {{ offset = 12, width = 4 }}

[[cluster]]
name = "app"
policy = "{policy}"
backends = {list}
{extra_cluster}
"#,
        list = backend_list(backends)
    )
}

/// Runs `plans` concurrently against `addr` (bounded by each plan's count and timeouts).
pub fn run_clients(addr: SocketAddr, plans: Vec<ClientPlan>) -> Vec<ClientReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = plans
            .into_iter()
            .map(|p| tokio::spawn(client::run(addr, p)))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

/// A plan of `messages` requests over `keys`, tagged `tag`.
pub fn plan(messages: u64, depth: usize, keys: Vec<u64>, tag: u64, any_order: bool) -> ClientPlan {
    ClientPlan {
        messages,
        depth,
        keys,
        payload: 32,
        deadline: None,
        rate: None,
        any_order,
        answer_timeout: Duration::from_secs(10),
        tag,
        prefix: None,
    }
}

/// Asserts a report is complete and clean.
pub fn assert_clean(r: &ClientReport) {
    assert!(r.error.is_none(), "client error: {:?}", r.error);
    assert!(
        r.mismatches.is_empty(),
        "mismatches: {:?}",
        &r.mismatches[..r.mismatches.len().min(5)]
    );
    assert_eq!(r.answered, r.sent, "every request answered");
}

/// Waits (bounded) until `cond` holds.
pub fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the proxy closes `s` (EOF or reset) within `wait`, reading and discarding
/// whatever it sends before.
pub fn closed_within(mut s: &std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            // A reset also means the proxy closed the connection.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {}
        }
    }
    false
}

/// What came back for one demo request sent by [`exchange`].
#[derive(Debug, Default)]
pub struct Collected {
    /// Ids of the answers.
    pub answers: Vec<u32>,
    /// Keys of the unasked messages (id `u32::MAX`).
    pub pushes: Vec<u64>,
    /// Keys of every message received.
    pub keys: Vec<u64>,
    /// Whether the proxy closed the connection.
    pub closed: bool,
}

/// Sends one demo request on a new connection and collects the messages that come back,
/// until the connection closes, `enough` says so, or `wait` passes.
pub fn exchange(
    addr: SocketAddr,
    key: u64,
    id: u32,
    payload: &[u8],
    wait: Duration,
    enough: impl Fn(&Collected) -> bool,
) -> Collected {
    use std::io::{Read, Write};
    use switchyard::demo::proto;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = Vec::new();
    proto::write_request(&mut req, key, id, payload);
    s.write_all(&req).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + wait;
    let mut got = Collected::default();
    let mut buf = Vec::new();
    while Instant::now() < deadline && !enough(&got) {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => {
                got.closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                got.closed = true;
                break;
            }
            Err(_) => continue,
        }
        while buf.len() >= 4 {
            let len = 4 + u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < len {
                break;
            }
            let m = proto::parse(&buf[..len]).unwrap();
            got.keys.push(m.key);
            if m.id == u32::MAX {
                got.pushes.push(m.key);
            } else {
                got.answers.push(m.id);
            }
            buf.drain(..len);
        }
    }
    got
}

/// How many times a log line containing `what` happened, with the repeats the log's
/// throttle suppressed counted in: each line written counts once plus its `suppressed=N`,
/// and each "suppressed repeated lines" summary of that kind counts its N.
pub fn occurrences(log: &str, what: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(what))
        .map(|l| {
            let n = l
                .split("suppressed=")
                .nth(1)
                .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if l.contains("suppressed repeated lines") {
                n
            } else {
                n + 1
            }
        })
        .sum()
}
