//! Setting a soak mode up: its real backends, the proxy as its own process with the mode's
//! config, and reading that process's CPU time and RSS from `/proc`.

use super::mode::Mode;
use crate::demo::backend::TestBackend;
use crate::demo::line::LineBackend;
use crate::demo::nsd::Nsd;
use crate::demo::pki::Validity;
use crate::demo::DemoError;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The backends of one mode, kept alive while it runs.
pub(super) enum Backends {
    Demo(#[allow(dead_code)] Vec<TestBackend>),
    Line(#[allow(dead_code)] Vec<LineBackend>),
    Redis(Child),
    /// A TLS redis-server, and the folder of the mode's certificates.
    RedisTls(Child, #[allow(dead_code)] TempDir),
    Dns(#[allow(dead_code)] Vec<Nsd>),
    Sip(#[allow(dead_code)] Vec<crate::demo::sip::SipServer>),
}

impl Drop for Backends {
    fn drop(&mut self) {
        if let Backends::Redis(child) | Backends::RedisTls(child, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nobody listens on now.
pub(super) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(super) fn start_backends(mode: Mode) -> Result<(Backends, Vec<SocketAddr>), DemoError> {
    match mode {
        Mode::Dns => {
            let servers: Vec<Nsd> = (0..3)
                .map(|_| Nsd::start(super::load::DNS_NAMES))
                .collect::<Result<_, _>>()
                .map_err(|e| DemoError::Check(format!("cannot start nsd: {e}")))?;
            let addrs = servers.iter().map(|s| s.addr).collect();
            // nsd listens before its zone is loaded: wait for an answer from each.
            for &a in &addrs {
                super::client::wait_dns_answers(a)?;
            }
            Ok((Backends::Dns(servers), addrs))
        }
        Mode::Sip => {
            let b: Vec<crate::demo::sip::SipServer> = (0..3)
                .map(|_| crate::demo::sip::SipServer::start())
                .collect::<Result<_, _>>()?;
            let addrs = b.iter().map(|b| b.addr).collect();
            Ok((Backends::Sip(b), addrs))
        }
        Mode::Delimiter => {
            let b: Vec<LineBackend> = (1..=3)
                .map(|i| LineBackend::start(&format!("b{i}")))
                .collect::<Result<_, _>>()?;
            let addrs = b.iter().map(|b| b.addr).collect();
            Ok((Backends::Line(b), addrs))
        }
        Mode::Resp | Mode::Tls => {
            let port = free_port()?.to_string();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
            let dir = if mode == Mode::Tls {
                let dir = TempDir::at(tls_dir())?;
                let err = |e: rcgen::Error| DemoError::Check(format!("certificates: {e}"));
                let pki = crate::demo::pki::Pki::new(&dir.0, "soak").map_err(err)?;
                let names = ["127.0.0.1", "redis.soak.test"];
                let redis = pki.leaf("redis", &names, Validity::Now).map_err(err)?;
                pki.leaf("listener", &names, Validity::Now).map_err(err)?;
                cmd.args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(&redis.cert)
                .arg("--tls-key-file")
                .arg(&redis.key)
                .arg("--tls-ca-cert-file")
                .arg(&pki.ca_pem);
                Some(dir)
            } else {
                cmd.args(["--port", &port]);
                None
            };
            let child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    DemoError::Check(format!(
                        "cannot start redis-server ({e}): apt-get install redis-server"
                    ))
                })?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>().unwrap_or(0)));
            let backends = match dir {
                Some(dir) => Backends::RedisTls(child, dir),
                None => Backends::Redis(child),
            };
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

pub(super) const DEMO_CODEC: &str = "kind = \"length_field\"\nlength_width = 4\nkey = { offset = 4, width = 8 }\nid = { offset = 12, width = 4 }";

/// The proxy's config for `mode`; `script` is the Lua script's path.
pub(super) fn config(mode: Mode, backends: &[SocketAddr], script: &std::path::Path) -> String {
    let list: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{ address = \"{a}\", name = \"b{}\" }}", i + 1))
        .collect();
    let (correlation, codec, policy) = match mode {
        Mode::ById | Mode::Poison | Mode::Observed => {
            ("by_id", DEMO_CODEC.to_string(), "least_outstanding")
        }
        Mode::Dns => (
            "by_id",
            "kind = \"dns\"\nkey = \"qname\"".to_string(),
            "maglev",
        ),
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
        Mode::Tls => {
            let d = tls_dir();
            (
                "in_order",
                format!(
                    "kind = \"resp\"\n[listener.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n",
                    d.join("listener.pem").display(),
                    d.join("listener.key").display()
                ),
                "source",
            )
        }
        Mode::Sip => (
            "by_id_as_sent",
            format!(
                "kind = \"lua\"\nscript = \"{}\"",
                script.with_file_name("sip.lua").display()
            ),
            "least_sessions",
        ),
    };
    let persistence = if matches!(mode, Mode::Resp | Mode::Dns | Mode::Tls) {
        ""
    } else {
        "[cluster.persistence]\nttl = \"10m\"\n"
    };
    // The poisoner's requests fail with an error answer (the demo answer named ERR).
    let listener = if mode == Mode::Poison {
        "retry_on_backend_close = true\nerror_reply_hex = \"00000000 {key} {id} 03 455252 {reason}\"\n"
    } else if mode == Mode::Tls {
        "proxy_protocol = true\n"
    } else {
        ""
    };
    let admin = if mode == Mode::Sip {
        "\n[admin]\nlisten = \"127.0.0.1:0\"\n".to_string()
    } else if mode == Mode::Observed {
        format!(
            "\n[admin]\nlisten = \"127.0.0.1:0\"\n[admin.access_log]\npath = \"{}\"\nsample = 0.01\n",
            script.with_file_name("access.log").display()
        )
    } else if mode == Mode::Tls {
        format!(
            "[cluster.tls]\nca = \"{}\"\nserver_name = \"redis.soak.test\"\n",
            tls_dir().join("soak-ca.pem").display()
        )
    } else {
        String::new()
    };
    format!(
        "workers = 1\nshutdown_timeout = \"2s\"\n\n[[listener]]\nname = \"soak\"\nlisten = \"127.0.0.1:0\"\ncluster = \"soak\"\n\
         correlation = \"{correlation}\"\n{listener}[listener.codec]\n{codec}\n\n[[cluster]]\nname = \"soak\"\npolicy = \"{policy}\"\n\
         backends = [{}]\n{persistence}{admin}",
        list.join(", ")
    )
}

/// The proxy binary running a config, killed on drop.
pub(super) struct ProxyProcess {
    pub(super) child: Child,
    pub(super) addr: SocketAddr,
    /// The admin listener, in the observed mode.
    pub(super) admin: Option<SocketAddr>,
    pub(super) _dir: TempDir,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary folder, removed on drop.
pub(super) struct TempDir(PathBuf);

/// Where the TLS mode's certificates are (one soak runs its modes one at a time).
pub(super) fn tls_dir() -> PathBuf {
    std::env::temp_dir().join(format!("switchyard-soak-tls-{}", std::process::id()))
}

impl TempDir {
    fn at(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

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

pub(super) fn start_proxy(
    mode: Mode,
    backends: &[SocketAddr],
    bin: Option<&std::path::Path>,
) -> Result<ProxyProcess, DemoError> {
    let dir = TempDir::new()?;
    let script = dir.0.join("binary64.lua");
    std::fs::write(
        &script,
        include_str!("../../../examples/scripts/binary64.lua"),
    )?;
    std::fs::write(
        dir.0.join("sip.lua"),
        include_str!("../../../examples/scripts/sip.lua"),
    )?;
    let path = dir.0.join("soak.toml");
    std::fs::write(&path, config(mode, backends, &script))?;
    let bin = match bin {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe()?,
    };
    // The poison mode kills connections on purpose, four times a second: its warnings are
    // the expected ones.
    let log = if mode == Mode::Poison {
        "error"
    } else {
        "warn"
    };
    let mut child = Command::new(bin)
        .args(["--log", log, "run", "--config"])
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
        admin: None,
        _dir: dir,
    };
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["listening", "soak", addr] => {
            proxy.addr = addr
                .parse()
                .map_err(|e| DemoError::Check(format!("{addr}: {e}")))?;
            if matches!(mode, Mode::Observed | Mode::Sip) {
                let mut admin = String::new();
                stdout.read_line(&mut admin)?;
                let url = admin.trim().trim_start_matches("admin http://");
                proxy.admin = Some(
                    url.trim_end_matches('/')
                        .parse()
                        .map_err(|e| DemoError::Check(format!("the admin line {admin:?}: {e}")))?,
                );
            }
            Ok(proxy)
        }
        _ => Err(DemoError::Check(format!(
            "the proxy did not start (it printed {line:?})"
        ))),
    }
}

/// CPU time of every thread of process `pid`, in nanoseconds.
pub(super) fn cpu_ns(pid: u32) -> Result<u64, DemoError> {
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
pub(super) fn rss_kib(pid: u32) -> Result<u64, DemoError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| DemoError::Check("no VmRSS".into()))
}
