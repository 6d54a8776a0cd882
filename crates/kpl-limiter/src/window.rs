//! Congestion control: how many requests, and how many bytes, may be unanswered at
//! once on one stream's path to the service, and how long each may take.
//!
//! A PutRecords request can carry megabytes. On a slow path (a local emulator, a
//! narrow uplink, a proxy, a brownout) many large requests in flight wait behind
//! each other, outlast a fixed timeout and are resent although the service may have
//! stored them: congestion collapse, with duplicates and false failures. The
//! [`CongestionWindow`] keeps the unanswered load to what the path carries:
//!
//! - **Two limits in one window.** `window` requests and `window × unit_bytes` bytes
//!   (1 MiB a unit by default) may be unanswered. A request never needs more room than
//!   the window gives: the caller sends what fits ([`CongestionWindow::room`]).
//! - **Start small, grow while answers come in time** (TCP's slow start, then
//!   additive increase): from `initial` (1), one more request per answer until the
//!   first sign of congestion or of a queue forming (an answer over 2 × the base
//!   round trip + 200 ms, as HyStart does), then one more per window of answers; `max_requests`
//!   (the KPL's `MaxConnections`) is the ceiling. It grows only while it is the limit
//!   (a producer that sends little does not inflate it).
//! - **Shrink on congestion** (multiplicative decrease, once per round trip): halve on
//!   a timeout, a broken connection or a 5xx ([`Answer::Congested`]); take 10 % off
//!   (Vector's adaptive request concurrency) when an answer is late: over half its
//!   timeout, well above the smoothed round trip (more than twice it and more than
//!   three deviations and [`LATENCY_SLACK`] above it), or a queue of over
//!   [`QUEUE_SLACK`] above the path's base round trip (the lowest answer of the last
//!   10 to 20 s, as TCP Vegas and Envoy's minimum-RTT measurement use).
//! - **Timeouts that fit the request** ([`CongestionWindow::timeout`]): the base
//!   timeout (the KPL's `RequestTimeout`) plus twice the time the measured delivery
//!   rate needs for the bytes ahead of and in the request, so a request never times
//!   out merely because it queued behind others on a slow path; after consecutive
//!   timeouts the base doubles (Karn's backoff, at most 8×). Capped at `max_timeout`.
//! - Throttling is *not* a signal here: it is per shard, the rate limiter's business
//!   ([`Answer::Neutral`]).
//!
//! Nothing here reads a clock: every call takes `now`.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use kpl_limiter::{Answer, CongestionWindow, WindowConfig};
//!
//! let t0 = Instant::now();
//! let mut w = CongestionWindow::new(WindowConfig::new(24));
//! assert_eq!(w.room(), Some(1 << 20)); // one request of up to 1 MiB to start with
//! let ticket = w.on_send(200_000, t0);
//! assert_eq!(w.room(), None); // the window is full
//! w.on_answer(ticket, t0 + Duration::from_millis(30), Answer::Delivered);
//! assert_eq!(w.requests(), 2); // slow start: one more per answer
//! ```

use std::time::{Duration, Instant};

/// An answer this much over the smoothed round trip (and more than twice it, and
/// three deviations over it) counts as late.
pub const LATENCY_SLACK: Duration = Duration::from_millis(50);
/// A queue this long on the path counts as congestion: an answer later than the
/// path's base round trip (the lowest of recent answers) plus this, and four times
/// that base, is late even if the smoothed round trip has grown with the queue.
pub const QUEUE_SLACK: Duration = Duration::from_secs(1);
/// Slow start ends when an answer is later than twice the base round trip plus this.
const SLOW_START_EXIT_SLACK: Duration = Duration::from_millis(200);
/// The base round trip is the lowest answer of the current and the last period of
/// this length.
const BASE_RTT_PERIOD: Duration = Duration::from_secs(10);

/// What an answer says of the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// The service answered (per-record errors included): the path carried the
    /// request.
    Delivered,
    /// A timeout, a broken connection, a 5xx: the path or the service is overloaded.
    Congested,
    /// An answer that says nothing about the path's load (a refused request, a
    /// throttled one): only frees the request's room.
    Neutral,
}

/// The window's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    max_requests: usize,
    initial_requests: usize,
    unit_bytes: u64,
    base_timeout: Duration,
    max_timeout: Duration,
}

impl WindowConfig {
    /// At most `max_requests` requests in flight (at least 1); starts at 1 request
    /// of 1 MiB, base timeout 6 s (the KPL's), timeouts at most 10 minutes.
    pub fn new(max_requests: usize) -> Self {
        Self {
            max_requests: max_requests.max(1),
            initial_requests: 1,
            unit_bytes: 1 << 20,
            base_timeout: Duration::from_secs(6),
            max_timeout: Duration::from_secs(600),
        }
    }

    /// The window to start from (at least 1, at most the ceiling).
    pub fn initial_requests(mut self, n: usize) -> Self {
        self.initial_requests = n.max(1);
        self
    }

    /// Bytes each request of the window may carry (at least 1).
    pub fn unit_bytes(mut self, bytes: u64) -> Self {
        self.unit_bytes = bytes.max(1);
        self
    }

    /// The base timeout of a request (the KPL's `RequestTimeout`).
    pub fn base_timeout(mut self, timeout: Duration) -> Self {
        self.base_timeout = timeout;
        self
    }

    /// The longest timeout a request is given, however slow the path.
    pub fn max_timeout(mut self, timeout: Duration) -> Self {
        self.max_timeout = timeout;
        self
    }
}

/// A request in flight: give it back to [`CongestionWindow::on_answer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "every request sent must be answered, or the window leaks"]
pub struct Ticket {
    bytes: u64,
    sent_at: Instant,
    timeout: Duration,
    delivered_at_send: u64,
    round: u64,
}

impl Ticket {
    /// The request's timeout, as [`CongestionWindow::timeout`] gave it at sending.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// When it was sent.
    pub fn sent_at(&self) -> Instant {
        self.sent_at
    }
}

/// The congestion window of one stream: how many requests and bytes may be
/// unanswered, grown while answers come in time (slow start, then one request per
/// window of answers), shrunk on congestion ([`Answer::Congested`]: halved) and late
/// answers (−10 %), at most once per round trip; and the timeout each request gets
/// ([`timeout`](Self::timeout)). The project's `docs/delivery.md` has the reasoning.
#[derive(Clone, Debug)]
pub struct CongestionWindow {
    config: WindowConfig,
    window: f64,
    slow_start: bool,
    in_flight: usize,
    in_flight_bytes: u64,
    srtt: Option<Duration>,
    rttvar: Duration,
    /// Bytes answered so far (for delivery-rate samples).
    delivered: u64,
    /// Smoothed delivery rate, bytes per second.
    rate: Option<f64>,
    /// Requests sent so far; a decrease happens once per round trip: only a request
    /// sent after the last decrease can cause another.
    sent: u64,
    recovery_round: u64,
    /// The last request whose sending used the window up.
    full_round: u64,
    timeouts_in_a_row: u32,
    decreases: u64,
    /// Lowest round trip of this period and of the last one.
    min_rtt: Option<Duration>,
    min_rtt_prev: Option<Duration>,
    period_start: Option<Instant>,
}

impl CongestionWindow {
    /// A window with `config`.
    pub fn new(config: WindowConfig) -> Self {
        Self {
            window: config.initial_requests.min(config.max_requests) as f64,
            config,
            slow_start: true,
            in_flight: 0,
            in_flight_bytes: 0,
            srtt: None,
            rttvar: Duration::ZERO,
            delivered: 0,
            rate: None,
            sent: 0,
            recovery_round: 0,
            full_round: 0,
            timeouts_in_a_row: 0,
            decreases: 0,
            min_rtt: None,
            min_rtt_prev: None,
            period_start: None,
        }
    }

    /// Requests the window allows in flight now.
    pub fn requests(&self) -> usize {
        (self.window as usize).clamp(1, self.config.max_requests)
    }

    /// Bytes the window allows in flight now.
    pub fn bytes(&self) -> u64 {
        (self.window.max(1.0) * self.config.unit_bytes as f64) as u64
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Bytes in flight.
    pub fn in_flight_bytes(&self) -> u64 {
        self.in_flight_bytes
    }

    /// The smoothed round trip, once an answer came.
    pub fn smoothed_rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The smoothed delivery rate in bytes per second, once an answer came.
    pub fn delivery_rate(&self) -> Option<f64> {
        self.rate
    }

    /// How many times the window shrank.
    pub fn decreases(&self) -> u64 {
        self.decreases
    }

    /// Bytes the next request may carry, or `None` when it must wait for an answer.
    /// With nothing in flight there is always room for one request (of at least
    /// one record, whatever its size: the caller never splits a record).
    pub fn room(&self) -> Option<u64> {
        if self.in_flight == 0 {
            return Some(self.bytes());
        }
        if self.in_flight >= self.requests() || self.in_flight_bytes >= self.bytes() {
            return None;
        }
        Some(self.bytes() - self.in_flight_bytes)
    }

    /// The timeout for a request of `bytes` sent now: the base timeout (doubled per
    /// consecutive timeout, at most 8×) plus twice the time the measured delivery
    /// rate needs for the bytes in flight and these, at most the configured maximum.
    pub fn timeout(&self, bytes: u64) -> Duration {
        let base = self
            .config
            .base_timeout
            .saturating_mul(1 << self.timeouts_in_a_row.min(3));
        let queue = match self.rate {
            Some(rate) if rate > 0.0 => {
                let secs = 2.0 * (self.in_flight_bytes + bytes) as f64 / rate;
                Duration::try_from_secs_f64(secs).unwrap_or(self.config.max_timeout)
            }
            _ => Duration::ZERO,
        };
        base.saturating_add(queue).min(self.config.max_timeout)
    }

    /// Records a request of `bytes` sent at `now`, with the timeout
    /// [`timeout`](Self::timeout) gives.
    pub fn on_send(&mut self, bytes: u64, now: Instant) -> Ticket {
        let timeout = self.timeout(bytes);
        self.in_flight += 1;
        self.in_flight_bytes += bytes;
        self.sent += 1;
        let ticket = Ticket {
            bytes,
            sent_at: now,
            timeout,
            delivered_at_send: self.delivered,
            round: self.sent,
        };
        if self.in_flight >= self.requests()
            || self.in_flight_bytes.saturating_mul(2) >= self.bytes()
        {
            // The window is used up: answers to requests sent up to now may grow it.
            self.full_round = self.sent;
        }
        ticket
    }

    /// Records the answer (or failure) of a request sent with `ticket`.
    pub fn on_answer(&mut self, ticket: Ticket, now: Instant, answer: Answer) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(ticket.bytes);
        let rtt = now.saturating_duration_since(ticket.sent_at);
        match answer {
            Answer::Neutral => {}
            Answer::Congested => {
                // The path could not carry what was ahead of this request in the
                // time it had: the rate is at most that.
                let elapsed = rtt.as_secs_f64().max(1e-3);
                let carried = (self.delivered - ticket.delivered_at_send + ticket.bytes) as f64;
                let bound = carried / elapsed;
                self.rate = Some(self.rate.map_or(bound, |r| r.min(bound)));
                self.timeouts_in_a_row = self.timeouts_in_a_row.saturating_add(1);
                self.decrease(ticket, 0.5);
            }
            Answer::Delivered => {
                self.timeouts_in_a_row = 0;
                self.delivered += ticket.bytes;
                let late = self.is_late(rtt, ticket.timeout);
                // HyStart: leave slow start once answers come back clearly slower
                // than the path's base (a queue is forming), before it overshoots.
                if self.slow_start
                    && self
                        .base_rtt()
                        .is_some_and(|b| rtt > b * 2 + SLOW_START_EXIT_SLACK)
                {
                    self.slow_start = false;
                }
                self.sample(ticket, rtt, now);
                if late {
                    self.decrease(ticket, 0.9);
                } else if ticket.round <= self.full_round {
                    // The window was the limit while this request was out.
                    self.window = if self.slow_start {
                        self.window + 1.0
                    } else {
                        self.window + 1.0 / self.window
                    }
                    .min(self.config.max_requests as f64);
                }
            }
        }
    }

    /// The path's base round trip: the lowest answer of this period and the last.
    pub fn base_rtt(&self) -> Option<Duration> {
        match (self.min_rtt, self.min_rtt_prev) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_late(&self, rtt: Duration, timeout: Duration) -> bool {
        if rtt > timeout / 2 {
            return true;
        }
        if let Some(base) = self.base_rtt() {
            // A queue of over a second built up on the path (Vegas' signal): the
            // smoothed round trip grows with the queue and would miss it.
            if rtt > base.saturating_mul(4).max(base + QUEUE_SLACK) {
                return true;
            }
        }
        match self.srtt {
            Some(srtt) => rtt > srtt * 2 && rtt > srtt + self.rttvar * 3 + LATENCY_SLACK,
            None => false,
        }
    }

    /// RFC 6298's smoothing of the round trip, the base round trip's minimum filter,
    /// and a delivery-rate sample.
    fn sample(&mut self, ticket: Ticket, rtt: Duration, now: Instant) {
        let start = *self.period_start.get_or_insert(now);
        if now.saturating_duration_since(start) >= BASE_RTT_PERIOD {
            self.min_rtt_prev = self.min_rtt.take();
            self.period_start = Some(now);
        }
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let elapsed = rtt.as_secs_f64().max(1e-3);
        let sample = (self.delivered - ticket.delivered_at_send) as f64 / elapsed;
        self.rate = Some(match self.rate {
            None => sample,
            Some(r) => 0.75 * r + 0.25 * sample,
        });
    }

    fn decrease(&mut self, ticket: Ticket, factor: f64) {
        self.slow_start = false;
        if ticket.round <= self.recovery_round {
            // Sent before the last decrease: the same episode.
            return;
        }
        self.recovery_round = self.sent;
        self.window = (self.window * factor).max(1.0);
        self.decreases += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn send_all(w: &mut CongestionWindow, bytes: u64, now: Instant) -> Vec<Ticket> {
        let mut t = Vec::new();
        while w.room().is_some_and(|r| r >= bytes) {
            t.push(w.on_send(bytes, now));
        }
        t
    }

    #[test]
    fn slow_start_doubles_per_round_trip_up_to_the_ceiling() {
        let t0 = Instant::now();
        let mut w = CongestionWindow::new(WindowConfig::new(24));
        let mut now = t0;
        let mut sizes = Vec::new();
        for _ in 0..8 {
            let tickets = send_all(&mut w, 10_000, now);
            sizes.push(tickets.len());
            now += 20 * MS;
            for t in tickets {
                w.on_answer(t, now, Answer::Delivered);
            }
        }
        assert_eq!(sizes, [1, 2, 4, 8, 16, 24, 24, 24]);
        assert_eq!(w.decreases(), 0);
    }

    #[test]
    fn a_timeout_halves_once_per_round_trip() {
        let t0 = Instant::now();
        let mut w = CongestionWindow::new(WindowConfig::new(16).initial_requests(16));
        let tickets = send_all(&mut w, 1000, t0);
        assert_eq!(tickets.len(), 16);
        for t in tickets {
            w.on_answer(t, t0 + Duration::from_secs(6), Answer::Congested);
        }
        // Sixteen timeouts of one episode: one halving.
        assert_eq!(w.requests(), 8);
        assert_eq!(w.decreases(), 1);
        // A request sent after the decrease can decrease again.
        let t = w.on_send(1000, t0 + Duration::from_secs(6));
        w.on_answer(t, t0 + Duration::from_secs(12), Answer::Congested);
        assert_eq!(w.requests(), 4);
    }

    #[test]
    fn after_congestion_growth_is_one_request_per_window() {
        let t0 = Instant::now();
        let mut w = CongestionWindow::new(WindowConfig::new(64).initial_requests(8));
        let t = w.on_send(1000, t0);
        w.on_answer(t, t0 + 10 * MS, Answer::Congested);
        assert_eq!(w.requests(), 4);
        let mut now = t0 + 10 * MS;
        for _ in 0..10 {
            let tickets = send_all(&mut w, 1000, now);
            now += 10 * MS;
            for t in tickets {
                w.on_answer(t, now, Answer::Delivered);
            }
        }
        // Additive: about one per round, not doubling.
        assert!((12..=15).contains(&w.requests()), "{}", w.requests());
    }

    #[test]
    fn late_answers_shrink_and_neutral_ones_do_not() {
        let t0 = Instant::now();
        let mut w = CongestionWindow::new(WindowConfig::new(32).initial_requests(20));
        let mut now = t0;
        // A steady 20 ms.
        for _ in 0..20 {
            let t = w.on_send(1000, now);
            now += 20 * MS;
            w.on_answer(t, now, Answer::Delivered);
        }
        let before = w.requests();
        let t = w.on_send(1000, now);
        w.on_answer(t, now + 20 * MS, Answer::Neutral);
        assert_eq!(w.requests(), before);
        // 400 ms against a 20 ms baseline: late.
        let t = w.on_send(1000, now);
        now += 400 * MS;
        w.on_answer(t, now, Answer::Delivered);
        assert!(w.requests() < before, "{} < {before}", w.requests());
        assert_eq!(w.decreases(), 1);
    }

    #[test]
    fn a_queue_building_up_slowly_on_the_path_shrinks_the_window() {
        let t0 = Instant::now();
        let mut w = CongestionWindow::new(WindowConfig::new(64).initial_requests(2));
        let mut now = t0;
        let mut rtt = Duration::from_millis(200);
        let mut grew_to = 0;
        // Each round adds 10 % to the round trip: the smoothed round trip follows, the
        // base stays at 200 ms.
        for _ in 0..40 {
            let tickets = send_all(&mut w, 1000, now);
            now += rtt;
            for t in tickets {
                w.on_answer(t, now, Answer::Delivered);
            }
            grew_to = grew_to.max(w.requests());
            if rtt > Duration::from_millis(1_300) {
                break;
            }
            rtt = rtt.mul_f64(1.1);
        }
        assert!(w.decreases() > 0, "a queue of over a second went unnoticed");
        assert!(w.requests() < grew_to, "{} < {grew_to}", w.requests());
        assert_eq!(w.base_rtt(), Some(Duration::from_millis(200)));
    }

    #[test]
    fn slow_start_ends_when_a_queue_starts_to_form() {
        let t0 = Instant::now();
        let mut w = CongestionWindow::new(WindowConfig::new(64));
        let mut now = t0;
        // Every request in flight adds 100 ms (a narrow link): by the fourth round
        // the answers are clearly later than the first one's 100 ms.
        for _ in 0..6 {
            let tickets = send_all(&mut w, 1000, now);
            let rtt = Duration::from_millis(100) * tickets.len() as u32;
            now += rtt;
            for t in tickets {
                w.on_answer(t, now, Answer::Delivered);
            }
        }
        // Doubling for six rounds would reach 64.
        assert!(w.requests() < 16, "{}", w.requests());
    }

    #[test]
    fn the_window_bounds_bytes_as_well_as_requests() {
        let t0 = Instant::now();
        let mut w = CongestionWindow::new(WindowConfig::new(24).initial_requests(4));
        assert_eq!(w.room(), Some(4 << 20));
        let _a = w.on_send(3 << 20, t0);
        assert_eq!(w.room(), Some(1 << 20));
        let _b = w.on_send(1 << 20, t0);
        assert_eq!(w.room(), None, "bytes full with 2 of 4 requests");
        // With nothing in flight, one request always fits.
        let mut one = CongestionWindow::new(WindowConfig::new(1));
        assert_eq!(one.room(), Some(1 << 20));
        let t = one.on_send(5 << 20, t0);
        assert_eq!(one.room(), None);
        one.on_answer(t, t0 + MS, Answer::Delivered);
        assert!(one.room().is_some());
    }

    #[test]
    fn timeouts_allow_for_the_bytes_ahead_at_the_measured_rate() {
        let t0 = Instant::now();
        let mut w = CongestionWindow::new(
            WindowConfig::new(4)
                .initial_requests(4)
                .base_timeout(Duration::from_secs(6)),
        );
        assert_eq!(w.timeout(1 << 20), Duration::from_secs(6), "no rate yet");
        // 1 MB answered in 10 s: 100 kB/s.
        let t = w.on_send(1_000_000, t0);
        w.on_answer(t, t0 + Duration::from_secs(10), Answer::Delivered);
        let rate = w.delivery_rate().unwrap();
        assert!((rate - 100_000.0).abs() < 1.0, "{rate}");
        // 500 kB in flight, 500 kB more: 2 × 1 MB / 100 kB/s = 20 s over the base.
        let _a = w.on_send(500_000, t0);
        let secs = w.timeout(500_000).as_secs_f64();
        assert!((secs - 26.0).abs() < 0.01, "{secs}");
        // Capped.
        let w2 = CongestionWindow::new(WindowConfig::new(1).max_timeout(Duration::from_secs(7)));
        assert_eq!(w2.timeout(u64::MAX / 2), Duration::from_secs(6));
    }

    #[test]
    fn consecutive_timeouts_back_the_base_off_and_an_answer_resets_it() {
        let t0 = Instant::now();
        let mut w =
            CongestionWindow::new(WindowConfig::new(4).base_timeout(Duration::from_secs(1)));
        let mut now = t0;
        let mut seen = Vec::new();
        for _ in 0..5 {
            let t = w.on_send(0, now);
            seen.push(t.timeout());
            now += t.timeout();
            w.on_answer(t, now, Answer::Congested);
        }
        let s = Duration::from_secs;
        assert_eq!(seen, [s(1), s(2), s(4), s(8), s(8)]);
        let t = w.on_send(0, now);
        w.on_answer(t, now + MS, Answer::Delivered);
        assert_eq!(w.timeout(0), s(1));
    }

    #[test]
    fn a_timeout_lowers_the_rate_to_what_the_path_carried() {
        let t0 = Instant::now();
        let mut w = CongestionWindow::new(WindowConfig::new(4).initial_requests(4));
        let t = w.on_send(1_000_000, t0);
        w.on_answer(t, t0 + Duration::from_millis(100), Answer::Delivered);
        assert!(w.delivery_rate().unwrap() > 5e6);
        let t = w.on_send(1_000_000, t0);
        w.on_answer(t, t0 + Duration::from_secs(10), Answer::Congested);
        assert!(w.delivery_rate().unwrap() <= 100_000.0 + 1.0);
    }

    #[test]
    fn an_idle_producer_does_not_inflate_the_window() {
        let t0 = Instant::now();
        let mut w = CongestionWindow::new(WindowConfig::new(24).initial_requests(8));
        let mut now = t0;
        for _ in 0..100 {
            let t = w.on_send(1000, now);
            now += 10 * MS;
            w.on_answer(t, now, Answer::Delivered);
        }
        assert_eq!(w.requests(), 8);
    }
}
