//! Correlation of answers to requests on one shared backend connection. Pure bookkeeping,
//! no I/O: `in_order` keeps a FIFO of what was sent; `by_id` hands out proxy ids (unique
//! among the connection's outstanding requests, within the id field's width) and finds the
//! request by the id an answer carries; `none` tracks nothing. An answer that matches
//! nothing is a push, for the caller to route by key.
//!
//! Timeouts: a `by_id` request that timed out leaves a tombstone on its id, so that its late
//! answer is recognised and dropped (not delivered as a push, and not matched to a newer
//! request that reused the id). Tombstones are bounded; the oldest go first.
//!
//! Every collection here holds exactly the requests outstanding (plus at most the tombstone
//! bound): an answer removes its request from all of them at once, so no work and no memory
//! grows with the messages a connection has carried over its life.
//!
//! Size: over 500 lines with its tests and property tests; the code is under 300.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use switchyard_proto::Correlation;

/// Most tombstones kept per connection.
pub const MAX_TOMBSTONES: usize = 65_536;

/// Hashes the proxy's own ids: small integers handed out in sequence, so a multiplication
/// spreads them well and costs a fraction of SipHash. Nothing here hashes client input (the
/// proxy also keys its own stream offsets with it).
#[derive(Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by the proxy's own numbers (ids, stream offsets), hashed with [`IdHasher`].
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// What an answer from the backend is.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<T> {
    /// The answer to this request.
    Matched(T),
    /// The late answer of a request that already timed out: drop it.
    Late,
    /// Nothing asked for it: a push.
    Unmatched,
}

/// The correlation id of a `by_id_as_sent` request or answer: its id bytes hashed with its
/// session key's (so `CSeq: 1 INVITE` of one call is not another call's), under a
/// per-process random seed, so that no client can aim at another's transaction.
pub fn transaction_id(key: Option<&[u8]>, id: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = SEED.get_or_init(Default::default).build_hasher();
    // Each part with its length first, so no two (key, id) pairs hash the same bytes.
    let key = key.unwrap_or_default();
    h.write_usize(key.len());
    h.write(key);
    h.write_usize(id.len());
    h.write(id);
    h.finish()
}

/// Outstanding requests of one backend connection.
#[derive(Debug)]
pub struct Correlator<T> {
    mode: Correlation,
    fifo: VecDeque<T>,
    /// By-id requests: proxy id → (registration number, request).
    ids: IdMap<(u64, T)>,
    /// By-id requests awaiting their first answer, by registration number (oldest first),
    /// for timeouts.
    order: BTreeMap<u64, u64>,
    /// By-id requests that had a provisional answer, by the number it gave them (oldest
    /// first): their timeout is another.
    ringing: BTreeMap<u64, u64>,
    /// Timed-out ids awaiting their late answer: id → registration number.
    tombstones: IdMap<u64>,
    /// Tombstones by registration number, oldest first, for the bound.
    tombstone_order: BTreeMap<u64, u64>,
    max_tombstones: usize,
    next_id: u64,
    next_seq: u64,
    /// Number of distinct ids the id field can hold.
    id_space: u64,
}

/// How many entries each internal collection holds (for the growth tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// `in_order` requests queued.
    pub fifo: usize,
    /// `by_id` requests by id.
    pub ids: usize,
    /// `by_id` requests by age (both orders).
    pub order: usize,
    /// Tombstones by id.
    pub tombstones: usize,
    /// Tombstones by age.
    pub tombstone_order: usize,
}

impl<T> Correlator<T> {
    /// An empty correlator; `id_space` bounds how many `by_id` requests can be outstanding.
    pub fn new(mode: Correlation, id_space: u64) -> Self {
        Self::with_tombstone_bound(mode, id_space, MAX_TOMBSTONES)
    }

    /// Like [`Self::new`], keeping at most `max_tombstones` tombstones.
    pub fn with_tombstone_bound(mode: Correlation, id_space: u64, max_tombstones: usize) -> Self {
        Correlator {
            mode,
            fifo: VecDeque::new(),
            ids: IdMap::default(),
            order: BTreeMap::new(),
            ringing: BTreeMap::new(),
            tombstones: IdMap::default(),
            tombstone_order: BTreeMap::new(),
            max_tombstones,
            next_id: 0,
            next_seq: 0,
            id_space: id_space.max(1),
        }
    }

    /// How answers are matched.
    pub fn mode(&self) -> Correlation {
        self.mode
    }

    /// Requests awaiting answers.
    pub fn len(&self) -> usize {
        self.fifo.len() + self.ids.len()
    }

    /// Whether nothing awaits an answer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sizes of the internal collections.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            fifo: self.fifo.len(),
            ids: self.ids.len(),
            order: self.order.len() + self.ringing.len(),
            tombstones: self.tombstones.len(),
            tombstone_order: self.tombstone_order.len(),
        }
    }

    /// Whether another request can be registered (by_id: a free id exists).
    pub fn has_room(&self) -> bool {
        self.mode != Correlation::ById
            || ((self.ids.len() + self.tombstones.len()) as u64) < self.id_space
    }

    /// Records a `by_id_as_sent` request under its [`transaction_id`] `id`; gives it back
    /// if that id already awaits an answer here (or its timed-out request's late answer is
    /// still due), or under another mode.
    pub fn register_as(&mut self, pending: T, id: u64) -> Result<(), T> {
        if self.mode != Correlation::ByIdAsSent
            || self.ids.contains_key(&id)
            || self.tombstones.contains_key(&id)
        {
            return Err(pending);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ids.insert(id, (seq, pending));
        self.order.insert(seq, id);
        Ok(())
    }

    /// A provisional answer (`id` as for [`Self::answer`]): the request it answers, left
    /// outstanding and made the youngest of those that had one (its timeout starts again,
    /// the caller resets its clock, and may be another: see [`Self::oldest_each`]); `Late`
    /// for a timed-out request's.
    pub fn provisional(&mut self, id: Option<u64>) -> Answer<&mut T> {
        match self.mode {
            Correlation::InOrder => self
                .fifo
                .front_mut()
                .map_or(Answer::Unmatched, Answer::Matched),
            Correlation::ById | Correlation::ByIdAsSent => {
                let Some(id) = id else {
                    return Answer::Unmatched;
                };
                if self.tombstones.contains_key(&id) {
                    return Answer::Late;
                }
                let seq = self.next_seq;
                match self.ids.get_mut(&id) {
                    Some((old, t)) => {
                        if self.order.remove(old).is_none() {
                            self.ringing.remove(old);
                        }
                        self.ringing.insert(seq, id);
                        *old = seq;
                        self.next_seq += 1;
                        Answer::Matched(t)
                    }
                    None => Answer::Unmatched,
                }
            }
            Correlation::None => Answer::Unmatched,
        }
    }

    /// Records a request. Returns the proxy id to write into it for `by_id` (0, unused,
    /// for `in_order`), or gives the request back if it cannot be recorded: no id is free,
    /// or the mode (`none`) awaits nothing.
    pub fn register(&mut self, pending: T) -> Result<u64, T> {
        match self.mode {
            Correlation::InOrder => {
                self.fifo.push_back(pending);
                Ok(0)
            }
            Correlation::ById => {
                if !self.has_room() {
                    return Err(pending);
                }
                // Bounded: at most `ids.len() + tombstones.len()` ids are taken.
                let mut id = self.next_id % self.id_space;
                while self.ids.contains_key(&id) || self.tombstones.contains_key(&id) {
                    id = (id + 1) % self.id_space;
                }
                self.next_id = id.wrapping_add(1);
                let seq = self.next_seq;
                self.next_seq += 1;
                self.ids.insert(id, (seq, pending));
                self.order.insert(seq, id);
                Ok(id)
            }
            Correlation::None | Correlation::ByIdAsSent => Err(pending),
        }
    }

    /// The outstanding `by_id` request with proxy id `id`.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.ids.get_mut(&id).map(|(_, t)| t)
    }

    /// Classifies an answer carrying proxy id `id` (`by_id`) or arriving next (`in_order`).
    pub fn answer(&mut self, id: Option<u64>) -> Answer<T> {
        let found = match self.mode {
            Correlation::InOrder => self.fifo.pop_front(),
            Correlation::ById | Correlation::ByIdAsSent => match id {
                Some(id) => {
                    if let Some(seq) = self.tombstones.remove(&id) {
                        self.tombstone_order.remove(&seq);
                        return Answer::Late;
                    }
                    self.ids.remove(&id).map(|(seq, t)| {
                        if self.order.remove(&seq).is_none() {
                            self.ringing.remove(&seq);
                        }
                        t
                    })
                }
                None => None,
            },
            Correlation::None => None,
        };
        match found {
            Some(t) => Answer::Matched(t),
            None => Answer::Unmatched,
        }
    }

    /// The oldest outstanding request, if `is_old` says it has timed out: removed (by_id,
    /// leaving a tombstone) or left in place (in_order: the caller must close the
    /// connection, since answers would now be out of place).
    pub fn oldest_expired(&mut self, is_old: impl Fn(&T) -> bool) -> Option<Expired<T>> {
        match self.mode {
            Correlation::InOrder => self
                .fifo
                .front()
                .filter(|t| is_old(t))
                .map(|_| Expired::ConnectionLost),
            Correlation::ById | Correlation::ByIdAsSent => {
                // The oldest of either order, if it is old.
                for ringing in [false, true] {
                    let order = if ringing {
                        &mut self.ringing
                    } else {
                        &mut self.order
                    };
                    let Some((&seq, &id)) = order.first_key_value() else {
                        continue;
                    };
                    if !self.ids.get(&id).is_some_and(|(_, t)| is_old(t)) {
                        continue;
                    }
                    order.remove(&seq);
                    let (_, t) = self.ids.remove(&id)?;
                    self.tombstone(id, seq);
                    return Some(Expired::Request(t));
                }
                None
            }
            Correlation::None => None,
        }
    }

    /// The oldest outstanding request, if any (by when it was sent or last answered
    /// provisionally).
    pub fn oldest(&self) -> Option<&T> {
        match self.mode {
            Correlation::InOrder => self.fifo.front(),
            Correlation::ById | Correlation::ByIdAsSent => {
                let (_, id) = match (self.order.first_key_value(), self.ringing.first_key_value()) {
                    (Some(w), Some(r)) => {
                        if w.0 <= r.0 {
                            w
                        } else {
                            r
                        }
                    }
                    (w, r) => w.or(r)?,
                };
                self.ids.get(id).map(|(_, t)| t)
            }
            Correlation::None => None,
        }
    }

    /// The oldest outstanding request still awaiting its first answer, and the one whose
    /// last provisional answer is oldest (`in_order`: the first in line, as the first).
    pub fn oldest_each(&self) -> (Option<&T>, Option<&T>) {
        match self.mode {
            Correlation::InOrder => (self.fifo.front(), None),
            Correlation::ById | Correlation::ByIdAsSent => {
                let first = |order: &BTreeMap<u64, u64>| {
                    let (_, id) = order.first_key_value()?;
                    self.ids.get(id).map(|(_, t)| t)
                };
                (first(&self.order), first(&self.ringing))
            }
            Correlation::None => (None, None),
        }
    }

    fn tombstone(&mut self, id: u64, seq: u64) {
        if self.max_tombstones == 0 {
            return;
        }
        while self.tombstones.len() >= self.max_tombstones {
            let Some((_, old)) = self.tombstone_order.pop_first() else {
                break;
            };
            self.tombstones.remove(&old);
        }
        self.tombstones.insert(id, seq);
        self.tombstone_order.insert(seq, id);
    }

    /// Removes and returns every outstanding request, oldest first, and forgets tombstones
    /// (the connection is gone).
    pub fn drain(&mut self) -> Vec<T> {
        let mut all: Vec<T> = self.fifo.drain(..).collect();
        let mut ids = std::mem::take(&mut self.ids);
        let mut order = std::mem::take(&mut self.order);
        order.append(&mut self.ringing);
        for (_, id) in order {
            if let Some((_, t)) = ids.remove(&id) {
                all.push(t);
            }
        }
        debug_assert!(ids.is_empty());
        self.tombstones.clear();
        self.tombstone_order.clear();
        all
    }
}

/// What a timeout does.
#[derive(Debug, PartialEq, Eq)]
pub enum Expired<T> {
    /// This `by_id` request timed out and was removed.
    Request(T),
    /// The oldest `in_order` request timed out: the connection has lost its place.
    ConnectionLost,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_fifo() {
        let mut c = Correlator::new(Correlation::InOrder, 0);
        c.register("a").unwrap();
        c.register("b").unwrap();
        assert_eq!(c.answer(Some(99)), Answer::Matched("a"));
        assert_eq!(c.answer(None), Answer::Matched("b"));
        assert_eq!(c.answer(None), Answer::Unmatched);
    }

    #[test]
    fn by_id_hands_out_unique_ids_within_the_space() {
        let mut c = Correlator::new(Correlation::ById, 4);
        let ids: Vec<_> = (0..4).map(|i| c.register(i).unwrap()).collect();
        assert_eq!(ids, vec![0, 1, 2, 3]);
        assert!(!c.has_room());
        assert!(c.register(9).is_err());
        assert_eq!(c.answer(Some(2)), Answer::Matched(2));
        // The only free id is reused; ids in use are skipped.
        assert_eq!(c.register(7).ok(), Some(2));
        assert_eq!(c.answer(Some(2)), Answer::Matched(7));
        assert_eq!(
            c.answer(Some(2)),
            Answer::Unmatched,
            "an unknown id is a push"
        );
        assert_eq!(c.answer(None), Answer::Unmatched);
        assert_eq!(c.drain(), vec![0, 1, 3]);
        assert!(c.is_empty());
    }

    #[test]
    fn timed_out_ids_are_tombstoned_until_their_late_answer() {
        let mut c = Correlator::new(Correlation::ById, 2);
        c.register(10u32).unwrap();
        c.register(20u32).unwrap();
        assert_eq!(c.oldest(), Some(&10));
        assert_eq!(c.oldest_expired(|t| *t < 15), Some(Expired::Request(10)));
        assert_eq!(c.oldest_expired(|t| *t < 15), None, "20 is not old");
        // Id 0 is tombstoned: not reused while its late answer may still come.
        assert!(!c.has_room());
        assert!(c.register(30).is_err());
        assert_eq!(c.answer(Some(0)), Answer::Late);
        assert_eq!(c.register(30).ok(), Some(0));
    }

    #[test]
    fn a_reused_id_is_not_mistaken_for_the_oldest() {
        // Before: the age queue kept answered ids, so a reused id sat at the front and the
        // newest request was taken for the oldest.
        let mut c = Correlator::new(Correlation::ById, 2);
        c.register(1u32).unwrap(); // id 0
        c.register(2u32).unwrap(); // id 1
        assert_eq!(c.answer(Some(0)), Answer::Matched(1));
        assert_eq!(c.register(3u32).ok(), Some(0));
        assert_eq!(c.oldest(), Some(&2));
        assert_eq!(
            c.oldest_expired(|t| *t == 3),
            None,
            "2 is older and not expired"
        );
    }

    #[test]
    fn in_order_timeout_loses_the_connection() {
        let mut c = Correlator::new(Correlation::InOrder, 0);
        c.register(1u32).unwrap();
        assert_eq!(c.oldest_expired(|_| false), None);
        assert_eq!(c.oldest_expired(|_| true), Some(Expired::ConnectionLost));
        assert_eq!(c.len(), 1, "the caller fails it with the connection");
    }

    #[test]
    fn as_sent_matches_the_clients_own_ids_and_refuses_a_second_one() {
        let mut c = Correlator::new(Correlation::ByIdAsSent, 0);
        let invite = transaction_id(Some(b"call-1"), b"1 INVITE");
        let other = transaction_id(Some(b"call-2"), b"1 INVITE");
        assert_ne!(
            invite, other,
            "the same CSeq in two calls is two transactions"
        );
        assert_eq!(c.register(1), Err(1), "as_sent ids come from the request");
        c.register_as(1, invite).unwrap();
        c.register_as(2, other).unwrap();
        assert_eq!(c.register_as(3, invite), Err(3), "a collision is refused");
        // 100 and 180 leave it waiting; 200 ends it.
        assert_eq!(c.provisional(Some(invite)), Answer::Matched(&mut 1));
        assert_eq!(
            c.oldest(),
            Some(&2),
            "a provisional answer makes it the youngest"
        );
        assert_eq!(c.provisional(Some(invite)), Answer::Matched(&mut 1));
        assert_eq!(c.answer(Some(invite)), Answer::Matched(1));
        assert_eq!(c.provisional(Some(invite)), Answer::Unmatched);
        assert_eq!(
            c.answer(Some(invite)),
            Answer::Unmatched,
            "a retransmitted 200 is a push"
        );
        assert_eq!(c.oldest_expired(|_| true), Some(Expired::Request(2)));
        assert_eq!(c.provisional(Some(other)), Answer::Late);
        assert_eq!(
            c.register_as(4, other),
            Err(4),
            "not while its late answer is due"
        );
        assert_eq!(c.answer(Some(other)), Answer::Late);
        c.register_as(4, other).unwrap();
        assert_eq!(c.drain(), vec![4]);
        assert_eq!(c.footprint().order, 0);
    }

    /// A request answered provisionally waits in an age order of its own (its timeout is
    /// another), so it neither holds back nor is held back by requests awaiting a first
    /// answer.
    #[test]
    fn provisionally_answered_requests_time_out_on_their_own() {
        let mut c = Correlator::new(Correlation::ByIdAsSent, 0);
        let (a, b) = (transaction_id(None, b"a"), transaction_id(None, b"b"));
        c.register_as(1, a).unwrap();
        c.register_as(2, b).unwrap();
        assert_eq!(c.provisional(Some(a)), Answer::Matched(&mut 1));
        assert_eq!(c.oldest_each(), (Some(&2), Some(&1)));
        assert_eq!(c.oldest(), Some(&2));
        assert_eq!(
            c.oldest_expired(|t| *t == 1),
            Some(Expired::Request(1)),
            "found behind an older request that has not timed out"
        );
        assert_eq!(c.register_as(1, a), Err(1), "tombstoned");
        assert_eq!(c.provisional(Some(a)), Answer::Late);
        assert_eq!(c.answer(Some(a)), Answer::Late);
        assert_eq!(c.oldest_expired(|t| *t == 2), Some(Expired::Request(2)));
        assert!(c.is_empty());
        assert_eq!(c.footprint().order, 0);
    }

    #[test]
    fn in_order_provisional_answers_leave_the_head_waiting() {
        let mut c = Correlator::new(Correlation::InOrder, 0);
        c.register("a").unwrap();
        c.register("b").unwrap();
        assert_eq!(c.provisional(None), Answer::Matched(&mut "a"));
        assert_eq!(c.answer(None), Answer::Matched("a"));
        assert_eq!(c.answer(None), Answer::Matched("b"));
    }

    #[test]
    fn none_tracks_nothing() {
        let mut c = Correlator::new(Correlation::None, 0);
        assert_eq!(c.register(1), Err(1), "given back: nothing is awaited");
        assert!(c.is_empty());
        assert_eq!(c.answer(Some(0)), Answer::Unmatched);
    }

    /// A connection's life: a million requests, always one slow request outstanding behind
    /// the answered ones (what made the old age queue grow), each slow one timing out in
    /// turn and its late answer coming after; nothing may hold more than what is
    /// outstanding plus the tombstones.
    #[test]
    fn a_million_requests_leave_nothing_behind() {
        const SLOW: u64 = u64::MAX;
        let mut c = Correlator::with_tombstone_bound(Correlation::ById, 1 << 32, 64);
        let mut slow = c.register(SLOW).unwrap();
        // When the current slow request was registered (in request numbers).
        let mut slow_since = 0;
        let mut window = VecDeque::new();
        let mut late = Vec::new();
        for n in 0..1_000_000u64 {
            window.push_back((c.register(n).unwrap(), n));
            if window.len() > 32 {
                let (id, m) = window.pop_front().unwrap();
                assert_eq!(c.answer(Some(id)), Answer::Matched(m));
            }
            let front = window.front().map(|(_, m)| *m).unwrap_or(n);
            let oldest = if slow_since <= front { SLOW } else { front };
            assert_eq!(c.oldest(), Some(&oldest));
            if n % 1000 == 999 && oldest == SLOW {
                // The slow request times out; its answer comes later; a new slow one starts.
                assert_eq!(
                    c.oldest_expired(|t| *t == SLOW),
                    Some(Expired::Request(SLOW))
                );
                late.push(slow);
                slow = c.register(SLOW).unwrap();
                slow_since = n + 1;
            }
            if n % 1000 == 500 {
                if let Some(id) = late.pop() {
                    assert_eq!(c.answer(Some(id)), Answer::Late);
                }
            }
            let f = c.footprint();
            assert!(f.ids <= 34 && f.order == f.ids, "{n}: {f:?}");
            assert!(f.tombstones <= 64 && f.tombstone_order == f.tombstones);
        }
        assert_eq!(c.answer(Some(slow)), Answer::Matched(SLOW));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Register,
        /// Answer the n-th outstanding request (modulo), or a random id.
        Answer(usize),
        AnswerStray(u64),
        /// Answer a tombstoned id (modulo), if any.
        AnswerLate(usize),
        /// Expire requests registered before the n-th outstanding one.
        Expire(usize),
        Drain,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Register),
            3 => any::<usize>().prop_map(Op::Answer),
            1 => any::<u64>().prop_map(Op::AnswerStray),
            1 => any::<usize>().prop_map(Op::AnswerLate),
            1 => any::<usize>().prop_map(Op::Expire),
            1 => Just(Op::Drain),
        ]
    }

    proptest! {
        /// Against a model (a list of outstanding requests in registration order, and one of
        /// tombstones): same answers, same oldest, and every collection holds at most
        /// outstanding + the tombstone bound.
        #[test]
        fn by_id_matches_a_model_and_stays_bounded(
            ops in proptest::collection::vec(op(), 0..400),
            space in 1u64..40,
            bound in 0usize..6,
        ) {
            let mut c = Correlator::with_tombstone_bound(Correlation::ById, space, bound);
            // (id, request number), oldest first.
            let mut live: Vec<(u64, u64)> = Vec::new();
            let mut tombs: Vec<u64> = Vec::new();
            let mut n = 0u64;
            for op in ops {
                match op {
                    Op::Register => {
                        let full = (live.len() + tombs.len()) as u64 >= space;
                        match c.register(n) {
                            Ok(id) => {
                                prop_assert!(!full);
                                prop_assert!(id < space);
                                prop_assert!(!live.iter().any(|(i, _)| *i == id));
                                prop_assert!(!tombs.contains(&id));
                                live.push((id, n));
                            }
                            Err(_) => prop_assert!(full),
                        }
                        n += 1;
                    }
                    Op::Answer(k) if !live.is_empty() => {
                        let (id, want) = live.remove(k % live.len());
                        prop_assert_eq!(c.answer(Some(id)), Answer::Matched(want));
                    }
                    Op::Answer(_) => prop_assert_eq!(c.answer(None), Answer::Unmatched),
                    Op::AnswerStray(id) => {
                        let got = c.answer(Some(id));
                        if let Some(i) = live.iter().position(|(l, _)| *l == id) {
                            prop_assert_eq!(got, Answer::Matched(live.remove(i).1));
                        } else if let Some(i) = tombs.iter().position(|t| *t == id) {
                            tombs.remove(i);
                            prop_assert_eq!(got, Answer::Late);
                        } else {
                            prop_assert_eq!(got, Answer::Unmatched);
                        }
                    }
                    Op::AnswerLate(k) if !tombs.is_empty() => {
                        let id = tombs.remove(k % tombs.len());
                        prop_assert_eq!(c.answer(Some(id)), Answer::Late);
                    }
                    Op::AnswerLate(_) => {}
                    Op::Expire(k) => {
                        let cut = if live.is_empty() { 0 } else { live[k % live.len()].1 };
                        while let Some(Expired::Request(t)) = c.oldest_expired(|t| *t < cut) {
                            let (id, want) = live.remove(0);
                            prop_assert_eq!(t, want);
                            if bound > 0 {
                                if tombs.len() == bound {
                                    tombs.remove(0);
                                }
                                tombs.push(id);
                            }
                        }
                        prop_assert!(live.first().is_none_or(|(_, r)| *r >= cut));
                    }
                    Op::Drain => {
                        let all = c.drain();
                        prop_assert_eq!(all, live.iter().map(|(_, r)| *r).collect::<Vec<_>>());
                        live.clear();
                        tombs.clear();
                    }
                }
                prop_assert_eq!(c.oldest().copied(), live.first().map(|(_, r)| *r));
                prop_assert_eq!(c.len(), live.len());
                let f = c.footprint();
                prop_assert_eq!(f.ids, live.len());
                prop_assert_eq!(f.order, live.len());
                prop_assert_eq!(f.tombstones, tombs.len());
                prop_assert_eq!(f.tombstone_order, tombs.len());
                prop_assert!(f.tombstones <= bound);
                prop_assert_eq!(f.fifo, 0);
            }
        }

        /// `in_order`: the queue is exactly what is outstanding.
        #[test]
        fn in_order_holds_exactly_what_is_outstanding(ops in proptest::collection::vec(0u8..3, 0..300)) {
            let mut c = Correlator::new(Correlation::InOrder, 0);
            let mut model = VecDeque::new();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    0 => {
                        c.register(n).unwrap();
                        model.push_back(n);
                    }
                    1 => {
                        let want = model.pop_front().map_or(Answer::Unmatched, Answer::Matched);
                        prop_assert_eq!(c.answer(None), want);
                    }
                    _ => {
                        prop_assert_eq!(c.drain(), model.drain(..).collect::<Vec<_>>());
                    }
                }
                prop_assert_eq!(c.footprint().fifo, model.len());
                prop_assert_eq!(c.footprint().ids + c.footprint().order, 0);
            }
        }
    }
}
