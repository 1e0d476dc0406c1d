//! `switchyard frames`: a listener's codec over raw bytes and pcap captures.

use crate::support::*;
use std::process::Command;

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn frames(
    config: &std::path::Path,
    listener: &str,
    input: &std::path::Path,
    extra: &[&str],
) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(["frames", "--config"])
        .arg(config)
        .args(["--listener", listener, "--input"])
        .arg(input)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lua_and_native_codecs_frame_a_capture_identically() {
    let mut stream = Vec::new();
    for i in 0..50u32 {
        switchyard::demo::proto::write_request(
            &mut stream,
            u64::from(i % 7) << 40,
            i,
            &vec![b'p'; (i * 13 % 200) as usize],
        );
    }
    let raw = TempFile::new("cap.bin", "");
    std::fs::write(&raw.0, &stream).unwrap();
    let (ok, lua, err) = frames(
        &examples().join("lua-binary.toml"),
        "orders-lua",
        &raw.0,
        &[],
    );
    assert!(ok, "{err}");
    let (ok, native, err) = frames(&examples().join("orders.toml"), "orders", &raw.0, &[]);
    assert!(ok, "{err}");
    assert_eq!(lua, native);
    assert_eq!(lua.lines().count(), 51, "{lua}");
    assert!(lua.contains("0000060000000000"), "keys are shown: {lua}");
}

#[test]
fn sip_requests_and_answers_from_a_pcap() {
    let req = |call: &str, cseq: u32| {
        format!("INVITE sip:bob@x SIP/2.0\r\nCall-ID: {call}\r\nCSeq: {cseq} INVITE\r\nContent-Length: 3\r\n\r\nabc").into_bytes()
    };
    let a = req("alpha@host", 1);
    let b = req("beta@host", 2);
    // The second request arrives split across two segments, and the first is retransmitted.
    let split = 20;
    let packets = [
        (40000, 5060, 1000, a.clone()),
        (40000, 5060, 1000 + a.len() as u32, b[..split].to_vec()),
        (40000, 5060, 1000, a.clone()),
        (
            40000,
            5060,
            1000 + (a.len() + split) as u32,
            b[split..].to_vec(),
        ),
        (
            5060,
            40000,
            7,
            b"SIP/2.0 200 OK\r\nCall-ID: alpha@host\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        ),
    ];
    let cap = TempFile::new("sip.pcap", "");
    let segments: Vec<(u16, u16, u32, &[u8])> = packets
        .iter()
        .map(|(s, d, q, p)| (*s, *d, *q, &p[..]))
        .collect();
    std::fs::write(&cap.0, switchyard::capture::write_pcap(&segments)).unwrap();
    let (ok, out, err) = frames(&examples().join("sip.toml"), "sip", &cap.0, &[]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains("@host")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[0].contains("alpha@host") && rows[0].split_whitespace().nth(3) == Some("1"),
        "{out}"
    );
    assert!(
        rows[1].contains("beta@host") && rows[1].split_whitespace().nth(3) == Some("2"),
        "{out}"
    );
    let (ok, out, err) = frames(
        &examples().join("sip.toml"),
        "sip",
        &cap.0,
        &["--direction", "responses"],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains("alpha@host")).count(),
        1,
        "{out}"
    );
}

#[test]
fn bad_bytes_are_reported_with_their_offset() {
    let raw = TempFile::new("bad.bin", "");
    let mut stream = Vec::new();
    switchyard::demo::proto::write_request(&mut stream, 1, 1, b"ok");
    stream.extend_from_slice(&[0, 0, 0, 2, 9, 9]);
    std::fs::write(&raw.0, &stream).unwrap();
    let (ok, out, err) = frames(
        &examples().join("lua-binary.toml"),
        "orders-lua",
        &raw.0,
        &[],
    );
    assert!(!ok);
    assert!(out.contains("error in the bytes from offset 0: script rejected the input: frame of 6 bytes is shorter than its 16-byte header"), "{out}");
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn the_tutorial_script_frames_its_protocol() {
    let mut stream = Vec::new();
    for (key, id) in [("alice", 1u32), ("bob", 2), ("alice", 3)] {
        let mut body = vec![7u8];
        body.extend_from_slice(key.as_bytes());
        body.push(b'|');
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(b"rest");
        stream.extend_from_slice(&(body.len() as u16).to_be_bytes());
        stream.extend_from_slice(&body);
    }
    let raw = TempFile::new("tutorial.bin", "");
    std::fs::write(&raw.0, &stream).unwrap();
    let (ok, out, err) = frames(&examples().join("tutorial.toml"), "tutorial", &raw.0, &[]);
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!((rows[0][2], rows[0][3]), ("alice", "00000001"));
    assert_eq!((rows[1][2], rows[1][3]), ("bob", "00000002"));
    assert_eq!(rows[0][4], rows[2][4], "alice sticks: {out}");
}

#[test]
fn check_with_a_sample_runs_the_script_on_real_bytes() {
    // Loading runs only the script's top level: a bug inside `scan` passes plain `check`.
    let script = TempFile::new(
        "buggy.lua",
        "return {\n  scan = function(data, len, out)\n    return frames_found(data)\n  end,\n}\n",
    );
    let cfg = TempFile::new(
        "buggy.toml",
        &format!(
            "[[listener]]\nname = \"buggy\"\nlisten = \"127.0.0.1:0\"\ncluster = \"c\"\n\
             [listener.codec]\nkind = \"lua\"\nscript = \"{}\"\n\
             [[cluster]]\nname = \"c\"\nbackends = [{{ address = \"127.0.0.1:1\" }}]\n",
            script.0.display()
        ),
    );
    let mut sample = Vec::new();
    switchyard::demo::proto::write_request(&mut sample, 1, 1, b"hello");
    let input = TempFile::new("sample.bin", "");
    std::fs::write(&input.0, &sample).unwrap();
    let check = |extra: &[&str]| {
        let out = Command::new(bin())
            .args(["check", "--config"])
            .arg(&cfg.0)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = check(&[]);
    assert!(ok, "{out}");
    let path = input.0.display().to_string();
    let (ok, out) = check(&["--sample", &path]);
    assert!(!ok, "{out}");
    assert!(out.contains("listener buggy"), "{out}");
    assert!(out.contains("buggy.lua:3"), "{out}");
    // The example script frames the same sample.
    let good = examples().join("lua-binary.toml");
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&good)
        .args(["--sample", &path])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("framed 1 frame(s) in 1 flow(s)"), "{text}");
}
