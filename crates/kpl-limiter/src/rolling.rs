//! A rolling window of several amounts taken together, as Kinesis counts a shard's
//! writes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One amount taken: when, until when it counts, and how much.
#[derive(Clone, Copy, Debug)]
struct Entry<const N: usize> {
    at: Instant,
    until: Instant,
    amounts: [u64; N],
}

/// What a rolling window of `N` amounts (for Kinesis: records and bytes) lets through:
/// within any span of [`span`](Self::span) (one second for Kinesis), at most `caps`
/// of each amount, taken all-or-nothing.
///
/// This is how a Kinesis shard counts writes (1,000 records and 1 MiB within any
/// second), so a producer that admits by the same rule cannot outrun the shard the
/// way a token bucket does: a bucket that holds a second's burst lets its burst out
/// on top of its rate, twice the limit within one second.
///
/// An amount larger than a cap can never fit: it passes when the window is empty,
/// so such an item is not stuck forever, and it counts for as many spans as it
/// holds caps (a 10 MiB record holds a 1 MiB-per-second shard for 10 seconds), so
/// the long-run rate still holds. Caps raised above the ones the window was made
/// with (a limiter probing above a shard's limit) do not shorten that. For a
/// Kinesis shard this is the model of large records that kpl-sim keeps too
/// (`kpl_codec::shard_write_hold`).
///
/// ```
/// use std::time::{Duration, Instant};
/// use kpl_limiter::RollingWindow;
///
/// let t0 = Instant::now();
/// let mut w = RollingWindow::new([1000, 1 << 20], Duration::from_secs(1));
/// assert!(w.try_take([1, 700_000], t0));
/// assert!(!w.try_take([1, 700_000], t0 + Duration::from_millis(500)));
/// // Room again when the first write leaves the window.
/// assert_eq!(w.ready_at([1, 700_000], t0), t0 + Duration::from_secs(1));
/// assert!(w.try_take([1, 700_000], t0 + Duration::from_secs(1)));
/// ```
#[derive(Clone, Debug)]
pub struct RollingWindow<const N: usize> {
    caps: [u64; N],
    /// The caps it was made with: an amount over its cap counts by the lower of
    /// these and `caps`.
    base: [u64; N],
    span: Duration,
    /// What was taken, when, and until when it counts (oldest first; an entry that
    /// counts for more than a span is alone in the log while it counts).
    log: VecDeque<Entry<N>>,
    sums: [u64; N],
}

impl<const N: usize> RollingWindow<N> {
    /// An empty window letting `caps` through within any `span` (a cap of 0 is
    /// taken as 1).
    pub fn new(caps: [u64; N], span: Duration) -> Self {
        let caps = caps.map(|c| c.max(1));
        Self {
            caps,
            base: caps,
            span,
            log: VecDeque::new(),
            sums: [0; N],
        }
    }

    /// The caps.
    pub fn caps(&self) -> [u64; N] {
        self.caps
    }

    /// The span the caps hold over.
    pub fn span(&self) -> Duration {
        self.span
    }

    /// Changes the caps; what was taken stays counted.
    pub fn set_caps(&mut self, caps: [u64; N]) {
        self.caps = caps.map(|c| c.max(1));
    }

    /// What was taken within the span that ends at `now`.
    pub fn used(&mut self, now: Instant) -> [u64; N] {
        self.forget(now);
        self.sums
    }

    /// Takes `amounts` if every cap has room for them at `now` (or the window is
    /// empty), else takes nothing.
    pub fn try_take(&mut self, amounts: [u64; N], now: Instant) -> bool {
        self.forget(now);
        if !self.log.is_empty() && !self.fits(self.sums, amounts) {
            return false;
        }
        for (s, a) in self.sums.iter_mut().zip(amounts) {
            *s += a;
        }
        self.push(amounts, now);
        true
    }

    /// Logs `amounts` taken at `now`; entries stay in time order even if a caller's
    /// clock steps back.
    fn push(&mut self, amounts: [u64; N], now: Instant) {
        let at = self.log.back().map_or(now, |e| e.at.max(now));
        let until = at + self.hold(amounts);
        self.log.push_back(Entry { at, until, amounts });
    }

    /// How long `amounts` count: one span, or for an amount over its cap, as many
    /// spans as it holds caps (the lower of the current caps and those the window
    /// was made with).
    pub fn hold(&self, amounts: [u64; N]) -> Duration {
        let span = self.span.as_nanos();
        let mut nanos = span;
        for ((&a, c), base) in amounts.iter().zip(self.caps).zip(self.base) {
            let c = c.min(base);
            if a > c {
                nanos = nanos.max(span.saturating_mul(u128::from(a)) / u128::from(c));
            }
        }
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The earliest moment [`try_take`](Self::try_take) of `amounts` succeeds if
    /// nothing else is taken meanwhile (`now` when it would now).
    pub fn ready_at(&self, amounts: [u64; N], now: Instant) -> Instant {
        let mut sums = self.sums;
        let mut when = now;
        // Oldest first: room comes as entries leave, in this order.
        for e in &self.log {
            if self.fits(sums, amounts) {
                return when;
            }
            when = when.max(e.until);
            for (s, t) in sums.iter_mut().zip(e.amounts) {
                *s -= t;
            }
        }
        // Empty by then: anything passes.
        when
    }

    /// Moves what was taken at `taken_at` (these `amounts`) to `now`: the caller took
    /// room before it knew when the amounts would reach the shard (they waited to be
    /// sent), and they count from when they are sent. Amounts no longer in the window
    /// are counted again from `now`. Returns whether the entry was found.
    pub fn restamp(&mut self, taken_at: Instant, amounts: [u64; N], now: Instant) -> bool {
        self.forget(now);
        // Recent entries are at the back.
        let found = self
            .log
            .iter()
            .rposition(|e| e.at == taken_at && e.amounts == amounts);
        match found {
            Some(i) => {
                self.log.remove(i);
            }
            None => {
                for (s, a) in self.sums.iter_mut().zip(amounts) {
                    *s += a;
                }
            }
        }
        self.push(amounts, now);
        found.is_some()
    }

    fn fits(&self, sums: [u64; N], amounts: [u64; N]) -> bool {
        sums.iter()
            .zip(amounts)
            .zip(self.caps)
            .all(|((&s, a), c)| s + a <= c)
    }

    fn forget(&mut self, now: Instant) {
        while let Some(&e) = self.log.front() {
            if e.until > now {
                break;
            }
            self.log.pop_front();
            for (s, t) in self.sums.iter_mut().zip(e.amounts) {
                *s -= t;
            }
        }
    }
}
