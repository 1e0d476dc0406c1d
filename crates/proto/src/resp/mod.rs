//! `resp`: Redis's protocol. Requests are arrays of bulk strings (or inline lines); the
//! session key is the command's key argument, found through a per-command table
//! ([`commands`]). Answers are any RESP2/RESP3 value, framed by walking nested aggregates
//! without allocating ([`wire`]). Correlation is `in_order`. Multi-key commands are split
//! per backend and merged ([`split`]). New backend connections are sent `AUTH` and `SELECT`
//! first; a failed request is answered `-ERR reason`.

mod commands;
mod split;
mod wire;

pub use commands::{arg_count, build};
pub use wire::value_len;

use crate::error::CodecError;
use crate::frame::{Failure, Key};
use crate::measured::{Measured, Scanned};
use crate::protocol::{
    BackendSetup, Capabilities, ConnState, Direction, Framer, HandshakeStep, Merge, Oversize, Part,
    Plan, Protocol,
};
use bytes::Bytes;

/// The codec table of `kind = "resp"`: no keys of its own.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// Redis's protocol; `password` is the one clients must present with AUTH, if any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RespProtocol {
    password: Option<String>,
}

impl RespProtocol {
    /// Clients must `AUTH` with `password` first, if one is given.
    pub fn new(password: Option<String>) -> Self {
        RespProtocol { password }
    }
}

impl Protocol for RespProtocol {
    fn kind(&self) -> &'static str {
        "resp"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::INTERPRETED
    }

    fn framer(&self, direction: Direction, max: usize) -> Result<Box<dyn Framer>, CodecError> {
        Ok(Box::new(Resp::new(direction == Direction::Answers, max)))
    }

    fn plan(&self, frame: &[u8], state: &mut ConnState) -> Plan {
        commands::plan(frame, state, self.password.as_deref().map(str::as_bytes))
    }

    fn join(&self, _: Merge, parts: &[&Part]) -> Part {
        split::join(parts)
    }

    fn unjoin(&self, merge: Merge, answer: &[u8], parts: &[&Part]) -> Vec<Bytes> {
        split::unjoin(merge, answer, parts)
    }

    fn merge(&self, merge: Merge, answers: &[Bytes]) -> Bytes {
        split::merge(merge, answers)
    }

    /// AUTH with the cluster's `backend_password`, then SELECT its `backend_db`, each
    /// answered `+OK`.
    fn handshake(&self, setup: &BackendSetup) -> Vec<HandshakeStep> {
        let ok = Bytes::from_static(b"+OK\r\n");
        let mut steps = Vec::new();
        if let Some(password) = &setup.password {
            steps.push(HandshakeStep {
                what: "AUTH",
                request: build(b"AUTH", &[password.as_bytes()]).frame,
                accept: ok.clone(),
            });
        }
        if let Some(db) = setup.db {
            steps.push(HandshakeStep {
                what: "SELECT",
                request: build(b"SELECT", &[db.to_string().as_bytes()]).frame,
                accept: ok,
            });
        }
        steps
    }

    fn error_answer(&self, f: &Failure<'_>) -> Result<Option<Bytes>, String> {
        let reason = f.reason.replace(['\r', '\n'], " ");
        Ok(Some(Bytes::from(format!("-ERR {reason}\r\n"))))
    }

    /// Reads (planned as [`Plan::ForwardRead`]) are retried when their backend connection
    /// dies; writes are not.
    fn retries_by_default(&self) -> bool {
        true
    }

    /// As Redis for a bulk string or query past its limits: an error, then the connection
    /// closes (the rest of the stream cannot be trusted).
    fn oversize_answer(&self, e: &CodecError) -> Option<Oversize> {
        let (CodecError::TooLarge { len, max } | CodecError::Oversized { len, max }) = *e else {
            return None;
        };
        Some(Oversize {
            answer: format!(
                "-ERR Protocol error: a request of {len} bytes exceeds max_frame_size {max}\r\n"
            )
            .into(),
            skip: None,
        })
    }
}

/// Redis's frames, measured by scanning.
#[derive(Debug, Clone)]
pub struct RespWire;

/// The `resp` framer (requests, or answers with `answers`).
pub type Resp = Scanned<RespWire>;

impl Measured for RespWire {
    fn request_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
        wire::request_len(buf, max)
    }
    fn answer_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
        wire::value_len(buf, max)
    }
    fn request_key(frame: &[u8]) -> Option<Key> {
        commands::request_key(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A RESP command of bulk strings, as a client sends it (the submodules' tests use it).
    pub(super) fn cmd(parts: &[&str]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", parts.len()).into_bytes();
        for p in parts {
            v.extend_from_slice(format!("${}\r\n{p}\r\n", p.len()).as_bytes());
        }
        v
    }

    #[test]
    fn handshake_and_error_lines() {
        let p = RespProtocol::default();
        let steps = p.handshake(&BackendSetup {
            password: Some("pw".into()),
            db: Some(3),
        });
        assert_eq!(steps.len(), 2);
        assert_eq!(
            steps[0].request,
            Bytes::from_static(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n")
        );
        assert_eq!(
            steps[1].request,
            Bytes::from_static(b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n")
        );
        assert!(p.handshake(&BackendSetup::default()).is_empty());
        let f = Failure {
            id: None,
            key: None,
            reason: "backend b1 failed: closed\r\nx",
            request: None,
        };
        assert_eq!(
            p.error_answer(&f).unwrap().unwrap(),
            Bytes::from_static(b"-ERR backend b1 failed: closed  x\r\n")
        );
    }
}
