//! Test harness: the real `switchyard` binary on 127.0.0.1 with a config written to a
//! temporary file, real TCP demo backends, and bounded demo clients.
//!
//! Size: over 500 lines: the harness for every integration test, most of it the
//! `Scenario` builder's one small method per configuration setting.

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
    /// The admin listener (`admin http://ADDR/`), if the config has one.
    pub admin: Option<SocketAddr>,
    /// The twemproxy stats port, if configured.
    pub stats: Option<SocketAddr>,
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
        let want_admin = config.contains("[admin]");
        let want_stats = config.contains("twemproxy_stats");
        let (mut admin, mut stats) = (None, None);
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
        while addrs.len() < expected
            || (want_admin && admin.is_none())
            || (want_stats && stats.is_none())
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let parts: Vec<&str> = line.split_whitespace().collect();
                    match parts[..] {
                        ["listening", name, addr] => {
                            addrs.insert(name.to_string(), addr.parse().unwrap());
                        }
                        ["admin", url] => {
                            let a = url.trim_start_matches("http://").trim_end_matches('/');
                            admin = Some(a.parse().unwrap());
                        }
                        ["twemproxy-stats", addr] => stats = Some(addr.parse().unwrap()),
                        _ => {}
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
            admin,
            stats,
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

    /// The config file it runs (rewrite it, then reload).
    pub fn config_path(&self) -> &std::path::Path {
        &self.config.0
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        wait_for(Duration::from_secs(20), || self.child.try_wait().unwrap())
            .expect("switchyard did not exit after SIGTERM")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test backend on a free loopback port: one thread accepts, and each connection is served
/// by `serve` on a thread of its own. It ends with the test process.
pub fn serve_each<F>(serve: F) -> SocketAddr
where
    F: Fn(std::net::TcpStream) + Clone + Send + 'static,
{
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            let serve = serve.clone();
            std::thread::spawn(move || serve(conn));
        }
    });
    addr
}

/// A client connection to `addr` (reads time out after 10 s) as a writer and a buffered
/// reader of the same socket.
pub fn connect_split(addr: SocketAddr) -> (std::net::TcpStream, BufReader<std::net::TcpStream>) {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (s.try_clone().unwrap(), BufReader::new(s))
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

/// A scenario of the demo protocol: the config of one listener `app` over one cluster `app`
/// of demo backends, set up with named setters, and started (backends and proxy) in one
/// call. The listener's codec is the demo protocol's: a 4-byte length, the 8-byte key at
/// offset 4 (unless [`Scenario::keyless`]) and the 4-byte id at offset 12. Defaults: one
/// worker, `by_id` correlation, `round_robin`, `shutdown_timeout = "5s"`.
///
/// ```ignore
/// let app = Scenario::new()
///     .workers(2)
///     .policy("least_outstanding")
///     .persistence("10m")
///     .start(3);
/// let reports = run_clients(app.addr(), plans);
/// assert_eq!(app.backends[0].messages(), 0);
/// ```
#[derive(Clone)]
pub struct Scenario {
    workers: usize,
    buffer_budget: Option<u64>,
    listen: String,
    correlation: String,
    keyed: bool,
    length_width: u8,
    id_field: (u32, u32),
    listener: Vec<String>,
    policy: String,
    weights: Option<Vec<u32>>,
    cluster: Vec<String>,
    pool: Vec<String>,
    persistence: Vec<String>,
    health: Option<String>,
    outlier: Option<String>,
    open_files: Option<u32>,
}

/// `[cluster.health]`: active health checks.
pub struct Health<'a> {
    pub interval: &'a str,
    pub timeout: &'a str,
    pub rise: u32,
    pub fall: u32,
    pub send_hex: &'a str,
    pub expect_regex: &'a str,
}

/// `[cluster.outlier]`: passive outlier ejection.
pub struct Outlier<'a> {
    pub consecutive_failures: u32,
    pub base_ejection: &'a str,
    pub max_ejected_percent: u32,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            workers: 1,
            buffer_budget: None,
            listen: "127.0.0.1:0".into(),
            correlation: "by_id".into(),
            keyed: true,
            length_width: 4,
            id_field: (12, 4),
            listener: Vec::new(),
            policy: "round_robin".into(),
            weights: None,
            cluster: Vec::new(),
            pool: Vec::new(),
            persistence: Vec::new(),
            health: None,
            outlier: None,
            open_files: None,
        }
    }
}

impl Scenario {
    pub fn new() -> Self {
        Self::default()
    }

    // The process.

    /// `workers`.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// `buffer_budget`, in bytes.
    pub fn buffer_budget(mut self, bytes: u64) -> Self {
        self.buffer_budget = Some(bytes);
        self
    }

    /// Runs the proxy with its open-file limit set to `n`.
    pub fn open_files_limit(mut self, n: u32) -> Self {
        self.open_files = Some(n);
        self
    }

    // The listener.

    /// `listen` (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr.to_string();
        self
    }

    /// `correlation`: `by_id` (the default) or `in_order`.
    pub fn correlation(mut self, correlation: &str) -> Self {
        self.correlation = correlation.into();
        self
    }

    /// No key field in the codec: every message is placed freely.
    pub fn keyless(mut self) -> Self {
        self.keyed = false;
        self
    }

    /// The codec's `length_width` (default 4).
    pub fn length_width(mut self, width: u8) -> Self {
        self.length_width = width;
        self
    }

    /// The codec's id field (default offset 12, width 4).
    pub fn id_field(mut self, offset: u32, width: u32) -> Self {
        self.id_field = (offset, width);
        self
    }

    /// `max_connections`.
    pub fn max_connections(self, n: u32) -> Self {
        self.listener_toml(&format!("max_connections = {n}"))
    }

    /// `max_frame_size`, in bytes.
    pub fn max_frame_size(self, bytes: u64) -> Self {
        self.listener_toml(&format!("max_frame_size = {bytes}"))
    }

    /// `max_reply_buffer`, in bytes.
    pub fn max_reply_buffer(self, bytes: u64) -> Self {
        self.listener_toml(&format!("max_reply_buffer = {bytes}"))
    }

    /// `client_idle_timeout`.
    pub fn client_idle_timeout(self, timeout: &str) -> Self {
        self.listener_toml(&format!("client_idle_timeout = \"{timeout}\""))
    }

    /// `frame_timeout`.
    pub fn frame_timeout(self, timeout: &str) -> Self {
        self.listener_toml(&format!("frame_timeout = \"{timeout}\""))
    }

    /// `error_reply_hex`.
    pub fn error_reply_hex(self, template: &str) -> Self {
        self.listener_toml(&format!("error_reply_hex = \"{template}\""))
    }

    /// A raw line of the listener's table, for a key no setter names (such as a misspelt
    /// one).
    pub fn listener_toml(mut self, line: &str) -> Self {
        self.listener.push(line.into());
        self
    }

    // The cluster.

    /// `policy` (default `round_robin`).
    pub fn policy(mut self, policy: &str) -> Self {
        self.policy = policy.into();
        self
    }

    /// Gives the backends these weights, in order.
    pub fn weights(mut self, weights: &[u32]) -> Self {
        self.weights = Some(weights.to_vec());
        self
    }

    /// `request_timeout`.
    pub fn request_timeout(mut self, timeout: &str) -> Self {
        self.cluster
            .push(format!("request_timeout = \"{timeout}\""));
        self
    }

    /// `on_backend_down`.
    pub fn on_backend_down(mut self, what: &str) -> Self {
        self.cluster.push(format!("on_backend_down = \"{what}\""));
        self
    }

    /// `[cluster.persistence]` with this `ttl`.
    pub fn persistence(mut self, ttl: &str) -> Self {
        self.persistence.push(format!("ttl = \"{ttl}\""));
        self
    }

    /// `[cluster.persistence]`'s `max_entries`.
    pub fn persistence_max_entries(mut self, n: u64) -> Self {
        self.persistence.push(format!("max_entries = {n}"));
        self
    }

    /// `[cluster.pool]`'s `connections_per_backend`.
    pub fn connections_per_backend(mut self, n: u32) -> Self {
        self.pool.push(format!("connections_per_backend = {n}"));
        self
    }

    /// `[cluster.pool]`'s `reconnect_backoff_min` and `reconnect_backoff_max`.
    pub fn reconnect_backoff(mut self, min: &str, max: &str) -> Self {
        self.pool.push(format!("reconnect_backoff_min = \"{min}\""));
        self.pool.push(format!("reconnect_backoff_max = \"{max}\""));
        self
    }

    /// `[cluster.pool]`'s `max_queued_bytes`.
    pub fn max_queued_bytes(mut self, bytes: u64) -> Self {
        self.pool.push(format!("max_queued_bytes = {bytes}"));
        self
    }

    /// `[cluster.health]`.
    pub fn health(mut self, h: Health) -> Self {
        self.health = Some(format!(
            "interval = \"{}\"\ntimeout = \"{}\"\nrise = {}\nfall = {}\nsend_hex = \"{}\"\nexpect_regex = \"{}\"\n",
            h.interval, h.timeout, h.rise, h.fall, h.send_hex, h.expect_regex
        ));
        self
    }

    /// `[cluster.outlier]`.
    pub fn outlier(mut self, o: Outlier) -> Self {
        self.outlier = Some(format!(
            "consecutive_failures = {}\nbase_ejection = \"{}\"\nmax_ejected_percent = {}\n",
            o.consecutive_failures, o.base_ejection, o.max_ejected_percent
        ));
        self
    }

    /// The config file, over `backends`.
    pub fn toml(&self, backends: &[TestBackend]) -> String {
        let lines = |v: &[String]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
        let table = |name: &str, body: &str| {
            if body.is_empty() {
                String::new()
            } else {
                format!("[cluster.{name}]\n{body}")
            }
        };
        let budget = self
            .buffer_budget
            .map_or(String::new(), |b| format!("buffer_budget = {b}\n"));
        let key = if self.keyed {
            "key = { offset = 4, width = 8 }\n"
        } else {
            ""
        };
        let list = match &self.weights {
            None => backend_list(backends),
            Some(weights) => {
                assert_eq!(weights.len(), backends.len(), "one weight per backend");
                let items: Vec<String> = backends
                    .iter()
                    .zip(weights)
                    .map(|(b, w)| {
                        format!(
                            "{{ address = \"{}\", name = \"{}\", weight = {w} }}",
                            b.addr, b.name
                        )
                    })
                    .collect();
                format!("[{}]", items.join(", "))
            }
        };
        format!(
            r#"workers = {workers}
{budget}shutdown_timeout = "5s"

[[listener]]
name = "app"
listen = "{listen}"
cluster = "app"
correlation = "{correlation}"
{listener}
[listener.codec]
kind = "length_field"
length_width = {length_width}
{key}id = {{ offset = {id_offset}, width = {id_width} }}

[[cluster]]
name = "app"
policy = "{policy}"
backends = {list}
{cluster}{pool}{persistence}{health}{outlier}"#,
            workers = self.workers,
            listen = self.listen,
            correlation = self.correlation,
            listener = lines(&self.listener),
            length_width = self.length_width,
            id_offset = self.id_field.0,
            id_width = self.id_field.1,
            policy = self.policy,
            cluster = lines(&self.cluster),
            pool = table("pool", &lines(&self.pool)),
            persistence = table("persistence", &lines(&self.persistence)),
            health = table("health", self.health.as_deref().unwrap_or("")),
            outlier = table("outlier", self.outlier.as_deref().unwrap_or("")),
        )
    }

    /// Starts `n` recording demo backends `b1`…`bn` and the proxy in front of them.
    pub fn start(self, n: usize) -> Running {
        self.start_with(backends(n))
    }

    /// Starts the proxy in front of `backends`.
    pub fn start_with(self, backends: Vec<TestBackend>) -> Running {
        let proxy = Proxy::start_limited(&self.toml(&backends), self.open_files);
        Running { proxy, backends }
    }
}

/// A started [`Scenario`]: the proxy and its backends, stopped on drop (keep it bound to a
/// variable for the whole test).
pub struct Running {
    pub proxy: Proxy,
    pub backends: Vec<TestBackend>,
}

impl Running {
    /// The address of the listener `app`.
    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr("app")
    }
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

/// Polls `probe` until it gives a value, and returns it; `None` once `timeout` has passed
/// without one. Returns as soon as the value is there, so a generous timeout costs nothing
/// when all is well. Every wait of the tests goes through here.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // The polling interval: short next to any timeout, long enough not to spin.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) until `cond` holds; panics naming `what` after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    if wait_for(timeout, || cond().then_some(())).is_none() {
        panic!("timed out after {timeout:?} waiting for: {what}");
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

/// Sends one demo request on `s` and reads (bounded) its answer; returns the answer's id.
pub fn round_trip(s: &mut std::net::TcpStream, key: u64, id: u32, payload: &[u8]) -> u32 {
    use std::io::{Read, Write};
    let mut req = Vec::new();
    switchyard::demo::proto::write_request(&mut req, key, id, payload);
    s.write_all(&req).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 16];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; len + 4 - 16];
    s.read_exact(&mut rest).unwrap();
    u32::from_be_bytes(head[12..16].try_into().unwrap())
}

/// One IPv4 TCP socket of this host, as the kernel lists it in `/proc/net/tcp`: what the
/// tests wait on when only the kernel can tell (a listener closed, bytes read).
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    /// For a listening socket, the connections waiting to be accepted; for another, the
    /// bytes received that its owner has not read yet.
    pub queued: u64,
}

pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_LISTEN: u8 = 0x0A;

/// Every IPv4 TCP socket of this host.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    // Addresses are `HEXIP:HEXPORT`, the IP as the kernel's u32 in native byte order.
    fn addr(field: &str) -> Option<SocketAddr> {
        let (ip, port) = field.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        Some(SocketAddr::from((
            ip.to_ne_bytes(),
            u16::from_str_radix(port, 16).ok()?,
        )))
    }
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (_, rx) = f.get(4)?.split_once(':')?;
            Some(TcpSocket {
                local: addr(f.get(1)?)?,
                remote: addr(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                queued: u64::from_str_radix(rx, 16).ok()?,
            })
        })
        .collect()
}

/// Whether a socket listens on `addr`.
pub fn listening_on(addr: SocketAddr) -> bool {
    tcp_sockets()
        .iter()
        .any(|s| s.state == TCP_LISTEN && s.local == addr)
}

/// Whether the server listening on `addr` has accepted `n` connections, none is left
/// waiting, and it has read every byte they sent.
pub fn accepted_and_read(addr: SocketAddr, n: usize) -> bool {
    let sockets = tcp_sockets();
    let waiting: u64 = sockets
        .iter()
        .filter(|s| s.state == TCP_LISTEN && s.local == addr)
        .map(|s| s.queued)
        .sum();
    let conns: Vec<&TcpSocket> = sockets
        .iter()
        .filter(|s| s.state == TCP_ESTABLISHED && s.local == addr)
        .collect();
    waiting == 0 && conns.len() == n && conns.iter().all(|s| s.queued == 0)
}

/// How many of the bytes sent on `client` the other end has not read yet; `None` if its end
/// of the connection is gone.
pub fn unread_by_peer(client: &std::net::TcpStream) -> Option<u64> {
    let (local, peer) = (client.local_addr().ok()?, client.peer_addr().ok()?);
    tcp_sockets()
        .iter()
        .find(|s| s.local == peer && s.remote == local && s.state == TCP_ESTABLISHED)
        .map(|s| s.queued)
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
