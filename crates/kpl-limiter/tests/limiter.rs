//! The limiter's rules on virtual time.

use std::time::{Duration, Instant};

use kpl_limiter::{Feedback, LimitItem, Limiter, LimiterConfig, Release, TokenBucket};
use proptest::prelude::*;

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
fn rates_follow_the_rate_limit_percent() {
    assert_eq!(LimiterConfig::default().shard_rates(), [1500, 1_572_864]);
    assert_eq!(LimiterConfig::new(100).shard_rates(), [1000, 1_048_576]);
}

#[test]
fn items_leave_in_deadline_order_with_head_of_line_blocking() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(100)); // 1000 rec/s, 1 MiB/s
    l.add(0u8, it(0, 10, t0, 30, 30_000), t0);
    l.add(0u8, it(1, 1_048_576, t0, 10, 30_000), t0); // the whole byte burst
    l.add(0u8, it(2, 10, t0, 20, 30_000), t0);
    let out = l.poll(t0);
    assert_eq!(
        ready_ids(&out),
        [1],
        "1 took every byte token; 2 and 0 wait behind"
    );
    let next = l.next_ready_at(t0).unwrap();
    // 10 bytes at 1 MiB/s: about 9.5 µs.
    assert!(
        next > t0 && next < t0 + Duration::from_micros(20),
        "{:?}",
        next - t0
    );
    assert!(l.poll(next - Duration::from_nanos(1)).is_empty());
    assert_eq!(ready_ids(&l.poll(next)), [2]);
}

#[test]
fn expired_items_leave_first_without_tokens() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(100));
    // Twice the byte burst: passes on a full bucket and leaves a second of debt.
    l.add("s", it(0, 2 * 1_048_576, t0, 0, 30_000), t0);
    assert_eq!(ready_ids(&l.poll(t0)), [0]);
    // No byte tokens for a second; 1 expires at 50 ms while 2 (earlier deadline) waits.
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

#[test]
fn shards_do_not_share_tokens() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(100));
    for id in 0..1500 {
        l.add(id % 2, it(id, 1, t0, 0, 30_000), t0);
    }
    assert_eq!(l.poll(t0).len(), 1500);
    for id in 0..2002 {
        l.add(id % 2, it(id, 1, t0, 0, 30_000), t0);
    }
    assert_eq!(l.poll(t0).len(), 500, "250 left in each shard's burst");
}

#[test]
fn an_emptied_shard_does_not_get_a_second_burst() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(100));
    for id in 0..1000 {
        l.add(0, it(id, 1, t0, 0, 30_000), t0);
    }
    assert_eq!(l.poll(t0).len(), 1000);
    l.add(0, it(9999, 1, t0, 0, 30_000), t0);
    assert!(l.poll(t0).is_empty());
}

#[test]
fn throttling_halves_the_rate_and_successes_bring_it_back() {
    let t0 = Instant::now();
    let mut l: Limiter<u8, It> = Limiter::new(LimiterConfig::new(100));
    assert_eq!(l.shard_rates(&7), [1000, 1_048_576]);
    l.on_throttled(&7, t0);
    assert_eq!(l.shard_rates(&7), [500, 524_288]);
    // A burst of reports within the interval is one signal.
    l.on_throttled(&7, t0 + Duration::from_millis(50));
    assert_eq!(l.shard_rates(&7)[0], 500);
    let mut t = t0;
    for _ in 0..10 {
        t += Feedback::DECREASE_INTERVAL;
        l.on_throttled(&7, t);
    }
    assert_eq!(
        l.shard_rates(&7)[0],
        62,
        "floor: 1/16 of the configured rate"
    );
    // 10 % of the configured rate per second of successes.
    let mut rates = Vec::new();
    for _ in 0..12 {
        t += Duration::from_secs(1);
        l.on_success(&7, t);
        rates.push(l.shard_rates(&7)[0]);
    }
    assert_eq!(rates[0], 162);
    assert!(rates.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(
        *rates.last().unwrap(),
        1000,
        "never above the configured rate"
    );
}

#[test]
fn a_throttled_shard_admits_less() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(100));
    l.on_throttled(&0, t0);
    for id in 0..2000 {
        l.add(0, it(id, 1, t0, 0, 60_000), t0);
    }
    let mut admitted = l.poll(t0).len();
    let mut now = t0;
    while now < t0 + Duration::from_secs(2) {
        now = l.next_ready_at(now).unwrap();
        admitted += l.poll(now).len();
    }
    // Burst 500 plus 2 s at 500/s.
    assert!((1490..=1502).contains(&admitted), "{admitted}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Over any window, a shard never admits more than its burst plus its rate over
    /// the window (records and bytes).
    #[test]
    fn never_more_than_the_rate_over_any_window(
        pct in 1u64..300,
        items in prop::collection::vec((1u64..200_000, 0u64..2000), 1..200),
        steps in prop::collection::vec(0u64..300, 1..100),
    ) {
        let t0 = Instant::now();
        let config = LimiterConfig::new(pct);
        let [rec_rate, byte_rate] = config.shard_rates().map(|r| r.max(1));
        let mut l = Limiter::new(config);
        let mut admitted: Vec<(Instant, u64)> = Vec::new();
        let mut now = t0;
        let mut pending = items.iter().enumerate();
        for step in steps {
            if let Some((id, &(bytes, _))) = pending.next() {
                l.add(0u8, it(id as u32, bytes, now, 0, 3_600_000), now);
            }
            now += Duration::from_millis(step);
            for r in l.poll(now) {
                if let Release::Ready { item, .. } = r {
                    admitted.push((now, item.bytes));
                }
            }
        }
        for i in 0..admitted.len() {
            let mut records = 0u64;
            let mut bytes = 0u64;
            let mut biggest = 0u64;
            for &(t, b) in &admitted[i..] {
                records += 1;
                bytes += b;
                biggest = biggest.max(b);
                let secs = (t - admitted[i].0).as_secs_f64();
                prop_assert!(records as f64 <= rec_rate as f64 * (1.0 + secs) + 1.0);
                // An item over the burst may pass when full, going into debt.
                prop_assert!(bytes as f64 <= byte_rate as f64 * (1.0 + secs) + biggest as f64 + 1.0);
            }
        }
    }
}

#[test]
fn one_shard_can_be_drained_alone() {
    let t0 = Instant::now();
    let mut l = Limiter::new(LimiterConfig::new(1));
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
