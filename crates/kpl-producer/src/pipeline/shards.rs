//! The shard map tracker: the stream's [`ShardMap`] with the state of its listing,
//! where records go by it, what the pipeline has learnt since the last map (shards
//! found split or merged, the stream seen resharding), and the stored records that
//! wait for the next map to be placed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kpl_codec::HashKey;
use kpl_shardmap::{LookupError, Refresh, ShardId, ShardInfo, ShardMap};

use super::Transmit;
use super::record::{Rec, take_out};
use crate::fasthash::FastSet;

/// How long after the stream was last seen resharding its big aggregates are cut
/// at their shard's midpoint (see `StreamPipeline::cut_at_midpoint`).
pub(super) const RESHARD_MEMORY: Duration = Duration::from_secs(3_600);

/// Where the tracker is with listing the stream's shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listing {
    /// No listing asked for; the next one lists the stream's closed shards too
    /// when `history`.
    Idle { history: bool },
    /// A listing was asked for ([`Transmit::ListShards`]) and not answered yet.
    Asked,
}

/// Where a record goes by the map.
pub(super) enum Place<'a> {
    /// The shard it is aggregated for.
    Shard(&'a ShardId),
    /// No shard to aggregate for: its shard is not known, or was found split or
    /// merged. `wait_for_map` when a map that will know is coming (the first
    /// listing is in flight, or the shard is a suspect): worth a little more time.
    Unknown { wait_for_map: bool },
}

/// What a listing did to the map.
pub(super) enum Listed {
    /// A new map of `open` shards (`closed` more remembered); `resharded` when its
    /// open shards are not the last map's.
    Map {
        open: usize,
        closed: usize,
        resharded: bool,
    },
    /// The listing failed; the next is at `retry_at`. `no_map` when there is no map
    /// at all yet.
    Failed { no_map: bool, retry_at: Instant },
}

/// A record stored on a shard the map cannot place: decided after the refresh.
pub(super) struct Landed {
    pub(super) rec: Rec,
    pub(super) shard_id: Arc<str>,
    pub(super) sequence_number: Arc<str>,
    /// Refreshes asked for on its behalf: one of the open shards, then one of the
    /// stream's history (the shard may have closed before the first listed it).
    asked: u8,
}

impl Landed {
    /// `rec`, stored on `shard_id` under `sequence_number`.
    pub(super) fn new(rec: Rec, shard_id: Arc<str>, sequence_number: Arc<str>) -> Self {
        Self {
            rec,
            shard_id,
            sequence_number,
            asked: 0,
        }
    }
}

/// The stream's shard map and what depends on its freshness.
///
/// Rules: one listing at a time; a landing on a shard the map does not know asks
/// for a refresh of the open shards, then for one of the stream's history, then
/// waits (no refresh loop); a new map clears the suspects (it knows their
/// children) and hands back what waited for it; the stream counts as resharding
/// for [`RESHARD_MEMORY`] after it was last seen doing so.
pub(super) struct ShardTracker {
    map: ShardMap,
    listing: Listing,
    /// The map version whose consequences were drawn.
    seen: u64,
    /// Shards found split or merged (an aggregate for one landed elsewhere): their
    /// records are not aggregated until the map is refreshed, so that few copies are
    /// stored outside a shard's range.
    suspects: FastSet<ShardId>,
    /// When the stream was last seen resharding.
    resharded_at: Option<Instant>,
    /// Records stored on shards the map could not place.
    awaiting: Vec<Landed>,
}

impl ShardTracker {
    /// No map yet; refresh jitter from `seed`.
    pub(super) fn new(seed: u64) -> Self {
        Self {
            map: ShardMap::new(seed),
            listing: Listing::Idle { history: false },
            seen: 0,
            suspects: FastSet::default(),
            resharded_at: None,
            awaiting: Vec::new(),
        }
    }

    /// The map, to read.
    #[inline]
    pub(super) fn map(&self) -> &ShardMap {
        &self.map
    }

    /// Where a record with `hash_key` goes.
    #[inline]
    pub(super) fn place(&self, hash_key: HashKey) -> Place<'_> {
        match self.map.lookup(hash_key) {
            Ok(shard) => {
                let shard = shard.id();
                if self.suspects.is_empty() || !self.suspects.contains(shard) {
                    Place::Shard(shard)
                } else {
                    Place::Unknown { wait_for_map: true }
                }
            }
            Err(e) => Place::Unknown {
                wait_for_map: matches!(e, LookupError::NotReady) && self.is_listing(),
            },
        }
    }

    /// `shard`'s hash range as the map has it (`None` for a shard it does not
    /// have, or one found split or merged since: a suspect).
    pub(super) fn range_of(&self, shard: &ShardId, now: Instant) -> Option<(u128, u128)> {
        if self.suspects.contains(shard) {
            return None;
        }
        let (lo, hi) = self.map.range_of(shard, now)?;
        Some((lo.get(), hi.get()))
    }

    /// Whether a listing is in flight.
    pub(super) fn is_listing(&self) -> bool {
        self.listing == Listing::Asked
    }

    /// The listing due at `now`, if one is and none is in flight.
    pub(super) fn poll_listing(&mut self, now: Instant) -> Option<Transmit> {
        let Listing::Idle { history } = self.listing else {
            return None;
        };
        let refresh = self.map.poll_refresh(now)?;
        self.listing = Listing::Asked;
        Some(Transmit::ListShards {
            refresh,
            open_only: !history,
        })
    }

    /// When a listing is next due (none while one is in flight), or when the first
    /// record waiting for a map reaches its time to live.
    pub(super) fn next_due(&self, now: Instant) -> Option<Instant> {
        let refresh = match self.listing {
            Listing::Asked => None,
            Listing::Idle { .. } => self.map.next_refresh_at(now),
        };
        let landing = self.awaiting.iter().map(|l| l.rec.expiration).min();
        refresh.into_iter().chain(landing).min()
    }

    /// The answer to a listing: the shards, each with whether it is closed (none
    /// when the listing failed).
    pub(super) fn listed(
        &mut self,
        refresh: Refresh,
        shards: Option<Vec<(ShardInfo, bool)>>,
        now: Instant,
    ) -> Listed {
        self.listing = Listing::Idle { history: false };
        let Some(shards) = shards else {
            let no_map = !self.map.is_ready();
            let retry_at = self.map.on_refresh_failed(refresh, now);
            return Listed::Failed { no_map, retry_at };
        };
        let (closed, open): (Vec<_>, Vec<_>) = shards.into_iter().partition(|(_, c)| *c);
        let resharded = self.map.is_ready() && {
            let mut was: Vec<&ShardId> = self.map.shards().iter().map(ShardInfo::id).collect();
            let mut now_open: Vec<&ShardId> = open.iter().map(|(s, _)| s.id()).collect();
            was.sort_unstable();
            now_open.sort_unstable();
            was != now_open
        };
        let (n_open, n_closed) = (open.len(), closed.len());
        self.map
            .on_refresh_succeeded(refresh, open.into_iter().map(|(s, _)| s).collect(), now);
        self.map
            .remember_closed(closed.into_iter().map(|(s, _)| s).collect(), now);
        Listed::Map {
            open: n_open,
            closed: n_closed,
            resharded,
        }
    }

    /// Whether the map is newer than when this was last asked: the suspects are
    /// cleared (the new map knows their children), and what waited for it is to be
    /// placed again ([`take_awaiting`](Self::take_awaiting)).
    pub(super) fn take_new_map(&mut self) -> bool {
        if self.map.version() == self.seen {
            return false;
        }
        self.seen = self.map.version();
        self.suspects.clear();
        true
    }

    /// Marks the map stale as of `seen_at` (a record landed on `actual`, which it
    /// does not have where expected).
    pub(super) fn invalidate(&mut self, seen_at: Instant, actual: Option<&ShardId>) {
        self.map.invalidate(seen_at, actual);
    }

    /// `shard` was found split or merged: not aggregated for until the next map.
    /// Whether it is news.
    pub(super) fn suspect(&mut self, shard: &ShardId) -> bool {
        if self.suspects.contains(shard) {
            return false;
        }
        self.suspects.insert(shard.clone());
        true
    }

    /// The stream was seen resharding at `now`; whether it already counted as
    /// resharding.
    pub(super) fn reshard_seen(&mut self, now: Instant) -> bool {
        let active = self.resharding(now);
        self.resharded_at = Some(now);
        active
    }

    /// Whether the stream counts as resharding at `now`.
    pub(super) fn resharding(&self, now: Instant) -> bool {
        self.resharded_at
            .is_some_and(|at| now.saturating_duration_since(at) < RESHARD_MEMORY)
    }

    /// A record stored on a shard the map does not know: it waits for a map that
    /// does; a refresh is asked for on its behalf (at most twice, see the rules).
    pub(super) fn await_map(&mut self, mut landed: Landed, shard: &ShardId, now: Instant) {
        match landed.asked {
            0 => {
                self.map.invalidate(now, Some(shard));
                landed.asked = 1;
            }
            1 if !self.is_listing() => {
                self.listing = Listing::Idle { history: true };
                self.map.invalidate(now, Some(shard));
                landed.asked = 2;
            }
            _ => {}
        }
        self.awaiting.push(landed);
    }

    /// Whether any stored record waits for the map.
    pub(super) fn has_awaiting(&self) -> bool {
        !self.awaiting.is_empty()
    }

    /// The records that waited for the map, to be placed by the new one.
    pub(super) fn take_awaiting(&mut self) -> Vec<Landed> {
        std::mem::take(&mut self.awaiting)
    }

    /// The records that waited for the map past their time to live.
    pub(super) fn take_late(&mut self, now: Instant) -> Vec<Landed> {
        take_out(&mut self.awaiting, |l| l.rec.expiration <= now)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kpl_runtime::{Timer, VirtualClock};

    use super::*;
    use crate::completers::Receipt;
    use crate::config::Config;
    use crate::pipeline::Epoch;

    fn shards(n: u128) -> Vec<(ShardInfo, bool)> {
        let width = u128::MAX / n;
        (0..n)
            .map(|i| {
                let end = if i == n - 1 {
                    u128::MAX
                } else {
                    (i + 1) * width - 1
                };
                let id = format!("shardId-{i:012}");
                (
                    ShardInfo::new(id, HashKey::new(i * width), HashKey::new(end)),
                    false,
                )
            })
            .collect()
    }

    fn listing(t: &mut ShardTracker, now: Instant) -> (Refresh, bool) {
        match t.poll_listing(now) {
            Some(Transmit::ListShards { refresh, open_only }) => (refresh, open_only),
            _ => panic!("no listing due"),
        }
    }

    fn landed(now: Instant, shard: &str) -> Landed {
        let config = Config::builder().build().expect("config");
        let epoch = Epoch::new(now);
        let receipt = Receipt::new(1);
        let mut rec = Rec::new(
            "k".into(),
            None,
            HashKey::from_partition_key("k"),
            Bytes::from_static(b"d"),
            now,
            epoch,
            receipt,
        );
        rec.admit(&config, epoch);
        Landed::new(rec, shard.into(), "1".into())
    }

    #[test]
    fn one_listing_at_a_time_and_records_wait_for_the_first_map_while_it_loads() {
        let t0 = VirtualClock::new().now();
        let mut t = ShardTracker::new(7);
        let key = HashKey::new(5);
        assert!(matches!(
            t.place(key),
            Place::Unknown {
                wait_for_map: false
            }
        ));
        let (refresh, open_only) = listing(&mut t, t0);
        assert!(open_only);
        assert!(t.is_listing());
        assert!(t.poll_listing(t0).is_none(), "one at a time");
        assert_eq!(t.next_due(t0), None);
        assert!(matches!(
            t.place(key),
            Place::Unknown { wait_for_map: true }
        ));
        let Listed::Map {
            open, resharded, ..
        } = t.listed(refresh, Some(shards(2)), t0)
        else {
            panic!("a map");
        };
        assert_eq!((open, resharded), (2, false), "a first map is no reshard");
        assert!(!t.is_listing());
        assert!(t.take_new_map());
        assert!(!t.take_new_map(), "said once");
        assert!(matches!(t.place(key), Place::Shard(s) if s.as_str() == "shardId-000000000000"));
    }

    #[test]
    fn a_failed_first_listing_says_there_is_no_map_and_when_to_retry() {
        let t0 = VirtualClock::new().now();
        let mut t = ShardTracker::new(7);
        let (refresh, _) = listing(&mut t, t0);
        let Listed::Failed { no_map, retry_at } = t.listed(refresh, None, t0) else {
            panic!("failed");
        };
        assert!(no_map);
        assert!(retry_at > t0);
        assert_eq!(t.next_due(t0), Some(retry_at));
        assert!(!t.take_new_map());
    }

    #[test]
    fn a_changed_set_of_open_shards_is_a_reshard_remembered_for_an_hour() {
        let t0 = VirtualClock::new().now();
        let mut t = ShardTracker::new(7);
        let (refresh, _) = listing(&mut t, t0);
        t.listed(refresh, Some(shards(2)), t0);
        let t1 = t0 + Duration::from_secs(1);
        t.invalidate(t1, None);
        let at = t.next_due(t1).expect("a refresh is due");
        let (refresh, _) = listing(&mut t, at);
        let Listed::Map { resharded, .. } = t.listed(refresh, Some(shards(4)), at) else {
            panic!("a map");
        };
        assert!(resharded);
        assert!(!t.reshard_seen(at), "news");
        assert!(t.reshard_seen(at), "already resharding");
        assert!(t.resharding(at + RESHARD_MEMORY - Duration::from_secs(1)));
        assert!(!t.resharding(at + RESHARD_MEMORY));
    }

    #[test]
    fn a_suspect_is_not_aggregated_for_until_a_new_map() {
        let t0 = VirtualClock::new().now();
        let mut t = ShardTracker::new(7);
        let (refresh, _) = listing(&mut t, t0);
        t.listed(refresh, Some(shards(1)), t0);
        t.take_new_map();
        let key = HashKey::new(5);
        let Place::Shard(shard) = t.place(key) else {
            panic!("placed");
        };
        let shard = shard.clone();
        assert!(t.suspect(&shard));
        assert!(!t.suspect(&shard), "known already");
        assert!(matches!(
            t.place(key),
            Place::Unknown { wait_for_map: true }
        ));
        let t1 = t0 + Duration::from_secs(1);
        t.invalidate(t1, Some(&shard));
        let at = t.next_due(t1).expect("a refresh");
        let (refresh, _) = listing(&mut t, at);
        t.listed(refresh, Some(shards(1)), at);
        assert!(t.take_new_map());
        assert!(matches!(t.place(key), Place::Shard(_)));
    }

    #[test]
    fn a_landing_on_an_unknown_shard_asks_for_the_open_shards_then_the_history_then_waits() {
        let t0 = VirtualClock::new().now();
        let mut t = ShardTracker::new(7);
        let (refresh, _) = listing(&mut t, t0);
        t.listed(refresh, Some(shards(1)), t0);
        t.take_new_map();
        let gone = ShardId::from("shardId-000000000009");
        // First: a refresh of the open shards.
        t.await_map(landed(t0, "shardId-000000000009"), &gone, t0);
        assert!(t.has_awaiting());
        let at = t.next_due(t0).expect("a refresh");
        let (refresh, open_only) = listing(&mut t, at);
        assert!(open_only);
        t.listed(refresh, Some(shards(1)), at);
        assert!(t.take_new_map());
        // Still unknown: a refresh of the stream's history.
        let again = t.take_awaiting();
        assert_eq!(again.len(), 1);
        for l in again {
            t.await_map(l, &gone, at);
        }
        let at2 = t.next_due(at).expect("a refresh");
        let (refresh, open_only) = listing(&mut t, at2);
        assert!(!open_only, "the history this time");
        t.listed(refresh, Some(shards(1)), at2);
        assert!(t.take_new_map());
        // Then it waits for its time to live, asking for nothing more.
        for l in t.take_awaiting() {
            t.await_map(l, &gone, at2);
        }
        let expiration = t.awaiting[0].rec.expiration;
        assert!(t.next_due(at2).is_some_and(|due| due <= expiration));
        assert!(
            t.take_late(expiration - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(t.take_late(expiration).len(), 1);
        assert!(!t.has_awaiting());
    }
}
