//! A small SIP server over TCP for the soak (and the demo's tests): a user agent server
//! that answers every INVITE with 100 Trying, 180 Ringing and 200 OK (adding its To tag),
//! takes ACKs without answering, and answers BYE and OPTIONS with 200 OK, each answer
//! copying its request's Via, From, To, Call-ID and CSeq as RFC 3261 says. Also the
//! helpers the soak's SIP client writes and reads calls with. Stops (closing every
//! connection) when dropped.

use super::serve::ServerThread;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running SIP server.
#[derive(Debug)]
pub struct SipServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Calls it answered (INVITEs).
    pub calls: Arc<AtomicU64>,
    _server: ServerThread,
}

impl SipServer {
    /// Starts a server on a free loopback port.
    pub fn start() -> std::io::Result<Self> {
        let calls = Arc::new(AtomicU64::new(0));
        let count = calls.clone();
        let server = ServerThread::start("sip-server", move |s| serve(s, count.clone()))?;
        Ok(SipServer {
            addr: server.addr,
            calls,
            _server: server,
        })
    }
}

/// One SIP message: its start line and headers (names lower-cased, compact forms
/// expanded), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The request line or status line.
    pub start: String,
    /// Headers as (lower-case full name, value).
    pub headers: Vec<(String, String)>,
}

impl Message {
    /// The first value of header `name` (lower-case full name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A status line's code, if this is an answer.
    pub fn status(&self) -> Option<u16> {
        self.start.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    /// A request's method.
    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or("")
    }

    /// An answer to this request with `status`: its Via, From, To (with `tag` if it has
    /// none), Call-ID and CSeq.
    pub fn answer(&self, status: &str, tag: &str) -> Vec<u8> {
        let mut out = format!("SIP/2.0 {status}\r\n");
        for (n, v) in &self.headers {
            match n.as_str() {
                "to" if !v.contains(";tag=") => out.push_str(&format!("To: {v};tag={tag}\r\n")),
                "via" | "from" | "to" | "call-id" | "cseq" => {
                    out.push_str(&format!("{}: {v}\r\n", display_name(n)))
                }
                _ => {}
            }
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        out.into_bytes()
    }
}

fn display_name(n: &str) -> &str {
    match n {
        "via" => "Via",
        "from" => "From",
        "to" => "To",
        "call-id" => "Call-ID",
        "cseq" => "CSeq",
        o => o,
    }
}

/// The length of the SIP message at the head of `buf` and the message, `Ok(None)` if it
/// is incomplete (keep-alive CRLFs are skipped: their length with no message).
pub fn parse(buf: &[u8]) -> Result<Option<(usize, Option<Message>)>, String> {
    if buf.starts_with(b"\r\n") {
        return Ok(Some((2, None)));
    }
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|e| format!("SIP head: {e}"))?;
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for l in lines {
        let (n, v) = l
            .split_once(':')
            .ok_or_else(|| format!("bad header {l:?}"))?;
        let n = n.trim().to_ascii_lowercase();
        let n = match n.as_str() {
            "v" => "via".into(),
            "f" => "from".into(),
            "t" => "to".into(),
            "i" => "call-id".into(),
            "l" => "content-length".into(),
            _ => n,
        };
        headers.push((n, v.trim().to_string()));
    }
    let m = Message { start, headers };
    let body: usize = m
        .header("content-length")
        .ok_or("no Content-Length")?
        .parse()
        .map_err(|_| "bad Content-Length")?;
    let len = end + 4 + body;
    Ok((buf.len() >= len).then_some((len, Some(m))))
}

/// Request `method` of call `call_id` with CSeq `cseq`, from the soak's caller.
pub fn request(method: &str, call_id: &str, cseq: u32, to_tag: Option<&str>) -> Vec<u8> {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let body = if method == "INVITE" { "v=0\r\n" } else { "" };
    format!(
        "{method} sip:service@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-{call_id}-{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:soak@127.0.0.1>;tag=caller\r\nTo: <sip:service@127.0.0.1>{tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:soak@127.0.0.1>\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve(mut s: tokio::net::TcpStream, calls: Arc<AtomicU64>) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(16 << 10);
    let mut out = Vec::new();
    loop {
        let mut chunk = [0u8; 16 << 10];
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        loop {
            let (len, m) = match parse(&buf[at..]) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(_) => return, // not SIP: close, as a server would
            };
            at += len;
            let Some(m) = m else { continue };
            match m.method() {
                "INVITE" => {
                    calls.fetch_add(1, Ordering::Relaxed);
                    out.extend_from_slice(&m.answer("100 Trying", "callee"));
                    out.extend_from_slice(&m.answer("180 Ringing", "callee"));
                    out.extend_from_slice(&m.answer("200 OK", "callee"));
                }
                "BYE" | "OPTIONS" => out.extend_from_slice(&m.answer("200 OK", "callee")),
                _ => {} // ACK, and answers
            }
        }
        buf.drain(..at);
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}
