//! The access log's view of a client: the one request of it being followed, from routing
//! to its answer or failure.

use super::Client;
use crate::access_log::{AccessLog, Sample};
use std::sync::Arc;

impl Client {
    /// Whether the access log follows one of this client's requests now.
    pub(crate) fn sampling(&self) -> bool {
        self.sampling.get()
    }

    /// The access log follows `sample` to its answer.
    pub(crate) fn start_sample(&self, log: Arc<AccessLog>, sample: Sample) {
        *self.sample.borrow_mut() = Some((log, sample));
        self.sampling.set(true);
    }

    /// Request `seq` was answered (`reason` `None`) or failed: its record, if it is the one
    /// followed.
    #[cold]
    pub(super) fn finish_sample(&self, seq: u64, reason: Option<&str>) {
        let mut slot = self.sample.borrow_mut();
        if slot.as_ref().is_some_and(|(_, s)| s.seq == seq) {
            if let Some((log, s)) = slot.take() {
                log.finish(&s, reason);
            }
            self.sampling.set(false);
        }
    }
}
