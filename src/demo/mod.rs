//! Real, tiny backends and load clients for the demo protocol ([`proto`]), used by
//! `switchyard demo`, `switchyard bench` and the integration tests: everything on loopback,
//! every loop bounded in count and time.

pub mod backend;
pub mod bench;
pub mod client;
pub mod line;
pub mod nsd;
pub mod pki;
pub mod proto;
mod serve;
pub mod sip;
pub mod soak;

use crate::config::Config;
use backend::TestBackend;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Why the demo or the bench failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Sockets, threads or runtimes.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The proxy would not start.
    #[error("{0}")]
    Server(#[from] crate::server::ServerError),
    /// A check the demo makes failed.
    #[error("{0}")]
    Check(String),
}

/// `switchyard demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long the clients run, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Long-lived client connections.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Session keys per client.
    #[arg(long, default_value_t = 6)]
    pub keys: u64,
    /// Requests per second per client.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// The admin listener (metrics, API, status page); `off` for none. If the address is
    /// taken, a free port is used instead.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: String,
}

/// A ready-made config: one `by_id` listener on a free loopback port in front of
/// `backends`, with key pinning. Written as TOML and validated like any config file, so the
/// demo runs with the documented defaults.
/// `extra` is TOML appended (an `[admin]` section, say).
pub(crate) fn demo_config(
    backends: &[SocketAddr],
    workers: usize,
    policy: &str,
    extra: &str,
) -> Result<Config, DemoError> {
    let list: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{ address = \"{a}\", name = \"b{}\" }}", i + 1))
        .collect();
    let text = format!(
        r#"workers = {workers}
shutdown_timeout = "5s"

[[listener]]
name = "demo"
listen = "127.0.0.1:0"
cluster = "demo"
correlation = "by_id"
[listener.codec]
kind = "length_field"
length_width = 4
key = {{ offset = 4, width = 8 }}
id = {{ offset = 12, width = 4 }}

[[cluster]]
name = "demo"
policy = "{policy}"
backends = [{}]
pool = {{ connections_per_backend = 2, reconnect_backoff_max = "2s" }}
[cluster.persistence]
ttl = "10m"
max_entries = 100000
{extra}
"#,
        list.join(", ")
    );
    crate::config::parse(&text, std::path::Path::new("<demo>"))
        .map_err(|e| DemoError::Check(e.to_string()))
}

/// Fetches `paths` from the admin listener at `admin`, then sleeps `every`, until `stop`;
/// the first fetch that gets no answer ends it with why (a pin lookup's 404, "no live
/// pin", is an answer). Used by `bench --scraped` and the soak's observed mode.
pub(crate) fn scrape(
    admin: SocketAddr,
    paths: &[&str],
    every: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for path in paths {
            let url = format!("http://{admin}{path}");
            match agent.get(&url).call() {
                Ok(r) => {
                    let _ = r.into_string();
                }
                Err(ureq::Error::Status(404, _)) if path.starts_with("/api/sessions") => {}
                Err(e) => return Err(format!("scraping {url}: {e}")),
            }
        }
        std::thread::sleep(every);
    }
    Ok(())
}

/// Runs the demo: 3 backends, the proxy, `clients` long-lived clients; prints a live table.
pub fn run_demo(args: DemoArgs) -> Result<(), DemoError> {
    let backends: Vec<TestBackend> = (1..=3)
        .map(|i| TestBackend::start(&format!("b{i}"), false))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let admin = match args.admin.as_str() {
        "off" => None,
        a => Some(
            a.parse::<SocketAddr>()
                .map_err(|e| DemoError::Check(format!("--admin {a}: {e}")))?,
        ),
    };
    // A taken admin port (a second demo) falls back to a free one.
    let admin = admin.map(|a| {
        if std::net::TcpListener::bind(a).is_ok() {
            a
        } else {
            SocketAddr::new(a.ip(), 0)
        }
    });
    let extra = admin.map_or(String::new(), |a| format!("[admin]\nlisten = \"{a}\"\n"));
    let config = demo_config(&addrs, 1, "least_outstanding", &extra)?;
    let running = crate::server::start(config)?;
    let proxy = running.listeners[0].1;
    println!(
        "Switchyard demo: proxy on {proxy}, backends b1 {} · b2 {} · b3 {}",
        addrs[0], addrs[1], addrs[2]
    );
    if let Some(a) = running.admin {
        println!(
            "admin: status page http://{a}/ · metrics http://{a}/metrics · `switchyard top --admin {a}`"
        );
    }
    println!(
        "{} long-lived clients × {} session keys each, {} msg/s each, for {:?}; policy least_outstanding, by_id, keys pinned.\n",
        args.clients, args.keys, args.rate, args.duration
    );
    let deadline = Instant::now() + args.duration;
    let plans: Vec<client::ClientPlan> = (0..args.clients)
        .map(|c| client::ClientPlan {
            messages: u64::MAX,
            depth: 8,
            keys: (0..args.keys).map(|k| 1000 * (c as u64 + 1) + k).collect(),
            payload: 32,
            deadline: Some(deadline),
            rate: Some(args.rate),
            any_order: true,
            answer_timeout: Duration::from_secs(5),
            tag: c as u64,
            prefix: None,
        })
        .collect();
    let clients = std::thread::spawn(move || -> std::io::Result<Vec<client::ClientReport>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(async {
            let tasks: Vec<_> = plans
                .into_iter()
                .map(|p| tokio::spawn(client::run(proxy, p)))
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap_or_default());
            }
            out
        }))
    });
    println!(
        "{:>5}  {:>8}   {:>10} {:>10} {:>10}   {:>8}",
        "t", "msg/s", "b1", "b2", "b3", "pinned"
    );
    let generation = running.current();
    let table = generation.upstreams[0].cluster.sessions.as_ref();
    let start = Instant::now();
    let offered = args.rate * args.clients as u64;
    let mut per_second = Vec::new();
    let mut last = (start, 0u64);
    while Instant::now() < deadline {
        std::thread::sleep(
            Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())),
        );
        let counts: Vec<u64> = backends.iter().map(TestBackend::messages).collect();
        let total: u64 = counts.iter().sum();
        let now = Instant::now();
        let span = now.duration_since(last.0).as_secs_f64();
        // Whole seconds only: the last, partial one says little about the rate.
        if span >= 0.9 {
            per_second.push((total - last.1) as f64 / span);
        }
        println!(
            "{:>4}s  {:>8.0}   {:>10} {:>10} {:>10}   {:>8}",
            start.elapsed().as_secs(),
            (total - last.1) as f64 / span.max(1e-3),
            counts[0],
            counts[1],
            counts[2],
            table.map_or(0, |t| t.len())
        );
        last = (now, total);
    }
    let reports = clients
        .join()
        .map_err(|_| DemoError::Check("the client thread panicked".into()))??;
    if let Some(a) = running.admin {
        agrees(a, &backends)?;
    }
    running.shutdown();
    running.join();
    summarize(&backends, &reports)?;
    held_rate(offered, &per_second)
}

/// Checks that the admin API and `/metrics` counted what the backends themselves counted.
fn agrees(admin: SocketAddr, backends: &[TestBackend]) -> Result<(), DemoError> {
    let fetch = |path: &str| {
        let url = format!("http://{admin}{path}");
        ureq::get(&url)
            .call()
            .map_err(|e| DemoError::Check(format!("{url}: {e}")))
    };
    let v: serde_json::Value = fetch("/api/backends")?.into_json()?;
    let metrics = fetch("/metrics")?.into_string()?;
    let mut line = Vec::new();
    for b in backends {
        let row = v
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["name"] == b.name.as_str());
        let count = |k: &str| row.and_then(|x| x[k].as_u64()).unwrap_or(0);
        let own = b.messages();
        let series = format!(
            "switchyard_backend_messages_total{{cluster=\"demo\",backend=\"{}\",direction=\"request\"}} {own}\n",
            b.name
        );
        if !metrics.contains(&series) {
            return Err(DemoError::Check(format!(
                "/metrics lacks `{}` (the backend itself served {own})",
                series.trim_end()
            )));
        }
        if count("requests") != own || count("answers") != own {
            return Err(DemoError::Check(format!(
                "the admin API counted {} requests to and {} answers from {}; the backend itself served {own}",
                count("requests"),
                count("answers"),
                b.name
            )));
        }
        line.push(format!("{} {own}", b.name));
    }
    println!(
        "\nthe admin API and /metrics agree with the backends' own counts: {}",
        line.join(" · ")
    );
    Ok(())
}

/// Says whether every whole second carried the offered rate (within 5%), or how far the
/// proxy fell behind.
fn held_rate(offered: u64, per_second: &[f64]) -> Result<(), DemoError> {
    let lowest = per_second.iter().copied().fold(f64::INFINITY, f64::min);
    if per_second.is_empty() {
        return Ok(());
    }
    let short: Vec<usize> = (0..per_second.len())
        .filter(|&i| per_second[i] < 0.95 * offered as f64)
        .collect();
    if short.is_empty() {
        println!(
            "\nrate: held the offered {offered} msg/s in every second (lowest {lowest:.0} msg/s)"
        );
        Ok(())
    } else {
        let msg = format!(
            "fell behind the offered {offered} msg/s in {} of {} seconds, the lowest at {lowest:.0} msg/s ({:.0}% of offered)",
            short.len(),
            per_second.len(),
            100.0 * lowest / offered as f64
        );
        println!("\nrate: {msg}");
        Err(DemoError::Check(msg))
    }
}

fn summarize(backends: &[TestBackend], reports: &[client::ClientReport]) -> Result<(), DemoError> {
    let total: u64 = backends.iter().map(TestBackend::messages).sum();
    println!("\nmessages per backend:");
    for b in backends {
        let n = b.messages();
        println!(
            "  {}  {:>9}  {:5.1}%",
            b.name,
            n,
            100.0 * n as f64 / total.max(1) as f64
        );
    }
    let mut keys: HashMap<u64, Vec<String>> = HashMap::new();
    for r in reports {
        if let Some(e) = &r.error {
            return Err(DemoError::Check(format!("a client failed: {e}")));
        }
        if let Some(m) = r.mismatches.first() {
            return Err(DemoError::Check(format!(
                "a client got a wrong answer: {m}"
            )));
        }
        for (k, names) in &r.key_backends {
            keys.entry(*k).or_default().extend(names.iter().cloned());
        }
    }
    let sticky = keys.values().filter(|v| v.len() == 1).count();
    println!(
        "\nsession keys: {} seen, {} answered by exactly one backend",
        keys.len(),
        sticky
    );
    let mut sample: Vec<_> = keys.iter().collect();
    sample.sort();
    for (k, names) in sample.iter().take(4) {
        let per: u64 = backends
            .iter()
            .filter_map(|b| b.log.per_key.lock().ok().and_then(|m| m.get(k).copied()))
            .sum();
        println!(
            "  key {k:>5} → {} ({per} messages, all to that backend)",
            names.join(",")
        );
    }
    if sticky != keys.len() {
        return Err(DemoError::Check(
            "some key was answered by more than one backend".into(),
        ));
    }
    Ok(())
}
