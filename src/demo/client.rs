//! A bounded, pipelined load client for the demo protocol: sends `messages` requests (or
//! until a deadline) with at most `depth` awaiting answers, checks every answer against its
//! request, and reports which backend answered each key and how long answers took.

use super::proto;
use bytes::{Buf, BytesMut};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchyard_proto::length_field::LengthField;
use switchyard_proto::Framer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one client does.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// Requests to send, at most.
    pub messages: u64,
    /// Requests awaiting answers, at most.
    pub depth: usize,
    /// Session keys, used in turn.
    pub keys: Vec<u64>,
    /// Payload bytes per request (at least 16: sequence number and tag).
    pub payload: usize,
    /// Stop sending at this time, if set.
    pub deadline: Option<Instant>,
    /// Requests per second, if paced.
    pub rate: Option<u64>,
    /// Answers may come in any order (`by_id`); otherwise they must come in request order.
    pub any_order: bool,
    /// Give up waiting for answers after this long without one.
    pub answer_timeout: Duration,
    /// Written after the sequence number in every payload, so requests of different
    /// clients can be told apart at the backend.
    pub tag: u64,
    /// Payload prefix of every request (e.g. `PUSH`), replacing the sequence number.
    pub prefix: Option<Vec<u8>>,
}

impl Default for ClientPlan {
    fn default() -> Self {
        ClientPlan {
            messages: 1000,
            depth: 16,
            keys: vec![1],
            payload: 16,
            deadline: None,
            rate: None,
            any_order: false,
            answer_timeout: Duration::from_secs(10),
            tag: 0,
            prefix: None,
        }
    }
}

/// What one client saw.
#[derive(Debug, Default, Clone)]
pub struct ClientReport {
    /// Requests sent.
    pub sent: u64,
    /// Answers received and checked.
    pub answered: u64,
    /// Unasked messages received.
    pub pushes: u64,
    /// Answers per backend name.
    pub per_backend: HashMap<String, u64>,
    /// Backend names that answered each key.
    pub key_backends: HashMap<u64, HashSet<String>>,
    /// Answer latencies in microseconds.
    pub latencies_us: Vec<u32>,
    /// Answers that did not match their request.
    pub mismatches: Vec<String>,
    /// Why the client stopped early, if it did.
    pub error: Option<String>,
}

/// Runs one client against `addr`.
pub async fn run(addr: SocketAddr, plan: ClientPlan) -> ClientReport {
    let mut report = ClientReport::default();
    match TcpStream::connect(addr).await {
        Ok(s) => {
            let _ = s.set_nodelay(true);
            if let Err(e) = drive(s, &plan, &mut report).await {
                report.error = Some(e);
            }
        }
        Err(e) => report.error = Some(format!("connect {addr}: {e}")),
    }
    report
}

/// Like [`run`], over TLS with `tls` (the server's name: its IP address).
pub async fn run_tls(
    addr: SocketAddr,
    plan: ClientPlan,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> ClientReport {
    let mut report = ClientReport::default();
    match tls_connect(addr, tls).await {
        Ok(s) => {
            if let Err(e) = drive(s, &plan, &mut report).await {
                report.error = Some(e);
            }
        }
        Err(e) => report.error = Some(e),
    }
    report
}

/// A TLS connection to `addr`, its handshake done.
pub async fn tls_connect(
    addr: SocketAddr,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsConnector::from(tls)
        .connect(addr.ip().into(), tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))
}

/// Closes a TLS connection the way a well-behaved client does: `close_notify`,
/// then the rest of what the server sent (its session tickets) up to its close,
/// so that neither side resets the connection over unread bytes.
pub async fn tls_close(mut s: tokio_rustls::client::TlsStream<TcpStream>) {
    let _ = s.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while let Ok(1..) = s.read(&mut sink).await {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    plan: &ClientPlan,
    report: &mut ClientReport,
) -> Result<(), String> {
    let mut codec = LengthField::new(proto::codec_spec(true), 16 << 20);
    let start = Instant::now();
    let payload_len = plan.payload.max(16);
    let mut next: u64 = 0;
    // (sequence, key, sent at) of requests awaiting answers, oldest first.
    let mut waiting: VecDeque<(u64, u64, Instant)> = VecDeque::new();
    let mut by_id: HashMap<u32, (u64, u64, Instant)> = HashMap::new();
    let mut wbuf = Vec::new();
    let mut rbuf = BytesMut::with_capacity(64 << 10);
    let mut frames = Vec::new();
    let mut payload = vec![0u8; payload_len];
    loop {
        let stop_sending =
            next >= plan.messages || plan.deadline.is_some_and(|d| Instant::now() >= d);
        let outstanding = waiting.len() + by_id.len();
        if stop_sending && outstanding == 0 {
            return Ok(());
        }
        if !stop_sending {
            while waiting.len() + by_id.len() < plan.depth && next < plan.messages {
                if let Some(rate) = plan.rate {
                    let due = start + Duration::from_secs_f64(next as f64 / rate as f64);
                    if due > Instant::now() {
                        if waiting.len() + by_id.len() == 0 && wbuf.is_empty() {
                            tokio::time::sleep_until(due.into()).await;
                        } else {
                            break;
                        }
                    }
                }
                let key = plan.keys[(next % plan.keys.len() as u64) as usize];
                payload[..8].copy_from_slice(&next.to_be_bytes());
                payload[8..16].copy_from_slice(&plan.tag.to_be_bytes());
                if let Some(p) = &plan.prefix {
                    let n = p.len().min(payload.len());
                    payload[..n].copy_from_slice(&p[..n]);
                }
                // Ids deliberately collide across clients: every client counts from 0.
                let id = (next % u64::from(u32::MAX)) as u32;
                proto::write_request(&mut wbuf, key, id, &payload);
                let entry = (next, key, Instant::now());
                if plan.any_order {
                    by_id.insert(id, entry);
                } else {
                    waiting.push_back(entry);
                }
                next += 1;
                report.sent += 1;
            }
            if !wbuf.is_empty() {
                s.write_all(&wbuf)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                wbuf.clear();
            }
        }
        if waiting.len() + by_id.len() == 0 {
            continue;
        }
        let n = tokio::time::timeout(plan.answer_timeout, s.read_buf(&mut rbuf))
            .await
            .map_err(|_| {
                format!(
                    "no answer within {:?} ({} outstanding)",
                    plan.answer_timeout,
                    waiting.len() + by_id.len()
                )
            })?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed with {} answers outstanding",
                waiting.len() + by_id.len()
            ));
        }
        codec
            .scan(&rbuf, &mut frames)
            .map_err(|e| format!("bad answer: {e}"))?;
        for f in frames.drain(..) {
            let frame = &rbuf[..f.len as usize];
            check_answer(frame, plan, &mut waiting, &mut by_id, report);
            rbuf.advance(f.len as usize);
        }
    }
}

fn check_answer(
    frame: &[u8],
    plan: &ClientPlan,
    waiting: &mut VecDeque<(u64, u64, Instant)>,
    by_id: &mut HashMap<u32, (u64, u64, Instant)>,
    report: &mut ClientReport,
) {
    let Some(m) = proto::parse(frame) else {
        report.mismatches.push("answer too short".into());
        return;
    };
    if m.id == u32::MAX {
        report.pushes += 1;
        return;
    }
    let expected = if plan.any_order {
        by_id.remove(&m.id)
    } else {
        waiting.pop_front()
    };
    let Some((seq, key, sent)) = expected else {
        report
            .mismatches
            .push(format!("answer id {} matches no request", m.id));
        return;
    };
    let Some((name, payload)) = proto::answer_parts(m.rest) else {
        report
            .mismatches
            .push(format!("answer {seq}: malformed body"));
        return;
    };
    if m.key != key
        || m.id != (seq % u64::from(u32::MAX)) as u32
        || payload.get(..8) != Some(&seq.to_be_bytes()[..])
    {
        report.mismatches.push(format!(
            "answer for request {seq} (key {key}) carried key {} id {} payload {:?}",
            m.key,
            m.id,
            payload.get(..8)
        ));
        return;
    }
    let name = String::from_utf8_lossy(name).into_owned();
    report.answered += 1;
    report
        .latencies_us
        .push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    report
        .key_backends
        .entry(key)
        .or_default()
        .insert(name.clone());
    *report.per_backend.entry(name).or_default() += 1;
}

/// The `q`-quantile (0..=1) of `samples`, sorting them.
pub fn quantile(samples: &mut [u32], q: f64) -> u32 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i]
}
