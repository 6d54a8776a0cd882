//! What the producer and its stream workers share: the accounting of outstanding
//! records (backpressure, flushes, `oldest_record_age`, admission by drain), the
//! configuration, the runtime and the transport. The producer admits and waits
//! here; the workers release here; neither imports the other for it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use futures::channel::oneshot;
use kpl_runtime::Runtime;
use kpl_transport::{StreamId, Transport};

use crate::config::Config;
use crate::events::EventSink;
use crate::fasthash::FastMap;

/// The unresolved records of one stream, in id order (ids grow with every put).
#[derive(Default)]
pub(crate) struct StreamOutstanding {
    /// (id, arrival, resolved); resolved entries leave from the front.
    pub(crate) ids: VecDeque<(u64, Instant, bool)>,
    /// Bytes outstanding.
    pub(crate) bytes: usize,
    /// What the stream's pipeline can drain within a quarter of the time to live; admission
    /// stops there (see `pipeline::drain_limit`).
    pub(crate) limit: Option<usize>,
}

impl StreamOutstanding {
    /// Whether `bytes` more would go past the drain limit (one record always fits
    /// an empty stream).
    pub(crate) fn over(&self, bytes: usize) -> bool {
        self.limit
            .is_some_and(|limit| self.bytes > 0 && self.bytes + bytes > limit)
    }
}

impl StreamOutstanding {
    pub(crate) fn resolve(&mut self, id: u64) {
        // Ids of one stream are usually contiguous (one stream, or puts in runs):
        // try the direct position before searching.
        let direct = self
            .ids
            .front()
            .and_then(|&(first, _, _)| usize::try_from(id.checked_sub(first)?).ok())
            .filter(|&i| self.ids.get(i).is_some_and(|&(at, _, _)| at == id));
        let found = direct.or_else(|| self.ids.binary_search_by_key(&id, |&(id, _, _)| id).ok());
        if let Some(i) = found {
            self.ids[i].2 = true;
        }
        while self.ids.front().is_some_and(|&(_, _, done)| done) {
            self.ids.pop_front();
        }
    }

    pub(crate) fn oldest(&self) -> Option<(u64, Instant)> {
        self.ids.front().map(|&(id, at, _)| (id, at))
    }
}

/// Outstanding records, for backpressure, flushes and `oldest_record_age`.
#[derive(Default)]
pub(crate) struct Accounting {
    pub(crate) outstanding: FastMap<StreamId, StreamOutstanding>,
    pub(crate) records: usize,
    pub(crate) bytes: usize,
    pub(crate) space_waiters: VecDeque<oneshot::Sender<()>>,
    pub(crate) flush_waiters: Vec<(Option<StreamId>, u64, oneshot::Sender<()>)>,
}

impl Accounting {
    pub(crate) fn flushed(&self, stream: Option<&StreamId>, target: u64) -> bool {
        let below = |m: &StreamOutstanding| m.oldest().is_none_or(|(id, _)| id >= target);
        match stream {
            Some(s) => self.outstanding.get(s).is_none_or(below),
            None => self.outstanding.values().all(below),
        }
    }
}

/// State the producer and its stream workers share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) runtime: Runtime,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) events: Option<Arc<dyn EventSink>>,
    pub(crate) accounting: Mutex<Accounting>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Accounting> {
        self.accounting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A stream's drain limit changed: admission follows it.
    pub(crate) fn set_drain_limit(&self, stream: &StreamId, limit: Option<usize>) {
        let space: Vec<_> = {
            let mut acc = self.lock();
            let m = acc.outstanding.entry(stream.clone()).or_default();
            let grew = match (m.limit, limit) {
                (Some(old), Some(new)) => new > old,
                (Some(_), None) => true,
                _ => false,
            };
            m.limit = limit;
            if grew {
                acc.space_waiters.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        for w in space {
            let _ = w.send(());
        }
    }

    /// Records resolved: release their space and wake whoever waits on it.
    pub(crate) fn release(&self, stream: &StreamId, resolved: &[(u64, usize)]) {
        if resolved.is_empty() {
            return;
        }
        let (space, flushes) = {
            let mut acc = self.lock();
            if let Some(map) = acc.outstanding.get_mut(stream) {
                for (id, bytes) in resolved {
                    map.resolve(*id);
                    map.bytes -= bytes;
                }
            }
            acc.records -= resolved.len();
            acc.bytes -= resolved.iter().map(|(_, b)| b).sum::<usize>();
            let space: Vec<_> = acc.space_waiters.drain(..).collect();
            let done = if acc.flush_waiters.is_empty() {
                Vec::new()
            } else {
                let waiters = std::mem::take(&mut acc.flush_waiters);
                let (done, pending): (Vec<_>, Vec<_>) = waiters
                    .into_iter()
                    .partition(|(s, target, _)| acc.flushed(s.as_ref(), *target));
                acc.flush_waiters = pending;
                done
            };
            (space, done)
        };
        for w in space {
            let _ = w.send(());
        }
        for (_, _, w) in flushes {
            let _ = w.send(());
        }
    }
}
