//! `switchyard bench`: pipelined load of the demo protocol against three demo backends
//! directly, then through the proxy in front of the same backends, in one run. Reports
//! messages/s, answer latency p50/p99, and the proxy workers' CPU time per message (read
//! from `/proc/self/task/*/stat`).

use super::backend::TestBackend;
use super::client::{self, ClientPlan, ClientReport};
use super::DemoError;
use std::net::SocketAddr;
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
    /// Payload bytes per message (the frame adds 16).
    #[arg(long, default_value_t = 48)]
    pub payload: usize,
    /// Length of each measured phase.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Proxy workers.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Rounds (each: direct, then proxied); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

struct Phase {
    msgs_per_s: f64,
    p50_us: u32,
    p99_us: u32,
    cpu_ns_per_msg: Option<f64>,
}

/// Runs the benchmark and prints a table.
pub fn run(args: BenchArgs) -> Result<(), DemoError> {
    let backends: Vec<TestBackend> = (1..=3)
        .map(|i| TestBackend::start(&format!("b{i}"), false))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let mut config = super::demo_config(&addrs, args.workers, "round_robin")?;
    // Pure per-message balancing: no pins, answers restored in request order.
    config.clusters[0].persistence = None;
    config.listeners[0].correlation = crate::config::Correlation::InOrder;
    let running = crate::server::start(config)?;
    let proxy = running.listeners[0].1;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "bench: {} connections × depth {}, {} B frames, {:?} per phase, {} proxy worker(s), {} rounds",
        args.connections,
        args.depth,
        args.payload.max(8) + 16,
        args.duration,
        args.workers,
        args.rounds
    );
    let mut direct = Vec::new();
    let mut proxied = Vec::new();
    for round in 1..=args.rounds {
        let d = phase(&rt, &args, |i| addrs[i % addrs.len()], None)?;
        let p = phase(&rt, &args, |_| proxy, Some(()))?;
        println!(
            "round {round}: direct {:>9.0} msg/s p50 {:>5} µs p99 {:>6} µs | proxy {:>9.0} msg/s p50 {:>5} µs p99 {:>6} µs, {:.0} ns CPU/msg",
            d.msgs_per_s, d.p50_us, d.p99_us, p.msgs_per_s, p.p50_us, p.p99_us, p.cpu_ns_per_msg.unwrap_or(f64::NAN)
        );
        direct.push(d);
        proxied.push(p);
    }
    running.shutdown();
    running.join();
    let med = |v: &[Phase], f: fn(&Phase) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    println!("\n| target | msg/s (median) | p50 µs | p99 µs | proxy CPU ns/msg |");
    println!("|---|---|---|---|---|");
    println!(
        "| direct to 3 backends | {:.0} | {:.0} | {:.0} | – |",
        med(&direct, |p| p.msgs_per_s),
        med(&direct, |p| f64::from(p.p50_us)),
        med(&direct, |p| f64::from(p.p99_us))
    );
    println!(
        "| switchyard over 3 backends | {:.0} | {:.0} | {:.0} | {:.0} |",
        med(&proxied, |p| p.msgs_per_s),
        med(&proxied, |p| f64::from(p.p50_us)),
        med(&proxied, |p| f64::from(p.p99_us)),
        med(&proxied, |p| p.cpu_ns_per_msg.unwrap_or(f64::NAN))
    );
    Ok(())
}

fn phase(
    rt: &tokio::runtime::Runtime,
    args: &BenchArgs,
    target: impl Fn(usize) -> SocketAddr,
    measure_proxy: Option<()>,
) -> Result<Phase, DemoError> {
    let deadline = Instant::now() + args.duration;
    let cpu_before = measure_proxy.and_then(|_| worker_cpu_ns());
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
                tokio::spawn(client::run(target(i), plan))
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_default());
        }
        out
    });
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = measure_proxy.and_then(|_| worker_cpu_ns());
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
