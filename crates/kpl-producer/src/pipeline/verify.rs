//! Verify before resend: the Kinesis records of a request that may have stored
//! them (no answer, a broken connection, a 5xx) are not resent at once. They wait
//! until the request can no longer be stored (its late answer, the transport giving
//! it up, then [`SETTLE`]), then their shard is read from just after the last
//! sequence number known stored on it when the request was sent; those found there
//! (an aggregate by its bytes, whose last 16 are its MD5 checksum; a raw record by
//! its key and bytes) are settled as stored with their real sequence numbers, and
//! only the others are resent.
//!
//! Rules: a stored copy is matched at most once, and never one an answer already
//! gave to a record (sequence numbers attributed are excluded); where two records
//! waiting could match the same copy, both are resent with their "may have been
//! stored" flag rather than guessed; a shard is read at most once per
//! [`READ_INTERVAL`], at most [`ROUND_READS`] times per round; a round that cannot
//! finish (reads failing, the budget spent, the shard unknown) resends its records
//! with the flag. A record not found after a read that reached the newest record
//! of a shard still open is resent without it: the request could no longer be
//! stored when the read began, and the shard was open since it was sent, which
//! leaves only a request stored after [`SETTLE`] (docs/delivery.md). Not found on a
//! shard closed since, it may be on a child: it is resent with the flag.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kpl_shardmap::ShardId;
use kpl_transport::{EntryResult, ErrorKind, PutRecordsResponse, RecordsPage, TransportError};
use tracing::{debug, warn};

use super::record::{Contents, Epoch, KRec, Member};
use super::{StreamPipeline, Transmit};
use crate::fasthash::{FastMap, FastSet};

/// How long after a request ended with no answer (a broken connection, a 5xx, the
/// transport giving it up) its shard is read: a request the service was still
/// working on when its connection broke is stored by then. One stored later is the
/// window that remains.
pub(super) const SETTLE: Duration = Duration::from_secs(1);
/// At most one read (GetRecords) of a shard in this time: a shard serves five reads
/// a second, shared with its consumers.
pub(super) const READ_INTERVAL: Duration = Duration::from_secs(1);
/// Reads one round may make before it gives up (its records are resent, flagged).
pub(super) const ROUND_READS: u32 = 10;
/// Reads of a round that may fail before it gives up.
const ROUND_FAILURES: u32 = 3;
/// How far before an attempt's start a read by time begins (when no sequence number
/// is known on the shard): the producer's clock may be behind the service's.
pub(super) const CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Records asked for per read.
pub(crate) const READ_LIMIT: u32 = kpl_codec::GET_RECORDS_MAX_RECORDS;
/// How long the sequence numbers answers gave are remembered, at least (a record
/// lives at most its time to live, a request at most three timeouts).
const REMEMBER: Duration = Duration::from_secs(120);

/// Where a read of a shard starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReadFrom {
    /// Just after this sequence number.
    After(Arc<str>),
    /// At this time (the driver turns it into the wall clock's).
    At(Instant),
    /// Where the previous read of the round ended.
    Iterator(String),
}

/// What verifying has cost and found, since the producer started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyStats {
    /// Reads (GetRecords) made.
    pub reads: u64,
    /// Bytes of records read.
    pub bytes_read: u64,
    /// Kinesis records found stored, settled without being resent.
    pub found: u64,
    /// Kinesis records not found after a full read, resent as not stored.
    pub not_found: u64,
    /// Kinesis records resent without an answer from a read (it failed, its budget
    /// was spent, or two records could match one stored copy): they keep their
    /// "may have been stored" flag.
    pub unsettled: u64,
}

impl VerifyStats {
    /// What `self` has more than `before` (both cumulative).
    pub(crate) fn since(self, before: Self) -> Self {
        Self {
            reads: self.reads - before.reads,
            bytes_read: self.bytes_read - before.bytes_read,
            found: self.found - before.found,
            not_found: self.not_found - before.not_found,
            unsettled: self.unsettled - before.unsettled,
        }
    }

    /// `other` added.
    pub(crate) fn add(&mut self, other: Self) {
        self.reads += other.reads;
        self.bytes_read += other.bytes_read;
        self.found += other.found;
        self.not_found += other.not_found;
        self.unsettled += other.unsettled;
    }
}

/// Sequence numbers order as numbers: by length, then by digits.
fn seq_key(seq: &str) -> (usize, &str) {
    (seq.len(), seq)
}

/// A Kinesis record's length and last 16 bytes.
type ContentKey = (usize, [u8; 16]);

/// What a stored copy is matched by: its length and last 16 bytes (an aggregate's
/// MD5 checksum), then all of it.
fn content_key(data: &[u8]) -> ContentKey {
    let mut tail = [0u8; 16];
    let n = data.len().min(16);
    tail[..n].copy_from_slice(&data[data.len() - n..]);
    (data.len(), tail)
}

/// A Kinesis record of a request that may have stored it.
pub(super) struct Suspect {
    pub(super) k: KRec,
    /// When the request that may have stored it started.
    pub(super) started: Instant,
    /// The last sequence number known stored on its shard when that request was
    /// sent.
    pub(super) mark: Option<Arc<str>>,
}

/// What a round found of one record.
pub(super) enum Verdict {
    /// Found at this sequence number; `twice` when found more than once.
    Stored { seq: Arc<str>, twice: bool },
    /// Not there after a read that reached the shard's newest record.
    NotStored,
    /// No answer: resent with its flag.
    Unknown,
}

/// One shard's read in progress.
struct Round {
    suspects: Vec<Suspect>,
    /// Suspects by content key.
    index: FastMap<ContentKey, Vec<usize>>,
    /// Per suspect: where it was found first, and how many times.
    found: Vec<(Option<Arc<str>>, u32)>,
    /// Suspects two of which could match one copy: left unknown.
    unsure: Vec<bool>,
    /// Where the next read starts (or the one out started: a failed read is made
    /// again from there).
    position: ReadFrom,
    /// Whether a read is out.
    out: bool,
    reads: u32,
    failures: u32,
}

impl Round {
    fn new(suspects: Vec<Suspect>, from: ReadFrom) -> Self {
        let mut index: FastMap<_, Vec<usize>> = FastMap::default();
        for (i, s) in suspects.iter().enumerate() {
            if let super::record::Payload::Ready(data) = &s.k.data {
                index.entry(content_key(data)).or_default().push(i);
            }
        }
        let n = suspects.len();
        Self {
            suspects,
            index,
            found: vec![(None, 0); n],
            unsure: vec![false; n],
            position: from,
            out: false,
            reads: 0,
            failures: 0,
        }
    }

    /// Matches the records of a page; a copy whose bytes a request in flight also
    /// carries (`sending`) could be that one's: its candidates are left unknown.
    fn read(
        &mut self,
        shard: &ShardId,
        page: &RecordsPage,
        attributed: &FastSet<(ShardId, Arc<str>)>,
        sending: &FastMap<ContentKey, u32>,
    ) {
        for stored in &page.records {
            let Some(candidates) = self.index.get(&content_key(&stored.data)) else {
                continue;
            };
            let same: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| {
                    let k = &self.suspects[i].k;
                    k.partition_key == stored.partition_key
                        && matches!(&k.data, super::record::Payload::Ready(d) if d == &stored.data)
                })
                .collect();
            if same.is_empty() {
                continue;
            }
            let seq: Arc<str> = stored.sequence_number.as_str().into();
            if attributed.contains(&(shard.clone(), seq.clone())) {
                continue;
            }
            if same.len() > 1 || sending.contains_key(&content_key(&stored.data)) {
                for i in same {
                    self.unsure[i] = true;
                }
                continue;
            }
            let f = &mut self.found[same[0]];
            f.1 += 1;
            if f.0.is_none() {
                f.0 = Some(seq);
            }
        }
    }

    /// The verdicts: `complete` when the reads reached the shard's newest record.
    fn finish(self, complete: bool) -> Vec<(Suspect, Verdict)> {
        self.suspects
            .into_iter()
            .zip(self.found)
            .zip(self.unsure)
            .map(|((s, (seq, copies)), unsure)| {
                let verdict = match seq {
                    _ if unsure => Verdict::Unknown,
                    Some(seq) => Verdict::Stored {
                        seq,
                        twice: copies > 1,
                    },
                    None if complete => Verdict::NotStored,
                    None => Verdict::Unknown,
                };
                (s, verdict)
            })
            .collect()
    }
}

/// One shard's records waiting to be looked for, and its read.
#[derive(Default)]
struct ShardVerify {
    /// (ready at, record): waiting for their request to be past being stored.
    waiting: Vec<(Instant, Suspect)>,
    round: Option<Round>,
    /// No read before this.
    next_read: Option<Instant>,
}

/// The records of requests that may have stored them, by shard, and what answers
/// said was stored where (to start reads from, and to exclude).
#[derive(Default)]
pub(super) struct Verifier {
    /// Requests past their timeout whose answer may still come, by number: their
    /// records, and when to stop waiting for it.
    awaiting: FastMap<u64, (Vec<Suspect>, Instant)>,
    shards: FastMap<ShardId, ShardVerify>,
    /// Per shard, (when answered, the highest sequence number answered by then).
    marks: FastMap<ShardId, VecDeque<(Instant, Arc<str>)>>,
    /// Sequence numbers answers gave, with when (oldest first).
    attributed: FastSet<(ShardId, Arc<str>)>,
    attributed_order: VecDeque<(Instant, ShardId, Arc<str>)>,
    /// The Kinesis records in requests in flight, by content: a stored copy of the
    /// same bytes could be theirs.
    sending: FastMap<ContentKey, u32>,
    /// Reads cannot be made (denied, or not implemented): said once.
    disabled: bool,
    stats: VerifyStats,
}

impl Verifier {
    /// `seq` was answered stored on `shard` at `now`.
    pub(super) fn stored(&mut self, shard: &ShardId, seq: &Arc<str>, now: Instant, keep: Duration) {
        let keep = keep.max(REMEMBER);
        let marks = self.marks.entry(shard.clone()).or_default();
        let highest = match marks.back() {
            Some((_, m)) if seq_key(m) >= seq_key(seq) => m.clone(),
            _ => seq.clone(),
        };
        marks.push_back((now, highest));
        // The newest mark older than `keep` stays: the floor of older sends.
        while marks.len() > 1 && marks[1].0 + keep <= now {
            marks.pop_front();
        }
        if self.attributed.insert((shard.clone(), seq.clone())) {
            self.attributed_order
                .push_back((now, shard.clone(), seq.clone()));
        }
        while let Some((at, _, _)) = self.attributed_order.front() {
            if *at + keep > now {
                break;
            }
            if let Some((_, s, q)) = self.attributed_order.pop_front() {
                self.attributed.remove(&(s, q));
            }
        }
    }

    /// The Kinesis records of `batch` are sent (`true`) or back from their request
    /// (answered, or past its timeout).
    pub(super) fn sending(&mut self, batch: &[KRec], sent: bool) {
        for k in batch {
            let super::record::Payload::Ready(data) = &k.data else {
                continue;
            };
            let key = content_key(data);
            if sent {
                *self.sending.entry(key).or_default() += 1;
            } else if let Some(n) = self.sending.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.sending.remove(&key);
                }
            }
        }
    }

    /// The last sequence number known stored on `shard` at `at`.
    pub(super) fn mark(&self, shard: &ShardId, at: Instant) -> Option<Arc<str>> {
        let marks = self.marks.get(shard)?;
        let i = marks.partition_point(|(t, _)| *t <= at);
        i.checked_sub(1).map(|i| marks[i].1.clone())
    }

    /// Whether reads cannot be made.
    pub(super) fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Holds the records of request `id`, past its timeout, until its answer or
    /// `give_up`.
    pub(super) fn await_answer(&mut self, id: u64, suspects: Vec<Suspect>, give_up: Instant) {
        self.awaiting.insert(id, (suspects, give_up));
    }

    /// Whether the records of request `id` wait for its answer.
    pub(super) fn awaits(&self, id: u64) -> bool {
        self.awaiting.contains_key(&id)
    }

    /// The records of request `id`, if they wait for its answer.
    pub(super) fn answered(&mut self, id: u64) -> Option<Vec<Suspect>> {
        self.awaiting.remove(&id).map(|(s, _)| s)
    }

    /// Holds `s` until `ready`, then looks for it; gives it back when it cannot be
    /// looked for (no shard predicted, or reads cannot be made).
    #[must_use]
    pub(super) fn wait(&mut self, s: Suspect, ready: Instant) -> Option<Suspect> {
        match &s.k.shard {
            Some(shard) if !self.disabled => {
                let shard = shard.clone();
                self.shards
                    .entry(shard)
                    .or_default()
                    .waiting
                    .push((ready, s));
                None
            }
            _ => Some(s),
        }
    }

    /// Requests whose answer did not come by their time (given up), and reads due at
    /// `now`.
    pub(super) fn poll(&mut self, now: Instant) -> (Vec<Vec<Suspect>>, Vec<(ShardId, ReadFrom)>) {
        let given_up: Vec<u64> = self
            .awaiting
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        let given_up = given_up
            .into_iter()
            .filter_map(|id| self.awaiting.remove(&id).map(|(s, _)| s))
            .collect();
        let mut reads = Vec::new();
        for (shard, v) in &mut self.shards {
            if v.next_read.is_some_and(|t| t > now) {
                continue;
            }
            if v.round.is_none() {
                let ready: Vec<Suspect> = {
                    let (ready, waiting): (Vec<_>, Vec<_>) =
                        v.waiting.drain(..).partition(|(at, _)| *at <= now);
                    v.waiting = waiting;
                    ready.into_iter().map(|(_, s)| s).collect()
                };
                if ready.is_empty() {
                    continue;
                }
                // From the earliest mark; by time when one of them knows none.
                let earliest_mark = ready
                    .iter()
                    .map(|s| s.mark.clone())
                    .collect::<Option<Vec<_>>>()
                    .and_then(|marks| marks.into_iter().min_by(|a, b| seq_key(a).cmp(&seq_key(b))));
                let from = earliest_mark.map_or_else(
                    || {
                        let earliest = ready.iter().map(|s| s.started).min().unwrap_or(now);
                        ReadFrom::At(earliest.checked_sub(CLOCK_SKEW).unwrap_or(earliest))
                    },
                    ReadFrom::After,
                );
                v.round = Some(Round::new(ready, from));
            }
            if let Some(round) = &mut v.round
                && !round.out
            {
                round.out = true;
                v.next_read = Some(now + READ_INTERVAL);
                reads.push((shard.clone(), round.position.clone()));
            }
        }
        (given_up, reads)
    }

    /// When something is next due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let awaiting = self.awaiting.values().map(|(_, at)| *at).min();
        let shards = self.shards.values().filter_map(|v| {
            let due = match &v.round {
                Some(r) if !r.out => Some(v.next_read),
                Some(_) => None,
                None => v.waiting.iter().map(|(at, _)| *at).min().map(Some),
            }?;
            Some(match (due, v.next_read) {
                (Some(d), Some(n)) => d.max(n),
                (Some(d), None) => d,
                (None, n) => n?,
            })
        });
        awaiting.into_iter().chain(shards).min()
    }

    /// A read of `shard` answered: the verdicts when its round is over.
    pub(super) fn read(
        &mut self,
        shard: &ShardId,
        result: Result<RecordsPage, TransportError>,
        now: Instant,
    ) -> Vec<(Suspect, Verdict)> {
        let Some(v) = self.shards.get_mut(shard) else {
            return Vec::new();
        };
        let Some(mut round) = v.round.take() else {
            return Vec::new();
        };
        v.next_read = Some(now + READ_INTERVAL);
        round.out = false;
        let verdicts = match result {
            Ok(page) => {
                self.stats.reads += 1;
                self.stats.bytes_read += page
                    .records
                    .iter()
                    .map(|r| r.data.len() as u64)
                    .sum::<u64>();
                round.reads += 1;
                round.read(shard, &page, &self.attributed, &self.sending);
                match page.next_iterator {
                    // Read to the newest record of a shard still open: it was open
                    // since the request was sent, so the request's records are on it
                    // if they were stored.
                    Some(_) if page.millis_behind_latest == Some(0) => round.finish(true),
                    // A closed shard read to its end: the request may have been
                    // stored on a child after the shard closed.
                    None => round.finish(false),
                    Some(next) if round.reads < ROUND_READS => {
                        round.position = ReadFrom::Iterator(next);
                        v.round = Some(round);
                        return Vec::new();
                    }
                    _ => {
                        debug!(shard = %shard, reads = round.reads, "verify before resend: the shard was not read to its end within the round's reads");
                        round.finish(false)
                    }
                }
            }
            Err(e) if !e.kind().is_retryable() || e.kind() == ErrorKind::NotFound => {
                if !self.disabled {
                    warn!(shard = %shard, error = %e, "verify before resend cannot read the stream (it needs kinesis:GetShardIterator and kinesis:GetRecords, and kms:Decrypt on an encrypted stream): records of requests with no answer are resent, flagged as possibly stored twice");
                }
                self.disabled = true;
                round.finish(false)
            }
            Err(e) => {
                round.failures += 1;
                if round.failures < ROUND_FAILURES {
                    debug!(shard = %shard, error = %e, "verify before resend: a read failed; trying again");
                    // Made again from where it started.
                    v.round = Some(round);
                    return Vec::new();
                }
                debug!(shard = %shard, error = %e, "verify before resend: reads keep failing; resending");
                round.finish(false)
            }
        };
        self.count(&verdicts);
        verdicts
    }

    fn count(&mut self, verdicts: &[(Suspect, Verdict)]) {
        for (_, v) in verdicts {
            match v {
                Verdict::Stored { .. } => self.stats.found += 1,
                Verdict::NotStored => self.stats.not_found += 1,
                Verdict::Unknown => self.stats.unsettled += 1,
            }
        }
    }

    /// Every record held, when reads cannot be made any more: to resend, flagged.
    pub(super) fn take_waiting(&mut self) -> Vec<Suspect> {
        let mut out = Vec::new();
        for v in self.shards.values_mut() {
            out.extend(v.waiting.drain(..).map(|(_, s)| s));
        }
        self.stats.unsettled += out.len() as u64;
        out
    }

    /// Every record held (reads in progress too), at shutdown.
    pub(super) fn drain(&mut self) -> Vec<Suspect> {
        let mut out: Vec<Suspect> = self.awaiting.drain().flat_map(|(_, (s, _))| s).collect();
        for (_, v) in self.shards.drain() {
            out.extend(v.waiting.into_iter().map(|(_, s)| s));
            if let Some(r) = v.round {
                out.extend(r.suspects);
            }
        }
        out
    }

    /// Whether it holds no record.
    pub(super) fn is_empty(&self) -> bool {
        self.awaiting.is_empty()
            && self
                .shards
                .values()
                .all(|v| v.waiting.is_empty() && v.round.is_none())
    }

    /// What verifying has cost and found so far.
    pub(super) fn stats(&self) -> VerifyStats {
        self.stats
    }
}

/// Applies `f` to each user record of `k`.
fn each_member(k: &mut KRec, mut f: impl FnMut(&mut Member)) {
    match &mut k.records {
        Contents::Sealed(members) => members.iter_mut().for_each(f),
        Contents::Loose(recs) => recs.iter_mut().for_each(|r| f(&mut r.m)),
    }
}

/// Records on each user record of `k` a failed attempt, started at `started` and
/// ended `now`, that may have stored it.
pub(super) fn ambiguous_attempt(
    k: &mut KRec,
    epoch: Epoch,
    (started, now): (Instant, Instant),
    error: (&str, &str),
) {
    let shard = k.shard.as_ref().map(ShardId::to_arc);
    each_member(k, |m| {
        m.attempt_sent(epoch, started, now, Some(error), shard.as_ref(), true);
    });
}

/// Takes the attempt started at `started` off `m` (it becomes the success).
fn pop_attempt(m: &mut Member, started: Instant) {
    if m.attempts.last().is_some_and(|a| a.started == started) {
        m.attempts.pop();
    }
}

impl StreamPipeline {
    /// Whether records of requests that may have stored them are looked for
    /// before they are resent.
    pub(super) fn verifies(&self) -> bool {
        self.config.verify_before_resend && !self.retries.verifier.is_disabled()
    }

    /// A Kinesis record of a request sent at `started` that may have stored it (the
    /// failed attempt is on its records already): held until `ready`, then looked
    /// for; resent at once, flagged, when it cannot be.
    pub(super) fn suspect_krec(&mut self, k: KRec, started: Instant, ready: Instant, now: Instant) {
        let mark = k
            .shard
            .as_ref()
            .and_then(|s| self.retries.verifier.mark(s, started));
        let s = Suspect { k, started, mark };
        if let Some(s) = self.retries.verifier.wait(s, ready) {
            self.resend_unverified(s.k, now);
        }
    }

    /// The records of a timed-out request `id` sent at `started`: in verify mode they
    /// wait for its late answer (or for the transport to give it up, at
    /// `give_up`) instead of being resent.
    pub(super) fn await_late_answer(
        &mut self,
        id: u64,
        batch: Vec<KRec>,
        started: Instant,
        give_up: Instant,
    ) {
        let suspects = batch
            .into_iter()
            .map(|k| {
                let mark = k
                    .shard
                    .as_ref()
                    .and_then(|s| self.retries.verifier.mark(s, started));
                Suspect { k, started, mark }
            })
            .collect();
        self.retries.verifier.await_answer(id, suspects, give_up);
    }

    /// The late answer (or the end) of a timed-out request whose records wait for
    /// it in verify mode; `false` when none do.
    pub(super) fn verify_late(
        &mut self,
        id: u64,
        result: Result<PutRecordsResponse, TransportError>,
        now: Instant,
    ) -> bool {
        let Some(suspects) = self.retries.verifier.answered(id) else {
            return false;
        };
        let started = suspects.first().map_or(now, |s| s.started);
        match result {
            Ok(response) if response.results.len() == suspects.len() => {
                let batch = suspects
                    .into_iter()
                    .map(|mut s| {
                        each_member(&mut s.k, |m| pop_attempt(m, s.started));
                        s.k
                    })
                    .collect();
                debug!(stream = %self.stream, request = id, "a late answer settled records waiting to be looked for");
                self.request_answered(batch, started, now, response);
            }
            _ => {
                for s in suspects {
                    if let Some(s) = self.retries.verifier.wait(s, now + SETTLE) {
                        self.resend_unverified(s.k, now);
                    }
                }
            }
        }
        true
    }

    /// Moves verifying on at `now`: requests given up wait [`SETTLE`]; reads due go.
    pub(super) fn poll_verify(&mut self, now: Instant) {
        if self.retries.verifier.is_empty() {
            return;
        }
        let (given_up, reads) = self.retries.verifier.poll(now);
        for s in given_up.into_iter().flatten() {
            if let Some(s) = self.retries.verifier.wait(s, now + SETTLE) {
                self.resend_unverified(s.k, now);
            }
        }
        for (shard, from) in reads {
            self.transmits
                .push_back(Transmit::ReadShard { shard, from });
        }
    }

    /// A read of `shard` answered.
    pub(super) fn shard_read(
        &mut self,
        shard: ShardId,
        result: Result<RecordsPage, TransportError>,
        now: Instant,
    ) {
        let verdicts = self.retries.verifier.read(&shard, result, now);
        if !verdicts.is_empty() {
            let found = verdicts
                .iter()
                .filter(|(_, v)| matches!(v, Verdict::Stored { .. }))
                .count();
            debug!(stream = %self.stream, shard = %shard, records = verdicts.len(), found, "verify before resend: shard read");
        }
        for (s, verdict) in verdicts {
            let Suspect { mut k, started, .. } = s;
            match verdict {
                Verdict::Stored { seq, twice } => {
                    if !twice {
                        // The attempt that may have stored it did.
                        each_member(&mut k, |m| pop_attempt(m, started));
                    }
                    let response = PutRecordsResponse::new(vec![EntryResult::Ok {
                        shard_id: shard.as_str().to_owned(),
                        sequence_number: seq.to_string(),
                    }]);
                    self.request_answered(vec![k], started, now, response);
                }
                Verdict::NotStored => {
                    let note = format!(
                        "; not found in {shard} after the request could no longer be stored: sent again"
                    );
                    each_member(&mut k, |m| {
                        if let Some(e) =
                            m.attempts.last_mut().and_then(|a| a.outcome.as_mut().err())
                        {
                            e.may_have_been_stored = false;
                            e.message.push_str(&note);
                        }
                    });
                    self.resend_unverified(k, now);
                }
                Verdict::Unknown => self.resend_unverified(k, now),
            }
        }
        if self.retries.verifier.is_disabled() {
            for s in self.retries.verifier.take_waiting() {
                self.resend_unverified(s.k, now);
            }
        }
    }

    /// Sends a Kinesis record's user records again, as without verifying.
    fn resend_unverified(&mut self, k: KRec, now: Instant) {
        for rec in self.unseal(k, now) {
            self.retry(rec, now, Duration::ZERO);
        }
    }

    /// What verifying has cost and found so far.
    pub(crate) fn verify_stats(&self) -> VerifyStats {
        self.retries.verifier.stats()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kpl_runtime::{Timer, VirtualClock};
    use kpl_transport::ReadRecord;

    use super::*;
    use crate::pipeline::record::Payload;

    fn krec(key: &str, data: &'static [u8], shard: &str, now: Instant) -> KRec {
        KRec {
            records: Contents::Sealed(Vec::new()),
            partition_key: key.to_owned(),
            explicit_hash_key: None,
            data: Payload::Ready(Bytes::from_static(data)),
            shard: Some(ShardId::from(shard)),
            deadline: now,
            expiration: now,
            aggregated: false,
            released: None,
            lock: None,
        }
    }

    fn suspect(key: &str, data: &'static [u8], mark: Option<&str>, now: Instant) -> Suspect {
        Suspect {
            k: krec(key, data, "s0", now),
            started: now,
            mark: mark.map(Into::into),
        }
    }

    fn page(records: &[(&str, &str, &'static [u8])], caught_up: bool) -> RecordsPage {
        RecordsPage::new(
            records
                .iter()
                .map(|(seq, key, data)| ReadRecord::new(*seq, *key, Bytes::from_static(data)))
                .collect(),
            Some("next".into()),
            Some(if caught_up { 0 } else { 5_000 }),
        )
    }

    fn verdicts(v: &[(Suspect, Verdict)]) -> Vec<String> {
        v.iter()
            .map(|(s, v)| {
                let what = match v {
                    Verdict::Stored { seq, twice } => {
                        format!("stored {seq}{}", if *twice { " twice" } else { "" })
                    }
                    Verdict::NotStored => "not stored".into(),
                    Verdict::Unknown => "unknown".into(),
                };
                format!("{}: {what}", s.k.partition_key)
            })
            .collect()
    }

    #[test]
    fn the_mark_is_the_highest_sequence_number_answered_by_the_send() {
        let t0 = VirtualClock::new().now();
        let ms = Duration::from_millis;
        let shard = ShardId::from("s0");
        let mut v = Verifier::default();
        assert_eq!(v.mark(&shard, t0), None);
        v.stored(&shard, &"100".into(), t0 + ms(10), Duration::ZERO);
        v.stored(&shard, &"99".into(), t0 + ms(20), Duration::ZERO);
        v.stored(&shard, &"105".into(), t0 + ms(30), Duration::ZERO);
        assert_eq!(v.mark(&shard, t0 + ms(5)), None);
        assert_eq!(
            v.mark(&shard, t0 + ms(25)).as_deref(),
            Some("100"),
            "99 < 100 as numbers"
        );
        assert_eq!(v.mark(&shard, t0 + ms(30)).as_deref(), Some("105"));
        assert_eq!(v.mark(&ShardId::from("s1"), t0 + ms(30)), None);
        // Old marks go, but the newest of them stays the floor.
        let later = t0 + REMEMBER + ms(40);
        v.stored(&shard, &"200".into(), later, Duration::ZERO);
        assert_eq!(v.mark(&shard, later - ms(1)).as_deref(), Some("105"));
    }

    #[test]
    fn a_round_reads_after_the_earliest_mark_at_most_once_a_second_and_finds_each_copy_once() {
        let t0 = VirtualClock::new().now();
        let mut v = Verifier::default();
        let ready = t0 + SETTLE;
        assert!(
            v.wait(suspect("a", b"aaaa", Some("10"), t0), ready)
                .is_none()
        );
        assert!(
            v.wait(suspect("b", b"bbbb", Some("7"), t0), ready)
                .is_none()
        );
        assert!(
            v.wait(suspect("c", b"cccc", Some("9"), t0), ready)
                .is_none()
        );
        assert_eq!(v.next_due(), Some(ready));
        assert!(v.poll(t0).1.is_empty(), "not before the request settles");
        let (_, reads) = v.poll(ready);
        assert_eq!(
            reads,
            vec![(ShardId::from("s0"), ReadFrom::After("7".into()))]
        );
        assert!(v.poll(ready).1.is_empty(), "one read at a time");
        // A copy an answer gave to another record is not theirs.
        v.stored(&ShardId::from("s0"), &"11".into(), ready, Duration::ZERO);
        let shard = ShardId::from("s0");
        let out = v.read(
            &shard,
            Ok(page(
                &[
                    ("11", "a", b"aaaa"),
                    ("12", "a", b"aaaa"),
                    ("13", "a", b"aaaa"),
                    ("14", "b", b"xbbb"),
                ],
                false,
            )),
            ready,
        );
        assert!(out.is_empty(), "not caught up: the round goes on");
        assert!(v.poll(ready).1.is_empty(), "a second later at the earliest");
        assert_eq!(v.next_due(), Some(ready + READ_INTERVAL));
        let (_, reads) = v.poll(ready + READ_INTERVAL);
        assert_eq!(
            reads,
            vec![(shard.clone(), ReadFrom::Iterator("next".into()))]
        );
        let out = v.read(&shard, Ok(page(&[], true)), ready + READ_INTERVAL);
        assert_eq!(
            verdicts(&out),
            ["a: stored 12 twice", "b: not stored", "c: not stored"]
        );
        assert!(v.is_empty());
        let s = v.stats();
        assert_eq!((s.reads, s.found, s.not_found, s.unsettled), (2, 1, 2, 0));
    }

    #[test]
    fn two_records_that_could_match_one_copy_are_left_unknown() {
        let t0 = VirtualClock::new().now();
        let mut v = Verifier::default();
        assert!(v.wait(suspect("a", b"same", None, t0), t0).is_none());
        assert!(v.wait(suspect("a", b"same", None, t0), t0).is_none());
        assert!(v.wait(suspect("b", b"same", None, t0), t0).is_none());
        let (_, reads) = v.poll(t0 + CLOCK_SKEW);
        assert_eq!(
            reads,
            vec![(ShardId::from("s0"), ReadFrom::At(t0 - CLOCK_SKEW))],
            "by time, a margin before the attempt, when no mark is known"
        );
        let out = v.read(
            &ShardId::from("s0"),
            Ok(page(&[("1", "a", b"same"), ("2", "b", b"same")], true)),
            t0,
        );
        assert_eq!(verdicts(&out), ["a: unknown", "a: unknown", "b: stored 2"]);
    }

    #[test]
    fn a_record_not_found_on_a_closed_shard_keeps_its_flag() {
        let t0 = VirtualClock::new().now();
        let shard = ShardId::from("s0");
        let mut v = Verifier::default();
        assert!(v.wait(suspect("a", b"aaaa", Some("1"), t0), t0).is_none());
        assert!(v.wait(suspect("b", b"bbbb", Some("1"), t0), t0).is_none());
        assert_eq!(v.poll(t0).1.len(), 1);
        let closed = RecordsPage::new(
            vec![ReadRecord::new("2", "a", Bytes::from_static(b"aaaa"))],
            None,
            Some(0),
        );
        assert_eq!(
            verdicts(&v.read(&shard, Ok(closed), t0)),
            ["a: stored 2", "b: unknown"],
            "b may be on a child"
        );
    }

    #[test]
    fn a_copy_a_request_in_flight_also_carries_is_not_taken() {
        let t0 = VirtualClock::new().now();
        let shard = ShardId::from("s0");
        let mut v = Verifier::default();
        let twin = [krec("c", b"cccc", "s0", t0)];
        v.sending(&twin, true);
        assert!(v.wait(suspect("c", b"cccc", Some("1"), t0), t0).is_none());
        assert_eq!(v.poll(t0).1.len(), 1);
        let copy = [("3", "c", &b"cccc"[..])];
        assert_eq!(
            verdicts(&v.read(&shard, Ok(page(&copy, true)), t0)),
            ["c: unknown"]
        );
        // Its twin answered: the copy can be taken.
        v.sending(&twin, false);
        assert!(v.wait(suspect("c", b"cccc", Some("1"), t0), t0).is_none());
        let later = t0 + READ_INTERVAL;
        assert_eq!(v.poll(later).1.len(), 1);
        assert_eq!(
            verdicts(&v.read(&shard, Ok(page(&copy, true)), later)),
            ["c: stored 3"]
        );
    }

    #[test]
    fn a_round_that_cannot_finish_leaves_its_records_unknown_and_a_denied_read_stops_verifying() {
        let t0 = VirtualClock::new().now();
        let shard = ShardId::from("s0");
        let mut v = Verifier::default();
        assert!(v.wait(suspect("a", b"aaaa", Some("1"), t0), t0).is_none());
        let mut at = t0;
        for _ in 0..ROUND_FAILURES - 1 {
            assert_eq!(v.poll(at).1.len(), 1);
            let e = TransportError::from_code("InternalFailure", "boom", Some(500));
            assert!(v.read(&shard, Err(e), at).is_empty(), "tried again");
            at += READ_INTERVAL;
        }
        assert_eq!(
            v.poll(at).1,
            vec![(shard.clone(), ReadFrom::After("1".into()))],
            "from the start again"
        );
        let e = TransportError::from_code("InternalFailure", "boom", Some(500));
        assert_eq!(verdicts(&v.read(&shard, Err(e), at)), ["a: unknown"]);
        // The budget of reads.
        assert!(v.wait(suspect("b", b"bbbb", Some("1"), t0), t0).is_none());
        let mut out = Vec::new();
        for _ in 0..ROUND_READS {
            at += READ_INTERVAL;
            assert_eq!(v.poll(at).1.len(), 1);
            out = v.read(&shard, Ok(page(&[], false)), at);
        }
        assert_eq!(verdicts(&out), ["b: unknown"]);
        // Denied: said once, nothing more is held.
        assert!(v.wait(suspect("c", b"cccc", Some("1"), t0), t0).is_none());
        at += READ_INTERVAL;
        assert_eq!(v.poll(at).1.len(), 1);
        let denied = TransportError::from_code("AccessDeniedException", "no", Some(400));
        assert_eq!(verdicts(&v.read(&shard, Err(denied), at)), ["c: unknown"]);
        assert!(v.is_disabled());
        assert!(v.wait(suspect("d", b"dddd", Some("1"), t0), t0).is_some());
    }

    #[test]
    fn a_request_waiting_for_its_answer_is_given_up_at_its_time() {
        let t0 = VirtualClock::new().now();
        let mut v = Verifier::default();
        let give_up = t0 + Duration::from_secs(18);
        v.await_answer(7, vec![suspect("a", b"aaaa", None, t0)], give_up);
        assert!(!v.is_empty());
        assert_eq!(v.next_due(), Some(give_up));
        assert!(v.poll(give_up - Duration::from_millis(1)).0.is_empty());
        let (given_up, _) = v.poll(give_up);
        assert_eq!(given_up.len(), 1);
        assert!(v.answered(7).is_none(), "once");
        v.await_answer(8, vec![suspect("a", b"aaaa", None, t0)], give_up);
        assert_eq!(v.answered(8).map(|s| s.len()), Some(1));
        assert!(v.is_empty());
    }
}
