//! The soak's client tasks: the long-lived client that offers a fixed rate over one
//! connection (optionally PROXY v2 and TLS first) and checks every answer through its
//! [`Load`], the poison mode's poisoner, the observed mode's scraper, and the wait for a
//! DNS server to answer from its zone.

use super::load::{Counters, Load};
use crate::demo::proto;
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Waits (10 s at most) until the DNS server at `addr` answers a query from its zone.
pub(super) fn wait_dns_answers(addr: SocketAddr) -> Result<(), super::DemoError> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let answered = (|| -> std::io::Result<bool> {
            let mut s = std::net::TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(&switchyard_proto::dns::query(1, "n0.example.test", 1))?;
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf)?;
            Ok(n > 4 && buf[5] & 0x0f == 0)
        })();
        if answered.unwrap_or(false) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(super::DemoError::Check(format!(
        "nsd at {addr} did not answer from its zone"
    )))
}

/// The poison mode's poisoner: every 250 ms, on a connection of its own, a request whose
/// payload makes the demo backend close its connection; each must be answered (with the
/// listener's error answer). Runs until the counters say stop.
pub(super) fn poisoner(addr: SocketAddr, counters: &Counters) {
    use std::io::{Read, Write};
    let mut n = 0u32;
    while !counters.stop.load(Ordering::Relaxed) {
        let got = (|| -> std::io::Result<usize> {
            let mut s = std::net::TcpStream::connect(addr)?;
            let mut req = Vec::new();
            proto::write_request(&mut req, 7, n, b"POISON from the soak's poisoner");
            s.write_all(&req)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut head = [0u8; 4];
            s.read_exact(&mut head)?;
            Ok(u32::from_be_bytes(head) as usize)
        })();
        if let Err(e) = got {
            counters.fail(format!(
                "the poisoner's request {n} got no error answer: {e}"
            ));
            return;
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The observed mode's scraper: `/metrics`, `/api/overview` and a pin lookup, five times
/// a second, each of which must be answered. Runs until the counters say stop.
pub(super) fn scraper(admin: SocketAddr, counters: &Counters) {
    let paths = ["/metrics", "/api/overview", "/api/sessions/1"];
    if let Err(e) = crate::demo::scrape(admin, &paths, Duration::from_millis(200), &counters.stop) {
        counters.fail(e);
    }
}

/// One long-lived client: sends request `n` at `n / rate` seconds (bounded by `depth` in
/// flight), checks every answer, until asked to stop; then waits for what is in flight.
/// With `tls`, the connection starts with a PROXY v2 header naming `192.0.2.x` (x from the
/// client's number) and then a TLS handshake.
pub(super) async fn client(
    addr: SocketAddr,
    load: Box<dyn Load>,
    (rate, depth): (f64, usize),
    tls: Option<(std::sync::Arc<rustls::ClientConfig>, u8)>,
    counters: &Counters,
) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    let Some((config, n)) = tls else {
        return drive(s, load, rate, depth, counters).await;
    };
    let me = SocketAddr::from(([192, 0, 2, n], 40_000 + u16::from(n)));
    s.write_all(&switchyard_proto::proxy_header::encode(
        switchyard_proto::proxy_header::ProxyVersion::V2,
        me,
        addr,
    ))
    .await
    .map_err(|e| format!("write: {e}"))?;
    let s = tokio_rustls::TlsConnector::from(config)
        .connect(addr.ip().into(), s)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    drive(s, load, rate, depth, counters).await
}

async fn drive<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    mut load: Box<dyn Load>,
    rate: f64,
    depth: usize,
    counters: &Counters,
) -> Result<(), String> {
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
                    let done = load.check(&rbuf[..len])?;
                    rbuf.advance(len);
                    counters.answered.fetch_add(done, Ordering::Relaxed);
                }
                load.follow_up(&mut wbuf);
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
