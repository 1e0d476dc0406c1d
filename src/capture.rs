//! Captured traffic for offline framing (`switchyard frames`): raw byte streams, and TCP
//! payloads from pcap / pcapng files, reassembled per flow in sequence order.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcapng::Block;
use pcap_file::DataLink;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The pcap or pcapng structure is broken.
    #[error("bad capture file: {0}")]
    Pcap(String),
}

/// One direction of one TCP connection: client → server bytes or server → client bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Sender.
    pub from: SocketAddr,
    /// Receiver.
    pub to: SocketAddr,
    /// The payload bytes in sequence order.
    pub bytes: Vec<u8>,
}

/// Reads `data`: a pcap or pcapng file (recognised by its magic number) yields the TCP flows
/// that `keep(from, to)` accepts; anything else is one raw stream.
pub fn read(
    data: &[u8],
    keep: impl Fn(SocketAddr, SocketAddr) -> bool,
) -> Result<Vec<Flow>, CaptureError> {
    let magic = data
        .get(..4)
        .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
    let packets = match magic {
        Some(0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1) => pcap_packets(data)?,
        Some(0x0a0d_0d0a) => pcapng_packets(data)?,
        _ => {
            let any: SocketAddr = ([0, 0, 0, 0], 0).into();
            return Ok(vec![Flow {
                from: any,
                to: any,
                bytes: data.to_vec(),
            }]);
        }
    };
    Ok(reassemble(packets, keep))
}

/// A TCP segment: (from, to, sequence number, SYN flag, payload).
type Segment = (SocketAddr, SocketAddr, u32, bool, Vec<u8>);

fn pcap_packets(data: &[u8]) -> Result<Vec<Segment>, CaptureError> {
    let bad = |e: pcap_file::PcapError| CaptureError::Pcap(e.to_string());
    let mut r = pcap_file::pcap::PcapReader::new(data).map_err(bad)?;
    let link = r.header().datalink;
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        if let Some(s) = segment(link, &p.map_err(bad)?.data) {
            out.push(s);
        }
    }
    Ok(out)
}

fn pcapng_packets(data: &[u8]) -> Result<Vec<Segment>, CaptureError> {
    let bad = |e: pcap_file::PcapError| CaptureError::Pcap(e.to_string());
    let mut r = pcap_file::pcapng::PcapNgReader::new(data).map_err(bad)?;
    let mut links: Vec<DataLink> = Vec::new();
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        match b.map_err(bad)? {
            Block::InterfaceDescription(i) => links.push(i.linktype),
            Block::EnhancedPacket(p) => {
                let link = links
                    .get(p.interface_id as usize)
                    .copied()
                    .unwrap_or(DataLink::ETHERNET);
                out.extend(segment(link, &p.data));
            }
            Block::SimplePacket(p) => {
                let link = links.first().copied().unwrap_or(DataLink::ETHERNET);
                out.extend(segment(link, &p.data));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn segment(link: DataLink, data: &[u8]) -> Option<Segment> {
    let p = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok()?,
        DataLink::LINUX_SLL2 => SlicedPacket::from_ip(data.get(20..)?).ok()?,
        DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(data.get(4..)?).ok()?,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data).ok()?,
        _ => return None,
    };
    let (src, dst): (IpAddr, IpAddr) = match p.net? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Arp(_) => return None,
    };
    let TransportSlice::Tcp(tcp) = p.transport? else {
        return None;
    };
    Some((
        SocketAddr::new(src, tcp.source_port()),
        SocketAddr::new(dst, tcp.destination_port()),
        tcp.sequence_number(),
        tcp.syn(),
        tcp.payload().to_vec(),
    ))
}

/// Orders each flow's segments by sequence number and joins them, dropping retransmitted
/// bytes.
fn reassemble(segments: Vec<Segment>, keep: impl Fn(SocketAddr, SocketAddr) -> bool) -> Vec<Flow> {
    /// One direction: its endpoints, its first sequence number, segments by offset.
    type Partial = ((SocketAddr, SocketAddr), u32, BTreeMap<u32, Vec<u8>>);
    let mut flows: Vec<Partial> = Vec::new();
    for (from, to, seq, syn, payload) in segments {
        if !keep(from, to) {
            continue;
        }
        let i = match flows.iter().position(|(k, _, _)| *k == (from, to)) {
            Some(i) => i,
            None => {
                let first = if syn { seq.wrapping_add(1) } else { seq };
                flows.push(((from, to), first, BTreeMap::new()));
                flows.len() - 1
            }
        };
        let (_, first, segs) = &mut flows[i];
        if payload.is_empty() {
            continue;
        }
        segs.entry(seq.wrapping_sub(*first)).or_insert(payload);
    }
    flows
        .into_iter()
        .map(|((from, to), _, segs)| {
            let mut bytes = Vec::new();
            for (offset, payload) in segs {
                let have = bytes.len() as u32;
                if offset > have {
                    break; // a gap: the capture lost bytes; stop at what is contiguous
                }
                let skip = (have - offset) as usize;
                if skip < payload.len() {
                    bytes.extend_from_slice(&payload[skip..]);
                }
            }
            Flow { from, to, bytes }
        })
        .collect()
}

/// Writes a classic pcap file of Ethernet/IPv4/TCP segments between 127.0.0.1 ports:
/// `(source port, destination port, sequence number, payload)` each. For tests and for
/// making example captures to try `switchyard frames` on.
pub fn write_pcap(segments: &[(u16, u16, u32, &[u8])]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (sport, dport, seq, payload) in segments {
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&[0x08, 0x00]);
        let total = 20 + 20 + payload.len();
        p.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            6,
            0,
            0,
            127,
            0,
            0,
            1,
            127,
            0,
            0,
            1,
        ]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(payload);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&p);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_flows_are_reassembled_in_order_without_retransmits() {
        let file = write_pcap(&[
            (5000, 7000, 100, b"hello "),
            (7000, 5000, 900, b"answer"),
            (5000, 7000, 112, b"!"),
            (5000, 7000, 106, b"world "),
            (5000, 7000, 106, b"world "), // retransmission
        ]);
        let flows = read(&file, |_, to| to.port() == 7000).unwrap();
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].bytes, b"hello world !");
        assert_eq!(flows[0].from.port(), 5000);
        let answers = read(&file, |from, _| from.port() == 7000).unwrap();
        assert_eq!(answers[0].bytes, b"answer");
    }

    #[test]
    fn raw_input_is_one_stream() {
        let flows = read(b"plain bytes", |_, _| false).unwrap();
        assert_eq!(flows[0].bytes, b"plain bytes");
    }
}
