//! Bad input closes only the offending client connection, with a logged reason.

use crate::support::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn expect_closed(s: TcpStream) {
    assert!(
        closed_within(&s, Duration::from_secs(10)),
        "connection was not closed"
    );
}

#[test]
fn oversized_frame_closes_only_that_client() {
    let app = Scenario::new().max_frame_size(1024).start(2);
    let addr = app.addr();
    let good =
        std::thread::spawn(move || run_clients(addr, vec![plan(3000, 8, vec![1, 2], 1, true)]));
    let mut bad = TcpStream::connect(addr).unwrap();
    // Announces a 1 MiB body.
    bad.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
    bad.write_all(&[0u8; 12]).unwrap();
    expect_closed(bad);
    for r in good.join().unwrap() {
        assert_clean(&r);
    }
    let log = app.proxy.stderr();
    assert!(log.contains("exceeds max_frame_size 1024"), "{log}");
}

#[test]
fn malformed_length_closes_only_that_client() {
    let app = Scenario::new().start(2);
    let addr = app.addr();
    let good =
        std::thread::spawn(move || run_clients(addr, vec![plan(3000, 8, vec![1, 2], 1, true)]));
    let mut bad = TcpStream::connect(addr).unwrap();
    // A body of 2 bytes cannot hold the 8-byte key and 4-byte id.
    bad.write_all(&[0, 0, 0, 2, 9, 9]).unwrap();
    expect_closed(bad);
    for r in good.join().unwrap() {
        assert_clean(&r);
    }
    let log = app.proxy.stderr();
    assert!(log.contains("malformed frame"), "{log}");
}

#[test]
fn client_that_never_reads_is_closed_and_others_are_served() {
    let app = Scenario::new()
        .max_frame_size(1024)
        .max_reply_buffer(65536)
        .start(2);
    let addr = app.addr();
    let good =
        std::thread::spawn(move || run_clients(addr, vec![plan(3000, 8, vec![1, 2], 1, true)]));
    // Small receive buffer, so the proxy's reply buffer fills soon.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut lazy: TcpStream = sock.into();
    lazy.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut batch = Vec::new();
    for i in 0..1000u32 {
        switchyard::demo::proto::write_request(&mut batch, 7, i, &[0u8; 48]);
    }
    // Bounded: at most 400 batches (26 MB); the proxy closes the connection long before.
    let mut closed = false;
    for _ in 0..400 {
        if lazy.write_all(&batch).is_err() {
            closed = true;
            break;
        }
        if app.proxy.stderr().contains("not reading its answers") {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "the proxy kept buffering answers for a client that does not read"
    );
    eventually("the close to be logged", Duration::from_secs(10), || {
        app.proxy.stderr().contains("exceed max_reply_buffer 65536")
    });
    for r in good.join().unwrap() {
        assert_clean(&r);
    }
}

#[test]
fn client_closing_mid_frame_is_logged_and_harmless() {
    let app = Scenario::new().start(2);
    let addr = app.addr();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(&[0, 0, 0, 40, 1, 2, 3]).unwrap();
    drop(half);
    eventually(
        "the incomplete frame to be logged",
        Duration::from_secs(10),
        || app.proxy.stderr().contains("incomplete frame"),
    );
    for r in run_clients(addr, vec![plan(500, 8, vec![1], 1, true)]) {
        assert_clean(&r);
    }
}
