//! The fault scenarios: what each does to the path or the stream, and when, and
//! what it allows.

use std::time::Duration;

/// Which peer a scenario runs against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Peer {
    KinesisMock,
    Kinesalite,
}

/// Something done to the path or the stream at a moment of the run.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Act {
    /// Hold answers for this long.
    Hold(Duration),
    /// Answer HTTP 500 for this long.
    Errors(Duration),
    /// Reset this fraction of connections from now on.
    Resets(f64),
    /// Split the widest open shard, this far into its range (2: the midpoint,
    /// as `UpdateShardCount` does; 3: a third of the way).
    Split(u128),
    /// Merge the two lowest adjacent open shards.
    Merge,
}

pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) peer: Peer,
    pub(crate) shards: u32,
    pub(crate) lines: usize,
    /// Uplink cap for the whole run.
    pub(crate) uplink: Option<u64>,
    /// (seconds after the start, act).
    pub(crate) timeline: Vec<(f64, Act)>,
    /// Most records allowed stored twice, in percent.
    pub(crate) max_duplicate_percent: f64,
    /// With `kpl put --verify-before-resend`, the most allowed stored twice in
    /// percent, resets after forwarding included (`None`: as without it).
    pub(crate) verified_duplicates: Option<f64>,
    /// Most copies outside their shard's range, in percent.
    pub(crate) max_outside_percent: f64,
}

pub(crate) fn scenarios(short: bool) -> Vec<Scenario> {
    let n = |full: usize, gate: usize| if short { gate } else { full };
    let mut v = vec![
        Scenario {
            name: "baseline",
            peer: Peer::KinesisMock,
            shards: 4,
            lines: n(60_000, 10_000),
            uplink: None,
            timeline: vec![],
            max_duplicate_percent: 0.0,
            verified_duplicates: None,
            max_outside_percent: 10.0,
        },
        Scenario {
            name: "held-answers-8s",
            peer: Peer::KinesisMock,
            shards: 4,
            lines: n(60_000, 20_000),
            uplink: None,
            timeline: vec![(0.3, Act::Hold(Duration::from_secs(8)))],
            max_duplicate_percent: 10.0,
            verified_duplicates: Some(0.0),
            max_outside_percent: 10.0,
        },
        Scenario {
            name: "resets-and-500s",
            peer: Peer::KinesisMock,
            shards: 4,
            lines: n(60_000, 20_000),
            uplink: None,
            timeline: vec![
                (0.2, Act::Resets(0.05)),
                (0.4, Act::Errors(Duration::from_secs(2))),
            ],
            // Beyond what a reset after forwarding may duplicate (one request each,
            // reported); none when reading the shard before resending.
            max_duplicate_percent: 1.0,
            verified_duplicates: Some(0.0),
            max_outside_percent: 10.0,
        },
        Scenario {
            name: "narrow-uplink",
            peer: Peer::Kinesalite,
            shards: 4,
            lines: n(30_000, 10_000),
            uplink: Some(300_000),
            timeline: vec![],
            max_duplicate_percent: 0.0,
            verified_duplicates: None,
            max_outside_percent: 10.0,
        },
    ];
    if !short {
        v.push(Scenario {
            name: "split-and-merge",
            peer: Peer::KinesisMock,
            shards: 4,
            lines: 60_000,
            // A link of 1.5 MB/s makes the run last about 7 s, so the reshards
            // happen while records flow.
            uplink: Some(1_500_000),
            timeline: vec![(1.5, Act::Split(2)), (3.5, Act::Merge)],
            max_duplicate_percent: 0.0,
            verified_duplicates: None,
            max_outside_percent: 10.0,
        });
        // The storm: 8 splits and merges spread over a run of about 14 s
        // (a 750 kB/s link stretches it), as in its measurement (60,000 records).
        v.push(storm("reshard-storm", 750_000, (1.0, 1.5), 2, 10.0));
        // Three times denser: 8 reshards in 5 s of a 7 s run.
        v.push(storm("reshard-storm-dense", 1_500_000, (0.5, 0.7), 2, 10.0));
        // Splits a third of the way into a shard's range, which half-range
        // aggregation does not foresee: copies are bounded by what is in flight.
        v.push(storm("reshard-storm-uneven", 750_000, (1.0, 1.5), 3, 15.0));
    }
    v
}

/// 8 splits and merges, alternating, `gap` seconds apart from `first`, while 60,000
/// lines go through a link of `uplink` bytes per second.
fn storm(
    name: &'static str,
    uplink: u64,
    (first, gap): (f64, f64),
    split_at: u128,
    max_outside: f64,
) -> Scenario {
    Scenario {
        name,
        peer: Peer::KinesisMock,
        shards: 4,
        lines: 60_000,
        uplink: Some(uplink),
        timeline: (0..8)
            .map(|i| {
                let at = first + gap * f64::from(i);
                (
                    at,
                    if i % 2 == 0 {
                        Act::Split(split_at)
                    } else {
                        Act::Merge
                    },
                )
            })
            .collect(),
        max_duplicate_percent: 0.0,
        verified_duplicates: None,
        max_outside_percent: max_outside,
    }
}
