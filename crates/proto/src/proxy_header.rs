//! The PROXY protocol header (HAProxy's specification, version 1 text and version 2
//! binary) that an L4 spreader (HAProxy's `send-proxy`, a cloud NLB, IPVS) puts before a
//! connection's first byte to say whom the connection is really from: read where a
//! listener accepts it ([`parse`]), written where a cluster sends it ([`encode`]). The
//! parsing itself is the `ppp` crate's; this file bounds it and says what it means.

use ppp::{v1, v2, PartialResult};
use std::net::SocketAddr;

/// The longest header accepted: a v1 header is at most 107 bytes; a v2 header is 16
/// bytes and its addresses (36 for IPv6, 216 for Unix) plus TLVs, which real senders
/// (an NLB's VPC endpoint id, HAProxy's SSL TLVs) keep well under this.
pub const MAX_HEADER: usize = 4096;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Which version of the header to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// `PROXY TCP4 a b p q\r\n`.
    V1,
    /// The binary form.
    V2,
}

/// A complete header at the head of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Its length: the connection's own bytes start after it.
    pub len: usize,
    /// The client the sender relayed (`None` for v1 `UNKNOWN`, a v2 `LOCAL` command such
    /// as a health check, or an address family other than IP: the connection's own peer
    /// stands).
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when the header says it.
    pub destination: Option<SocketAddr>,
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PROXY protocol header refused: {0}")]
pub struct BadProxyHeader(pub String);

/// Parses the header at the head of `buf`: `Ok(None)` if more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<ProxyHeader>, BadProxyHeader> {
    let bad = |s: String| Err(BadProxyHeader(s));
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == V2_SIGNATURE[0] {
        let n = buf.len().min(V2_SIGNATURE.len());
        if buf[..n] != V2_SIGNATURE[..n] {
            return bad("neither the v1 nor the v2 signature".into());
        }
        if buf.len() >= 16 {
            let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
            if len > MAX_HEADER {
                return bad(format!("a v2 header of {len} bytes (at most {MAX_HEADER})"));
            }
        }
        return match v2::Header::try_from(buf) {
            Err(e) if e.is_incomplete() => Ok(None),
            Err(e) => bad(format!("v2: {e}")),
            Ok(h) => {
                let (source, destination) = match (h.command, h.addresses) {
                    (v2::Command::Local, _) => (None, None),
                    (_, v2::Addresses::IPv4(a)) => (
                        Some(SocketAddr::from((a.source_address, a.source_port))),
                        Some(SocketAddr::from((
                            a.destination_address,
                            a.destination_port,
                        ))),
                    ),
                    (_, v2::Addresses::IPv6(a)) => (
                        Some(SocketAddr::from((a.source_address, a.source_port))),
                        Some(SocketAddr::from((
                            a.destination_address,
                            a.destination_port,
                        ))),
                    ),
                    _ => (None, None),
                };
                Ok(Some(ProxyHeader {
                    len: h.len(),
                    source,
                    destination,
                }))
            }
        };
    }
    const V1: &[u8] = b"PROXY ";
    let n = buf.len().min(V1.len());
    if buf[..n] != V1[..n] {
        return bad("neither the v1 nor the v2 signature".into());
    }
    // A v1 header is one line: judged whole, once its CRLF has come.
    const V1_MAX: usize = 107;
    let Some(cr) = memchr::memmem::find(&buf[..buf.len().min(V1_MAX)], b"\r\n") else {
        if buf.len() >= V1_MAX {
            return bad(format!("a v1 header longer than {V1_MAX} bytes"));
        }
        return Ok(None);
    };
    match v1::Header::try_from(&buf[..cr + 2]) {
        Err(e) => bad(format!("v1: {e}")),
        // The line is the header, up to its first CRLF (an `UNKNOWN` line's rest is to be
        // ignored, as the specification says); ppp may stop earlier, at a bare LF say.
        Ok(h) if h.header.len() != cr + 2 && h.addresses != v1::Addresses::Unknown => {
            bad("v1: bytes after the addresses on the header line".into())
        }
        Ok(h) => {
            let (source, destination) = match h.addresses {
                v1::Addresses::Tcp4(a) => (
                    Some(SocketAddr::from((a.source_address, a.source_port))),
                    Some(SocketAddr::from((
                        a.destination_address,
                        a.destination_port,
                    ))),
                ),
                v1::Addresses::Tcp6(a) => (
                    Some(SocketAddr::from((a.source_address, a.source_port))),
                    Some(SocketAddr::from((
                        a.destination_address,
                        a.destination_port,
                    ))),
                ),
                v1::Addresses::Unknown => (None, None),
            };
            Ok(Some(ProxyHeader {
                len: cr + 2,
                source,
                destination,
            }))
        }
    }
}

/// A header saying that a connection from `source` to `destination` is relayed. The
/// families must match (a v4 and a v6 address are written as `UNKNOWN` / `LOCAL`).
pub fn encode(version: ProxyVersion, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let same_family = source.is_ipv4() == destination.is_ipv4();
    match version {
        ProxyVersion::V1 => {
            let addresses = match (source, destination) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    v1::Addresses::new_tcp4(*s.ip(), *d.ip(), s.port(), d.port())
                }
                (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                    v1::Addresses::new_tcp6(*s.ip(), *d.ip(), s.port(), d.port())
                }
                _ => v1::Addresses::Unknown,
            };
            addresses.to_string().into_bytes()
        }
        ProxyVersion::V2 => {
            let command = if same_family {
                v2::Command::Proxy
            } else {
                v2::Command::Local
            };
            let builder = if same_family {
                v2::Builder::with_addresses(
                    v2::Version::Two | command,
                    v2::Protocol::Stream,
                    (source, destination),
                )
            } else {
                v2::Builder::new(
                    v2::Version::Two | command,
                    v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
                )
            };
            // Writing into a Vec cannot fail, and the addresses fit the length field.
            builder.build().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_and_v2_round_trip_at_every_cut() {
        for (v, s, d) in [
            (ProxyVersion::V1, "192.0.2.7:40000", "10.0.0.1:6379"),
            (ProxyVersion::V2, "192.0.2.7:40000", "10.0.0.1:6379"),
            (ProxyVersion::V1, "[2001:db8::7]:1", "[2001:db8::1]:2"),
            (ProxyVersion::V2, "[2001:db8::7]:1", "[2001:db8::1]:2"),
        ] {
            let mut wire = encode(v, addr(s), addr(d));
            let len = wire.len();
            wire.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
            for cut in 0..len {
                assert_eq!(parse(&wire[..cut]), Ok(None), "{v:?} cut at {cut}");
            }
            let h = parse(&wire).unwrap().unwrap();
            assert_eq!(h.len, len);
            assert_eq!(h.source, Some(addr(s)));
            assert_eq!(h.destination, Some(addr(d)));
        }
    }

    #[test]
    fn unknown_and_local_leave_the_peer() {
        let h = parse(b"PROXY UNKNOWN\r\nrest").unwrap().unwrap();
        assert_eq!((h.len, h.source), (15, None));
        let local = v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap();
        let h = parse(&local).unwrap().unwrap();
        assert_eq!((h.len, h.source), (16, None));
    }

    #[test]
    fn garbage_is_refused_as_soon_as_it_shows() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"*1\r\n",
            b"PROXY TCP4 1.2.3.4\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
            b"\r\n\r\n\0\r\nQUIX\n",
            b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2 and then some more bytes that make it far too long for a v1 header at all\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // A v2 header claiming more than the bound.
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(parse(&big).unwrap_err().0.contains("65551 bytes"));
    }

    #[test]
    fn a_v1_line_is_its_header_up_to_the_first_crlf() {
        // Found by the proxy_header fuzz target: ppp ended an UNKNOWN header at a bare LF,
        // so the header alone did not parse as the same header.
        let line = b"PROXY UNKNOWN 1\0\0>>\n x\r\n";
        let h = parse(line).unwrap().unwrap();
        assert_eq!(h.len, line.len());
        assert_eq!(parse(&line[..h.len]).unwrap(), Some(h));
        let mut more = line.to_vec();
        more.extend_from_slice(b"*1\r\n");
        assert_eq!(parse(&more).unwrap(), Some(h));
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 extra\r\n").is_err());
    }
}
