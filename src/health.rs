//! Active health checks: one probe task per backend of every cluster with a
//! `[cluster.health]` table, on the control thread (never on a worker). A probe connects,
//! optionally sends bytes and checks the answer (prefix or regex), within `timeout`. `fall`
//! consecutive failures take the backend out of balancing (no new messages, no new pins;
//! pinned keys move or fail as `on_backend_down` says); `rise` consecutive passes bring it
//! back (the counting is the core's [`Verdict`]; this module does the probes' I/O). Every
//! state change is logged with the reason. (Passive outlier ejection is the core's
//! `health::passive`, fed by the backend side.)

use crate::backend::Upstream;
use crate::config::{Expect, HealthConfig};
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::health::active::{Change, Verdict};
use switchyard_core::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// Largest answer a probe reads before judging it.
const MAX_PROBE_ANSWER: usize = 4096;

/// Runs one probe; `Err` says why it failed.
pub(crate) async fn probe(
    backend: &Backend,
    cfg: &HealthConfig,
    how: &crate::transport::Outbound,
) -> Result<(), String> {
    let work = async {
        let mut dialed = crate::transport::connect(backend.address, how).await?;
        let s = dialed.io();
        if let Some(bytes) = &cfg.send {
            s.write_all(bytes)
                .await
                .map_err(|e| format!("send failed: {e}"))?;
        }
        let Some(expect) = &cfg.expect else {
            return Ok(());
        };
        let mut got = Vec::new();
        loop {
            if matches_expect(expect, &got) {
                return Ok(());
            }
            if got.len() >= MAX_PROBE_ANSWER {
                return Err(format!(
                    "unexpected answer {:?}",
                    String::from_utf8_lossy(&got[..64.min(got.len())])
                ));
            }
            let mut chunk = [0u8; 512];
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                return Err(if got.is_empty() {
                    "closed without answering".to_string()
                } else {
                    format!(
                        "unexpected answer {:?}",
                        String::from_utf8_lossy(&got[..64.min(got.len())])
                    )
                });
            }
            got.extend_from_slice(&chunk[..n]);
        }
    };
    match tokio::time::timeout(cfg.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no passing answer within {:?}", cfg.timeout)),
    }
}

fn matches_expect(expect: &Expect, got: &[u8]) -> bool {
    match expect {
        Expect::Prefix(p) => got.len() >= p.len() && got.starts_with(p),
        Expect::Regex(r) => !got.is_empty() && r.is_match(&String::from_utf8_lossy(got)),
    }
}

/// Probes one backend forever (until aborted), applying rise/fall to its health flag.
async fn check_loop(
    cluster: String,
    backend: Arc<Backend>,
    cfg: HealthConfig,
    how: crate::transport::Outbound,
) {
    // Spread the first probes of many backends over one interval.
    let offset = fastrand::u64(0..=cfg.interval.as_millis() as u64);
    tokio::time::sleep(Duration::from_millis(offset)).await;
    let mut verdict = Verdict::new(cfg.rise, cfg.fall);
    loop {
        let result = probe(&backend, &cfg, &how).await;
        let healthy = backend.healthy();
        let change = verdict.record(result.is_ok(), healthy);
        let (passes, fails) = (verdict.passes(), verdict.fails());
        match (change, result) {
            (Change::BackInService, _) => {
                backend.set_healthy(true);
                tracing::info!(%cluster, backend = %backend.name, passes, "health check: backend is back in service");
            }
            (Change::OutOfService, Err(reason)) => {
                backend.set_healthy(false);
                tracing::warn!(%cluster, backend = %backend.name, fails, %reason, "health check: backend taken out of service");
            }
            (_, Err(reason)) if healthy => {
                tracing::debug!(%cluster, backend = %backend.name, fails, %reason, "health check failed");
            }
            _ => {}
        }
        tokio::time::sleep(cfg.interval).await;
    }
}

/// The probe tasks of one config generation.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    tasks: Vec<JoinHandle<()>>,
}

impl Checks {
    /// Starts probes for every backend of every cluster with health checks; backends of
    /// clusters without them are marked healthy. Call inside a tokio runtime.
    pub(crate) fn start(upstreams: &[Upstream]) -> Self {
        let mut tasks = Vec::new();
        for u in upstreams {
            let c = &u.cluster;
            match &u.config.health {
                Some(cfg) => {
                    for b in &c.backends {
                        tasks.push(tokio::spawn(check_loop(
                            c.settings.name.clone(),
                            b.clone(),
                            cfg.clone(),
                            u.config.outbound(),
                        )));
                    }
                }
                None => {
                    for b in &c.backends {
                        b.set_healthy(true);
                    }
                }
            }
        }
        Checks { tasks }
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
