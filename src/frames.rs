//! `switchyard frames`: runs a listener's protocol (native or script) over captured bytes and
//! prints every frame's offset, length, key and id, and the backend its key would pin to
//! (simulated with the cluster's policy, all backends up, starting from an empty table).
//! Script authors debug with it; tests use it.

use crate::capture::{self, Flow};
use crate::config::Config;
use std::fmt::Write as _;
use switchyard_core::balance::{picker, Policy};
use switchyard_core::{Cluster, Routed};
use switchyard_proto::{CodecError, Direction, Frame, Framer};

/// A frame's marks (a script's `mark`), by name; `-` for none.
fn marks(flags: switchyard_proto::Flags) -> String {
    use switchyard_proto::Flags;
    let names: Vec<&str> = [
        (Flags::ONE_WAY, "one_way"),
        (Flags::PROVISIONAL, "provisional"),
        (Flags::ENDS_SESSION, "ends_session"),
        (Flags::ANSWER, "answer"),
        (Flags::REQUEST, "request"),
        (Flags::LOCAL, "local"),
        (Flags::DROP, "drop"),
    ]
    .iter()
    .filter(|(f, _)| flags.has(*f))
    .map(|(_, n)| *n)
    .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

/// Which side of the conversation to frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    /// Client → proxy bytes (the listener's `codec`).
    Requests,
    /// Backend → client bytes (the listener's `response_codec`).
    Responses,
}

/// Why `frames` failed.
#[derive(Debug, thiserror::Error)]
pub enum FramesError {
    /// No listener has that name.
    #[error("no listener is named `{0}`")]
    NoListener(String),
    /// The capture could not be read.
    #[error("{0}")]
    Capture(#[from] capture::CaptureError),
    /// The codec could not be built.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// Some flow had bytes the codec refused (the report says where).
    #[error("the codec refused some input")]
    Refused,
}

/// What framing a capture found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// The printable report: one line per frame.
    pub text: String,
    /// Flows framed.
    pub flows: usize,
    /// Frames found in all flows.
    pub frames: usize,
    /// The first error a codec gave, with the flow and offset.
    pub error: Option<String>,
}

/// Frames `input` as listener `listener` of `config` would; returns the report (and
/// `Err(Refused)` with it if any flow had bad bytes).
pub fn run(
    config: &Config,
    listener: &str,
    input: &[u8],
    side: Side,
    port: Option<u16>,
) -> Result<Report, (Report, FramesError)> {
    let fail = |e: FramesError| (Report::default(), e);
    let l = config
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .ok_or_else(|| fail(FramesError::NoListener(listener.to_string())))?;
    let port = port.unwrap_or(l.listen.port());
    let flows = capture::read(input, |from, to| match side {
        Side::Requests => port == 0 || to.port() == port,
        Side::Responses => port == 0 || from.port() == port,
    })
    .map_err(|e| fail(e.into()))?;
    let (protocol, direction) = match side {
        Side::Requests => (&l.protocols.requests, Direction::Requests),
        Side::Responses => (&l.protocols.answers, Direction::Answers),
    };
    let cluster = Cluster::new(config.clusters[l.cluster].balance.clone());
    let mut picker = picker(cluster.settings.policy, cluster.backends.len(), 0);
    let mut report = Report {
        flows: flows.len(),
        ..Report::default()
    };
    for flow in &flows {
        let mut framer = protocol
            .framer(direction, l.limits.max_frame_size)
            .map_err(|e| fail(e.into()))?;
        if flows.len() > 1 || flow.from.port() != 0 {
            let _ = writeln!(
                report.text,
                "# flow {} -> {} ({} bytes)",
                flow.from,
                flow.to,
                flow.bytes.len()
            );
        }
        let (frames, error) = frame_flow(
            &mut *framer,
            flow,
            side,
            &cluster,
            &mut *picker,
            &mut report.text,
        );
        report.frames += frames;
        if let (None, Some(e)) = (&report.error, error) {
            report.error = Some(if flows.len() > 1 {
                format!("flow {} -> {}: {e}", flow.from, flow.to)
            } else {
                e
            });
        }
    }
    if flows.is_empty() {
        let _ = writeln!(report.text, "# no TCP payload matched port {port}");
    }
    if report.error.is_some() {
        return Err((report, FramesError::Refused));
    }
    Ok(report)
}

/// Prints one flow's frames; returns how many it found, and the error if the codec refused
/// some of the flow.
fn frame_flow(
    framer: &mut dyn Framer,
    flow: &Flow,
    side: Side,
    cluster: &Cluster,
    picker: &mut dyn Policy,
    out: &mut String,
) -> (usize, Option<String>) {
    let mut count = 0;
    let _ = writeln!(
        out,
        "{:>10} {:>8}  {:<24} {:<12} {:<22} marks",
        "offset", "len", "key", "id", "backend"
    );
    // Feed the stream in 16 KiB reads, as a connection would.
    let bytes = &flow.bytes;
    let mut buf: Vec<u8> = Vec::new();
    let mut base = 0usize; // stream offset of buf[0]
    let mut fed = 0usize;
    let mut frames: Vec<Frame> = Vec::new();
    while fed < bytes.len() || !buf.is_empty() {
        let next = (fed + (16 << 10)).min(bytes.len());
        buf.extend_from_slice(&bytes[fed..next]);
        let eof = next == bytes.len();
        fed = next;
        if let Err(e) = framer.scan(&buf, &mut frames) {
            let e = format!("error in the bytes from offset {base}: {e}");
            let _ = writeln!(out, "{e}");
            return (count, Some(e));
        }
        count += frames.len();
        let mut at = 0usize;
        for f in frames.drain(..) {
            let frame = &buf[at..at + f.len as usize];
            let key = f.key.map(|k| k.display(frame));
            // Text ids print as text, binary ones as hex.
            let id = match f.id.map(|s| s.slice(frame)) {
                Some(b) if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') => {
                    String::from_utf8_lossy(b).into_owned()
                }
                Some(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
                None => "-".into(),
            };
            let backend = match side {
                Side::Requests => {
                    let mut scratch = [0; 8];
                    let key = f.key.map(|k| k.bytes(frame, &mut scratch));
                    match cluster.route(key, picker, &|_: usize| true) {
                        Routed::To(r) => cluster.backends[r.backend].name.clone(),
                        _ => "-".into(),
                    }
                }
                Side::Responses => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:>10} {:>8}  {:<24} {:<12} {backend:<22} {}",
                base + at,
                f.len,
                key.unwrap_or_else(|| "-".into()),
                id,
                marks(f.flags)
            );
            at += f.len as usize;
        }
        buf.drain(..at);
        base += at;
        if eof {
            if !buf.is_empty() {
                let _ = writeln!(
                    out,
                    "# {} bytes at offset {base} do not complete a frame",
                    buf.len()
                );
            }
            break;
        }
    }
    (count, None)
}
