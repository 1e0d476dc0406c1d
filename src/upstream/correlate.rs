//! Correlation of answers to requests on one shared backend connection. Pure bookkeeping,
//! no I/O: `in_order` keeps a FIFO of what was sent; `by_id` hands out proxy ids (unique
//! among the connection's outstanding requests, within the id field's width) and finds the
//! request by the id an answer carries; `none` tracks nothing. An answer that matches
//! nothing is a push, for the caller to route by key.

use crate::config::Correlation;
use std::collections::{HashMap, VecDeque};

/// Outstanding requests of one backend connection.
#[derive(Debug)]
pub struct Correlator<T> {
    mode: Correlation,
    fifo: VecDeque<T>,
    ids: HashMap<u64, T>,
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
        self.mode != Correlation::ById || (self.ids.len() as u64) < self.id_space
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
                // Bounded: at most `ids.len()` ids are taken, so a free one is that close.
                let mut id = self.next_id % self.id_space;
                while self.ids.contains_key(&id) {
                    id = (id + 1) % self.id_space;
                }
                self.next_id = id.wrapping_add(1);
                self.ids.insert(id, pending);
                Some(id)
            }
            Correlation::None => Some(0),
        }
    }

    /// The request an answer belongs to: the oldest (`in_order`) or the one with proxy id
    /// `id` (`by_id`). `None` means the answer is a push.
    pub fn answer(&mut self, id: Option<u64>) -> Option<T> {
        match self.mode {
            Correlation::InOrder => self.fifo.pop_front(),
            Correlation::ById => id.and_then(|id| self.ids.remove(&id)),
            Correlation::None => None,
        }
    }

    /// Removes and returns every outstanding request (the connection is gone).
    pub fn drain(&mut self) -> Vec<T> {
        let mut all: Vec<T> = self.fifo.drain(..).collect();
        all.extend(self.ids.drain().map(|(_, t)| t));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_fifo() {
        let mut c = Correlator::new(Correlation::InOrder, 0);
        c.register("a");
        c.register("b");
        assert_eq!(c.answer(Some(99)), Some("a"));
        assert_eq!(c.answer(None), Some("b"));
        assert_eq!(c.answer(None), None);
    }

    #[test]
    fn by_id_hands_out_unique_ids_within_the_space() {
        let mut c = Correlator::new(Correlation::ById, 4);
        let ids: Vec<_> = (0..4).map(|i| c.register(i).unwrap()).collect();
        assert_eq!(ids, vec![0, 1, 2, 3]);
        assert!(!c.has_room());
        assert_eq!(c.register(9), None);
        assert_eq!(c.answer(Some(2)), Some(2));
        // The only free id is reused; ids in use are skipped.
        assert_eq!(c.register(7), Some(2));
        assert_eq!(c.answer(Some(2)), Some(7));
        assert_eq!(c.answer(Some(2)), None, "an unknown id is a push");
        assert_eq!(c.answer(None), None);
        let mut rest = c.drain();
        rest.sort();
        assert_eq!(rest, vec![0, 1, 3]);
        assert!(c.is_empty());
    }

    #[test]
    fn none_tracks_nothing() {
        let mut c = Correlator::new(Correlation::None, 0);
        c.register(1);
        assert!(c.is_empty());
        assert_eq!(c.answer(Some(0)), None);
    }
}
