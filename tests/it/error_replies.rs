//! Generic codecs answer failed requests instead of closing their clients, when the listener
//! says how: a template (`error_reply_hex`) or the script's `error_reply`. One backend
//! failure must not disconnect the many clients multiplexed over it.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use switchyard::demo::backend::TestBackend;
use switchyard::demo::proto;

/// The demo protocol's answer layout: name "ERR", the reason as payload.
const TEMPLATE: &str = "error_reply_hex = \"00000000 {key} {id} 03 455252 {reason}\"";

/// Reads demo frames from `s` until `n` have come or `wait` passes; also says whether the
/// connection was closed.
fn read_frames(s: &mut TcpStream, n: usize, wait: Duration) -> (Vec<Vec<u8>>, bool) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    while frames.len() < n && Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return (frames, true),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (frames, true),
            Err(_) => {}
        }
        while buf.len() >= 4 {
            let len = 4 + u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < len {
                break;
            }
            frames.push(buf.drain(..len).collect());
        }
    }
    (frames, false)
}

/// (key, id, backend name, payload) of an answer.
fn parts(frame: &[u8]) -> (u64, u32, String, Vec<u8>) {
    let m = proto::parse(frame).unwrap();
    let (name, payload) = proto::answer_parts(m.rest).unwrap();
    (
        m.key,
        m.id,
        String::from_utf8_lossy(name).into_owned(),
        payload.to_vec(),
    )
}

/// Eight clients, each with two requests in flight on the one backend, which then dies:
/// every client gets an error answer for each of its requests (its own ids and keys back)
/// and stays connected; a request with no backend left is answered with an error too.
fn eight_clients_survive_a_backend_death(listener_extra: &str, codec: &str) {
    let mut slow = TestBackend::start_slow("slow", false, Duration::from_secs(30)).unwrap();
    let cfg = format!(
        r#"workers = 1
[[listener]]
name = "app"
listen = "127.0.0.1:0"
cluster = "app"
correlation = "by_id"
{listener_extra}
[listener.codec]
{codec}

[[cluster]]
name = "app"
policy = "round_robin"
backends = [{{ address = "{}", name = "slow" }}]
pool = {{ connections_per_backend = 1, reconnect_backoff_min = "5s", reconnect_backoff_max = "5s" }}
"#,
        slow.addr
    );
    let proxy = Proxy::start(&cfg);
    let addr: SocketAddr = proxy.addr("app");
    let mut clients: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for (c, s) in clients.iter_mut().enumerate() {
        let mut req = Vec::new();
        for i in 0..2u32 {
            // Every client uses the same ids: the answers must still find their own client.
            proto::write_request(&mut req, 100 + c as u64, 7 + i, b"payload-0123456789");
        }
        s.write_all(&req).unwrap();
    }
    eventually(
        "16 requests at the backend",
        Duration::from_secs(10),
        || slow.messages() >= 16,
    );
    slow.stop();
    for (c, s) in clients.iter_mut().enumerate() {
        let (frames, closed) = read_frames(s, 2, Duration::from_secs(10));
        assert!(!closed, "client {c} was disconnected");
        assert_eq!(frames.len(), 2, "client {c}: {frames:?}");
        let mut ids = Vec::new();
        for f in &frames {
            let (key, id, name, payload) = parts(f);
            assert_eq!(key, 100 + c as u64);
            assert_eq!(name, "ERR");
            let reason = String::from_utf8_lossy(&payload);
            assert!(reason.contains("backend slow failed"), "{reason}");
            ids.push(id);
        }
        ids.sort();
        assert_eq!(ids, vec![7, 8]);
    }
    // Nothing left to send to: answered with an error at once, the connection stays.
    let s = &mut clients[3];
    let mut req = Vec::new();
    proto::write_request(&mut req, 5, 99, b"again");
    s.write_all(&req).unwrap();
    let (frames, closed) = read_frames(s, 1, Duration::from_secs(10));
    assert!(!closed);
    let (_, id, name, payload) = parts(&frames[0]);
    assert_eq!((id, name.as_str()), (99, "ERR"));
    assert!(
        String::from_utf8_lossy(&payload).contains("no backend of cluster app"),
        "{}",
        String::from_utf8_lossy(&payload)
    );
    for (c, s) in clients.iter().enumerate() {
        assert!(
            !closed_within(s, Duration::from_millis(100)),
            "client {c} closed"
        );
    }
}

const NATIVE: &str = "kind = \"length_field\"\nlength_width = 4\nkey = { offset = 4, width = 8 }\nid = { offset = 12, width = 4 }";

#[test]
fn a_template_answers_failed_requests_and_clients_stay() {
    eight_clients_survive_a_backend_death(TEMPLATE, NATIVE);
}

#[test]
fn a_script_error_reply_answers_failed_requests_and_clients_stay() {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scripts/binary64.lua"),
    )
    .unwrap();
    // The same protocol, with an error_reply that builds the answer in the demo layout.
    let with_errors = source.replacen(
        "return {",
        r#"return {
	error_reply = function(id: string?, key: string?, reason: string)
		local body = (key or string.rep("\0", 8)) .. (id or "\0\0\0\0") .. "\3ERR" .. reason
		local n = #body
		return string.char(bit32.extract(n, 24, 8), bit32.extract(n, 16, 8), bit32.extract(n, 8, 8), bit32.extract(n, 0, 8)) .. body
	end,"#,
        1,
    );
    let script = TempFile::new("errors.lua", &with_errors);
    let codec = format!("kind = \"lua\"\nscript = \"{}\"", script.0.display());
    eight_clients_survive_a_backend_death("", &codec);
}

/// A request that fails with no error answer to give: by default dropped, said in the log
/// and counted, its client kept (its other sessions go on); `on_unanswerable = "close"`
/// closes the client instead, and `in_order` always does.
#[test]
fn without_an_error_answer_a_failed_request_is_dropped_or_its_client_closed() {
    for (rule, closes) in [("", false), ("on_unanswerable = \"close\"", true)] {
        let slow = TestBackend::start_slow("slow", false, Duration::from_secs(30)).unwrap();
        let mut app = Scenario::new().listener_toml(rule).start_with(vec![slow]);
        let mut s = TcpStream::connect(app.addr()).unwrap();
        let mut req = Vec::new();
        proto::write_request(&mut req, 1, 1, b"x");
        s.write_all(&req).unwrap();
        eventually(
            "the request at the backend",
            Duration::from_secs(10),
            || app.backends[0].messages() >= 1,
        );
        app.backends[0].stop();
        if closes {
            assert!(closed_within(&s, Duration::from_secs(10)), "{rule}");
        } else {
            eventually("the drop to be logged", Duration::from_secs(10), || {
                app.proxy
                    .stderr()
                    .contains("dropping a failed request that has no error answer")
            });
            assert!(!closed_within(&s, Duration::from_millis(500)), "kept open");
        }
    }
    let (ok, err) = check(
        &Scenario::new()
            .correlation("in_order")
            .listener_toml("on_unanswerable = \"drop\"")
            .toml(&backends(1)),
    );
    assert!(!ok && err.contains("listener.app.on_unanswerable"), "{err}");
}

/// `switchyard check` on config `text`: whether it passed, and what it printed on stderr.
fn check(text: &str) -> (bool, String) {
    let file = TempFile::new("check.toml", text);
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&file.0)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_template_that_does_not_frame_is_refused_at_load() {
    let bs = backends(1);
    // Three bytes cannot hold the demo protocol's 16-byte header.
    let (ok, err) = check(&Scenario::new().error_reply_hex("455252").toml(&bs));
    assert!(!ok);
    assert!(
        err.contains("listener.app.error_reply_hex: the answer it makes"),
        "{err}"
    );
    // The id must sit where the response codec finds ids.
    let (_, err) = check(
        &Scenario::new()
            .error_reply_hex("00000000 {id} {key} 00")
            .toml(&bs),
    );
    assert!(err.contains("does not carry the client's id"), "{err}");
}
