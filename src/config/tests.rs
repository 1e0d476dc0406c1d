//! Config errors name the file, the key and the problem.

use super::{parse, ConfigError};
use std::path::Path;
use switchyard_core::settings::OnBackendDown;

const GOOD: &str = r#"
workers = 2
[[listener]]
name = "orders"
listen = "127.0.0.1:7000"
cluster = "orders"
correlation = "by_id"
[listener.codec]
kind = "length_field"
length_offset = 0
length_width = 4
length_adjust = 0
endian = "big"
key = { offset = 4, width = 8 }
id = { offset = 12, width = 4 }

[[cluster]]
name = "orders"
policy = "least_outstanding"
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002", weight = 2 }]
[cluster.persistence]
store = "memory"
ttl = "10m"
max_entries = 1000000
"#;

fn err(text: &str) -> String {
    match parse(text, Path::new("sy.toml")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("config was accepted"),
    }
}

#[test]
fn issue_example_is_valid() {
    let c = parse(GOOD, Path::new("sy.toml")).unwrap();
    assert_eq!(c.workers, 2);
    assert_eq!(c.clusters[0].balance.backends[1].weight, 2);
    assert_eq!(
        c.clusters[0].balance.persistence.unwrap().ttl.as_secs(),
        600
    );
}

#[test]
fn errors_name_file_key_and_problem() {
    let e = err(&GOOD.replace("length_width = 4", "length_width = 3"));
    assert_eq!(
        e,
        "sy.toml: listener.orders.codec.length_width: must be 1, 2, 4 or 8, got 3"
    );
    let e = err(&GOOD.replace("policy = \"least_outstanding\"", "policy = \"fastest\""));
    assert!(
        e.starts_with("sy.toml: cluster.orders.policy: unknown policy `fastest`"),
        "{e}"
    );
    let e = err(&GOOD.replace("cluster = \"orders\"", "cluster = \"nope\""));
    assert!(
        e.contains("listener.orders.cluster: no [[cluster]] is named `nope`"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "policy = \"least_outstanding\"",
        "policy = \"ketama\"\nhash_tag = \"{\"",
    ));
    assert_eq!(
        e,
        "sy.toml: cluster.orders.hash_tag: must be two ASCII characters, such as \"{}\", got \"{\""
    );
    let e = err(&GOOD.replace("ttl = \"10m\"", "ttl = \"ten\""));
    assert!(
        e.contains("cluster.orders.persistence.ttl: `ten` is not a duration"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let e = err(&GOOD.replace("endian = \"big\"", "endian = \"big\"\nendianness = 1"));
    assert!(e.starts_with("sy.toml: "), "{e}");
    assert!(e.contains("unknown field `endianness`"), "{e}");
    // A key of another codec kind: serde names it and the codec table's line (the table is
    // read whole to find its `kind` first, so the line is the table's).
    let e = err(&GOOD.replace("endian = \"big\"", "endian = \"big\"\nkey_token = 1"));
    assert!(e.contains("unknown field `key_token`"), "{e}");
    assert!(
        e.contains("line 8") && e.contains("[listener.codec]"),
        "{e}"
    );
}

#[test]
fn by_id_needs_an_id() {
    let e = err(&GOOD.replace("id = { offset = 12, width = 4 }", ""));
    assert!(
        e.contains("listener.orders.correlation: by_id needs"),
        "{e}"
    );
}

#[test]
fn read_error_names_file() {
    let e = crate::config::load(Path::new("/nonexistent/sy.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e
        .to_string()
        .starts_with("/nonexistent/sy.toml: cannot read"));
}

#[test]
fn key_hashing_clusters_fail_a_down_servers_keys_by_default() {
    for (policy, want) in [
        ("ketama", OnBackendDown::Fail),
        ("maglev", OnBackendDown::Fail),
        ("round_robin", OnBackendDown::Repin),
    ] {
        let c = parse(
            &GOOD.replace(
                "policy = \"least_outstanding\"",
                &format!("policy = \"{policy}\""),
            ),
            Path::new("sy.toml"),
        )
        .unwrap();
        assert_eq!(c.clusters[0].balance.on_backend_down, want, "{policy}");
    }
}

#[test]
fn poison_isolation_settings_are_checked() {
    // Retries where nothing is awaited make no sense.
    let none = GOOD.replace(
        "correlation = \"by_id\"",
        "correlation = \"none\"\nretry_on_backend_close = true",
    );
    let e = err(&none);
    assert!(
        e.contains("listener.orders.retry_on_backend_close: with correlation = \"none\""),
        "{e}"
    );
    // Generic codecs do not retry unless told; dns does.
    let c = parse(GOOD, Path::new("sy.toml")).unwrap();
    assert!(!c.listeners[0].retry_on_backend_close);
    let dns = GOOD.replace(
        "kind = \"length_field\"\nlength_offset = 0\nlength_width = 4\nlength_adjust = 0\nendian = \"big\"\nkey = { offset = 4, width = 8 }\nid = { offset = 12, width = 4 }",
        "kind = \"dns\"",
    );
    let c = parse(&dns, Path::new("sy.toml")).unwrap();
    assert!(c.listeners[0].retry_on_backend_close);
    let e = err(&dns.replace("correlation = \"by_id\"", "correlation = \"in_order\""));
    assert!(
        e.contains("listener.orders.correlation: the dns codec's answers come in any order"),
        "{e}"
    );
    let resp = dns.replace("kind = \"dns\"", "kind = \"resp\"");
    let e = err(&resp);
    assert!(
        e.contains(
            "listener.orders.correlation: the resp codec answers in order: only in_order fits"
        ),
        "{e}"
    );
    let e = err(&dns.replace("kind = \"dns\"", "kind = \"dns\"\nkey = \"name\""));
    assert!(
        e.contains("listener.orders.codec.key: must be \"qname\""),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "max_entries = 1000000",
        "max_entries = 1000000\n[cluster.pool]\nquick_ack = \"sometimes\"",
    ));
    assert!(
        e.contains(
            "cluster.orders.pool.quick_ack: must be `auto`, `always` or `never`, got `sometimes`"
        ),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "id = { offset = 12, width = 4 }",
        "id = { offset = 12, width = 4 }\nmust = { offset = 4, mask = 0x80, value = 0x81 }",
    ));
    assert!(
        e.contains("listener.orders.codec.must.value: 0x81 has bits outside mask 0x80"),
        "{e}"
    );
}

#[test]
fn admin_defaults_to_loopback_and_names_its_keys() {
    let c = parse(&format!("{GOOD}\n[admin]\n"), Path::new("sy.toml")).unwrap();
    let a = c.admin.unwrap();
    assert_eq!(a.listen.to_string(), "127.0.0.1:9901");
    assert_eq!(a.token, None);
    assert!(format!("{a:?}").contains("listen"));
    let short = err(&format!("{GOOD}\n[admin]\ntoken = \"short\"\n"));
    assert!(
        short.contains("sy.toml: admin.token: the token must be at least 16"),
        "{short}"
    );
    let unset = err(&format!(
        "{GOOD}\n[admin]\ntoken_env = \"SWITCHYARD_TEST_NO_SUCH_VARIABLE\"\n"
    ));
    assert!(
        unset.contains("admin.token_env") && unset.contains("is not set"),
        "{unset}"
    );
    let public = err(&format!("{GOOD}\n[admin]\nlisten = \"0.0.0.0:9901\"\n"));
    assert!(
        public.contains("admin.listen") && public.contains("not a loopback"),
        "{public}"
    );
    let sample = err(&format!(
        "{GOOD}\n[admin]\n[admin.access_log]\npath = \"a.log\"\nsample = 2.0\n"
    ));
    assert!(sample.contains("admin.access_log.sample"), "{sample}");
    // The token never shows in a debug print of the config.
    let t = parse(
        &format!("{GOOD}\n[admin]\ntoken = \"0123456789abcdefXYZ\"\n"),
        Path::new("sy.toml"),
    )
    .unwrap();
    assert!(!format!("{:?}", t.admin).contains("0123456789abcdefXYZ"));
}

#[test]
fn least_sessions_needs_pins_and_as_sent_ids_are_not_retried() {
    let e = err(&GOOD
        .replace(
            "policy = \"least_outstanding\"",
            "policy = \"least_sessions\"",
        )
        .replace(
            "[cluster.persistence]\nstore = \"memory\"\nttl = \"10m\"\nmax_entries = 1000000\n",
            "",
        ));
    assert!(
        e.starts_with("sy.toml: cluster.orders.policy: least_sessions counts"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "correlation = \"by_id\"",
        "correlation = \"by_id_as_sent\"\nretry_on_backend_close = true",
    ));
    assert!(
        e.starts_with(
            "sy.toml: listener.orders.retry_on_backend_close: with correlation = \"by_id_as_sent\""
        ),
        "{e}"
    );
    let ok = parse(
        &GOOD.replace("correlation = \"by_id\"", "correlation = \"by_id_as_sent\""),
        Path::new("sy.toml"),
    )
    .unwrap();
    assert!(!ok.listeners[0].retry_on_backend_close);
}

#[test]
fn configs_that_drop_every_push_are_warned_about() {
    let none = GOOD.replace("correlation = \"by_id\"", "correlation = \"none\"");
    assert!(parse(&none, Path::new("sy.toml"))
        .unwrap()
        .warnings()
        .is_empty());
    let unpinned = none.replace(
        "[cluster.persistence]\nstore = \"memory\"\nttl = \"10m\"\nmax_entries = 1000000\n",
        "",
    );
    let w = parse(&unpinned, Path::new("sy.toml")).unwrap().warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(
            "listener.orders.correlation: with \"none\" every message a backend sends is a push"
        ),
        "{w:?}"
    );
    let keyless = none.replace("key = { offset = 4, width = 8 }\n", "");
    let w = parse(&keyless, Path::new("sy.toml")).unwrap().warnings();
    assert!(
        w[0].starts_with("listener.orders.response_codec:") && w[0].contains("finds no key"),
        "{w:?}"
    );
    assert!(parse(GOOD, Path::new("sy.toml"))
        .unwrap()
        .warnings()
        .is_empty());
}
