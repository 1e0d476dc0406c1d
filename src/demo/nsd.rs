//! A real DNS server for the tests and the soak: Debian's `nsd` on a free loopback port
//! (TCP and UDP), serving the zone `example.test` with an A record for each of `n0` …
//! `n{names-1}` ([`address_of`] gives each its address). Stopped with SIGTERM on drop, so
//! that its child processes go with it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The address `nI.example.test` has in the zone.
pub fn address_of(i: u32) -> [u8; 4] {
    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// A running nsd.
#[derive(Debug)]
pub struct Nsd {
    /// Where it listens (TCP and UDP).
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Nsd {
    /// Starts nsd with a zone of `names` names on a free port; returns once it accepts TCP
    /// connections. Fails, naming the package, if nsd is not installed.
    pub fn start(names: u32) -> std::io::Result<Nsd> {
        static N: AtomicU64 = AtomicU64::new(0);
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!(
            "switchyard-nsd-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut zone = String::from(
            "$ORIGIN example.test.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n",
        );
        for i in 0..names {
            let a = address_of(i);
            zone.push_str(&format!("n{i} IN A {}.{}.{}.{}\n", a[0], a[1], a[2], a[3]));
        }
        std::fs::write(dir.join("example.zone"), zone)?;
        let d = dir.display();
        let conf = format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  tcp-count: 1000\n  verbosity: 0\nremote-control:\n  control-enable: no\nzone:\n  name: example.test\n  zonefile: example.zone\n"
        );
        std::fs::write(dir.join("nsd.conf"), conf)?;
        let bin = ["/usr/sbin/nsd", "nsd"]
            .into_iter()
            .find(|b| Command::new(b).arg("-v").output().is_ok())
            .ok_or_else(|| std::io::Error::other("nsd is not installed (apt-get install nsd)"))?;
        let child = Command::new(bin)
            .arg("-d")
            .arg("-c")
            .arg(dir.join("nsd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut nsd = Nsd {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(nsd.addr).is_err() {
            if let Some(status) = nsd.child.try_wait()? {
                return Err(std::io::Error::other(format!("nsd exited: {status}")));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("nsd did not listen within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nsd)
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
