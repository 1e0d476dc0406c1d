//! The command line: `check` names file, key and problem; every example is valid; SIGTERM
//! drains in-flight messages and exits 0; the demo runs.

use crate::support::*;
use std::process::Command;
use std::time::Duration;
use switchyard::demo::backend::TestBackend;

fn examples() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_example_config_is_valid() {
    let all = examples();
    assert!(!all.is_empty());
    for path in all {
        let out = Command::new(bin())
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A user's error is one line, without a Rust backtrace, even where `RUST_BACKTRACE=1` is
/// set (as in many developers' shells).
#[test]
fn a_user_error_is_one_line_without_a_backtrace() {
    let out = Command::new(bin())
        .args(["check", "--config", "/nonexistent/switchyard.toml"])
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        "Error: /nonexistent/switchyard.toml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn check_names_the_file_the_key_and_the_problem() {
    let bs = backends(1);
    let cfg = Scenario::new().length_width(3).toml(&bs);
    let file = TempFile::new("bad.toml", &cfg);
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&file.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file.0.display().to_string()), "{err}");
    assert!(
        err.contains("listener.app.codec.length_width: must be 1, 2, 4 or 8, got 3"),
        "{err}"
    );

    let typo = TempFile::new(
        "typo.toml",
        &Scenario::new().listener_toml("max_frame = 10").toml(&bs),
    );
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&typo.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `max_frame`"), "{err}");
}

#[test]
fn sigterm_finishes_in_flight_messages_and_exits_zero() {
    let slow = TestBackend::start_slow("slow", false, Duration::from_millis(800)).unwrap();
    let mut app = Scenario::new()
        .correlation("in_order")
        .keyless()
        .start_with(vec![slow]);
    let addr = app.addr();
    let client =
        std::thread::spawn(move || run_clients(addr, vec![plan(40, 40, vec![1], 1, false)]));
    eventually(
        "requests to reach the backend",
        Duration::from_secs(10),
        || app.backends[0].messages() >= 40,
    );
    let status = app.proxy.terminate();
    assert!(status.success(), "exit status {status:?}");
    for r in client.join().unwrap() {
        assert_clean(&r);
    }
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
    assert!(app.proxy.stderr().contains("shutdown complete"));
}

#[test]
fn demo_runs_and_shows_keys_sticking() {
    let out = Command::new(bin())
        .args(["demo", "--duration", "2s", "--rate", "500"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("24 seen, 24 answered by exactly one backend"),
        "{stdout}"
    );
}

#[test]
fn a_second_run_on_the_same_address_is_refused_unless_it_takes_over() {
    let config = Scenario::new().workers(2);
    let first = config.clone().start(1);
    let addr = first.addr();
    // The same config with the address the first one bound, as an operator would rerun it.
    let fixed = config.listen(addr).toml(&first.backends);
    let file = TempFile::new("second.toml", &fixed);
    let mut second = Command::new(bin())
        .args(["run", "--config"])
        .arg(&file.0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(Duration::from_secs(10), || second.try_wait().unwrap());
    if status.is_none() {
        let _ = second.kill();
    }
    assert!(
        status.is_some_and(|s| !s.success()),
        "the second run started: {status:?}"
    );
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "listener app: {addr} is already in use by another process"
        )),
        "{err}"
    );
    assert!(err.contains("--takeover"), "{err}");
    // The first one still serves.
    for r in run_clients(addr, vec![plan(50, 8, vec![1], 1, true)]) {
        assert_clean(&r);
    }
    // Asked for explicitly, the second one binds beside it.
    let second = Proxy::start_args(&fixed, &["--takeover"]);
    assert_eq!(second.addr("app"), addr);
}
