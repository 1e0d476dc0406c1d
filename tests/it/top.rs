//! `switchyard top` as a person uses it: in a terminal (tmux, 160×45), over ssh-like
//! polling of the admin API, with real traffic. Its numbers move, and its `d`/`u` keys
//! drain and undrain the selected backend (checked against the backends' own counts).
//!
//! Needs tmux (`apt-get install tmux`; the README's test command installs it).

use crate::admin::{get, paced, traffic_moved_off};
use crate::support::*;
use std::process::Command;
use std::time::Duration;

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("tmux is missing ({e}): `apt-get install tmux` (bash .ci/test installs it)")
        });
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills the tmux session on drop.
struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

#[test]
fn top_shows_live_traffic_and_drains_from_the_keyboard() {
    let s = Scenario::new().keyless();
    let bs = backends(2);
    let cfg = format!("{}\n[admin]\nlisten = \"127.0.0.1:0\"\n", s.toml(&bs));
    let proxy = Proxy::start(&cfg);
    let admin = proxy.admin.unwrap();
    let load = paced(proxy.addr("app"), 30, 1000);
    let name = format!("sy-top-{}", std::process::id());
    let cmd = format!("{} top --admin {admin} --interval 300ms", bin());
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "160",
        "-y",
        "45",
        &cmd,
    ]);
    let session = Session(name.clone());
    let screen = || tmux(&["capture-pane", "-p", "-t", &name]);
    let first = wait_for(Duration::from_secs(10), || {
        let s = screen();
        (s.contains("switchyard top") && s.contains("app/b1") && s.contains("app/b2")).then_some(s)
    })
    .unwrap_or_else(|| panic!("top never drew its view:\n{}", screen()));
    assert!(
        first.contains("listeners") && first.contains("backends"),
        "{first}"
    );
    // The largest whole number of b1's row (its requests) grows between two frames.
    let requests = |s: &str| {
        s.lines()
            .find(|l| l.contains("app/b1"))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|w| w.parse::<u64>().ok())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    let before = requests(&first);
    eventually("top's numbers to move", Duration::from_secs(5), || {
        requests(&screen()) > before
    });
    // `d` drains the selected row (the first, b1); the backends' own counts agree.
    tmux(&["send-keys", "-t", &name, "d"]);
    eventually("b1 drained", Duration::from_secs(5), || {
        get(admin, "/api/backends")[0]["draining"] == true
    });
    traffic_moved_off(&bs, "b1", Duration::from_millis(400));
    eventually("top to show it", Duration::from_secs(5), || {
        screen()
            .lines()
            .any(|l| l.contains("app/b1") && l.contains("draining"))
    });
    tmux(&["send-keys", "-t", &name, "u"]);
    eventually("b1 undrained", Duration::from_secs(5), || {
        get(admin, "/api/backends")[0]["draining"] == false
    });
    // `q` quits and gives the terminal back.
    tmux(&["send-keys", "-t", &name, "q"]);
    eventually("top to exit", Duration::from_secs(5), || {
        !Command::new("tmux")
            .args(["has-session", "-t", &name])
            .status()
            .is_ok_and(|s| s.success())
    });
    drop(session);
    drop(load);
}
