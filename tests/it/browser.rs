//! The status page in a real browser: Debian's chromium, driven by Playwright for Python
//! (`tests/browser/status_page.py`), against the real binary with real backends under
//! traffic. It checks that the page loads, that its numbers move, that its Drain button
//! moves traffic off a backend, and, once traffic stops, that it shows what each backend
//! served — the last two against the backends' own counts.
//! Screenshots go to `target/test-artifacts/status-page/` (CI keeps the folder).
//!
//! Needs chromium (`apt-get install chromium`) and a Python with Playwright: the README's
//! test command (`bash .ci/test`) installs both (the venv in `target/browser-venv`).

use crate::admin::{call, paced, traffic_moved_off};
use crate::support::*;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python with Playwright, and the browser; a clear failure if either is missing.
fn browser() -> (PathBuf, PathBuf) {
    let python = std::env::var_os("SWITCHYARD_BROWSER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/browser-venv/bin/python"));
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.exists(),
        "{} is missing: `apt-get install chromium` (the README's test command, bash .ci/test, installs it)",
        chromium.display()
    );
    let ok = Command::new(&python)
        .args(["-c", "import playwright"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import playwright: `python3 -m venv target/browser-venv && target/browser-venv/bin/pip install playwright` (bash .ci/test does it)",
        python.display()
    );
    (python, chromium)
}

#[test]
fn the_status_page_loads_moves_and_drains_in_chromium() {
    let (python, chromium) = browser();
    let token = "page-test-token-0123456789";
    let s = Scenario::new().keyless().workers(2);
    let bs = backends(3);
    let cfg = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n",
        s.toml(&bs)
    );
    let proxy = Proxy::start(&cfg);
    let admin = proxy.admin.unwrap();
    // Long enough for the page's steps (about 12 s), short enough that the page sees it end.
    let load = paced(proxy.addr("app"), 22, 1500);
    let shots = repo().join("target/test-artifacts/status-page");
    let _ = std::fs::remove_dir_all(&shots);
    let mut child = Command::new(&python)
        .arg(repo().join("tests/browser/status_page.py"))
        .args(["--url", &format!("http://{admin}/")])
        .args([
            "--backend",
            "app/b2",
            "--token",
            token,
            "--hold",
            "3",
            "--final",
        ])
        .arg("--shots")
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the browser test");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last = String::new();
    let mut checked = false;
    let mut shown = None;
    for line in lines.by_ref().map_while(Result::ok) {
        if line.starts_with("{\"final\": ") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            shown = Some(v["final"].clone());
            continue;
        }
        if line.contains("\"drained\"") && !line.contains("\"ok\"") {
            // The page says b2 is drained: the backends' own counts must agree.
            let (_, v) = call("GET", admin, "/api/backends", Some(token));
            let b2 = v
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["name"] == "b2")
                .unwrap();
            assert_eq!(b2["draining"], true, "{b2}");
            traffic_moved_off(&bs, "b2", Duration::from_millis(500));
            checked = true;
        }
        last = line;
    }
    let status = wait_for(Duration::from_secs(90), || child.try_wait().unwrap())
        .expect("the browser test did not end");
    assert!(status.success(), "the browser test failed: {last}");
    assert!(checked, "the page never said it drained b2: {last}");
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    // Once traffic stopped, the page showed what each backend itself served.
    let shown = shown.expect("the page's final counts");
    for b in &bs {
        assert_eq!(
            shown[format!("app/{}", b.name)].as_f64(),
            Some(b.messages() as f64),
            "the page's requests for {} against the backend's own count ({shown})",
            b.name
        );
    }
    let r = load.join().unwrap();
    assert!(
        r.error.is_none() && r.mismatches.is_empty(),
        "{:?}",
        r.error
    );
    for name in [
        "01-loaded.png",
        "02-moving.png",
        "03-drained.png",
        "04-undrained.png",
        "05-final.png",
    ] {
        let len = std::fs::metadata(shots.join(name)).map_or(0, |m| m.len());
        assert!(len > 10_000, "screenshot {name}: {len} bytes");
    }
}
