//! The reducer's rules, each on virtual time (plain `Instant`s, no clock).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kpl_reducer::{Item, Policy, Predicate, Reducer};
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq)]
struct It {
    id: u32,
    size: usize,
    deadline: Instant,
    shard: u8,
}

impl Item for It {
    fn size(&self) -> usize {
        self.size
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

fn ids(batch: &[It]) -> Vec<u32> {
    batch.iter().map(|i| i.id).collect()
}

#[test]
fn closes_on_count() {
    let t0 = Instant::now();
    let mut r = Reducer::new(Policy::new(3, 1 << 20));
    for id in 0..2 {
        assert!(
            r.add(
                It {
                    id,
                    size: 1,
                    deadline: ms(t0, 100),
                    shard: 0
                },
                t0
            )
            .is_empty()
        );
    }
    let out = r.add(
        It {
            id: 2,
            size: 1,
            deadline: ms(t0, 100),
            shard: 0,
        },
        t0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(ids(&out[0]), [0, 1, 2]);
    assert!(r.is_empty());
}

#[test]
fn closes_on_size_keeping_what_does_not_fit() {
    let t0 = Instant::now();
    let mut r = Reducer::new(Policy::new(100, 100));
    r.add(
        It {
            id: 0,
            size: 40,
            deadline: ms(t0, 50),
            shard: 0,
        },
        t0,
    );
    r.add(
        It {
            id: 1,
            size: 40,
            deadline: ms(t0, 10),
            shard: 0,
        },
        t0,
    );
    let out = r.add(
        It {
            id: 2,
            size: 40,
            deadline: ms(t0, 30),
            shard: 0,
        },
        t0,
    );
    // Deadline order: 1 (10 ms), 2 (30 ms) fit in 100; 0 stays.
    assert_eq!(out.len(), 1);
    assert_eq!(ids(&out[0]), [1, 2]);
    assert_eq!(r.len(), 1);
    assert_eq!(r.size(), 40);
    assert_eq!(r.next_deadline(), Some(ms(t0, 50)));
}

#[test]
fn closes_at_the_earliest_deadline() {
    let t0 = Instant::now();
    let mut r = Reducer::new(Policy::new(100, 1000));
    r.add(
        It {
            id: 0,
            size: 1,
            deadline: ms(t0, 100),
            shard: 0,
        },
        t0,
    );
    r.add(
        It {
            id: 1,
            size: 1,
            deadline: ms(t0, 20),
            shard: 0,
        },
        t0,
    );
    assert_eq!(r.next_deadline(), Some(ms(t0, 20)));
    assert!(r.poll_expired(ms(t0, 19)).is_empty());
    let out = r.poll_expired(ms(t0, 20));
    // The whole batch goes when its earliest deadline passes, not only the late item.
    assert_eq!(out.len(), 1);
    assert_eq!(ids(&out[0]), [1, 0]);
}

#[test]
fn an_oversized_item_goes_alone() {
    let t0 = Instant::now();
    let mut r = Reducer::new(Policy::new(100, 100));
    r.add(
        It {
            id: 0,
            size: 10,
            deadline: ms(t0, 5),
            shard: 0,
        },
        t0,
    );
    let out = r.add(
        It {
            id: 1,
            size: 500,
            deadline: ms(t0, 6),
            shard: 0,
        },
        t0,
    );
    assert_eq!(
        out.iter().map(|b| ids(b)).collect::<Vec<_>>(),
        [vec![0], vec![1]]
    );
    // And alone when it is the earliest.
    let out = r.add(
        It {
            id: 2,
            size: 500,
            deadline: ms(t0, 1),
            shard: 0,
        },
        t0,
    );
    assert_eq!(out.iter().map(|b| ids(b)).collect::<Vec<_>>(), [vec![2]]);
}

#[test]
fn equal_deadlines_leave_first_in_first_out() {
    let t0 = Instant::now();
    let mut r = Reducer::new(Policy::new(2, 1000));
    let mut out = Vec::new();
    for id in 0..6 {
        out.extend(r.add(
            It {
                id,
                size: 1,
                deadline: ms(t0, 7),
                shard: 0,
            },
            t0,
        ));
    }
    assert_eq!(
        out.iter().map(|b| ids(b)).collect::<Vec<_>>(),
        [vec![0, 1], vec![2, 3], vec![4, 5]]
    );
}

#[test]
fn flush_takes_everything_in_deadline_order() {
    let t0 = Instant::now();
    let mut r = Reducer::new(Policy::new(1000, 100));
    let mut closed = Vec::new();
    for id in 0..10 {
        closed.extend(r.add(
            It {
                id,
                size: 30,
                deadline: ms(t0, 100 - u64::from(id)),
                shard: 0,
            },
            t0,
        ));
    }
    // Adds closed batches of three as the size limit was reached; one item is left.
    assert_eq!(closed.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3]);
    assert_eq!(ids(&closed[0]), [3, 2, 1]);
    assert_eq!(ids(&closed[2]), [9, 8, 7]);
    let flushed = r.flush();
    assert_eq!(
        flushed.iter().map(|b| ids(b)).collect::<Vec<_>>(),
        [vec![0]]
    );
    assert!(r.is_empty());
    assert!(r.flush().is_empty());
}

/// The collector's rule: close when one shard has `limit` bytes buffered.
#[derive(Default)]
struct ShardBytes {
    limit: usize,
    bytes: HashMap<u8, usize>,
}

impl Predicate<It> for ShardBytes {
    fn added(&mut self, item: &It) {
        *self.bytes.entry(item.shard).or_default() += item.size;
    }
    fn removed(&mut self, item: &It) {
        *self.bytes.entry(item.shard).or_default() -= item.size;
    }
    fn should_close(&self) -> bool {
        self.bytes.values().any(|&b| b >= self.limit)
    }
}

#[test]
fn a_predicate_closes_early() {
    let t0 = Instant::now();
    let mut r = Reducer::with_predicate(
        Policy::new(500, 5 << 20),
        ShardBytes {
            limit: 256,
            ..Default::default()
        },
    );
    assert!(
        r.add(
            It {
                id: 0,
                size: 200,
                deadline: ms(t0, 100),
                shard: 1
            },
            t0
        )
        .is_empty()
    );
    assert!(
        r.add(
            It {
                id: 1,
                size: 200,
                deadline: ms(t0, 100),
                shard: 2
            },
            t0
        )
        .is_empty()
    );
    let out = r.add(
        It {
            id: 2,
            size: 100,
            deadline: ms(t0, 100),
            shard: 1,
        },
        t0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(ids(&out[0]), [0, 1, 2]);
    assert!(!r.predicate().should_close());
}

#[test]
fn extract_removes_what_it_picks() {
    let t0 = Instant::now();
    let mut r = Reducer::new(Policy::new(100, 1000));
    for id in 0..5 {
        r.add(
            It {
                id,
                size: 10,
                deadline: ms(t0, 100 - u64::from(id)),
                shard: 0,
            },
            t0,
        );
    }
    let gone = r.extract(|i| i.id % 2 == 0);
    assert_eq!(ids(&gone), [4, 2, 0]);
    assert_eq!(r.len(), 2);
    assert_eq!(r.size(), 20);
    assert_eq!(ids(&r.flush()[0]), [3, 1]);
}

#[test]
fn a_late_backlog_closes_full_batches_with_add_deferred() {
    let t0 = Instant::now();
    let late = ms(t0, 1);
    let now = ms(t0, 500);
    // With add, every late item closes a batch of its own.
    let mut r = Reducer::new(Policy::new(10, 1000));
    let mut sizes = Vec::new();
    for id in 0..25 {
        sizes.extend(
            r.add(
                It {
                    id,
                    size: 1,
                    deadline: late,
                    shard: 0,
                },
                now,
            )
            .iter()
            .map(Vec::len),
        );
    }
    assert_eq!(sizes, vec![1; 25]);
    // With add_deferred and one poll, full batches.
    let mut r = Reducer::new(Policy::new(10, 1000));
    let mut sizes = Vec::new();
    for id in 0..25 {
        sizes.extend(
            r.add_deferred(It {
                id,
                size: 1,
                deadline: late,
                shard: 0,
            })
            .iter()
            .map(Vec::len),
        );
    }
    sizes.extend(r.poll_expired(now).iter().map(Vec::len));
    assert_eq!(sizes, vec![10, 10, 5]);
    assert!(r.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Nothing lost, nothing duplicated, equal deadlines in arrival order, every
    /// batch within the policy, and no close condition left standing.
    #[test]
    fn never_loses_duplicates_or_reorders(
        max_count in 1usize..20,
        max_size in 1usize..400,
        ops in prop::collection::vec((0usize..120, 0u64..50, 0u64..30), 1..300),
    ) {
        let t0 = Instant::now();
        let mut r = Reducer::new(Policy::new(max_count, max_size));
        let mut now = t0;
        let mut out: Vec<Vec<It>> = Vec::new();
        for (id, &(size, deadline_ms, step_ms)) in ops.iter().enumerate() {
            now += Duration::from_millis(step_ms);
            out.extend(r.poll_expired(now));
            let item = It { id: id as u32, size, deadline: now + Duration::from_millis(deadline_ms), shard: 0 };
            out.extend(r.add(item, now));
            prop_assert!(r.len() < max_count || r.is_empty());
            prop_assert!(r.size() < max_size || r.is_empty());
            prop_assert!(r.next_deadline().is_none_or(|d| d > now));
        }
        out.extend(r.flush());
        prop_assert!(r.is_empty());

        let mut seen = vec![0u32; ops.len()];
        let mut last_of_deadline: HashMap<Instant, u32> = HashMap::new();
        for batch in &out {
            prop_assert!(!batch.is_empty());
            prop_assert!(batch.len() <= max_count);
            let total: usize = batch.iter().map(|i| i.size).sum();
            prop_assert!(total <= max_size || batch.len() == 1);
            for item in batch {
                seen[item.id as usize] += 1;
                if let Some(prev) = last_of_deadline.insert(item.deadline, item.id) {
                    prop_assert!(prev < item.id, "equal deadlines out of order");
                }
            }
        }
        prop_assert!(seen.iter().all(|&n| n == 1), "lost or duplicated: {seen:?}");
    }

    /// Every batch is the earliest items buffered (by deadline, then arrival), in
    /// that order, whatever order the deadlines come in: a model kept beside the
    /// reducer agrees with every batch, with extracts in between.
    #[test]
    fn batches_take_the_earliest_items_in_order(
        max_count in 1usize..12,
        max_size in 1usize..300,
        ops in prop::collection::vec((0usize..100, 0u64..60, 0u64..20, 0u8..10), 1..300),
    ) {
        let t0 = Instant::now();
        let mut r = Reducer::new(Policy::new(max_count, max_size));
        let mut model: Vec<(Instant, u32)> = Vec::new();
        let mut now = t0;
        let check = |model: &mut Vec<(Instant, u32)>, batches: Vec<Vec<It>>| -> Result<(), TestCaseError> {
            for batch in batches {
                model.sort();
                let expected: Vec<u32> = model[..batch.len()].iter().map(|&(_, id)| id).collect();
                prop_assert_eq!(ids(&batch), expected);
                model.drain(..batch.len());
            }
            Ok(())
        };
        for (id, &(size, deadline_ms, step_ms, op)) in ops.iter().enumerate() {
            now += Duration::from_millis(step_ms);
            check(&mut model, r.poll_expired(now))?;
            if op == 0 {
                // Take out the items of odd id.
                let taken = r.extract(|i| i.id % 2 == 1);
                prop_assert!(taken.iter().all(|i| i.id % 2 == 1));
                model.retain(|&(_, id)| id % 2 == 0);
            }
            let deadline = now + Duration::from_millis(deadline_ms);
            let item = It { id: id as u32, size, deadline, shard: 0 };
            model.push((deadline, id as u32));
            check(&mut model, r.add_deferred(item))?;
            prop_assert_eq!(r.len(), model.len());
            prop_assert_eq!(r.next_deadline(), model.iter().map(|&(d, _)| d).min());
        }
        check(&mut model, r.flush())?;
        prop_assert!(model.is_empty());
    }
}
