//! The sampled access log: one request in `1/sample` per listener and worker is followed
//! to its answer, and written as a JSON line (listener, key, backend, latency, outcome) by
//! a writer thread of its own, so that no worker ever waits on the file. Records go to it
//! through a bounded queue; when the writer falls behind, records are dropped and counted.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records waiting for the writer, at most.
const QUEUE: usize = 4096;

/// One sampled request, from routing to its answer.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// The request's place in its client's order.
    pub(crate) seq: u64,
    /// When it was sent.
    pub(crate) at: Instant,
    pub(crate) listener: Arc<str>,
    pub(crate) key: Option<String>,
    pub(crate) backend: Arc<str>,
    pub(crate) client: String,
}

/// One line of the log.
#[derive(Debug, Serialize)]
struct Record<'a> {
    ts_unix_ms: u64,
    listener: &'a str,
    client: &'a str,
    key: Option<&'a str>,
    backend: &'a str,
    latency_us: u64,
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// Counts of records written and dropped.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Tally {
    pub(crate) written: u64,
    pub(crate) dropped: u64,
}

/// Why the access log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("admin.access_log.path: cannot open {path}: {source}")]
pub struct OpenError {
    path: String,
    source: std::io::Error,
}

#[derive(Debug, Default)]
struct Counts {
    written: AtomicU64,
    dropped: AtomicU64,
}

/// The log, shared by every worker; off unless configured.
#[derive(Debug, Default)]
pub(crate) struct AccessLog {
    tx: Option<SyncSender<String>>,
    /// Follow one request in this many.
    every: u32,
    counts: Arc<Counts>,
}

impl AccessLog {
    /// A log that records nothing.
    pub(crate) fn off() -> Self {
        Self::default()
    }

    /// Opens `path` (`-`: standard output) for appending and starts its writer thread;
    /// one request in `1/sample` is logged.
    pub(crate) fn open(path: &Path, sample: f64) -> Result<Self, OpenError> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| OpenError {
                    path: path.display().to_string(),
                    source,
                })?;
            Box::new(f)
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let spawned = std::thread::Builder::new()
            .name("sy-access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(out);
                while let Ok(line) = rx.recv() {
                    let mut batch = vec![line];
                    // Whatever queued meanwhile goes in the same write.
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let n = batch.len() as u64;
                    let ok = batch.iter().all(|l| out.write_all(l.as_bytes()).is_ok())
                        && out.flush().is_ok();
                    // A failed write (a full disk) loses the batch: counted as dropped.
                    let counter = if ok { &c.written } else { &c.dropped };
                    counter.fetch_add(n, Ordering::Relaxed);
                }
            });
        if let Err(source) = spawned {
            return Err(OpenError {
                path: path.display().to_string(),
                source,
            });
        }
        Ok(AccessLog {
            tx: Some(tx),
            every: (1.0 / sample).round().clamp(1.0, f64::from(u32::MAX)) as u32,
            counts,
        })
    }

    /// Follow one request in this many (0: the log is off).
    pub(crate) fn every(&self) -> u32 {
        if self.tx.is_some() {
            self.every
        } else {
            0
        }
    }

    /// Writes the record of `sample`, answered (`reason` `None`) or failed, now.
    pub(crate) fn finish(&self, sample: &Sample, reason: Option<&str>) {
        let Some(tx) = &self.tx else {
            return;
        };
        let latency = sample.at.elapsed();
        let record = Record {
            ts_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_millis() as u64,
            listener: &sample.listener,
            client: &sample.client,
            key: sample.key.as_deref(),
            backend: &sample.backend,
            latency_us: latency.as_micros() as u64,
            outcome: if reason.is_some() {
                "failed"
            } else {
                "answered"
            },
            reason,
        };
        let Ok(mut line) = serde_json::to_string(&record) else {
            return;
        };
        line.push('\n');
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records written and dropped so far.
    pub(crate) fn tally(&self) -> Tally {
        Tally {
            written: self.counts.written.load(Ordering::Relaxed),
            dropped: self.counts.dropped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_json_lines_and_counts_them() {
        let dir = std::env::temp_dir().join(format!("sy-access-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::open(&path, 0.5).unwrap();
        assert_eq!(log.every(), 2);
        let s = Sample {
            seq: 1,
            at: Instant::now(),
            listener: "l".into(),
            key: Some("user:1".into()),
            backend: "b1".into(),
            client: "w0#1".into(),
        };
        log.finish(&s, None);
        log.finish(&s, Some("backend b1 failed"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.tally().written < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["key"], "user:1");
        assert_eq!(lines[0]["outcome"], "answered");
        assert_eq!(lines[1]["outcome"], "failed");
        assert_eq!(lines[1]["reason"], "backend b1 failed");
        assert_eq!(AccessLog::off().every(), 0);
    }
}
