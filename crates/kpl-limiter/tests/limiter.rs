//! The limiter's rules on virtual time.

use std::time::{Duration, Instant};

use kpl_limiter::{
    Feedback, LimitItem, Limiter, LimiterConfig, PACE_BURST, Release, RollingWindow, TokenBucket,
    WINDOW_SPAN,
};
use proptest::prelude::*;

/// What Kinesis lets a shard take within a second: records, bytes.
const KINESIS: [u64; 2] = [1_000, 1_048_576];

#[derive(Debug, PartialEq)]
struct It {
    id: u32,
    bytes: u64,
    deadline: Instant,
    expiration: Instant,
}

impl LimitItem for It {
    fn bytes(&self) -> u64 {
        self.bytes
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
    fn expiration(&self) -> Instant {
        self.expiration
    }
}

fn it(id: u32, bytes: u64, t0: Instant, deadline_ms: u64, ttl_ms: u64) -> It {
    It {
        id,
        bytes,
        deadline: t0 + Duration::from_millis(deadline_ms),
        expiration: t0 + Duration::from_millis(ttl_ms),
    }
}

fn ready_ids<K>(out: &[Release<K, It>]) -> Vec<u32> {
    out.iter()
        .filter_map(|r| match r {
            Release::Ready { item, .. } => Some(item.id),
            Release::Expired { .. } => None,
        })
        .collect()
}

#[test]
fn bucket_refills_on_query_and_takes_all_or_nothing() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new([10, 100], t0);
    assert!(b.try_take([10, 50], t0));
    assert!(!b.try_take([1, 10], t0), "records stream is empty");
    assert_eq!(
        b.available(t0),
        [0, 50],
        "nothing was taken from bytes either"
    );
    assert_eq!(b.ready_at([1, 10], t0), t0 + Duration::from_millis(100));
    assert!(!b.try_take([1, 10], t0 + Duration::from_millis(99)));
    assert!(b.try_take([1, 10], t0 + Duration::from_millis(100)));
    // Never more than one second of rate, however long it rests.
    assert_eq!(b.available(t0 + Duration::from_secs(3600)), [10, 100]);
}

#[test]
fn an_amount_over_the_burst_passes_when_full_and_leaves_a_debt() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new([10, 100], t0);
    assert!(b.try_take([1, 150], t0));
    assert_eq!(b.available(t0), [9, -50]);
    // The debt is paid back at the rate before anything else passes.
    assert_eq!(b.ready_at([1, 1], t0), t0 + Duration::from_millis(510));
}

#[test]
fn a_rolling_window_counts_what_was_taken_within_its_span() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut w = RollingWindow::new([10, 100], Duration::from_secs(1));
    assert!(w.try_take([5, 60], t0));
    assert!(w.try_take([5, 30], t0 + ms(300)));
    assert!(!w.try_take([1, 1], t0 + ms(400)), "records are full");
    assert_eq!(w.used(t0 + ms(400)), [10, 90], "nothing was taken");
    // The first entry leaves at 1 s: room for 5 records and 70 bytes.
    assert_eq!(w.ready_at([5, 70], t0 + ms(400)), t0 + ms(1000));
    // 80 bytes need the second entry gone too.
    assert_eq!(w.ready_at([1, 80], t0 + ms(400)), t0 + ms(1300));
    assert!(!w.try_take([5, 70], t0 + ms(999)));
    assert!(w.try_take([5, 70], t0 + ms(1000)));
    // More than a cap passes only on an empty window.
    assert_eq!(w.ready_at([1, 500], t0 + ms(1000)), t0 + ms(2000));
    assert!(w.try_take([1, 500], t0 + ms(2000)));
    assert_eq!(w.used(t0 + ms(2000)), [1, 500]);
    // It holds five caps, so it counts for five spans: the long-run rate holds.
    assert_eq!(w.hold([1, 500]), ms(5000));
    assert_eq!(w.ready_at([1, 1], t0 + ms(2000)), t0 + ms(7000));
    // An entry moved to when it was sent leaves its hold after that.
    assert!(w.restamp(t0 + ms(2000), [1, 500], t0 + ms(2400)));
    assert_eq!(w.used(t0 + ms(7300)), [1, 500]);
    assert_eq!(w.used(t0 + ms(7400)), [0, 0]);
    // One that had left already counts again from when it is sent.
    assert!(!w.restamp(t0, [2, 20], t0 + ms(7400)));
    assert_eq!(w.used(t0 + ms(7400)), [2, 20]);
    assert_eq!(w.used(t0 + ms(8400)), [0, 0]);
}

#[test]
fn a_shard_window_holds_large_records_as_the_simulator_does() {
    use kpl_codec::{
        MAX_RECORD_SIZE_CEILING, SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND, shard_write_hold,
    };
    let w = RollingWindow::new(
        [SHARD_RECORDS_PER_SECOND, SHARD_BYTES_PER_SECOND],
        Duration::from_secs(1),
    );
    for bytes in [
        1,
        1 << 20,
        (1 << 20) + 1,
        2_000_000,
        9 << 20,
        MAX_RECORD_SIZE_CEILING,
    ] {
        assert_eq!(
            w.hold([1, bytes as u64]),
            shard_write_hold(bytes),
            "{bytes} bytes"
        );
    }
}

#[test]
fn rates_follow_the_rate_limit_percent() {
    assert_eq!(
        LimiterConfig::new(150, KINESIS).shard_rates(),
        [1500, 1_572_864]
    );
    assert_eq!(
        LimiterConfig::new(100, KINESIS).shard_rates(),
        [1000, 1_048_576]
    );
    // A shard starts at the service's limit, or below it when configured so.
    let l: Limiter<u8, It> = Limiter::new(LimiterConfig::new(150, KINESIS));
    assert_eq!(l.shard_rates(&0), [1000, 1_048_576]);
    let l: Limiter<u8, It> = Limiter::new(LimiterConfig::new(90, KINESIS));
    assert_eq!(l.shard_rates(&0), [900, 943_718]);
}

#[test]
fn items_leave_in_deadline_order_with_head_of_line_blocking() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(100, KINESIS)); // 1000 rec/s, 1 MiB/s
    l.add(0u8, it(0, 10, t0, 30, 30_000), t0);
    l.add(0u8, it(1, 1_048_576, t0, 10, 30_000), t0); // the whole byte burst
    l.add(0u8, it(2, 10, t0, 20, 30_000), t0);
    let out = l.poll(t0);
    assert_eq!(
        ready_ids(&out),
        [1],
        "1 took the shard's whole second of bytes; 2 and 0 wait behind"
    );
    let next = l.next_ready_at(t0).unwrap();
    assert_eq!(next, t0 + WINDOW_SPAN, "when 1 leaves the window");
    assert!(l.poll(next - Duration::from_nanos(1)).is_empty());
    assert_eq!(ready_ids(&l.poll(next)), [2, 0]);
}

#[test]
fn expired_items_leave_first_without_tokens() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(100, KINESIS));
    // Twice the shard's second: passes on an empty window and fills it for a second.
    l.add("s", it(0, 2 * 1_048_576, t0, 0, 30_000), t0);
    assert_eq!(ready_ids(&l.poll(t0)), [0]);
    // No room for a second; 1 expires at 50 ms while 2 (earlier deadline) waits.
    l.add("s", it(1, 1000, t0, 20, 50), t0);
    l.add("s", it(2, 1000, t0, 10, 30_000), t0);
    assert!(l.poll(t0).is_empty());
    assert_eq!(l.next_ready_at(t0), Some(t0 + Duration::from_millis(50)));
    let out = l.poll(t0 + Duration::from_millis(50));
    assert_eq!(
        out,
        vec![Release::Expired {
            shard: "s",
            item: it(1, 1000, t0, 20, 50)
        }]
    );
    assert_eq!(l.len(), 1);
    let later = l.next_ready_at(t0 + Duration::from_millis(50)).unwrap();
    assert_eq!(ready_ids(&l.poll(later)), [2]);
    assert!(l.is_empty());
}

/// Records a shard lets out at once: its pace's burst.
fn pace_burst_records() -> usize {
    (1000 * PACE_BURST.as_millis() / 1000) as usize
}

#[test]
fn shards_do_not_share_room() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(100, KINESIS));
    for id in 0..1000 {
        l.add(id % 2, it(id, 1, t0, 0, 30_000), t0);
    }
    assert_eq!(l.poll(t0).len(), 2 * pace_burst_records());
    // A shard alone gets no more.
    for id in 0..1000 {
        l.add(7, it(id, 1, t0, 0, 30_000), t0);
    }
    assert_eq!(l.poll(t0).len(), pace_burst_records());
}

#[test]
fn room_is_spread_over_the_second() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(100, KINESIS)); // 1000 records/s
    for id in 0..2000 {
        l.add(0, it(id, 1, t0, 0, 60_000), t0);
    }
    let mut times = Vec::new();
    let mut now = t0;
    while times.len() < 1000 {
        for r in l.poll(now) {
            assert!(matches!(r, Release::Ready { .. }));
            times.push(now);
        }
        now = l.next_ready_at(now).unwrap();
    }
    // The first second's records leave about 1 ms apart, not all at once.
    let first_100ms = times
        .iter()
        .filter(|&&t| t < t0 + Duration::from_millis(100))
        .count();
    assert!(
        (100..=100 + pace_burst_records()).contains(&first_100ms),
        "{first_100ms} within the first 100 ms"
    );
}

#[test]
fn an_emptied_shard_does_not_get_a_second_window() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(100, KINESIS));
    for id in 0..1000 {
        l.add(0, it(id, 1, t0, 0, 30_000), t0);
    }
    let (mut released, mut now) = (0, t0);
    while released < 1000 {
        released += l.poll(now).len();
        if released < 1000 {
            now = l.next_ready_at(now).unwrap();
        }
    }
    assert!(now < t0 + WINDOW_SPAN, "1000 records within one window");
    l.add(0, it(9999, 1, now, 0, 30_000), now);
    assert!(l.poll(now).is_empty());
    assert_eq!(
        l.next_ready_at(now),
        Some(t0 + WINDOW_SPAN),
        "when the first of the 1000 leaves the window"
    );
}

#[test]
fn an_item_sent_late_counts_from_when_it_is_sent() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut l = Limiter::new(LimiterConfig::new(100, KINESIS)); // 1 MiB within a second
    l.add("s", it(0, 600_000, t0, 0, 60_000), t0);
    assert_eq!(ready_ids(&l.poll(t0)), [0]);
    // It waited 500 ms to be sent: the shard sees it then.
    l.on_sent(&"s", t0, 600_000, t0 + ms(500));
    l.add("s", it(1, 600_000, t0, 0, 60_000), t0 + ms(500));
    let next = l.next_ready_at(t0 + ms(500)).unwrap();
    assert_eq!(next, t0 + ms(500) + WINDOW_SPAN, "not when it was let out");
    assert_eq!(ready_ids(&l.poll(next)), [1]);
}

#[test]
fn throttling_slows_a_shard_and_successes_bring_it_back() {
    let t0 = Instant::now();
    let mut l: Limiter<u8, It> = Limiter::new(LimiterConfig::new(100, KINESIS));
    assert_eq!(l.shard_rates(&7), [1000, 1_048_576]);
    l.on_throttled(&7, t0);
    assert_eq!(l.shard_rates(&7), [950, 996_147]);
    // Reports within the service's second are one signal.
    l.on_throttled(&7, t0 + Duration::from_millis(500));
    assert_eq!(l.shard_rates(&7)[0], 950);
    let mut t = t0;
    for _ in 0..100 {
        t += Feedback::DECREASE_INTERVAL;
        l.on_throttled(&7, t);
    }
    assert_eq!(
        l.shard_rates(&7)[0],
        62,
        "floor: 1/16 of the configured rate"
    );
    // 1 % of the configured rate per second of successes.
    let mut rates = Vec::new();
    for _ in 0..100 {
        t += Duration::from_secs(1);
        l.on_success(&7, t);
        rates.push(l.shard_rates(&7)[0]);
    }
    assert_eq!(rates[0], 72);
    assert!(rates.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(
        *rates.last().unwrap(),
        1000,
        "never above the configured rate"
    );
}

#[test]
fn over_the_limit_only_when_configured_and_only_while_the_shard_takes_it() {
    let t0 = Instant::now();
    let mut l: Limiter<u8, It> = Limiter::new(LimiterConfig::new(150, KINESIS));
    assert_eq!(l.shard_rates(&0)[0], 1000, "starts at the service's limit");
    l.add(0, it(0, 10, t0, 0, 60_000), t0);
    assert_eq!(l.poll(t0).len(), 1);
    // Successes let it probe above, up to the configured 150 %.
    let mut t = t0;
    for _ in 0..40 {
        t += Duration::from_secs(1);
        l.on_success(&0, t);
    }
    assert_eq!(l.shard_rates(&0)[0], 1500);
    l.on_throttled(&0, t);
    assert_eq!(l.shard_rates(&0)[0], 1425);
}

#[test]
fn a_throttled_shard_admits_less() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(100, KINESIS));
    l.on_throttled(&0, t0);
    for id in 0..3000 {
        l.add(0, it(id, 1, t0, 0, 60_000), t0);
    }
    let mut admitted = l.poll(t0).len();
    let mut now = t0;
    loop {
        now = l.next_ready_at(now).unwrap();
        if now >= t0 + Duration::from_secs(2) {
            break;
        }
        admitted += l.poll(now).len();
    }
    // 950 within each window, paced over it.
    assert!((1800..=1920).contains(&admitted), "{admitted}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Within any window span, a shard never admits more than its configured rate:
    /// records, and bytes unless one item alone is bigger, which passes only into an
    /// empty window; and never more than its caps of the moment.
    #[test]
    fn never_more_than_a_shards_second_within_any_second(
        pct in 1u64..300,
        items in prop::collection::vec((1u64..200_000, 0u64..2000), 1..200),
        steps in prop::collection::vec(0u64..300, 1..100),
        throttles in prop::collection::vec(any::<bool>(), 1..100),
    ) {
        let t0 = Instant::now();
        let config = LimiterConfig::new(pct, KINESIS);
        let mut l = Limiter::new(config);
        let mut admitted: Vec<(Instant, u64, [u64; 2])> = Vec::new();
        let mut now = t0;
        let mut pending = items.iter().enumerate();
        for (i, step) in steps.into_iter().enumerate() {
            if let Some((id, &(bytes, _))) = pending.next() {
                l.add(0u8, it(id as u32, bytes, now, 0, 3_600_000), now);
            }
            now += Duration::from_millis(step);
            if throttles.get(i).copied().unwrap_or(false) {
                l.on_throttled(&0, now);
            } else {
                l.on_success(&0, now);
            }
            let caps = l.shard_rates(&0);
            for r in l.poll(now) {
                if let Release::Ready { item, .. } = r {
                    admitted.push((now, item.bytes, caps));
                }
            }
        }
        let ceiling = config.shard_rates();
        for i in 0..admitted.len() {
            let mut records = 0u64;
            let mut bytes = 0u64;
            for &(t, b, _) in &admitted[i..] {
                if t - admitted[i].0 >= WINDOW_SPAN {
                    break;
                }
                records += 1;
                bytes += b;
                prop_assert!(records <= ceiling[0].max(1));
                prop_assert!(bytes <= ceiling[1].max(b), "{bytes} within a second");
            }
            // What was let in never exceeded the caps at the time it was let in.
            let (t, b, caps) = admitted[i];
            let within: u64 = admitted[..=i]
                .iter()
                .filter(|&&(u, _, _)| t - u < WINDOW_SPAN)
                .map(|&(_, b, _)| b)
                .sum();
            prop_assert!(within <= caps[1].max(b), "{within} > {:?}", caps);
        }
    }
}

#[test]
fn one_shard_can_be_drained_alone() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(1, KINESIS));
    // Rate 1 %: 10 records/s; 30 items per shard wait.
    for i in 0..30 {
        l.add("a", it(i, 10, t0, u64::from(30 - i), 10_000), t0);
        l.add("b", it(100 + i, 10, t0, 5, 10_000), t0);
    }
    let _ = l.poll(t0);
    let waiting = l.len();
    let a: Vec<u32> = l.drain_shard(&"a").iter().map(|x| x.id).collect();
    assert!(!a.is_empty() && a.iter().all(|&id| id < 100));
    // In deadline order (the later ids have the earlier deadlines).
    assert!(a.windows(2).all(|w| w[0] > w[1]), "{a:?}");
    assert_eq!(l.len(), waiting - a.len());
    assert!(l.drain_shard(&"a").is_empty());
    assert!(l.drain_shard(&"c").is_empty());
    // The other shard is untouched and still released.
    let later = l.poll(t0 + Duration::from_secs(10));
    assert!(ready_ids(&later).iter().all(|&id| id >= 100));
    assert!(!later.is_empty());
}
