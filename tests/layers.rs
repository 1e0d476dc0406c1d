//! The architecture, checked: dependencies run one way. Each crate's modules sit in layers
//! (docs/architecture.md draws them); a module may use modules of lower layers only, so
//! there can be no import circle. The pure crates stay pure: `switchyard-proto` uses no
//! other Switchyard crate and no async runtime; `switchyard-core` uses `switchyard-proto`
//! only, and no async runtime. And no source file grows past 500 lines of non-test code
//! without being split along the data path.
//!
//! A module's uses are read from its source: every `crate::<module>` outside comments
//! (test code, which may reach anywhere to set a case up, is left out).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The proxy crate's layers, lowest first.
const PROXY: &[&[&str]] = &[
    &[
        "budget",
        "throttle",
        "capture",
        "metrics",
        "access_log",
        "transport",
    ],
    &["config"],
    &["registry"],
    &["backend"],
    &["client"],
    &["listener", "health"],
    &["worker"],
    &["admin"],
    &["server"],
    &["frames", "demo", "top"],
];

/// `switchyard-core`'s layers.
const CORE: &[&[&str]] = &[
    &["clock", "error", "settings"],
    &["ticket", "session", "correlate", "health"],
    &["balance"],
];

/// `switchyard-proto`'s layers.
const PROTO: &[&[&str]] = &[
    &["error", "frame"],
    &["protocol"],
    &["measured"],
    &[
        "length_field",
        "delimiter",
        "resp",
        "memcache",
        "lua",
        "netstring",
        "dns",
        "proxy_header",
    ],
    &["template"],
    &["config"],
];

/// Files that are test code throughout.
const TEST_FILES: &[&str] = &["tests.rs", "props.rs", "testing.rs", "long_life.rs"];

/// Most lines of non-test code in one file.
const MAX_LINES: usize = 500;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's non-test code, comments left out: everything before its test module (an
/// unindented `#[cfg(test)]` on a `mod`, which clippy keeps last in the file). Other
/// `#[cfg(test)]` items (a helper, a re-export for tests) count as code.
fn code_of(path: &Path) -> Vec<String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if TEST_FILES.contains(&name) {
        return Vec::new();
    }
    let text = std::fs::read_to_string(path).expect("source");
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0] == "#[cfg(test)]" && w[1].starts_with("mod "))
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| l.to_string())
        .collect()
}

/// The module path of a file under `src` (`client/reply/mod.rs` → `[client, reply]`,
/// `client/route.rs` → `[client, route]`).
fn module_path(src: &Path, path: &Path) -> Vec<String> {
    let rel = path.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_str()
                .expect("utf-8")
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The top-level module a file belongs to (`src/client/route.rs` → `client`).
fn module_of(src: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_str()
        .expect("utf-8")
        .trim_end_matches(".rs")
        .to_string()
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level modules `lines` name: every `crate::<name>`, and every `super::…::<name>`
/// with enough `super`s to climb out of the file's own top-level module (`at` is the file's
/// module path).
fn uses(lines: &[String], at: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in lines {
        let mut rest = l.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
        let mut rest = l.as_str();
        while let Some(i) = rest.find("super::") {
            // Only a path's first `super` starts a climb.
            let whole = rest[..i]
                .ends_with(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                || i == 0;
            let mut tail = &rest[i..];
            let mut up = 0;
            while let Some(t) = tail.strip_prefix("super::") {
                up += 1;
                tail = t;
            }
            rest = tail;
            let name = ident(tail);
            if whole && up >= at.len() && !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn layer(layers: &[&[&str]], module: &str) -> Option<usize> {
    layers.iter().position(|l| l.contains(&module))
}

/// Checks the layering of the crate whose sources are in `src`; returns the violations.
fn check_layers(src: &Path, layers: &[&[&str]]) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut bad = Vec::new();
    for path in files {
        let module = module_of(src, &path);
        if module == "lib" || module == "main" {
            continue;
        }
        let code = code_of(&path);
        if code.is_empty() {
            continue;
        }
        let Some(own) = layer(layers, &module) else {
            bad.push(format!(
                "{}: module `{module}` is in no layer of tests/layers.rs: place it",
                path.display()
            ));
            continue;
        };
        for used in uses(&code, &module_path(src, &path)) {
            if used == module {
                continue;
            }
            match layer(layers, &used) {
                Some(l) if l < own => {}
                Some(_) => bad.push(format!(
                    "{}: `{module}` uses `{used}`, which is not in a lower layer",
                    path.display()
                )),
                None => bad.push(format!(
                    "{}: `{module}` uses `{used}`, which is in no layer",
                    path.display()
                )),
            }
        }
    }
    bad
}

#[test]
fn the_proxy_crate_depends_one_way() {
    let bad = check_layers(&root().join("src"), PROXY);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_core_crate_depends_one_way() {
    let bad = check_layers(&root().join("crates/core/src"), CORE);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_proto_crate_depends_one_way() {
    let bad = check_layers(&root().join("crates/proto/src"), PROTO);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Lines of `crate`'s manifest `[dependencies]` table.
fn dependencies(krate: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml"))
        .expect("manifest");
    text.lines()
        .skip_while(|l| l.trim() != "[dependencies]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter_map(|l| l.split(['=', ' ']).next())
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Names no non-test code of the crate in `src` may mention.
fn mentions(src: &Path, banned: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut bad = Vec::new();
    for path in files {
        for l in code_of(&path) {
            for b in banned {
                if l.contains(b) {
                    bad.push(format!("{}: {}", path.display(), l.trim()));
                }
            }
        }
    }
    bad
}

#[test]
fn the_pure_crates_stay_pure() {
    let proto = dependencies("proto");
    let core = dependencies("core");
    assert!(!proto.is_empty() && !core.is_empty(), "manifests read");
    for banned in ["tokio", "switchyard-core", "switchyard", "socket2"] {
        assert!(
            !proto.iter().any(|d| d == banned),
            "switchyard-proto depends on {banned}: {proto:?}"
        );
    }
    for banned in ["tokio", "switchyard", "socket2"] {
        assert!(
            !core.iter().any(|d| d == banned),
            "switchyard-core depends on {banned}: {core:?}"
        );
    }
    let bad = mentions(
        &root().join("crates/proto/src"),
        &["switchyard_core", "switchyard::", "tokio", "std::net::Tcp"],
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let bad = mentions(
        &root().join("crates/core/src"),
        &["switchyard::", "tokio", "std::net::Tcp"],
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn no_file_outgrows_its_concern() {
    let mut files = Vec::new();
    for dir in ["src", "crates/core/src", "crates/proto/src"] {
        sources(&root().join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .map(|p| (p, code_of(p).len()))
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(p, n)| format!("{}: {n} lines of non-test code", p.display()))
        .collect();
    assert!(
        long.is_empty(),
        "split these along the data path:\n{}",
        long.join("\n")
    );
}

/// The checks can fail: an upward use and an unplaced module are caught.
#[test]
fn the_layer_check_catches_an_upward_use() {
    let dir = std::env::temp_dir().join(format!("sy-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("low.rs"), "use crate::high::Thing;\n").expect("write");
    std::fs::write(dir.join("high.rs"), "use crate::low::Other;\n").expect("write");
    std::fs::write(dir.join("stray.rs"), "// uses nothing\nfn f() {}\n").expect("write");
    let bad = check_layers(&dir, &[&["low"], &["high"]]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].contains("`low` uses `high`") || bad[1].contains("`low` uses `high`"));
    assert!(bad.iter().any(|b| b.contains("`stray` is in no layer")));
}

/// The reading of uses sees paths that climb with `super`, and only when they leave the
/// file's own top-level module.
#[test]
fn uses_follow_super_paths_out_of_the_module() {
    let at = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let code = |l: &str| vec![l.to_string()];
    let climbs = uses(
        &code("use super::super::demo::backend::TestBackend;"),
        &at(&["client", "x"]),
    );
    assert_eq!(climbs.into_iter().collect::<Vec<_>>(), ["demo"]);
    let stays = uses(&code("use super::reply::Client;"), &at(&["client", "x"]));
    assert!(stays.is_empty(), "{stays:?}");
    let from_mod = uses(&code("use super::worker;"), &at(&["client"]));
    assert_eq!(from_mod.into_iter().collect::<Vec<_>>(), ["worker"]);
}
