//! Correlation of answers to requests on one shared backend connection. Pure bookkeeping,
//! no I/O: `in_order` keeps a FIFO of what was sent; `by_id` hands out proxy ids (unique
//! among the connection's outstanding requests, within the id field's width) and finds the
//! request by the id an answer carries; `none` tracks nothing. An answer that matches
//! nothing is a push, for the caller to route by key.
//!
//! Timeouts: a `by_id` request that timed out leaves a tombstone on its id, so that its late
//! answer is recognised and dropped (not delivered as a push, and not matched to a newer
//! request that reused the id). Tombstones are bounded; the oldest go first.

use crate::config::Correlation;
use std::collections::{HashMap, HashSet, VecDeque};

/// Most tombstones kept per connection.
const MAX_TOMBSTONES: usize = 65_536;

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

/// Outstanding requests of one backend connection.
#[derive(Debug)]
pub struct Correlator<T> {
    mode: Correlation,
    fifo: VecDeque<T>,
    ids: HashMap<u64, T>,
    /// By-id requests in the order they were registered (for timeouts).
    order: VecDeque<u64>,
    tombstones: HashSet<u64>,
    tombstone_order: VecDeque<u64>,
    next_id: u64,
    /// Number of distinct ids the id field can hold.
    id_space: u64,
}

impl<T> Correlator<T> {
    /// An empty correlator; `id_space` bounds how many `by_id` requests can be outstanding.
    pub fn new(mode: Correlation, id_space: u64) -> Self {
        Correlator {
            mode,
            fifo: VecDeque::new(),
            ids: HashMap::new(),
            order: VecDeque::new(),
            tombstones: HashSet::new(),
            tombstone_order: VecDeque::new(),
            next_id: 0,
            id_space: id_space.max(1),
        }
    }

    /// Requests awaiting answers.
    pub fn len(&self) -> usize {
        self.fifo.len() + self.ids.len()
    }

    /// Whether nothing awaits an answer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether another request can be registered (by_id: a free id exists).
    pub fn has_room(&self) -> bool {
        self.mode != Correlation::ById
            || ((self.ids.len() + self.tombstones.len()) as u64) < self.id_space
    }

    /// Records a request. Returns the proxy id to write into it for `by_id`, `Some(0)`
    /// otherwise (unused), or `None` if no id is free.
    pub fn register(&mut self, pending: T) -> Option<u64> {
        match self.mode {
            Correlation::InOrder => {
                self.fifo.push_back(pending);
                Some(0)
            }
            Correlation::ById => {
                if !self.has_room() {
                    return None;
                }
                // Bounded: at most `ids.len() + tombstones.len()` ids are taken.
                let mut id = self.next_id % self.id_space;
                while self.ids.contains_key(&id) || self.tombstones.contains(&id) {
                    id = (id + 1) % self.id_space;
                }
                self.next_id = id.wrapping_add(1);
                self.ids.insert(id, pending);
                self.order.push_back(id);
                Some(id)
            }
            Correlation::None => Some(0),
        }
    }

    /// The outstanding `by_id` request with proxy id `id`.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.ids.get_mut(&id)
    }

    /// Classifies an answer carrying proxy id `id` (`by_id`) or arriving next (`in_order`).
    pub fn answer(&mut self, id: Option<u64>) -> Answer<T> {
        let found = match self.mode {
            Correlation::InOrder => self.fifo.pop_front(),
            Correlation::ById => match id {
                Some(id) if self.tombstones.remove(&id) => return Answer::Late,
                Some(id) => self.ids.remove(&id),
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
            Correlation::ById => {
                // Skip ids already answered (or reused: their request is newer, not older).
                while let Some(&id) = self.order.front() {
                    match self.ids.get(&id) {
                        None => {
                            self.order.pop_front();
                        }
                        Some(t) if is_old(t) => {
                            self.order.pop_front();
                            let t = self.ids.remove(&id)?;
                            self.tombstone(id);
                            return Some(Expired::Request(t));
                        }
                        Some(_) => return None,
                    }
                }
                None
            }
            Correlation::None => None,
        }
    }

    /// The oldest outstanding request, if any.
    pub fn oldest(&self) -> Option<&T> {
        match self.mode {
            Correlation::InOrder => self.fifo.front(),
            Correlation::ById => self.order.iter().find_map(|id| self.ids.get(id)),
            Correlation::None => None,
        }
    }

    fn tombstone(&mut self, id: u64) {
        if self.tombstones.insert(id) {
            self.tombstone_order.push_back(id);
        }
        while self.tombstones.len() > MAX_TOMBSTONES {
            if let Some(old) = self.tombstone_order.pop_front() {
                self.tombstones.remove(&old);
            }
        }
    }

    /// Removes and returns every outstanding request, and forgets tombstones (the
    /// connection is gone).
    pub fn drain(&mut self) -> Vec<T> {
        let mut all: Vec<T> = self.fifo.drain(..).collect();
        let mut ids = std::mem::take(&mut self.ids);
        for id in self.order.drain(..) {
            if let Some(t) = ids.remove(&id) {
                all.push(t);
            }
        }
        all.extend(ids.into_values());
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
        c.register("a");
        c.register("b");
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
        assert_eq!(c.register(9), None);
        assert_eq!(c.answer(Some(2)), Answer::Matched(2));
        // The only free id is reused; ids in use are skipped.
        assert_eq!(c.register(7), Some(2));
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
        c.register(10u32);
        c.register(20u32);
        assert_eq!(c.oldest(), Some(&10));
        assert_eq!(c.oldest_expired(|t| *t < 15), Some(Expired::Request(10)));
        assert_eq!(c.oldest_expired(|t| *t < 15), None, "20 is not old");
        // Id 0 is tombstoned: not reused while its late answer may still come.
        assert!(!c.has_room());
        assert_eq!(c.register(30), None);
        assert_eq!(c.answer(Some(0)), Answer::Late);
        assert_eq!(c.register(30), Some(0));
    }

    #[test]
    fn in_order_timeout_loses_the_connection() {
        let mut c = Correlator::new(Correlation::InOrder, 0);
        c.register(1u32);
        assert_eq!(c.oldest_expired(|_| false), None);
        assert_eq!(c.oldest_expired(|_| true), Some(Expired::ConnectionLost));
        assert_eq!(c.len(), 1, "the caller fails it with the connection");
    }

    #[test]
    fn none_tracks_nothing() {
        let mut c = Correlator::new(Correlation::None, 0);
        c.register(1);
        assert!(c.is_empty());
        assert_eq!(c.answer(Some(0)), Answer::Unmatched);
    }
}
