//! Split requests gathering their parts' answers: a multi-key command was sent as one
//! request per backend; each part's answer is cut per key where parts were joined, and once
//! every part is in, the protocol merges them into the one answer the client expects.

use bytes::Bytes;
use std::collections::HashMap;
use switchyard_proto::{Merge, Part, Protocol};

/// The parts a request joined from (their numbers and requests), by the part number it
/// was sent as.
pub(crate) type Members = Vec<(u16, Part)>;

/// One split request.
#[derive(Debug)]
struct Gathering {
    merge: Merge,
    parts: Vec<Option<Bytes>>,
    missing: usize,
    joined: HashMap<u16, Members>,
}

/// A client's split requests in flight, by sequence number.
#[derive(Debug, Default)]
pub(super) struct Splits {
    open: HashMap<u64, Gathering>,
}

impl Splits {
    /// Request `seq` is split into `parts` parts merged with `merge`.
    pub(super) fn begin(&mut self, seq: u64, parts: usize, merge: Merge) {
        self.open.insert(
            seq,
            Gathering {
                merge,
                parts: vec![None; parts],
                missing: parts,
                joined: HashMap::new(),
            },
        );
    }

    /// Part `part` of `seq` is sent as one request joined from `members`.
    pub(super) fn joined(&mut self, seq: u64, part: u16, members: Members) {
        if let Some(g) = self.open.get_mut(&seq) {
            g.joined.insert(part, members);
        }
    }

    /// Part `part` of `seq`, sent joined, came back unwritten: the parts it stands for.
    pub(super) fn unjoin_request(&mut self, seq: u64, part: u16) -> Option<Members> {
        self.open.get_mut(&seq)?.joined.remove(&part)
    }

    /// The answer to part `part` of `seq`; the merged answer once every part is in.
    pub(super) fn answer(
        &mut self,
        seq: u64,
        part: u16,
        frame: &[u8],
        protocol: &dyn Protocol,
    ) -> Option<Bytes> {
        let g = self.open.get_mut(&seq)?;
        let answers: Vec<(u16, Bytes)> = match g.joined.remove(&part) {
            Some(members) => {
                let reqs: Vec<&Part> = members.iter().map(|(_, p)| p).collect();
                let cut = protocol.unjoin(g.merge, frame, &reqs);
                members.iter().map(|(i, _)| *i).zip(cut).collect()
            }
            None => vec![(part, Bytes::copy_from_slice(frame))],
        };
        for (i, answer) in answers {
            if let Some(slot) = g.parts.get_mut(i as usize) {
                if slot.is_none() {
                    *slot = Some(answer);
                    g.missing -= 1;
                }
            }
        }
        if g.missing > 0 {
            return None;
        }
        let g = self.open.remove(&seq)?;
        let parts: Vec<Bytes> = g.parts.into_iter().flatten().collect();
        Some(protocol.merge(g.merge, &parts))
    }

    /// Forgets everything (the client is gone).
    pub(super) fn clear(&mut self) {
        self.open.clear();
    }
}
