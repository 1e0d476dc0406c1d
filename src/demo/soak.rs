//! `switchyard soak`: does the proxy stay as cheap and as small after hours as in its first
//! minute? For each mode, the real binary runs as its own process in front of real backends,
//! and long-lived clients offer a fixed rate of messages, checking every answer. Each window
//! reports messages/s, the proxy's CPU time per message (from `/proc/PID/task/*/schedstat`)
//! and its RSS. The run fails if CPU per message in the last window exceeds the first's by
//! more than `--max-cpu-growth`, if RSS grows by more than `--max-rss-growth` over the
//! second half of the windows (the first half is the proxy settling: buffers and tables
//! reaching their working size), if the offered rate is not held, or if any answer is wrong
//! or missing.
//!
//! Modes: the demo protocol under `length_field` with each correlation (`by_id`,
//! `in_order`, `none` with every answer delivered as a push by session key), a line
//! protocol under `delimiter` (text ids rewritten), the demo protocol framed by a Lua script,
//! and `resp` in front of a real redis-server.

use super::backend::TestBackend;
use super::line::LineBackend;
use super::{proto, DemoError};
use bytes::{Buf, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What runs through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Demo protocol, `length_field`, `by_id` (ids rewritten on shared connections).
    ById,
    /// Demo protocol, `length_field`, `in_order`.
    InOrder,
    /// Demo protocol, `length_field`, `none`: every answer comes back as a push, routed by
    /// the session key's owner.
    None,
    /// A line protocol, `delimiter`, `by_id` with text ids.
    Delimiter,
    /// The demo protocol framed by `examples/scripts/binary64.lua` (`by_id`).
    Lua,
    /// Redis: `resp` in front of a real redis-server, SET and GET.
    Resp,
}

impl Mode {
    const ALL: [Mode; 6] = [
        Mode::ById,
        Mode::InOrder,
        Mode::None,
        Mode::Delimiter,
        Mode::Lua,
        Mode::Resp,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::ById => "length_field by_id",
            Mode::InOrder => "length_field in_order",
            Mode::None => "length_field none + pushes",
            Mode::Delimiter => "delimiter by_id (text ids)",
            Mode::Lua => "lua binary64.lua by_id",
            Mode::Resp => "resp, redis-server",
        }
    }
}

/// `switchyard soak` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Modes to run, one after another (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub mode: Vec<Mode>,
    /// Messages per second offered, in all, spread evenly over the clients.
    #[arg(long, default_value_t = 8000)]
    pub rate: u64,
    /// Long-lived client connections.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Requests in flight per client, at most.
    #[arg(long, default_value_t = 64)]
    pub depth: usize,
    /// Unmeasured time at the start of each mode.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Length of one window.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Windows per mode.
    #[arg(long, default_value_t = 6)]
    pub windows: usize,
    /// The CI-sized run: every mode, 2 000 msg/s, 1 s of warm-up and 4 windows of 2 s each
    /// (about a minute in all). Overrides the rate and timing options. The rate is low
    /// enough that a cost growing with messages served shows as growth between windows
    /// instead of saturating the proxy before the first one.
    #[arg(long)]
    pub ci: bool,
    /// Fail if CPU per message in the last window exceeds the first's by this factor.
    #[arg(long, default_value_t = 1.3)]
    pub max_cpu_growth: f64,
    /// Fail if RSS grows by more than this many KiB over the second half of the windows.
    #[arg(long, default_value_t = 256)]
    pub max_rss_growth: u64,
    /// The proxy binary to soak (default: this one), e.g. an older build to compare.
    #[arg(long)]
    pub proxy_bin: Option<PathBuf>,
}

/// One window's figures.
#[derive(Debug, Clone, Copy)]
struct Window {
    msgs_per_s: f64,
    cpu_us_per_msg: f64,
    rss_kib: u64,
    /// Requests due by the schedule but not yet sent, at the window's end.
    behind: u64,
}

/// Runs the soak; `Err` if any mode failed its checks.
pub fn run(mut args: SoakArgs) -> Result<(), DemoError> {
    if args.ci {
        args.rate = 2000;
        args.warmup = Duration::from_secs(1);
        args.window = Duration::from_secs(2);
        args.windows = 4;
    }
    if args.mode.is_empty() {
        args.mode = Mode::ALL.to_vec();
    }
    args.windows = args.windows.max(2);
    println!(
        "soak: {} msg/s over {} clients (at most {} in flight each), {:?} warm-up, {} windows of {:?}",
        args.rate, args.clients, args.depth, args.warmup, args.windows, args.window
    );
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for mode in args.mode.clone() {
        println!("\n== {}", mode.name());
        match soak_one(mode, &args) {
            Ok((windows, verdict)) => {
                let first = windows[0];
                let last = windows[windows.len() - 1];
                summary.push(format!(
                    "| {} | {:.0} | {:.1} | {:.1} | {:.2} | {} | {:+} |",
                    mode.name(),
                    last.msgs_per_s,
                    first.cpu_us_per_msg,
                    last.cpu_us_per_msg,
                    last.cpu_us_per_msg / first.cpu_us_per_msg,
                    first.rss_kib,
                    last.rss_kib as i64 - first.rss_kib as i64,
                ));
                if let Some(v) = verdict {
                    failures.push(format!("{}: {v}", mode.name()));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", mode.name())),
        }
    }
    println!("\n| mode | msg/s (last window) | CPU µs/msg first | last | last/first | RSS KiB first | RSS KiB last − first |");
    println!("|---|---|---|---|---|---|---|");
    for line in summary {
        println!("{line}");
    }
    if failures.is_empty() {
        println!("\nsoak: every mode held its CPU per message and its RSS");
        Ok(())
    } else {
        Err(DemoError::Check(format!(
            "soak failed:\n  {}",
            failures.join("\n  ")
        )))
    }
}

/// The backends of one mode, kept alive while it runs.
enum Backends {
    Demo(#[allow(dead_code)] Vec<TestBackend>),
    Line(#[allow(dead_code)] Vec<LineBackend>),
    Redis(Child),
}

impl Drop for Backends {
    fn drop(&mut self) {
        if let Backends::Redis(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_backends(mode: Mode) -> Result<(Backends, Vec<SocketAddr>), DemoError> {
    match mode {
        Mode::Delimiter => {
            let b: Vec<LineBackend> = (1..=3)
                .map(|i| LineBackend::start(&format!("b{i}")))
                .collect::<Result<_, _>>()?;
            let addrs = b.iter().map(|b| b.addr).collect();
            Ok((Backends::Line(b), addrs))
        }
        Mode::Resp => {
            let port = free_port()?;
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    DemoError::Check(format!(
                        "cannot start redis-server ({e}): apt-get install redis-server"
                    ))
                })?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let backends = Backends::Redis(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(addr).is_err() {
                if Instant::now() > deadline {
                    return Err(DemoError::Check("redis-server did not start".into()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok((backends, vec![addr]))
        }
        _ => {
            let b: Vec<TestBackend> = (1..=3)
                .map(|i| TestBackend::start(&format!("b{i}"), false))
                .collect::<Result<_, _>>()?;
            let addrs = b.iter().map(|b| b.addr).collect();
            Ok((Backends::Demo(b), addrs))
        }
    }
}

const DEMO_CODEC: &str = "kind = \"length_field\"\nlength_width = 4\nkey = { offset = 4, width = 8 }\nid = { offset = 12, width = 4 }";

/// The proxy's config for `mode`; `script` is the Lua script's path.
fn config(mode: Mode, backends: &[SocketAddr], script: &std::path::Path) -> String {
    let list: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{ address = \"{a}\", name = \"b{}\" }}", i + 1))
        .collect();
    let (correlation, codec, policy) = match mode {
        Mode::ById => ("by_id", DEMO_CODEC.to_string(), "least_outstanding"),
        Mode::InOrder => ("in_order", DEMO_CODEC.to_string(), "round_robin"),
        Mode::None => ("none", DEMO_CODEC.to_string(), "round_robin"),
        Mode::Delimiter => (
            "by_id",
            "kind = \"delimiter\"\ndelimiter = \"\\n\"\nkey_token = 0\nid_token = 1".to_string(),
            "p2c_ewma",
        ),
        Mode::Lua => (
            "by_id",
            format!("kind = \"lua\"\nscript = \"{}\"", script.display()),
            "least_outstanding",
        ),
        Mode::Resp => ("in_order", "kind = \"resp\"".to_string(), "ketama"),
    };
    let persistence = if mode == Mode::Resp {
        ""
    } else {
        "[cluster.persistence]\nttl = \"10m\"\n"
    };
    format!(
        "workers = 1\nshutdown_timeout = \"2s\"\n\n[[listener]]\nname = \"soak\"\nlisten = \"127.0.0.1:0\"\ncluster = \"soak\"\n\
         correlation = \"{correlation}\"\n[listener.codec]\n{codec}\n\n[[cluster]]\nname = \"soak\"\npolicy = \"{policy}\"\n\
         backends = [{}]\n{persistence}",
        list.join(", ")
    )
}

/// The proxy binary running a config, killed on drop.
struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchyard-soak-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_proxy(
    mode: Mode,
    backends: &[SocketAddr],
    bin: Option<&std::path::Path>,
) -> Result<ProxyProcess, DemoError> {
    let dir = TempDir::new()?;
    let script = dir.0.join("binary64.lua");
    std::fs::write(&script, include_str!("../../examples/scripts/binary64.lua"))?;
    let path = dir.0.join("soak.toml");
    std::fs::write(&path, config(mode, backends, &script))?;
    let bin = match bin {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe()?,
    };
    let mut child = Command::new(bin)
        .args(["--log", "warn", "run", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| DemoError::Check("no stdout".into()))?;
    let mut proxy = ProxyProcess {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        _dir: dir,
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["listening", "soak", addr] => {
            proxy.addr = addr
                .parse()
                .map_err(|e| DemoError::Check(format!("{addr}: {e}")))?;
            Ok(proxy)
        }
        _ => Err(DemoError::Check(format!(
            "the proxy did not start (it printed {line:?})"
        ))),
    }
}

/// CPU time of every thread of process `pid`, in nanoseconds.
fn cpu_ns(pid: u32) -> Result<u64, DemoError> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(entry?.path().join("schedstat"))?;
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64, DemoError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| DemoError::Check("no VmRSS".into()))
}

/// What the clients share with the measuring thread.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    answered: AtomicU64,
    /// The first wrong or missing answer.
    error: Mutex<Option<String>>,
    stop: AtomicBool,
}

impl Counters {
    fn fail(&self, e: String) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }
}

/// Runs one mode; returns its windows and, if it failed a check, why.
fn soak_one(mode: Mode, args: &SoakArgs) -> Result<(Vec<Window>, Option<String>), DemoError> {
    let (_backends, addrs) = start_backends(mode)?;
    let proxy = start_proxy(mode, &addrs, args.proxy_bin.as_deref())?;
    let pid = proxy.child.id();
    let counters = Arc::new(Counters::default());
    let per_client = args.rate as f64 / args.clients.max(1) as f64;
    let load = {
        let (counters, addr, clients, depth) =
            (counters.clone(), proxy.addr, args.clients, args.depth);
        std::thread::Builder::new()
            .name("soak-clients".into())
            .spawn(move || -> std::io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let tasks: Vec<_> = (0..clients)
                        .map(|c| {
                            let counters = counters.clone();
                            tokio::spawn(async move {
                                if let Err(e) = client(
                                    addr,
                                    load_for(mode, c as u64),
                                    per_client,
                                    depth,
                                    &counters,
                                )
                                .await
                                {
                                    counters.fail(format!("client {c}: {e}"));
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        let _ = t.await;
                    }
                });
                Ok(())
            })?
    };
    let started = Instant::now();
    std::thread::sleep(args.warmup);
    println!(
        "{:>6} {:>10} {:>12} {:>10} {:>8}",
        "window", "msg/s", "CPU µs/msg", "RSS KiB", "behind"
    );
    let mut windows = Vec::new();
    let mut last = (
        Instant::now(),
        counters.answered.load(Ordering::Relaxed),
        cpu_ns(pid)?,
    );
    for w in 1..=args.windows {
        std::thread::sleep(args.window);
        let now = Instant::now();
        let answered = counters.answered.load(Ordering::Relaxed);
        let cpu = cpu_ns(pid)?;
        let msgs = answered - last.1;
        let due = (now.duration_since(started).as_secs_f64() * args.rate as f64) as u64;
        let window = Window {
            msgs_per_s: msgs as f64 / now.duration_since(last.0).as_secs_f64(),
            cpu_us_per_msg: (cpu - last.2) as f64 / 1000.0 / msgs.max(1) as f64,
            rss_kib: rss_kib(pid)?,
            behind: due.saturating_sub(counters.sent.load(Ordering::Relaxed)),
        };
        println!(
            "{w:>6} {:>10.0} {:>12.2} {:>10} {:>8}",
            window.msgs_per_s, window.cpu_us_per_msg, window.rss_kib, window.behind
        );
        windows.push(window);
        last = (now, answered, cpu);
        if let Some(e) = counters
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            counters.stop.store(true, Ordering::Relaxed);
            let _ = load.join();
            return Ok((windows, Some(e)));
        }
    }
    counters.stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let error = counters
        .error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (first, end) = (windows[0], windows[windows.len() - 1]);
    let growth = end.cpu_us_per_msg / first.cpu_us_per_msg;
    // Over the second half: from the end of the middle window on.
    let settled = windows[windows.len() / 2 - 1].rss_kib;
    let rss_growth = windows[windows.len() / 2..]
        .iter()
        .map(|w| w.rss_kib.saturating_sub(settled))
        .max()
        .unwrap_or(0);
    let held = windows
        .iter()
        .all(|w| w.msgs_per_s >= 0.95 * args.rate as f64);
    println!(
        "CPU per message last/first {growth:.2} (limit {}); RSS growth over the second half {rss_growth} KiB (limit {}); {}",
        args.max_cpu_growth,
        args.max_rss_growth,
        if held {
            "held the offered rate in every window".to_string()
        } else {
            format!("fell below 95% of the offered {} msg/s", args.rate)
        }
    );
    let verdict = if let Some(e) = error {
        Some(e)
    } else if growth > args.max_cpu_growth {
        Some(format!(
            "CPU per message grew {growth:.2}x from the first window to the last"
        ))
    } else if rss_growth > args.max_rss_growth {
        Some(format!(
            "RSS grew {rss_growth} KiB over the second half of the run"
        ))
    } else if !held {
        Some(format!(
            "did not hold the offered {} msg/s in every window",
            args.rate
        ))
    } else {
        None
    };
    Ok((windows, verdict))
}

/// One client's protocol: its requests, how answers are cut, and how each is checked.
trait Load: Send {
    /// Appends request number `n`.
    fn request(&mut self, n: u64, out: &mut Vec<u8>);
    /// The length of the answer at the head of `buf`; `Ok(None)`: incomplete.
    fn answer_len(&self, buf: &[u8]) -> Result<Option<usize>, String>;
    /// Checks one answer against the request it answers.
    fn check(&mut self, answer: &[u8]) -> Result<(), String>;
    /// Requests awaiting answers.
    fn in_flight(&self) -> usize;
}

fn load_for(mode: Mode, client: u64) -> Box<dyn Load> {
    match mode {
        Mode::ById | Mode::Lua => Box::new(Demo::new(client, false)),
        Mode::InOrder => Box::new(Demo::new(client, true)),
        Mode::None => Box::new(Demo::new(client, false)),
        Mode::Delimiter => Box::new(Lines::new(client)),
        Mode::Resp => Box::new(Redis::new(client)),
    }
}

/// Session keys per client.
const KEYS: u64 = 16;

/// The demo protocol: answers (or pushes) carry the request's key and payload; `ordered`
/// answers come in request order, the others are found by the payload's number.
struct Demo {
    client: u64,
    ordered: bool,
    fifo: VecDeque<u64>,
    waiting: HashMap<u64, u64>,
}

impl Demo {
    fn new(client: u64, ordered: bool) -> Self {
        Demo {
            client,
            ordered,
            fifo: VecDeque::new(),
            waiting: HashMap::new(),
        }
    }

    fn key(&self, n: u64) -> u64 {
        (self.client << 32) | (n % KEYS)
    }
}

impl Load for Demo {
    fn request(&mut self, n: u64, out: &mut Vec<u8>) {
        let mut payload = [0u8; 32];
        payload[..8].copy_from_slice(&n.to_be_bytes());
        payload[8..16].copy_from_slice(&self.client.to_be_bytes());
        proto::write_request(out, self.key(n), n as u32, &payload);
        if self.ordered {
            self.fifo.push_back(n);
        } else {
            self.waiting.insert(n, self.key(n));
        }
    }

    fn answer_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        let Some(head) = buf.get(..4) else {
            return Ok(None);
        };
        let len = 4 + u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        Ok((buf.len() >= len).then_some(len))
    }

    fn check(&mut self, answer: &[u8]) -> Result<(), String> {
        let m = proto::parse(answer).ok_or("answer too short")?;
        let (_, payload) = proto::answer_parts(m.rest).ok_or("malformed answer")?;
        let n = payload
            .get(..8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
            .ok_or("answer without its payload")?;
        let want = if self.ordered {
            self.fifo
                .pop_front()
                .filter(|w| *w == n)
                .map(|w| self.key(w))
        } else {
            self.waiting.remove(&n)
        };
        match want {
            Some(key) if key == m.key && (self.ordered || m.id == n as u32 || m.id == u32::MAX) => {
                Ok(())
            }
            _ => Err(format!(
                "answer for request {n} (key {}, id {}) matches nothing sent",
                m.key, m.id
            )),
        }
    }

    fn in_flight(&self) -> usize {
        self.fifo.len() + self.waiting.len()
    }
}

/// The line protocol: `KEY ID PAYLOAD`, answered `KEY ID NAME PAYLOAD`, ids in text.
struct Lines {
    client: u64,
    waiting: HashMap<u64, u64>,
}

impl Lines {
    fn new(client: u64) -> Self {
        Lines {
            client,
            waiting: HashMap::new(),
        }
    }
}

impl Load for Lines {
    fn request(&mut self, n: u64, out: &mut Vec<u8>) {
        let key = n % KEYS;
        out.extend_from_slice(format!("c{}k{key} {n} payload-{n}\n", self.client).as_bytes());
        self.waiting.insert(n, key);
    }

    fn answer_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        Ok(memchr::memchr(b'\n', buf).map(|i| i + 1))
    }

    fn check(&mut self, answer: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(answer).map_err(|e| e.to_string())?;
        let words: Vec<&str> = text.split_whitespace().collect();
        let [key, id, _name, payload] = words[..] else {
            return Err(format!("malformed answer {text:?}"));
        };
        let n: u64 = id.parse().map_err(|_| format!("bad id in {text:?}"))?;
        let want = self.waiting.remove(&n);
        if want.map(|k| format!("c{}k{k}", self.client)).as_deref() == Some(key)
            && payload == format!("payload-{n}")
        {
            Ok(())
        } else {
            Err(format!("answer {text:?} matches nothing sent"))
        }
    }

    fn in_flight(&self) -> usize {
        self.waiting.len()
    }
}

/// Redis: SET a key, then GET it back; answers in order.
struct Redis {
    client: u64,
    expected: VecDeque<Vec<u8>>,
}

impl Redis {
    fn new(client: u64) -> Self {
        Redis {
            client,
            expected: VecDeque::new(),
        }
    }
}

impl Load for Redis {
    fn request(&mut self, n: u64, out: &mut Vec<u8>) {
        let key = format!("soak:{}:{}", self.client, (n / 2) % (KEYS * 4));
        if n % 2 == 0 {
            let value = format!("v{n}");
            let cmd = crate::codec::resp::build(b"SET", &[key.as_bytes(), value.as_bytes()]);
            out.extend_from_slice(&cmd.frame);
            self.expected.push_back(b"+OK\r\n".to_vec());
        } else {
            let cmd = crate::codec::resp::build(b"GET", &[key.as_bytes()]);
            out.extend_from_slice(&cmd.frame);
            let value = format!("v{}", n - 1);
            self.expected
                .push_back(format!("${}\r\n{value}\r\n", value.len()).into_bytes());
        }
    }

    fn answer_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        crate::codec::resp::value_len(buf, 1 << 20).map_err(|e| e.to_string())
    }

    fn check(&mut self, answer: &[u8]) -> Result<(), String> {
        match self.expected.pop_front() {
            Some(want) if want == answer => Ok(()),
            want => Err(format!(
                "expected {:?}, got {:?}",
                want.map(|w| String::from_utf8_lossy(&w).into_owned()),
                String::from_utf8_lossy(answer)
            )),
        }
    }

    fn in_flight(&self) -> usize {
        self.expected.len()
    }
}

/// One long-lived client: sends request `n` at `n / rate` seconds (bounded by `depth` in
/// flight), checks every answer, until asked to stop; then waits for what is in flight.
async fn client(
    addr: SocketAddr,
    mut load: Box<dyn Load>,
    rate: f64,
    depth: usize,
    counters: &Counters,
) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    let start = Instant::now();
    let mut n = 0u64;
    let mut reported = 0u64;
    let mut wbuf = Vec::new();
    let mut rbuf = BytesMut::with_capacity(64 << 10);
    let mut last_answer = Instant::now();
    loop {
        let stopping = counters.stop.load(Ordering::Relaxed);
        if stopping && load.in_flight() == 0 {
            return Ok(());
        }
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while !stopping && n < due && load.in_flight() < depth {
            load.request(n, &mut wbuf);
            n += 1;
        }
        if !wbuf.is_empty() {
            counters.sent.fetch_add(n - reported, Ordering::Relaxed);
            reported = n;
            s.write_all(&wbuf)
                .await
                .map_err(|e| format!("write: {e}"))?;
            wbuf.clear();
        }
        // The next request's time, unless only answers can move things on; either way wake
        // now and then to notice a stop.
        let tick = Instant::now() + Duration::from_millis(50);
        let wake = if stopping || load.in_flight() >= depth {
            tick
        } else {
            (start + Duration::from_secs_f64((n + 1) as f64 / rate)).min(tick)
        };
        tokio::select! {
            r = s.read_buf(&mut rbuf) => {
                match r {
                    Ok(0) => return Err(format!("the proxy closed the connection with {} in flight", load.in_flight())),
                    Ok(_) => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
                while let Some(len) = load.answer_len(&rbuf)? {
                    load.check(&rbuf[..len])?;
                    rbuf.advance(len);
                    counters.answered.fetch_add(1, Ordering::Relaxed);
                }
                last_answer = Instant::now();
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        if load.in_flight() > 0 && last_answer.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "no answer for 10 s with {} in flight",
                load.in_flight()
            ));
        }
    }
}
