//! The shard map's rules on virtual time.

use std::time::{Duration, Instant};

use kpl_codec::HashKey;
use kpl_shardmap::{
    BACKOFF_MAX, BACKOFF_MIN, CLOSED_SHARD_RETENTION, Landing, LookupError, MapState, ShardId,
    ShardInfo, ShardMap,
};
use proptest::prelude::*;

const HALF: u128 = u128::MAX / 2;

fn shard(id: &str, start: u128, end: u128) -> ShardInfo {
    ShardInfo::new(id, HashKey::new(start), HashKey::new(end))
}

fn ready_map(t: Instant, shards: Vec<ShardInfo>) -> ShardMap {
    let mut map = ShardMap::new(42);
    let r = map.poll_refresh(t).unwrap();
    map.on_refresh_succeeded(r, shards, t);
    map
}

fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

#[test]
fn empty_updating_ready() {
    let t0 = Instant::now();
    let mut map = ShardMap::new(1);
    assert_eq!(map.state(), MapState::Empty);
    assert_eq!(map.lookup(HashKey::MIN), Err(LookupError::NotReady));
    assert_eq!(map.next_refresh_at(t0), Some(t0));
    let r = map
        .poll_refresh(t0)
        .expect("the first refresh is due at once");
    assert_eq!(map.state(), MapState::Updating);
    assert!(map.poll_refresh(t0).is_none(), "one refresh at a time");
    map.on_refresh_succeeded(r, vec![shard("shardId-000000000000", 0, u128::MAX)], t0);
    assert_eq!(map.state(), MapState::Ready);
    assert_eq!(map.version(), 1);
    assert!(
        map.poll_refresh(secs(t0, 3600)).is_none(),
        "no periodic refresh"
    );
    assert_eq!(map.next_refresh_at(t0), None);
}

#[test]
fn lookup_finds_the_covering_shard_or_says_none_does() {
    let t0 = Instant::now();
    let map = ready_map(
        t0,
        vec![
            shard("b", 101, 200),
            shard("a", 0, 100),
            shard("c", 300, 400),
        ],
    );
    for (key, id) in [
        (0, "a"),
        (100, "a"),
        (101, "b"),
        (200, "b"),
        (300, "c"),
        (400, "c"),
    ] {
        assert_eq!(
            map.lookup(HashKey::new(key)).unwrap().id().as_str(),
            id,
            "{key}"
        );
    }
    for key in [201, 299, 401, u128::MAX] {
        assert_eq!(
            map.lookup(HashKey::new(key)),
            Err(LookupError::NoShard {
                hash_key: HashKey::new(key)
            })
        );
    }
}

#[test]
fn invalidate_refreshes_only_on_newer_evidence() {
    let t0 = Instant::now();
    let mut map = ready_map(
        secs(t0, 10),
        vec![shard("shardId-000000000000", 0, u128::MAX)],
    );
    let known = ShardId::from("shardId-000000000000");
    assert!(
        !map.invalidate(secs(t0, 5), Some(&known)),
        "older than the map: ignored"
    );
    assert!(map.poll_refresh(secs(t0, 11)).is_none());
    assert!(map.invalidate(secs(t0, 11), Some(&known)));
    let r = map
        .poll_refresh(secs(t0, 12))
        .expect("newer evidence: refresh");
    map.on_refresh_succeeded(
        r,
        vec![shard("shardId-000000000000", 0, u128::MAX)],
        secs(t0, 12),
    );
    assert_eq!(map.version(), 2);
}

#[test]
fn evidence_seen_during_a_refresh_that_started_later_is_covered() {
    let t0 = Instant::now();
    let mut map = ready_map(t0, vec![shard("s0", 0, u128::MAX)]);
    assert!(map.invalidate(secs(t0, 1), None));
    let r = map.poll_refresh(secs(t0, 2)).unwrap();
    // Seen before the running refresh started: that refresh answers it.
    assert!(!map.invalidate(secs(t0, 1), Some(&ShardId::from("s0"))));
    // Seen after it started: another refresh is owed.
    assert!(map.invalidate(secs(t0, 3), Some(&ShardId::from("s0"))));
    map.on_refresh_succeeded(r, vec![shard("s0", 0, u128::MAX)], secs(t0, 4));
    assert!(map.poll_refresh(secs(t0, 4)).is_some());
}

/// The aiokpl fault: after a split, a record lands on a new child the map does not
/// know; that must trigger a refresh, whatever the timestamps say.
#[test]
fn a_landing_on_an_unknown_child_refreshes_the_map() {
    let t0 = Instant::now();
    let parent = "shardId-000000000000";
    let mut map = ready_map(secs(t0, 10), vec![shard(parent, 0, u128::MAX)]);
    let key = HashKey::new(HALF + 5);
    assert_eq!(map.lookup(key).unwrap().id().as_str(), parent);

    let child = ShardId::from("shardId-000000000002");
    assert_eq!(
        map.classify(key, &child, secs(t0, 10)),
        Landing::UnknownShard
    );
    // Evidence stamped before the map (the request was sent earlier): still refreshes.
    assert!(map.invalidate(secs(t0, 9), Some(&child)));
    let r = map.poll_refresh(secs(t0, 11)).expect("refresh");
    map.on_refresh_succeeded(
        r,
        vec![
            shard("shardId-000000000001", 0, HALF),
            shard("shardId-000000000002", HALF + 1, u128::MAX),
        ],
        secs(t0, 11),
    );
    assert_eq!(map.lookup(key).unwrap().id(), &child);
    assert_eq!(map.classify(key, &child, secs(t0, 11)), Landing::InRange);
    let sibling = ShardId::from("shardId-000000000001");
    assert_eq!(
        map.classify(key, &sibling, secs(t0, 11)),
        Landing::OutOfRange
    );

    // The parent's range is kept for about a minute, then forgotten.
    let parent = ShardId::from(parent);
    assert_eq!(map.classify(key, &parent, secs(t0, 12)), Landing::InRange);
    assert_eq!(
        map.range_of(&parent, secs(t0, 11) + CLOSED_SHARD_RETENTION),
        None
    );
    assert_eq!(
        map.classify(key, &parent, secs(t0, 80)),
        Landing::UnknownShard
    );
}

#[test]
fn failures_back_off_with_jitter_from_1_to_30_seconds() {
    let t0 = Instant::now();
    let mut map = ShardMap::new(7);
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..20 {
        let r = map.poll_refresh(now).expect("due");
        let at = map.on_refresh_failed(r, now);
        assert_eq!(
            map.state(),
            MapState::Empty,
            "never blocks: callers see not ready"
        );
        assert!(map.poll_refresh(at - Duration::from_millis(1)).is_none());
        assert_eq!(map.next_refresh_at(now), Some(at));
        delays.push(at - now);
        now = at;
    }
    assert!(
        delays
            .iter()
            .all(|&d| (BACKOFF_MIN..=BACKOFF_MAX).contains(&d)),
        "{delays:?}"
    );
    assert!(delays[0] < Duration::from_millis(1300));
    assert!(delays[5] > delays[1], "grows: {delays:?}");
    assert!(
        delays[19] > Duration::from_secs(23),
        "reaches the cap: {delays:?}"
    );
    // Same seed, same delays; another seed, other delays.
    let replay = |seed| {
        let mut m = ShardMap::new(seed);
        let mut now = t0;
        (0..5)
            .map(|_| {
                let r = m.poll_refresh(now).unwrap();
                let at = m.on_refresh_failed(r, now);
                let d = at - now;
                now = at;
                d
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(replay(7), delays[..5]);
    assert_ne!(replay(8), delays[..5]);
    // A success resets the backoff.
    let r = map.poll_refresh(now).unwrap();
    map.on_refresh_succeeded(r, vec![shard("s", 0, u128::MAX)], now);
    map.invalidate(now + Duration::from_secs(1), None);
    let r = map.poll_refresh(now + Duration::from_secs(1)).unwrap();
    let at = map.on_refresh_failed(r, now + Duration::from_secs(1));
    assert!(at - (now + Duration::from_secs(1)) < Duration::from_millis(1300));
    assert_eq!(map.state(), MapState::Ready, "the old map still answers");
}

proptest! {
    /// Lookup agrees with a linear scan of the ranges.
    #[test]
    fn lookup_agrees_with_a_linear_scan(
        cuts in prop::collection::btree_set(1u128..u128::MAX, 0..40),
        holes in prop::collection::vec(any::<bool>(), 41),
        keys in prop::collection::vec(any::<u128>(), 50),
    ) {
        let t0 = Instant::now();
        let mut bounds: Vec<u128> = vec![0];
        bounds.extend(cuts.iter().copied());
        let mut shards = Vec::new();
        for (i, &start) in bounds.iter().enumerate() {
            let end = bounds.get(i + 1).map_or(u128::MAX, |next| next - 1);
            if !holes[i] || bounds.len() == 1 {
                shards.push(shard(&format!("shardId-{i:012}"), start, end));
            }
        }
        let map = ready_map(t0, shards.clone());
        let edges = bounds.iter().flat_map(|&b| [b, b.saturating_sub(1)]);
        for key in keys.into_iter().chain(edges).chain([0, u128::MAX]) {
            let key = HashKey::new(key);
            let linear = shards.iter().find(|s| s.contains(key)).map(|s| s.id().clone());
            let fast = map.lookup(key).ok().map(|s| s.id().clone());
            prop_assert_eq!(fast, linear);
        }
    }
}

#[test]
fn handles_tell_clones_from_equal_ids() {
    let id = ShardId::from("shardId-000000000001");
    let clone = id.clone();
    let equal = ShardId::from("shardId-000000000001");
    assert!(id.same_handle(&clone));
    assert_eq!(id.handle(), clone.handle());
    assert_eq!(id, equal);
    assert!(!id.same_handle(&equal));
    assert_ne!(id.handle(), equal.handle());
}
