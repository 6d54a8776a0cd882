//! A token bucket of several streams that are taken from together.

use std::time::{Duration, Instant};

const NANOS: i128 = 1_000_000_000;

/// A token bucket of `N` streams (for Kinesis: records and bytes), refilled
/// continuously at each stream's rate, holding at most one second of rate (the
/// burst; see [`with_burst`](Self::with_burst)), and taken from all-or-nothing.
///
/// Tokens are counted in billionths so refill is exact for any elapsed time; the
/// refill is computed when the bucket is asked, never on a timer.
///
/// An amount larger than a stream's burst can never be saved up: it is let through
/// when that stream is full, and the stream goes into debt, so the long-run rate
/// still holds and such an item is not stuck forever.
///
/// ```
/// use std::time::{Duration, Instant};
/// use kpl_limiter::TokenBucket;
///
/// let t0 = Instant::now();
/// let mut bucket = TokenBucket::new([1000, 1 << 20], t0); // records/s, bytes/s
/// assert!(bucket.try_take([1000, 10], t0)); // the whole burst
/// assert!(!bucket.try_take([1, 10], t0));
/// assert_eq!(bucket.ready_at([1, 10], t0), t0 + Duration::from_millis(1));
/// ```
#[derive(Clone, Debug)]
pub struct TokenBucket<const N: usize> {
    rates: [u64; N],
    /// Nanoseconds of rate the bucket holds.
    burst: i128,
    /// Billionths of a token; negative while in debt.
    tokens: [i128; N],
    updated: Instant,
}

impl<const N: usize> TokenBucket<N> {
    /// A full bucket with the given rates per second (0 is taken as 1), holding one
    /// second of them.
    pub fn new(rates: [u64; N], now: Instant) -> Self {
        Self::with_burst(rates, Duration::from_secs(1), now)
    }

    /// A full bucket with the given rates per second (0 is taken as 1), holding
    /// `burst` of them (at least a nanosecond's worth).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use kpl_limiter::TokenBucket;
    ///
    /// let t0 = Instant::now();
    /// let mut pace = TokenBucket::with_burst([1000], Duration::from_millis(100), t0);
    /// assert!(pace.try_take([100], t0)); // a tenth of a second at once
    /// assert!(!pace.try_take([1], t0));
    /// assert_eq!(pace.ready_at([1], t0), t0 + Duration::from_millis(1));
    /// ```
    pub fn with_burst(rates: [u64; N], burst: Duration, now: Instant) -> Self {
        let rates = rates.map(|r| r.max(1));
        let burst = i128::try_from(burst.as_nanos())
            .unwrap_or(i128::MAX / 4)
            .max(1);
        Self {
            tokens: rates.map(|r| i128::from(r) * burst),
            burst,
            rates,
            updated: now,
        }
    }

    /// The rates per second.
    pub fn rates(&self) -> [u64; N] {
        self.rates
    }

    /// Changes the rates from `now` on; what was earned before is kept, up to the new
    /// burst.
    pub fn set_rates(&mut self, rates: [u64; N], now: Instant) {
        self.refill(now);
        self.rates = rates.map(|r| r.max(1));
        for (t, &r) in self.tokens.iter_mut().zip(&self.rates) {
            *t = (*t).min(i128::from(r) * self.burst);
        }
    }

    /// Whole tokens available in each stream at `now` (negative in debt).
    pub fn available(&mut self, now: Instant) -> [i128; N] {
        self.refill(now);
        self.tokens.map(|t| t.div_euclid(NANOS))
    }

    /// Whether every stream holds its whole burst at `now`.
    pub fn is_full(&self, now: Instant) -> bool {
        let mut copy = self.clone();
        copy.refill(now);
        copy.tokens
            .iter()
            .zip(&copy.rates)
            .all(|(&t, &r)| t >= i128::from(r) * copy.burst)
    }

    /// Takes `amounts` from every stream if all have enough, else takes nothing.
    pub fn try_take(&mut self, amounts: [u64; N], now: Instant) -> bool {
        self.refill(now);
        if self.wait_nanos(amounts) > 0 {
            return false;
        }
        for (t, &a) in self.tokens.iter_mut().zip(&amounts) {
            *t -= i128::from(a) * NANOS;
        }
        true
    }

    /// The earliest moment [`try_take`](Self::try_take) of `amounts` will succeed, if
    /// nothing else is taken meanwhile (`now` or earlier when it would now).
    pub fn ready_at(&self, amounts: [u64; N], now: Instant) -> Instant {
        let mut copy = self.clone();
        copy.refill(now);
        let nanos = copy.wait_nanos(amounts);
        now + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Nanoseconds until every stream holds what `amounts` needs (its burst, for an
    /// amount over the burst).
    fn wait_nanos(&self, amounts: [u64; N]) -> i128 {
        let mut wait = 0i128;
        for ((&amount, &rate), &tokens) in amounts.iter().zip(&self.rates).zip(&self.tokens) {
            let rate = i128::from(rate);
            let need = (i128::from(amount) * NANOS).min(rate * self.burst);
            let missing = need - tokens;
            if missing > 0 {
                // Billionths of a token per nanosecond = rate / 1e9 tokens: the wait
                // in ns is missing / rate, rounded up.
                wait = wait.max((missing + rate - 1) / rate);
            }
        }
        wait
    }

    fn refill(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.updated) else {
            return;
        };
        let nanos = i128::try_from(elapsed.as_nanos()).unwrap_or(i128::MAX / 4);
        for (t, &r) in self.tokens.iter_mut().zip(&self.rates) {
            let capacity = i128::from(r) * self.burst;
            *t = t
                .saturating_add(nanos.saturating_mul(i128::from(r)))
                .min(capacity);
        }
        self.updated = now;
    }
}
