//! `switchyard bench`: pipelined load of the demo protocol against three demo backends
//! directly, then through the proxy in front of the same backends (native `length_field`
//! codec, and with `--script` the same protocol framed by a Lua script), in one run.
//! Reports messages/s, answer latency p50/p99, and the proxy workers' CPU time per message
//! (read from `/proc/self/task/*/stat`). With `--tls`, also through a TLS listener
//! (certificates made for the run: [`super::pki`]), and the cost of a full TLS handshake:
//! handshakes per second and the proxy's CPU per handshake.

use super::backend::TestBackend;
use super::client::{self, ClientPlan, ClientReport};
use super::DemoError;
use crate::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `switchyard bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Client connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 32)]
    pub depth: usize,
    /// Payload bytes per message (at least 16; the frame adds 16).
    #[arg(long, default_value_t = 48)]
    pub payload: usize,
    /// Length of each measured phase.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Proxy workers.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Rounds (each: direct, proxied, proxied with the script); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Also measure the proxy with this protocol script framing the same traffic
    /// (e.g. examples/scripts/binary64.lua).
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Also measure the proxy with its admin listener on and `/metrics` and
    /// `/api/overview` scraped every second during the phase (metrics on versus off).
    #[arg(long)]
    pub scraped: bool,
    /// Also measure the proxy with its listener terminating TLS (TLS 1.3, ECDSA P-256):
    /// messages through it, and full handshakes (no resumption) back to back.
    #[arg(long)]
    pub tls: bool,
}

/// What `--tls` needs: the listener's `[listener.tls]` table and a client trusting it.
struct TlsSetup {
    dir: PathBuf,
    listener_toml: String,
    client: Arc<rustls::ClientConfig>,
}

impl TlsSetup {
    fn new() -> Result<TlsSetup, DemoError> {
        let dir = std::env::temp_dir().join(format!("switchyard-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let err = |e: rcgen::Error| DemoError::Check(format!("certificates: {e}"));
        let pki = super::pki::Pki::new(&dir, "bench").map_err(err)?;
        let leaf = pki
            .leaf("listener", &["127.0.0.1"], super::pki::Validity::Now)
            .map_err(err)?;
        // Every handshake a full one: resumption would measure a different thing.
        let client = super::pki::client_config(&pki.ca_pem, false).map_err(DemoError::Check)?;
        Ok(TlsSetup {
            listener_toml: format!(
                "[listener.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n",
                leaf.cert.display(),
                leaf.key.display()
            ),
            dir,
            client,
        })
    }
}

impl Drop for TlsSetup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Phase {
    msgs_per_s: f64,
    p50_us: u32,
    p99_us: u32,
    cpu_ns_per_msg: Option<f64>,
}

/// The proxy config measured: round robin over `backends`, no pins, answers in request
/// order; the codec is native `length_field` or `script`.
fn bench_config(
    backends: &[SocketAddr],
    workers: usize,
    script: Option<&std::path::Path>,
    admin: bool,
    tls: Option<&TlsSetup>,
) -> Result<Config, DemoError> {
    let codec = match script {
        None => "kind = \"length_field\"\nlength_width = 4\nkey = { offset = 4, width = 8 }\nid = { offset = 12, width = 4 }".to_string(),
        Some(p) => format!("kind = \"lua\"\nscript = \"{}\"", p.display()),
    };
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    let text = format!(
        "workers = {workers}\n[[listener]]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\ncluster = \"bench\"\ncorrelation = \"in_order\"\n\
         [listener.codec]\n{codec}\n{}[[cluster]]\nname = \"bench\"\npolicy = \"round_robin\"\nbackends = [{}]\n{}",
        tls.map_or("", |t| t.listener_toml.as_str()),
        list.join(", "),
        if admin {
            "[admin]\nlisten = \"127.0.0.1:0\"\n"
        } else {
            ""
        }
    );
    crate::config::parse(&text, std::path::Path::new("<bench>"))
        .map_err(|e| DemoError::Check(e.to_string()))
}

/// Runs the benchmark and prints a table.
pub fn run(args: BenchArgs) -> Result<(), DemoError> {
    let backends: Vec<TestBackend> = (1..=3)
        .map(|i| TestBackend::start(&format!("b{i}"), false))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let mut targets: Vec<(String, Option<Config>)> = vec![
        ("direct to 3 backends".into(), None),
        (
            "switchyard, native length_field".into(),
            Some(bench_config(&addrs, args.workers, None, false, None)?),
        ),
    ];
    let tls = args.tls.then(TlsSetup::new).transpose()?;
    if let Some(t) = &tls {
        targets.push((
            "switchyard, native, TLS listener".into(),
            Some(bench_config(&addrs, args.workers, None, false, Some(t))?),
        ));
    }
    if args.scraped {
        targets.push((
            "switchyard, native, scraped 1/s".into(),
            Some(bench_config(&addrs, args.workers, None, true, None)?),
        ));
    }
    if let Some(script) = &args.script {
        let script = std::fs::canonicalize(script)?;
        targets.push((
            format!(
                "switchyard, Lua {}",
                script
                    .file_name()
                    .map(|f| f.to_string_lossy())
                    .unwrap_or_default()
            ),
            Some(bench_config(
                &addrs,
                args.workers,
                Some(&script),
                false,
                None,
            )?),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "bench: {} connections × depth {}, {} B frames, {:?} per phase, {} proxy worker(s), {} rounds",
        args.connections,
        args.depth,
        args.payload.max(16) + 16,
        args.duration,
        args.workers,
        args.rounds
    );
    let mut results: Vec<Vec<Phase>> = targets.iter().map(|_| Vec::new()).collect();
    let mut shakes: Vec<(f64, f64)> = Vec::new();
    for round in 1..=args.rounds {
        // The proxied targets take turns going first, so that none always runs on a box
        // the one before it warmed or loaded.
        let mut order: Vec<usize> = (0..targets.len()).collect();
        order[1..].rotate_left((round - 1) % (targets.len() - 1).max(1));
        for i in order {
            let (name, config) = &targets[i];
            let p = match config {
                None => phase(&rt, &args, |c| addrs[c % addrs.len()], None)?,
                Some(config) => {
                    // A fresh proxy per phase, so its worker threads' CPU time is its own.
                    let running = crate::server::start(config.clone())?;
                    let proxy = running.listeners[0].1;
                    let scraper = running.admin.map(Scraper::start);
                    let client = config.listeners[0].tls.as_ref().and(tls.as_ref());
                    let p = phase(
                        &rt,
                        &args,
                        |_| proxy,
                        Some(client.map(|t| t.client.clone())),
                    );
                    drop(scraper);
                    running.shutdown();
                    running.join();
                    p?
                }
            };
            println!(
                "round {round}: {name:<34} {:>9.0} msg/s  p50 {:>5} µs  p99 {:>6} µs  {}",
                p.msgs_per_s,
                p.p50_us,
                p.p99_us,
                p.cpu_ns_per_msg
                    .map_or(String::new(), |c| format!("{c:.0} ns proxy CPU/msg"))
            );
            results[i].push(p);
        }
        if let Some(t) = &tls {
            let config = bench_config(&addrs, args.workers, None, false, Some(t))?;
            let running = crate::server::start(config)?;
            let h = handshakes(&rt, &args, running.listeners[0].1, t.client.clone());
            running.shutdown();
            running.join();
            let h = h?;
            println!(
                "round {round}: {:<34} {:>9.0} handshakes/s  {:.0} µs proxy CPU/handshake",
                "switchyard, full TLS handshakes", h.0, h.1
            );
            shakes.push(h);
        }
    }
    let med = |v: &[Phase], f: fn(&Phase) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    println!("\n| target | msg/s (median) | p50 µs | p99 µs | proxy CPU ns/msg |");
    println!("|---|---|---|---|---|");
    for ((name, _), r) in targets.iter().zip(&results) {
        let cpu = med(r, |p| p.cpu_ns_per_msg.unwrap_or(f64::NAN));
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {} |",
            med(r, |p| p.msgs_per_s),
            med(r, |p| f64::from(p.p50_us)),
            med(r, |p| f64::from(p.p99_us)),
            if cpu.is_nan() {
                "–".to_string()
            } else {
                format!("{cpu:.0}")
            }
        );
    }
    if !shakes.is_empty() {
        let mut rate: Vec<f64> = shakes.iter().map(|h| h.0).collect();
        let mut cpu: Vec<f64> = shakes.iter().map(|h| h.1).collect();
        rate.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        println!(
            "\nfull TLS handshakes (TLS 1.3, ECDSA P-256, {} connections back to back): {:.0}/s, {:.0} µs proxy CPU each (medians)",
            args.connections,
            rate[rate.len() / 2],
            cpu[cpu.len() / 2]
        );
    }
    Ok(())
}

/// Full TLS handshakes with the proxy, `args.connections` at a time, each connection
/// closed once its handshake is done, for `args.duration`: handshakes per second and the
/// proxy workers' CPU microseconds per handshake.
fn handshakes(
    rt: &tokio::runtime::Runtime,
    args: &BenchArgs,
    proxy: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(f64, f64), DemoError> {
    let deadline = Instant::now() + args.duration;
    let cpu_before = worker_cpu_ns();
    let start = Instant::now();
    let done: u64 = rt.block_on(async {
        let tasks: Vec<_> = (0..args.connections)
            .map(|_| {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let s = client::tls_connect(proxy, tls.clone()).await?;
                        client::tls_close(s).await;
                        n += 1;
                    }
                    Ok::<u64, String>(n)
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            match t.await {
                Ok(Ok(n)) => total += n,
                Ok(Err(e)) => return Err(DemoError::Check(format!("bench handshake: {e}"))),
                Err(e) => return Err(DemoError::Check(e.to_string())),
            }
        }
        Ok(total)
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (cpu_before, worker_cpu_ns()) {
        (Some(a), Some(b)) if done > 0 => (b - a) as f64 / done as f64 / 1000.0,
        _ => f64::NAN,
    };
    Ok((done as f64 / elapsed, cpu))
}

/// Fetches `/metrics` and `/api/overview` once a second until dropped.
struct Scraper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scraper {
    fn start(admin: SocketAddr) -> Scraper {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // A failed scrape does not stop the benchmark: the phase measures the proxy.
            let paths = ["/metrics", "/api/overview"];
            let _ = super::scrape(admin, &paths, Duration::from_secs(1), &flag);
        });
        Scraper {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn phase(
    rt: &tokio::runtime::Runtime,
    args: &BenchArgs,
    target: impl Fn(usize) -> SocketAddr,
    // `Some`: the proxy is measured (its clients speak TLS with the config given).
    proxy: Option<Option<Arc<rustls::ClientConfig>>>,
) -> Result<Phase, DemoError> {
    let measure_proxy = proxy.is_some();
    let deadline = Instant::now() + args.duration;
    let cpu_before = measure_proxy.then(worker_cpu_ns).flatten();
    let start = Instant::now();
    let reports: Vec<ClientReport> = rt.block_on(async {
        let tasks: Vec<_> = (0..args.connections)
            .map(|i| {
                let plan = ClientPlan {
                    messages: u64::MAX,
                    depth: args.depth,
                    keys: vec![i as u64],
                    payload: args.payload,
                    deadline: Some(deadline),
                    rate: None,
                    any_order: false,
                    answer_timeout: Duration::from_secs(10),
                    tag: i as u64,
                    prefix: None,
                };
                match proxy.clone().flatten() {
                    Some(tls) => tokio::spawn(client::run_tls(target(i), plan, tls)),
                    None => tokio::spawn(client::run(target(i), plan)),
                }
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_default());
        }
        out
    });
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = measure_proxy.then(worker_cpu_ns).flatten();
    let mut lat = Vec::new();
    let mut answered = 0;
    for r in reports {
        if let Some(e) = r.error {
            return Err(DemoError::Check(format!("bench client failed: {e}")));
        }
        if let Some(m) = r.mismatches.first() {
            return Err(DemoError::Check(format!(
                "bench client got a wrong answer: {m}"
            )));
        }
        answered += r.answered;
        lat.extend(r.latencies_us);
    }
    Ok(Phase {
        msgs_per_s: answered as f64 / elapsed,
        p50_us: client::quantile(&mut lat, 0.5),
        p99_us: client::quantile(&mut lat, 0.99),
        cpu_ns_per_msg: match (cpu_before, cpu_after) {
            (Some(a), Some(b)) if answered > 0 => Some((b - a) as f64 / answered as f64),
            _ => None,
        },
    })
}

/// Total user+system CPU time of this process's `sy-worker-*` threads, in nanoseconds.
pub fn worker_cpu_ns() -> Option<u64> {
    let tick_ns = 1_000_000_000 / 100; // USER_HZ is 100 on Linux.
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.starts_with("sy-worker-") {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        // Fields after the command name (which is in parentheses and may contain spaces).
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        total += (utime + stime) * tick_ns;
    }
    Some(total)
}
