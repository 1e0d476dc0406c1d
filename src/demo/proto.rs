//! The demo protocol: a small length-prefixed binary protocol, the kind Switchyard is for.
//!
//! ```text
//! request:  u32 BE body length | u64 BE session key | u32 BE request id | payload
//! answer:   u32 BE body length | u64 BE session key | u32 BE request id | u8 n | backend name (n bytes) | payload
//! ```
//! The listener config for it: `length_field` with `length_width = 4`, `key = { offset = 4,
//! width = 8 }`, `id = { offset = 12, width = 4 }`.

use switchyard_proto::length_field::{Endian, FieldSpec, LengthFieldSpec};

/// Bytes before the payload.
pub const HEADER: usize = 16;

/// The `length_field` framing of the demo protocol (both directions).
pub fn codec_spec(with_key: bool) -> LengthFieldSpec {
    LengthFieldSpec {
        length_offset: 0,
        length_width: 4,
        endian: Endian::Big,
        length_adjust: 0,
        key: with_key.then_some(FieldSpec {
            offset: 4,
            width: 8,
        }),
        id: Some(FieldSpec {
            offset: 12,
            width: 4,
        }),
    }
}

/// Appends one request frame to `out`.
pub fn write_request(out: &mut Vec<u8>, key: u64, id: u32, payload: &[u8]) {
    out.extend_from_slice(&((12 + payload.len()) as u32).to_be_bytes());
    out.extend_from_slice(&key.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends the answer of backend `name` to the request `frame` to `out`.
pub fn write_answer(out: &mut Vec<u8>, name: &[u8], frame: &[u8]) {
    let payload = &frame[HEADER..];
    let body = 12 + 1 + name.len() + payload.len();
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&frame[4..HEADER]);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
}

/// A parsed request or answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Session key.
    pub key: u64,
    /// Request id.
    pub id: u32,
    /// Everything after the header.
    pub rest: &'a [u8],
}

/// Parses one whole frame (as cut by the codec).
pub fn parse(frame: &[u8]) -> Option<Message<'_>> {
    if frame.len() < HEADER {
        return None;
    }
    Some(Message {
        key: u64::from_be_bytes(frame[4..12].try_into().ok()?),
        id: u32::from_be_bytes(frame[12..16].try_into().ok()?),
        rest: &frame[HEADER..],
    })
}

/// Splits an answer's rest into (backend name, payload).
pub fn answer_parts(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = *rest.first()? as usize;
    if rest.len() < 1 + n {
        return None;
    }
    Some((&rest[1..1 + n], &rest[1 + n..]))
}
