//! Opening a backend connection: the cluster's transport (TCP, its PROXY header and TLS:
//! [`crate::transport::connect`]), then the protocol's handshake (for `resp`: AUTH with
//! the cluster's `backend_password`, SELECT its `backend_db`), each step answered with
//! exactly what the protocol accepts, or the connection counts as failed.

use crate::config::ClusterConfig;
use crate::transport::{Io, Stream};
use std::net::SocketAddr;
use switchyard_proto::{Direction, FrameSet, Protocols};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest handshake answer read before judging it.
const MAX_ANSWER: usize = 4096;

/// Connects to `addr` and runs the cluster's handshakes.
pub(super) async fn connect(
    addr: SocketAddr,
    protocols: &Protocols,
    config: &ClusterConfig,
) -> Result<Stream, String> {
    let mut dialed = crate::transport::connect(addr, &config.outbound()).await?;
    let stream = dialed.io();
    for step in protocols.requests.handshake(&config.backend_setup) {
        let what = step.what;
        stream
            .write_all(&step.request)
            .await
            .map_err(|e| format!("{what} failed: {e}"))?;
        let answer = read_one_answer(stream, protocols)
            .await
            .map_err(|e| format!("{what} failed: {e}"))?;
        if answer != step.accept {
            return Err(format!(
                "{what} refused: {}",
                String::from_utf8_lossy(&answer).trim_end()
            ));
        }
    }
    Ok(dialed.into_stream())
}

/// Reads one whole answer, as the listener's answer protocol frames it.
async fn read_one_answer(stream: &mut dyn Io, protocols: &Protocols) -> Result<Vec<u8>, String> {
    let mut framer = protocols
        .answers
        .framer(Direction::Answers, MAX_ANSWER)
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut frames = FrameSet::new();
    loop {
        let mut chunk = [0u8; 256];
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the backend closed the connection".into());
        }
        answer.extend_from_slice(&chunk[..n]);
        frames.clear();
        framer
            .scan(&answer, &mut frames)
            .map_err(|e| e.to_string())?;
        if let Some(f) = frames.first() {
            answer.truncate(f.len as usize);
            return Ok(answer);
        }
    }
}
