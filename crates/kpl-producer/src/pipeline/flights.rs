//! Requests in flight: the stream's congestion window, each PutRecords request
//! with its number, its ticket and its timeout, and what stays of a request after
//! its timeout so that a late answer can still settle its records.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use kpl_limiter::{Answer, CongestionWindow, Ticket, WindowConfig};
use kpl_shardmap::ShardId;
use kpl_transport::{ErrorKind, TransportError};

use super::ordered::Lock;
use super::record::{KRec, add_capped};
use crate::config::Config;
use crate::fasthash::FastMap;

/// Bytes each request of the congestion window may carry: with a window of one, a
/// request of at most this much; what one lost answer can duplicate stays small.
const WINDOW_UNIT_BYTES: u64 = 256 * 1024;

/// The congestion window of a stream's pipeline: `max_connections` is its ceiling,
/// `request_timeout` its base timeout.
fn window_config(c: &Config) -> WindowConfig {
    WindowConfig::new(c.max_connections)
        .unit_bytes(WINDOW_UNIT_BYTES)
        .base_timeout(c.request_timeout)
        .max_timeout(
            c.request_timeout
                .saturating_mul(10)
                .min(Duration::from_secs(600))
                .max(c.request_timeout),
        )
}

/// How long the transport waits for an answer the pipeline stopped waiting for at
/// `timeout`: a late answer settles the records not resent yet.
pub(super) fn late_answer_limit(timeout: Duration) -> Duration {
    timeout.saturating_mul(3).min(Duration::from_secs(600))
}

/// What a failed request says of the path, for the congestion window: timeouts,
/// broken connections and 5xx are congestion; throttling is per shard (the rate
/// limiter's business) and a refused request says nothing of the load.
pub(super) fn congestion_signal(e: &TransportError) -> Answer {
    match e.kind() {
        ErrorKind::Transient => Answer::Congested,
        _ if e.is_timeout() || e.may_have_been_stored() => Answer::Congested,
        _ => Answer::Neutral,
    }
}

/// What stays of a Kinesis record of a request past its timeout: its predicted
/// shard, whether it is an aggregate, its user records' ids, and in ordered mode
/// its range's lock: the range stays held until the request has its answer or
/// the transport gives it up, when it can no longer be stored behind newer
/// records.
pub(super) type LateRecord = (Option<ShardId>, bool, Vec<u64>, Option<Lock>);

/// A PutRecords request in flight.
struct InFlight {
    /// Its Kinesis records, until its answer or its timeout.
    batch: Option<Vec<KRec>>,
    ticket: Ticket,
    /// After its timeout, per Kinesis record, what a late answer needs. The
    /// transport waits longer than the pipeline (three timeouts): an answer that
    /// comes late still settles the records not yet resent, so a brownout does not
    /// turn into duplicates.
    late: Vec<LateRecord>,
}

/// A request past its timeout: its records go round again.
pub(super) struct TimedOut {
    pub(super) id: u64,
    pub(super) batch: Vec<KRec>,
    pub(super) ticket: Ticket,
}

/// What an answer is for.
pub(super) enum Answered {
    /// No request in flight has that number (answered already, or never sent).
    Unknown,
    /// A request past its timeout, sent at `sent_at`: what it carried.
    Late {
        sent_at: Instant,
        late: Vec<LateRecord>,
    },
    /// A request in time, sent at `sent_at`: its records; the window went from
    /// `window.0` requests to `window.1`.
    InTime {
        batch: Vec<KRec>,
        sent_at: Instant,
        window: (usize, usize),
    },
}

/// The requests in flight and the window they are sent under.
///
/// Rules: requests are numbered in the order they are sent; each is answered at
/// most once, in time or late; a request past its timeout counts as congestion and
/// hands its records back once, keeping what a late answer needs; a request goes
/// when the window has room, the first one whatever its size.
pub(super) struct Flights {
    window: CongestionWindow,
    requests: FastMap<u64, InFlight>,
    /// (timeout, request number) of the requests in flight.
    timeouts: BinaryHeap<Reverse<(Instant, u64)>>,
    next_id: u64,
}

impl Flights {
    /// No request in flight; the window of `config`.
    pub(super) fn new(config: &Config) -> Self {
        Self {
            window: CongestionWindow::new(window_config(config)),
            requests: FastMap::default(),
            timeouts: BinaryHeap::new(),
            next_id: 0,
        }
    }

    /// Bytes the window has room for, if it has room for a request.
    #[inline]
    pub(super) fn room(&self) -> Option<u64> {
        self.window.room()
    }

    /// Whether a request starting with a Kinesis record of `first` bytes can go
    /// now (the first request in flight goes whatever its size).
    #[inline]
    pub(super) fn admits(&self, first: u64) -> bool {
        self.window
            .room()
            .is_some_and(|room| self.window.in_flight() == 0 || first <= room)
    }

    /// Requests in flight.
    pub(super) fn in_flight(&self) -> usize {
        self.window.in_flight()
    }

    /// Requests the window allows at once.
    pub(super) fn window(&self) -> usize {
        self.window.requests()
    }

    /// Sends `batch` (`bytes` in all) at `now`: its number and its ticket.
    pub(super) fn send(&mut self, batch: Vec<KRec>, bytes: u64, now: Instant) -> (u64, Ticket) {
        let ticket = self.window.on_send(bytes, now);
        let id = self.next_id;
        self.next_id += 1;
        self.timeouts
            .push(Reverse((add_capped(now, ticket.timeout()), id)));
        self.requests.insert(
            id,
            InFlight {
                batch: Some(batch),
                ticket,
                late: Vec::new(),
            },
        );
        (id, ticket)
    }

    /// The next request past its timeout at `now`, if any.
    pub(super) fn poll_timeout(&mut self, now: Instant) -> Option<TimedOut> {
        while let Some(&Reverse((at, id))) = self.timeouts.peek() {
            if at > now {
                return None;
            }
            self.timeouts.pop();
            let Some(flight) = self.requests.get_mut(&id) else {
                continue;
            };
            let Some(batch) = flight.batch.take() else {
                continue;
            };
            let ticket = flight.ticket;
            flight.late = batch
                .iter()
                .map(|k| (k.shard.clone(), k.aggregated, k.ids(), k.lock.clone()))
                .collect();
            self.window.on_answer(ticket, now, Answer::Congested);
            return Some(TimedOut { id, batch, ticket });
        }
        None
    }

    /// The answer to request `id` came at `now`; `answer` is what it says of the
    /// path (used only when it came in time).
    pub(super) fn answered(&mut self, id: u64, answer: Answer, now: Instant) -> Answered {
        let Some(flight) = self.requests.remove(&id) else {
            return Answered::Unknown;
        };
        let sent_at = flight.ticket.sent_at();
        let Some(batch) = flight.batch else {
            return Answered::Late {
                sent_at,
                late: flight.late,
            };
        };
        let before = self.window.requests();
        self.window.on_answer(flight.ticket, now, answer);
        Answered::InTime {
            batch,
            sent_at,
            window: (before, self.window.requests()),
        }
    }

    /// When the next request times out.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.timeouts.peek().map(|Reverse((t, _))| *t)
    }

    /// Whether a request in flight still holds records (not past its timeout).
    pub(super) fn holds_records(&self) -> bool {
        self.requests.values().any(|f| f.batch.is_some())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kpl_runtime::{Timer, VirtualClock};

    use super::*;
    use crate::pipeline::record::{Contents, Payload};

    fn krec(bytes: usize, now: Instant) -> KRec {
        KRec {
            records: Contents::Sealed(Vec::new()),
            partition_key: String::new(),
            explicit_hash_key: None,
            data: Payload::Ready(Bytes::from(vec![0; bytes])),
            shard: Some(ShardId::from("shardId-000000000000")),
            deadline: now,
            expiration: now,
            aggregated: true,
            released: None,
            lock: None,
        }
    }

    fn flights(max_connections: usize) -> Flights {
        let config = Config::builder()
            .max_connections(max_connections)
            .request_timeout(Duration::from_secs(1))
            .build()
            .expect("config");
        Flights::new(&config)
    }

    #[test]
    fn the_first_request_goes_whatever_its_size_and_the_next_waits_for_room() {
        let t0 = VirtualClock::new().now();
        let mut f = flights(4);
        assert_eq!(f.in_flight(), 0);
        assert!(
            f.admits(10 * WINDOW_UNIT_BYTES),
            "the first goes whatever its size"
        );
        let (a, _) = f.send(vec![krec(10, t0)], 10, t0);
        assert_eq!(f.in_flight(), 1);
        assert!(f.window() >= 1);
        if let Some(room) = f.room() {
            assert!(f.admits(room));
            assert!(!f.admits(room + 1), "past the room, while one is in flight");
        } else {
            assert!(!f.admits(1));
        }
        let (b, _) = f.send(vec![krec(10, t0)], 10, t0);
        assert_eq!((a, b), (0, 1), "numbered in the order sent");
    }

    #[test]
    fn an_answer_in_time_hands_the_records_back_once() {
        let t0 = VirtualClock::new().now();
        let mut f = flights(4);
        let (id, _) = f.send(vec![krec(10, t0), krec(20, t0)], 30, t0);
        assert!(f.holds_records());
        let t1 = t0 + Duration::from_millis(50);
        let Answered::InTime { batch, sent_at, .. } = f.answered(id, Answer::Delivered, t1) else {
            panic!("in time");
        };
        assert_eq!((batch.len(), sent_at), (2, t0));
        assert!(!f.holds_records());
        assert!(matches!(
            f.answered(id, Answer::Delivered, t1),
            Answered::Unknown
        ));
        // Its timeout passes with nothing to hand out.
        let later = f.next_timeout().expect("its timeout stays queued");
        assert!(f.poll_timeout(later).is_none());
    }

    #[test]
    fn a_request_past_its_timeout_hands_its_records_back_once_and_a_late_answer_finds_their_ids() {
        let t0 = VirtualClock::new().now();
        let mut f = flights(4);
        let (id, ticket) = f.send(vec![krec(10, t0)], 10, t0);
        let at = f.next_timeout().expect("a timeout");
        assert_eq!(at, t0 + ticket.timeout());
        assert!(f.poll_timeout(at - Duration::from_millis(1)).is_none());
        let out = f.poll_timeout(at).expect("timed out");
        assert_eq!((out.id, out.batch.len()), (id, 1));
        assert!(f.poll_timeout(at).is_none(), "once");
        assert!(!f.holds_records(), "its records went round again");
        assert_eq!(f.in_flight(), 0, "the window counts it as answered");
        let Answered::Late { sent_at, late } = f.answered(id, Answer::Delivered, at) else {
            panic!("late");
        };
        assert_eq!(sent_at, t0);
        assert_eq!(late.len(), 1);
        assert!(late[0].1, "an aggregate");
        assert!(matches!(
            f.answered(id, Answer::Delivered, at),
            Answered::Unknown
        ));
    }

    #[test]
    fn a_late_answer_is_awaited_three_timeouts() {
        assert_eq!(
            late_answer_limit(Duration::from_secs(2)),
            Duration::from_secs(6)
        );
        assert_eq!(
            late_answer_limit(Duration::from_secs(500)),
            Duration::from_secs(600)
        );
    }
}
