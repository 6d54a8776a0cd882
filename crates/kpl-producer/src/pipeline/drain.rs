//! The drain meter: how fast the stream stores records while they wait, and the
//! admission limit that follows (what the stream can store in a quarter of the
//! records' time to live; see [`drain_limit`]).

use std::time::{Duration, Instant};

use kpl_codec::SHARD_BYTES_PER_SECOND;

use crate::config::Config;

/// The admission limit of a stream never goes below this many bytes outstanding.
const DRAIN_LIMIT_FLOOR: usize = 4 << 20;

/// What a stream of `shards` shards can store in a quarter of the records' time to
/// live (a margin for throttling and retries), at the lower of its shards' byte
/// limit (times `rate_limit`, at most 100 %) and the measured `rate` (user bytes per
/// second), never under [`DRAIN_LIMIT_FLOOR`]: the admission limit of its pipeline.
/// Before the shard map is known, a stream counts as one shard.
pub(crate) fn drain_limit(c: &Config, shards: usize, rate: Option<f64>) -> usize {
    let horizon = c.record_ttl.as_secs_f64() / 4.0;
    // A shard stores at most its limit, whatever the rate limit lets out.
    let percent = c.rate_limit.min(100) as f64;
    let capacity = shards.max(1) as f64 * SHARD_BYTES_PER_SECOND as f64 * percent / 100.0;
    let rate = rate.map_or(capacity, |r| r.min(capacity));
    ((rate * horizon) as usize).max(DRAIN_LIMIT_FLOOR)
}

/// How long one sample of the drain rate lasts.
const SAMPLE: Duration = Duration::from_secs(1);

/// Measures the user bytes the stream stores per second while records wait, and
/// publishes the admission limit it gives, once per real change.
///
/// Rules: a second counts only when records waited through it (a stream with
/// nothing to send says nothing of how fast it drains); the rate is smoothed
/// (half the last second, half what came before); a limit is published when it
/// moves by more than an eighth, and taken once.
#[derive(Default)]
pub(super) struct DrainMeter {
    /// User bytes stored since `since`.
    drained: u64,
    /// When the current sample began (the first look, then each second).
    since: Option<Instant>,
    /// Smoothed user bytes per second stored while records waited.
    rate: Option<f64>,
    /// The limit last published.
    limit: Option<usize>,
    /// A new admission limit not taken yet.
    admission: Option<usize>,
}

impl DrainMeter {
    /// Counts `bytes` of user records stored.
    #[inline]
    pub(super) fn stored(&mut self, bytes: usize) {
        self.drained += bytes as u64;
    }

    /// Whether a sample ends at `now` (the caller then says whether records waited
    /// through it, see [`measure`](Self::measure)).
    pub(super) fn sample_due(&mut self, now: Instant) -> bool {
        let since = *self.since.get_or_insert(now);
        now.saturating_duration_since(since) >= SAMPLE
    }

    /// Ends the sample, if one is due at `now`: it counts for the rate when records
    /// were `backlogged` through it (what was stored is then what the stream can
    /// take). Then works out the limit of a stream of `shards` shards, and returns
    /// it when it is new (also kept for [`poll_admission`](Self::poll_admission)).
    /// Nothing before the shard count is known (`shards` 0).
    pub(super) fn measure(
        &mut self,
        config: &Config,
        now: Instant,
        backlogged: bool,
        shards: usize,
    ) -> Option<usize> {
        if self.sample_due(now) {
            let since = self.since.unwrap_or(now);
            if backlogged {
                let elapsed = now.saturating_duration_since(since).as_secs_f64();
                let sample = self.drained as f64 / elapsed;
                self.rate = Some(self.rate.map_or(sample, |r| 0.5 * r + 0.5 * sample));
            }
            self.drained = 0;
            self.since = Some(now);
        }
        if shards == 0 {
            return None;
        }
        let limit = drain_limit(config, shards, self.rate);
        // Publish only real changes (the driver takes a lock and maybe wakes puts).
        let changed = self.limit.is_none_or(|old| limit.abs_diff(old) > old / 8);
        if !changed {
            return None;
        }
        self.limit = Some(limit);
        self.admission = Some(limit);
        Some(limit)
    }

    /// A new admission limit, once per change.
    pub(super) fn poll_admission(&mut self) -> Option<usize> {
        self.admission.take()
    }

    /// The smoothed drain rate, in user bytes per second, once measured.
    #[cfg(test)]
    pub(super) fn rate(&self) -> Option<f64> {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use kpl_runtime::{Timer, VirtualClock};

    use super::*;

    fn config() -> Config {
        Config::builder()
            .record_ttl(Duration::from_secs(60))
            .build()
            .expect("config")
    }

    #[test]
    fn nothing_is_published_before_the_shard_count_is_known() {
        let c = config();
        let t0 = VirtualClock::new().now();
        let mut m = DrainMeter::default();
        assert_eq!(m.measure(&c, t0, false, 0), None);
        assert_eq!(m.poll_admission(), None);
        let limit = m.measure(&c, t0, false, 2).expect("a first limit");
        assert_eq!(limit, drain_limit(&c, 2, None));
        assert_eq!(m.poll_admission(), Some(limit));
        assert_eq!(m.poll_admission(), None, "taken once");
    }

    #[test]
    fn a_second_counts_only_when_records_waited_through_it() {
        let c = config();
        let t0 = VirtualClock::new().now();
        let mut m = DrainMeter::default();
        assert!(!m.sample_due(t0), "the first look starts a sample");
        m.stored(1_000_000);
        assert!(!m.sample_due(t0 + Duration::from_millis(999)));
        m.measure(&c, t0 + SAMPLE, false, 1);
        assert_eq!(m.rate(), None, "an idle second says nothing");
        m.stored(400_000);
        m.measure(&c, t0 + 2 * SAMPLE, true, 1);
        assert_eq!(m.rate(), Some(400_000.0));
        m.stored(200_000);
        m.measure(&c, t0 + 3 * SAMPLE, true, 1);
        assert_eq!(m.rate(), Some(300_000.0), "half the last, half before");
    }

    #[test]
    fn a_slow_stream_lowers_the_limit_and_small_moves_are_not_published() {
        let c = config();
        let t0 = VirtualClock::new().now();
        let mut m = DrainMeter::default();
        let first = m.measure(&c, t0, false, 4).expect("first limit");
        assert_eq!(first, 4 * (1 << 20) * 15);
        // A backlogged second storing 200 KB/s: a quarter of the TTL of that.
        m.stored(200_000);
        let slow = m.measure(&c, t0 + SAMPLE, true, 4).expect("a new limit");
        assert_eq!(slow, DRAIN_LIMIT_FLOOR.max(200_000 * 15));
        // The same rate again moves nothing.
        m.stored(200_000);
        assert_eq!(m.measure(&c, t0 + 2 * SAMPLE, true, 4), None);
        assert_eq!(m.poll_admission(), Some(slow));
    }
}
