//! The `switchyard` command: the CLI edge (the only place for `anyhow`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use switchyard::server::{Signal, Signals};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A message-level load balancer for TCP protocols"
)]
struct Cli {
    /// Log filter, e.g. `info`, `debug`, `switchyard=debug` (overrides RUST_LOG).
    #[arg(long, global = true)]
    log: Option<String>,
    /// Log line format: `text` for people, `json` (one object per line) for log shippers.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer from a config file until SIGTERM / Ctrl-C.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Listen even where another process already listens on a listener's address (both
        /// then share new connections, each with its own pins: for a zero-downtime upgrade,
        /// where the old process is drained once the new one runs). Without it such an
        /// address is refused.
        #[arg(long)]
        takeover: bool,
    },
    /// Validate a config file and exit (non-zero, naming the key, if it is wrong). With
    /// `--sample`, also run a listener's codec over captured traffic, so a protocol script's
    /// framing is tried on real bytes (loading a script runs only its top level).
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Captured traffic (raw bytes of one direction, or pcap / pcapng) to frame.
        #[arg(long)]
        sample: Option<PathBuf>,
        /// The listener whose codec frames the sample (needed if the config has several).
        #[arg(long, requires = "sample")]
        listener: Option<String>,
        /// Which direction the sample holds.
        #[arg(long, value_enum, default_value = "requests", requires = "sample")]
        direction: switchyard::frames::Side,
        /// In a pcap, the server port of the conversation (default: the listener's port).
        #[arg(long, requires = "sample")]
        port: Option<u16>,
    },
    /// Start 3 local backends, the proxy and a few long-lived clients, and show how
    /// messages spread and keys stick.
    Demo(switchyard::demo::DemoArgs),
    /// Measure messages/s and latency through the proxy against the backends directly.
    Bench(switchyard::demo::bench::BenchArgs),
    /// Offer a fixed rate over long-lived connections, for each correlation mode and codec
    /// family, and report CPU per message and RSS per window: fails if either grows.
    Soak(switchyard::demo::soak::SoakArgs),
    /// Run a listener's codec over captured bytes (raw, pcap or pcapng) and print each
    /// frame's offset, length, key and id, and the backend it would pin to.
    Frames {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The listener whose codec to use.
        #[arg(long)]
        listener: String,
        /// The capture: raw bytes of one direction, or a pcap / pcapng file.
        #[arg(long)]
        input: PathBuf,
        /// Which direction to frame.
        #[arg(long, value_enum, default_value = "requests")]
        direction: switchyard::frames::Side,
        /// In a pcap, the server port of the conversation (default: the listener's port).
        #[arg(long)]
        port: Option<u16>,
    },
    /// A live view of a running balancer in the terminal (over its admin API): traffic per
    /// listener and backend, load, health, pins, errors, reloads. Keys: ↑/↓ select a
    /// backend, d drain, u undrain, q quit.
    Top(switchyard::top::TopArgs),
    /// Where a session key is pinned: backend, since when, hit count (over the admin API).
    Where {
        /// The admin listener, e.g. `http://127.0.0.1:9901` or `127.0.0.1:9901`.
        #[arg(long)]
        admin: String,
        /// The bearer token, if the admin listener needs one (or SWITCHYARD_ADMIN_TOKEN).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// The key is given as hex digits (for binary keys).
        #[arg(long)]
        hex: bool,
        /// The session key: its text, or a number for integer key fields.
        key: String,
    },
    /// Run a demo backend (length-field echo) on an address, for load scripts.
    Backend {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Name echoed in answers.
        #[arg(long, default_value = "backend")]
        name: String,
    },
}

fn init_logging(filter: Option<&str>, format: LogFormat) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let spec = filter
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let targets: Targets = spec.parse().unwrap_or_else(|e| {
        eprintln!("switchyard: ignoring bad log filter `{spec}`: {e}");
        Targets::new().with_default(tracing::Level::INFO)
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .with(targets)
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                fmt.json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .flatten_event(true),
            )
            .with(targets)
            .init(),
    }
}

/// A machine-readable line: scripts and tests wait for it.
fn announce(name: &str, addr: std::net::SocketAddr) {
    use std::io::Write;
    println!("listening {name} {addr}");
    std::io::stdout().flush().ok();
}

/// Runs the command; an error is printed as one line (`Error: …` with its causes), never
/// with a backtrace, even where `RUST_BACKTRACE` is set: it is the user's to act on, not a
/// crash. Exit status 1.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref(), cli.log_format);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut line = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !line.contains(&cause) {
                    line.push_str(": ");
                    line.push_str(&cause);
                }
            }
            eprintln!("Error: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check {
            config,
            sample,
            listener,
            direction,
            port,
        } => {
            let c = switchyard::config::load(&config)?;
            println!(
                "{}: ok ({} listener(s), {} cluster(s), {} worker(s))",
                config.display(),
                c.listeners.len(),
                c.clusters.len(),
                c.workers
            );
            for w in c.warnings() {
                println!("{}: warning: {w}", config.display());
            }
            let Some(sample) = sample else {
                return Ok(());
            };
            let listener = match (listener, c.listeners.as_slice()) {
                (Some(l), _) => l,
                (None, [only]) => only.name.clone(),
                (None, all) => anyhow::bail!(
                    "--listener is needed: {} has listeners {}",
                    config.display(),
                    all.iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let bytes = std::fs::read(&sample)
                .with_context(|| format!("{}: cannot read", sample.display()))?;
            match switchyard::frames::run(&c, &listener, &bytes, direction, port) {
                Ok(r) => {
                    println!(
                        "{}: ok (listener {listener} framed {} frame(s) in {} flow(s))",
                        sample.display(),
                        r.frames,
                        r.flows
                    );
                    Ok(())
                }
                Err((r, e)) => Err(anyhow::anyhow!(
                    "{}: listener {listener}: {}",
                    sample.display(),
                    r.error.unwrap_or_else(|| e.to_string())
                )),
            }
        }
        Command::Run { config, takeover } => {
            let c = switchyard::config::load(&config)?;
            for w in c.warnings() {
                tracing::warn!(config = %config.display(), "{w}");
            }
            let signals = Signals::register().context("registering signal handlers")?;
            let options = switchyard::server::Options {
                takeover,
                config_file: Some(config.clone()),
                announce: Some(std::sync::Arc::new(announce)),
            };
            let running = switchyard::server::start_full(c, options)?;
            for (name, addr) in &running.listeners {
                announce(name, *addr);
            }
            if let Some(a) = running.admin {
                println!("admin http://{a}/");
            }
            if let Some(a) = running.twemproxy_stats {
                println!("twemproxy-stats {a}");
            }
            std::io::Write::flush(&mut std::io::stdout()).ok();
            tracing::info!(config = %config.display(), "switchyard running");
            signals.handle(|signal| match signal {
                Signal::Reload => {
                    // Logged (what changed, or why refused), kept for the admin API, and
                    // each listener bound anew announced.
                    running.reload_file("sighup");
                    true
                }
                Signal::Terminate(name) => {
                    tracing::info!(
                        signal = name,
                        "shutting down: no new connections, finishing in-flight messages"
                    );
                    false
                }
            });
            running.shutdown();
            running.join();
            tracing::info!("shutdown complete");
            Ok(())
        }
        Command::Frames {
            config,
            listener,
            input,
            direction,
            port,
        } => {
            let c = switchyard::config::load(&config)?;
            let bytes = std::fs::read(&input)
                .with_context(|| format!("{}: cannot read", input.display()))?;
            match switchyard::frames::run(&c, &listener, &bytes, direction, port) {
                Ok(report) => {
                    print!("{}", report.text);
                    Ok(())
                }
                Err((report, e)) => {
                    print!("{}", report.text);
                    Err(e.into())
                }
            }
        }
        Command::Demo(args) => Ok(switchyard::demo::run_demo(args)?),
        Command::Bench(args) => Ok(switchyard::demo::bench::run(args)?),
        Command::Soak(args) => Ok(switchyard::demo::soak::run(args)?),
        Command::Top(args) => Ok(switchyard::top::run(args)?),
        Command::Where {
            admin,
            token,
            cluster,
            hex,
            key,
        } => {
            let text =
                switchyard::top::where_is(&admin, token.as_deref(), cluster.as_deref(), &key, hex)?;
            print!("{text}");
            Ok(())
        }
        Command::Backend { listen, name } => {
            let signals = Signals::register()?;
            let b = switchyard::demo::backend::TestBackend::start_at(&name, listen)?;
            announce(&name, b.addr);
            signals.handle(|s| !matches!(s, Signal::Terminate(_)));
            Ok(())
        }
    }
}
