//! Opening a backend connection: TCP connect, then the protocol's handshake (for `resp`:
//! AUTH with the cluster's `backend_password`, SELECT its `backend_db`), each step answered
//! with exactly what the protocol accepts, or the connection counts as failed.

use std::net::SocketAddr;
use switchyard_proto::{BackendSetup, Direction, FrameSet, Protocols};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest handshake answer read before judging it.
const MAX_ANSWER: usize = 4096;

/// Connects to `addr` and runs the protocol's handshake for `setup`.
pub(super) async fn connect(
    addr: SocketAddr,
    protocols: &Protocols,
    setup: &BackendSetup,
) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    for step in protocols.requests.handshake(setup) {
        let what = step.what;
        stream
            .write_all(&step.request)
            .await
            .map_err(|e| format!("{what} failed: {e}"))?;
        let answer = read_one_answer(&mut stream, protocols)
            .await
            .map_err(|e| format!("{what} failed: {e}"))?;
        if answer != step.accept {
            return Err(format!(
                "{what} refused: {}",
                String::from_utf8_lossy(&answer).trim_end()
            ));
        }
    }
    Ok(stream)
}

/// Reads one whole answer, as the listener's answer protocol frames it.
async fn read_one_answer(stream: &mut TcpStream, protocols: &Protocols) -> Result<Vec<u8>, String> {
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
