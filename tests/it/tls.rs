//! TLS both ways through the real binary: certificates made in the test (rcgen), real
//! `redis-server --tls-port` backends, and real clients (`redis-cli --tls`, `openssl
//! s_client`, Python's `ssl`, and rustls for what the others cannot show: which certificate
//! came, an established connection across a reload, a flood of handshakes).

use crate::admin::{metrics, sample};
use crate::servers::{redis_cli, redis_tls, run, Server};
use crate::support::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::demo::pki::{Leaf, Pki, Validity};

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A rustls client to `addr` asking for `sni`, trusting `ca`, with a client certificate if
/// given; the handshake done (with TLS 1.3 the server may still refuse a client
/// certificate after it: the first read then fails).
fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    sni: &str,
    client: Option<&Leaf>,
    alpn: &[&str],
) -> Result<Tls, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        Some(l) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&l.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&l.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// One RESP command; the first line of its answer.
fn command(s: &mut Tls, args: &[&str]) -> Result<String, String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req += &format!("${}\r\n{a}\r\n", a.len());
    }
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            Ok(_) => return Err("closed".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

fn peer_der(s: &Tls) -> Vec<u8> {
    s.conn.peer_certificates().unwrap()[0].to_vec()
}

fn toml_path(p: &Path) -> String {
    p.display().to_string()
}

/// A proxy with one `resp` listener `tls` (its `[listener.tls]` lines given) over a
/// cluster of `backends`, with `cluster` lines added to the cluster.
fn proxy(listener_tls: &str, backends: &[SocketAddr], cluster: &str) -> (Proxy, String) {
    let config = config(listener_tls, backends, cluster);
    (Proxy::start(&config), config)
}

fn config(listener_tls: &str, backends: &[SocketAddr], cluster: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        r#"workers = 1
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "tls"
listen = "127.0.0.1:0"
cluster = "redis"
handshake_timeout = "1s"
[listener.codec]
kind = "resp"
{listener_tls}

[[cluster]]
name = "redis"
backends = [{}]
{cluster}
"#,
        list.join(", ")
    )
}

struct Setup {
    dir: TempFile,
    pki: Pki,
    listener: Leaf,
}

fn setup() -> Setup {
    let dir = TempFile::new("README", "certificates for one test");
    let folder = dir.0.parent().unwrap().to_path_buf();
    let pki = Pki::new(&folder, "proxy").unwrap();
    let listener = pki
        .leaf("listener", &["localhost", "127.0.0.1"], Validity::Now)
        .unwrap();
    Setup { dir, pki, listener }
}

impl Setup {
    fn folder(&self) -> &Path {
        self.dir.0.parent().unwrap()
    }

    fn listener_tls(&self, extra: &str) -> String {
        format!(
            "[listener.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n{extra}",
            toml_path(&self.listener.cert),
            toml_path(&self.listener.key)
        )
    }

    /// A redis-server speaking only TLS, its certificate from `pki` for 127.0.0.1.
    fn redis(&self, pki: &Pki, file: &str, validity: Validity, auth_clients: bool) -> Server {
        let leaf = pki
            .leaf(file, &["127.0.0.1", "redis.test"], validity)
            .unwrap();
        redis_tls(&leaf.cert, &leaf.key, &pki.ca_pem, auth_clients)
    }
}

#[test]
fn redis_cli_over_tls_reaches_tls_redis_backends_with_a_client_certificate() {
    let s = setup();
    let backend_pki = Pki::new(s.folder(), "backend").unwrap();
    let backends = [
        s.redis(&backend_pki, "redis-a", Validity::Now, true),
        s.redis(&backend_pki, "redis-b", Validity::Now, true),
    ];
    let client = backend_pki
        .leaf("proxy-client", &["proxy.test"], Validity::Now)
        .unwrap();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let (p, _) = proxy(
        &s.listener_tls("alpn = [\"redis\"]"),
        &addrs,
        &format!(
            "[cluster.tls]\nca = \"{}\"\nserver_name = \"redis.test\"\ncertificate = \"{}\"\nkey = \"{}\"\n",
            toml_path(&backend_pki.ca_pem),
            toml_path(&client.cert),
            toml_path(&client.key)
        ),
    );
    let port = p.addr("tls").port().to_string();
    let ca = toml_path(&s.pki.ca_pem);
    let cli = |args: &[&str]| {
        let mut all = vec![
            "--tls",
            "--cacert",
            &ca,
            "--sni",
            "localhost",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
        ];
        all.extend_from_slice(args);
        run("redis-cli", &all).1.trim_end().to_string()
    };
    for i in 0..40 {
        assert_eq!(cli(&["SET", &format!("k{i}"), &format!("v{i}")]), "OK");
    }
    for i in 0..40 {
        assert_eq!(cli(&["GET", &format!("k{i}")]), format!("v{i}"));
    }
    // Keys spread over both TLS backends (each asked directly, over TLS, as the proxy).
    for b in &backends {
        let port = b.addr.port().to_string();
        let (cert, key) = (toml_path(&client.cert), toml_path(&client.key));
        let backend_ca = toml_path(&backend_pki.ca_pem);
        let (_, n) = run(
            "redis-cli",
            &[
                "--tls",
                "--cacert",
                &backend_ca,
                "--cert",
                &cert,
                "--key",
                &key,
                "--sni",
                "redis.test",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "DBSIZE",
            ],
        );
        let n: u64 = n.trim().parse().unwrap_or_else(|_| panic!("DBSIZE: {n}"));
        assert!(n > 0 && n < 40, "each backend holds some keys: {n}");
    }
    // A plain client on a TLS listener is closed, the reason logged.
    assert!(redis_cli(p.addr("tls"), &["PING"]) != "PONG");
    eventually(
        "the refused plain client logged",
        Duration::from_secs(5),
        || p.stderr().contains("TLS handshake failed"),
    );
    let m = metrics(p.admin.unwrap());
    let done = sample(
        &m,
        "switchyard_tls_handshakes_total{listener=\"tls\",result=\"done\"}",
    );
    assert!(done.unwrap_or(0.0) >= 80.0, "handshakes counted: {done:?}");
    let failed = sample(
        &m,
        "switchyard_connections_failed_prelude_total{listener=\"tls\",reason=\"tls\"}",
    );
    assert!(
        failed.unwrap_or(0.0) >= 1.0,
        "the plain client counted: {failed:?}"
    );
}

#[test]
fn openssl_s_client_and_python_ssl_are_answered_and_alpn_is_agreed() {
    let s = setup();
    let backend = crate::servers::redis(None);
    let (p, _) = proxy(
        &s.listener_tls("alpn = [\"redis\", \"resp3\"]"),
        &[backend.addr],
        "",
    );
    let addr = p.addr("tls");
    let ca = toml_path(&s.pki.ca_pem);

    // openssl s_client, verifying the certificate and the name; redis's inline PING.
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile", &ca])
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .args(["-alpn", "redis", "-connect", &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl (apt-get install openssl)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"PING\r\n").unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    assert_eq!(
        line.trim_end(),
        "+PONG",
        "openssl s_client through the TLS listener"
    );

    // Python's ssl module, with its default (verifying) context and ALPN.
    let script = r#"
import socket, ssl, sys
port, ca, alpn = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols([alpn])
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"*3\r\n$3\r\nSET\r\n$2\r\npy\r\n$3\r\nyes\r\n*2\r\n$3\r\nGET\r\n$2\r\npy\r\n")
        got = b""
        while got.count(b"\r\n") < 3:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        print(s.version(), s.selected_alpn_protocol(), repr(got))
"#;
    let port = addr.port().to_string();
    let (ok, out) = run("python3", &["-c", script, &port, &ca, "resp3"]);
    assert!(ok, "python ssl client: {out}");
    assert_eq!(
        out.trim_end(),
        "TLSv1.3 resp3 b'+OK\\r\\n$3\\r\\nyes\\r\\n'"
    );
    // A client offering only protocols the listener does not speak is refused (RFC 7301).
    let (ok, out) = run("python3", &["-c", script, &port, &ca, "h2"]);
    assert!(
        !ok && out.contains("no application protocol"),
        "ALPN h2: {out}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !p
        .stderr()
        .contains("TLS handshake failed: peer doesn't support any known protocol")
    {
        assert!(
            Instant::now() < deadline,
            "the ALPN refusal logged:\n{}",
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sni_chooses_the_certificate_and_strict_sni_refuses_an_unknown_name() {
    let s = setup();
    let a = s.pki.leaf("a", &["a.test"], Validity::Now).unwrap();
    let b = s
        .pki
        .leaf("b", &["b.test", "*.b.test"], Validity::Now)
        .unwrap();
    let backend = crate::servers::redis(None);
    let certs = |strict: bool| {
        format!(
            "strict_sni = {strict}\n[[listener.tls.certificates]]\ncertificate = \"{}\"\nkey = \"{}\"\nnames = [\"a.test\"]\n[[listener.tls.certificates]]\ncertificate = \"{}\"\nkey = \"{}\"\nnames = [\"b.test\", \"*.b.test\"]\n",
            toml_path(&a.cert), toml_path(&a.key), toml_path(&b.cert), toml_path(&b.key)
        )
    };
    let (p, _) = proxy(&s.listener_tls(&certs(false)), &[backend.addr], "");
    let addr = p.addr("tls");
    let ca = &s.pki.ca_pem;
    for (sni, want) in [
        ("a.test", &a.der),
        ("b.test", &b.der),
        ("api.b.test", &b.der),
        ("localhost", &s.listener.der),
    ] {
        let mut c = tls_connect(addr, ca, sni, None, &[]).unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert!(peer_der(&c) == *want, "{sni} got the wrong certificate");
        assert_eq!(command(&mut c, &["PING"]).unwrap(), "+PONG");
    }
    // Not strict: an unknown name gets the default, which the client then refuses.
    let e = tls_connect(addr, ca, "other.test", None, &[])
        .err()
        .unwrap();
    assert!(
        e.contains("NotValidForName") || e.contains("not valid"),
        "{e}"
    );
    drop(p);

    let (p, _) = proxy(&s.listener_tls(&certs(true)), &[backend.addr], "");
    let addr = p.addr("tls");
    assert!(tls_connect(addr, ca, "a.test", None, &[]).is_ok());
    let e = tls_connect(addr, ca, "other.test", None, &[])
        .err()
        .unwrap();
    assert!(
        e.contains("alert") || e.contains("Alert"),
        "strict SNI: {e}"
    );
    eventually(
        "the unknown SNI name logged",
        Duration::from_secs(5),
        || {
            p.stderr()
                .contains("no certificate serves this SNI name (strict_sni)")
                && p.stderr().contains("other.test")
        },
    );
}

#[test]
fn client_certificates_are_required_and_a_wrong_ca_or_an_expired_one_is_refused() {
    let s = setup();
    let clients = Pki::new(s.folder(), "clients").unwrap();
    let stranger = Pki::new(s.folder(), "stranger").unwrap();
    let good = clients
        .leaf("good", &["client.test"], Validity::Now)
        .unwrap();
    let expired = clients
        .leaf("expired", &["client.test"], Validity::Expired)
        .unwrap();
    let foreign = stranger
        .leaf("foreign", &["client.test"], Validity::Now)
        .unwrap();
    let backend = crate::servers::redis(None);
    let (p, _) = proxy(
        &s.listener_tls(&format!("client_ca = \"{}\"\n", toml_path(&clients.ca_pem))),
        &[backend.addr],
        "",
    );
    let addr = p.addr("tls");
    let ca = &s.pki.ca_pem;
    let mut ok = tls_connect(addr, ca, "localhost", Some(&good), &[]).unwrap();
    assert_eq!(command(&mut ok, &["PING"]).unwrap(), "+PONG");

    // Each refused one: the handshake or the first answer fails, and the proxy says why.
    let refused = |client: Option<&Leaf>| match tls_connect(addr, ca, "localhost", client, &[]) {
        Err(_) => true,
        Ok(mut c) => command(&mut c, &["PING"]).is_err(),
    };
    assert!(refused(None), "no client certificate");
    assert!(refused(Some(&expired)), "an expired client certificate");
    assert!(
        refused(Some(&foreign)),
        "a client certificate from another CA"
    );
    eventually(
        "each refusal logged with its reason",
        Duration::from_secs(5),
        || {
            let log = p.stderr().to_lowercase();
            log.contains("certificate") && log.contains("expired") && log.contains("unknownissuer")
        },
    );
    let log = p.stderr();
    let lines = log
        .lines()
        .filter(|l| l.contains("closing connection before its protocol started"))
        .count();
    assert!(lines >= 3, "one line per refusal:\n{log}");
    // The good client was never disturbed.
    assert_eq!(command(&mut ok, &["PING"]).unwrap(), "+PONG");

    // "optional": a client without a certificate is let in, a bad one still refused.
    let (p2, _) = proxy(
        &s.listener_tls(&format!(
            "client_ca = \"{}\"\nclient_auth = \"optional\"\n",
            toml_path(&clients.ca_pem)
        )),
        &[backend.addr],
        "",
    );
    let mut anon = tls_connect(p2.addr("tls"), ca, "localhost", None, &[]).unwrap();
    assert_eq!(command(&mut anon, &["PING"]).unwrap(), "+PONG");
    match tls_connect(p2.addr("tls"), ca, "localhost", Some(&foreign), &[]) {
        Err(_) => {}
        Ok(mut c) => assert!(command(&mut c, &["PING"]).is_err(), "a foreign certificate"),
    }
}

#[test]
fn a_backend_with_an_expired_certificate_a_wrong_ca_or_a_wrong_name_is_refused() {
    let s = setup();
    let backend_pki = Pki::new(s.folder(), "backend").unwrap();
    let other_pki = Pki::new(s.folder(), "other").unwrap();
    let cases = [
        (
            "expired",
            s.redis(&backend_pki, "expired", Validity::Expired, false),
            "redis.test",
            "expired",
        ),
        (
            "foreign",
            s.redis(&other_pki, "foreign", Validity::Now, false),
            "redis.test",
            "unknownissuer",
        ),
        (
            "misnamed",
            s.redis(&backend_pki, "misnamed", Validity::Now, false),
            "elsewhere.test",
            "not valid for name",
        ),
    ];
    for (what, server, name, reason) in &cases {
        let (p, _) = proxy(
            "",
            &[server.addr],
            &format!(
                "[cluster.tls]\nca = \"{}\"\nserver_name = \"{name}\"\n",
                toml_path(&backend_pki.ca_pem)
            ),
        );
        // The listener is plain here; only the backends speak TLS.
        let answer = redis_cli(p.addr("tls"), &["SET", "k", "v"]);
        assert_ne!(
            answer, "OK",
            "{what}: a backend that fails TLS must not answer"
        );
        let refusal =
            |l: &str| l.contains("TLS handshake failed") && l.to_lowercase().contains(reason);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !p.stderr().lines().any(refusal) {
            assert!(
                Instant::now() < deadline,
                "{what}: no refusal logged:\n{}",
                p.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The same setup with a good backend answers: the refusals were the certificates'.
    let good = s.redis(&backend_pki, "good", Validity::Now, false);
    let (p, _) = proxy(
        "",
        &[good.addr],
        &format!(
            "[cluster.tls]\nca = \"{}\"\nserver_name = \"redis.test\"\n",
            toml_path(&backend_pki.ca_pem)
        ),
    );
    assert_eq!(redis_cli(p.addr("tls"), &["SET", "k", "v"]), "OK");
    assert_eq!(redis_cli(p.addr("tls"), &["GET", "k"]), "v");
}

#[test]
fn sighup_rereads_the_certificates_and_keeps_established_connections() {
    let s = setup();
    let backend = crate::servers::redis(None);
    let (mut p, config) = proxy(&s.listener_tls(""), &[backend.addr], "");
    let addr = p.addr("tls");
    let ca = &s.pki.ca_pem;
    let mut old = tls_connect(addr, ca, "localhost", None, &[]).unwrap();
    assert!(peer_der(&old) == s.listener.der);
    assert_eq!(command(&mut old, &["SET", "kept", "1"]).unwrap(), "+OK");

    // New files under the same names, then SIGHUP with the same config text.
    let renewed = s
        .pki
        .leaf("listener", &["localhost", "127.0.0.1"], Validity::Now)
        .unwrap();
    assert!(renewed.der != s.listener.der);
    p.reload(&config);
    eventually(
        "the reload reported the new certificates",
        Duration::from_secs(10),
        || p.stderr().contains("config reloaded") && p.stderr().contains("TLS certificates"),
    );
    let _ = p.next_listening(Duration::from_millis(100));
    let mut new = tls_connect(addr, ca, "localhost", None, &[]).unwrap();
    assert!(
        peer_der(&new) == renewed.der,
        "a new handshake uses the new certificate"
    );
    assert_eq!(command(&mut new, &["GET", "kept"]).unwrap(), "$1");
    // The connection made before the reload still works.
    assert_eq!(command(&mut old, &["INCR", "kept"]).unwrap(), ":2");

    // A certificate file that no longer parses: the reload is refused, naming the key,
    // and the running certificates keep serving.
    std::fs::write(&s.listener.cert, "not a certificate").unwrap();
    p.reload(&config);
    eventually("the bad reload refused", Duration::from_secs(10), || {
        p.stderr().contains("listener.tls.tls.certificate")
    });
    let mut after = tls_connect(addr, ca, "localhost", None, &[]).unwrap();
    assert!(peer_der(&after) == renewed.der);
    assert_eq!(command(&mut after, &["PING"]).unwrap(), "+PONG");
    assert_eq!(command(&mut old, &["PING"]).unwrap(), "+PONG");
}

#[test]
fn a_flood_of_handshakes_and_stalled_connections_does_not_starve_an_established_client() {
    let s = setup();
    let backend = crate::servers::redis(None);
    let (p, _) = proxy(&s.listener_tls("max_handshakes = 8"), &[backend.addr], "");
    let addr = p.addr("tls");
    let ca = s.pki.ca_pem.clone();
    let mut steady = tls_connect(addr, &ca, "localhost", None, &[]).unwrap();
    assert_eq!(command(&mut steady, &["PING"]).unwrap(), "+PONG");

    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut threads = Vec::new();
    for _ in 0..3 {
        let (stop, done, failed, ca) = (stop.clone(), done.clone(), failed.clone(), ca.clone());
        threads.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match tls_connect(addr, &ca, "localhost", None, &[]) {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // Connections that never send a ClientHello hold handshake slots until the timeout.
    let stalled: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();

    // The established client's every command is answered while the flood goes on: it
    // runs until the flood has completed 30 handshakes (the stalled connections hold every
    // slot until their 1 s timeout), bounded by 30 s.
    let started = done.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while done.load(Ordering::Relaxed) - started < 30 && Instant::now() < deadline {
        let key = format!("steady{}", i % 10);
        let got = command(&mut steady, &["INCR", &key]).unwrap();
        assert_eq!(got, format!(":{}", i / 10 + 1));
        i += 1;
    }
    let during = done.load(Ordering::Relaxed) - started;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    drop(stalled);
    assert!(
        during >= 30,
        "handshakes went on while the steady client was served: {during}"
    );
    let m = metrics(p.admin.unwrap());
    let reason = |r: &str| {
        sample(
            &m,
            &format!(
                "switchyard_connections_failed_prelude_total{{listener=\"tls\",reason=\"{r}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    eventually(
        "the stalled connections timed out",
        Duration::from_secs(10),
        || {
            let m = metrics(p.admin.unwrap());
            sample(
                &m,
                "switchyard_connections_failed_prelude_total{listener=\"tls\",reason=\"timeout\"}",
            )
            .unwrap_or(0.0)
                >= 1.0
        },
    );
    assert!(
        reason("busy") >= 1.0,
        "max_handshakes refused some: busy={}",
        reason("busy")
    );
    // And after it, new clients get in again.
    let mut late = tls_connect(addr, &ca, "localhost", None, &[]).unwrap();
    assert_eq!(command(&mut late, &["PING"]).unwrap(), "+PONG");
    eprintln!(
        "flood: {i} steady commands; {} handshakes done, {} failed",
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
}
