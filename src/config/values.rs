//! Reading values the way every section of the file does: durations as `"30s"`, sizes as
//! integers with a minimum, hex strings, `host:port` addresses. Each failure names the key.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// A validation failure: (dotted key, problem).
pub(crate) type Invalid = (String, String);

/// `value` as a duration, or `default`.
pub(crate) fn duration(
    key: &str,
    value: Option<&String>,
    default: Duration,
) -> Result<Duration, Invalid> {
    match value {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            (
                key.to_string(),
                format!("`{s}` is not a duration such as \"30s\" or \"250ms\": {e}"),
            )
        }),
    }
}

/// Like [`duration`], refusing zero.
pub(crate) fn nonzero_duration(
    key: &str,
    value: Option<&String>,
    default: Duration,
) -> Result<Duration, Invalid> {
    let d = duration(key, value, default)?;
    if d.is_zero() {
        return Err((key.to_string(), "must be longer than 0s".into()));
    }
    Ok(d)
}

/// `value` as a size of at least `min`, or `default`.
pub(crate) fn size(
    key: &str,
    value: Option<u64>,
    default: usize,
    min: usize,
) -> Result<usize, Invalid> {
    let v = value.map_or(default, |v| v as usize);
    if v < min {
        return Err((key.to_string(), format!("must be at least {min}, got {v}")));
    }
    Ok(v)
}

/// Hex digits (spaces allowed) as bytes.
pub(crate) fn hex(key: &str, s: &str) -> Result<Vec<u8>, Invalid> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err((key.to_string(), "hex needs an even number of digits".into()));
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| (key.to_string(), format!("`{s}` is not hex")))
        })
        .collect()
}

/// A `host:port` address, resolved.
pub(crate) fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    addr.to_socket_addrs()
        .map_err(|e| format!("`{addr}` is not a host:port address: {e}"))?
        .next()
        .ok_or_else(|| format!("`{addr}` resolves to no address"))
}
