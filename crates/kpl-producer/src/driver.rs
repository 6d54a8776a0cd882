//! The driver of one stream's pipeline: a task that feeds the sans-IO
//! [`StreamPipeline`] with the producer's commands, the clock and the transport's
//! answers, sends what it asks for, and hands settled records to whoever awaits
//! them. It holds no rule of its own.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use futures::StreamExt;
use futures::channel::mpsc;
use kpl_shardmap::ShardId;
use kpl_shardmap::{Refresh, ShardInfo};
use kpl_transport::{
    ListShardsRequest, PutRecordsResponse, RecordsPage, ShardPosition, StreamId, Transport,
    TransportError,
};
use tracing::debug;

use crate::accounting::Shared;
use crate::completers::{Completers, Put};
use crate::pipeline::{READ_LIMIT, ReadFrom, StreamPipeline, Transmit, VerifyStats};

/// Messages from the producer.
pub(crate) enum Command {
    Put(Put),
    Flush,
    /// A put waits for room under the outstanding caps: send what is buffered now.
    RoomWanted,
    /// Fail whatever is not in flight as shut down; report how many.
    Shutdown(mpsc::UnboundedSender<usize>),
    /// Nothing is left: stop once idle.
    Stop,
}

/// Messages from the driver's own request tasks.
enum Completion {
    /// A listing: the shards, each with whether it is closed.
    Shards(Refresh, Result<Vec<(ShardInfo, bool)>, TransportError>),
    /// A PutRecords request's answer, by request number.
    Put(u64, Result<PutRecordsResponse, TransportError>),
    /// The stream's maximum record size.
    MaxRecordSize(Result<Option<usize>, TransportError>),
    /// A read of a shard.
    Read(ShardId, Result<RecordsPage, TransportError>),
}

/// One stream's task.
pub(crate) struct Worker {
    stream: StreamId,
    shared: Arc<Shared>,
    pipeline: StreamPipeline,
    commands: Option<mpsc::UnboundedReceiver<Command>>,
    completions_tx: mpsc::UnboundedSender<Completion>,
    completions: mpsc::UnboundedReceiver<Completion>,
    /// (id, bytes) of the records settled in this round, released in one go.
    resolved: Vec<(u64, usize)>,
    /// What verifying had cost and found at the last look (the producer's counts
    /// grow by what it has more).
    verified: VerifyStats,
    /// Where the outcomes of the records in the pipeline go (dropped last: what is
    /// still filed then is answered as shut down).
    completers: Completers,
}

impl Worker {
    pub(crate) fn new(
        stream: StreamId,
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        let (completions_tx, completions) = mpsc::unbounded();
        let pipeline = StreamPipeline::new(
            stream.clone(),
            shared.config.clone(),
            shared.events.clone(),
            shared.epoch,
        );
        Self {
            stream,
            shared,
            pipeline,
            commands: Some(commands),
            completions_tx,
            completions,
            resolved: Vec::new(),
            verified: VerifyStats::default(),
            completers: Completers::default(),
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            let now = self.shared.runtime.now();
            while let Some(transmit) = self.pipeline.poll_transmit(now) {
                self.spawn(transmit);
            }
            self.deliver();
            if self.commands.is_none() && self.pipeline.is_idle() {
                debug!(stream = %self.stream, "pipeline stopped");
                return;
            }
            let wake = self.pipeline.poll_timeout(now);
            let mut sleep = wake.map(|at| self.shared.runtime.sleep_until(at));
            enum Next {
                Command(Option<Command>),
                Completion(Completion),
                Timer,
            }
            let next = poll_fn(|cx| {
                // Completions first: they free connections and space.
                if let Poll::Ready(Some(c)) = self.completions.poll_next_unpin(cx) {
                    return Poll::Ready(Next::Completion(c));
                }
                if let Some(commands) = self.commands.as_mut()
                    && let Poll::Ready(c) = commands.poll_next_unpin(cx)
                {
                    return Poll::Ready(Next::Command(c));
                }
                if let Some(s) = sleep.as_mut()
                    && Pin::new(s).poll(cx).is_ready()
                {
                    return Poll::Ready(Next::Timer);
                }
                Poll::Pending
            })
            .await;
            drop(sleep);
            let now = self.shared.runtime.now();
            match next {
                Next::Command(Some(c)) => {
                    self.command(c, now);
                    // Take a backlog of commands in one go before moving the stages.
                    for _ in 0..64 {
                        match self
                            .commands
                            .as_mut()
                            .map(mpsc::UnboundedReceiver::try_recv)
                        {
                            Some(Ok(c)) => self.command(c, now),
                            Some(Err(mpsc::TryRecvError::Closed)) => {
                                self.all_handles_gone();
                                break;
                            }
                            _ => break,
                        }
                    }
                    // Let the runtime's other tasks run (the transport's answers,
                    // a first shard listing on a one-thread runtime): a caller that
                    // puts as fast as this takes records in would otherwise keep
                    // this task ready for as long as it puts, its records waiting
                    // for a map whose answer cannot be read.
                    yield_now().await;
                }
                Next::Command(None) => self.all_handles_gone(),
                Next::Completion(Completion::Shards(refresh, result)) => {
                    self.pipeline.handle_shards(refresh, result, now);
                }
                Next::Completion(Completion::Put(id, result)) => {
                    self.pipeline.handle_answer(id, result, now);
                }
                Next::Completion(Completion::MaxRecordSize(result)) => {
                    self.pipeline.handle_max_record_size(result, now);
                }
                Next::Completion(Completion::Read(shard, result)) => {
                    self.pipeline.handle_read(shard, result, now);
                }
                Next::Timer => {}
            }
        }
    }

    /// Every producer handle is gone: finish what is held, then stop.
    fn all_handles_gone(&mut self) {
        self.commands = None;
        self.pipeline.handle_flush();
    }

    fn command(&mut self, command: Command, now: std::time::Instant) {
        match command {
            Command::Put(put) => {
                let recs = self.completers.file(put);
                let n = recs.len();
                self.pipeline.handle_put(recs, now);
                // Records taken in while a put waits for room go at once too.
                if self.shared.ingested(&self.stream, n) {
                    self.pipeline.handle_room_wanted();
                }
            }
            Command::Flush => self.pipeline.handle_flush(),
            Command::RoomWanted => self.pipeline.handle_room_wanted(),
            Command::Shutdown(report) => {
                let failed = self.pipeline.handle_shutdown(now);
                // Outcomes before the report: whoever waits for it finds them settled.
                self.deliver();
                let _ = report.unbounded_send(failed);
            }
            Command::Stop => self.pipeline.handle_stop(),
        }
    }

    /// Hands settled records their outcomes, gives their space back, and passes a
    /// new admission limit on.
    fn deliver(&mut self) {
        // Outcomes for an `Outcomes` queue go in one batch per queue and round (one
        // lock, one wake-up); a future's slot is filled one by one.
        let settled = self.pipeline.take_settled();
        self.completers.deliver(settled, &mut self.resolved);
        if !self.resolved.is_empty() {
            self.shared.release(&self.stream, &self.resolved);
            self.resolved.clear();
        }
        if let Some(limit) = self.pipeline.poll_admission() {
            self.shared.set_drain_limit(&self.stream, Some(limit));
        }
        let verified = self.pipeline.verify_stats();
        if verified != self.verified {
            self.shared.verified(verified.since(self.verified));
            self.verified = verified;
        }
    }

    fn spawn(&self, transmit: Transmit) {
        let transport = self.shared.transport.clone();
        let tx = self.completions_tx.clone();
        match transmit {
            Transmit::PutRecords { id, request } => {
                self.shared.runtime.spawn(Box::pin(async move {
                    let result = transport.put_records(request).await;
                    let _ = tx.unbounded_send(Completion::Put(id, result));
                }));
            }
            Transmit::MaxRecordSize => {
                let stream = self.stream.clone();
                self.shared.runtime.spawn(Box::pin(async move {
                    let result = transport.max_record_size(&stream).await;
                    let _ = tx.unbounded_send(Completion::MaxRecordSize(result));
                }));
            }
            Transmit::ReadShard { shard, from } => {
                let stream = self.stream.clone();
                // A read by time: the service's clock is the wall clock.
                let from = match from {
                    ReadFrom::At(at) => Err(std::time::SystemTime::now()
                        - self.shared.runtime.now().saturating_duration_since(at)),
                    other => Ok(other),
                };
                self.shared.runtime.spawn(Box::pin(async move {
                    let result = read_shard(&*transport, &stream, &shard, from).await;
                    let _ = tx.unbounded_send(Completion::Read(shard, result));
                }));
            }
            Transmit::ListShards { refresh, open_only } => {
                let stream = self.stream.clone();
                self.shared.runtime.spawn(Box::pin(async move {
                    let result = list_all(&*transport, stream, open_only).await;
                    let _ = tx.unbounded_send(Completion::Shards(refresh, result));
                }));
            }
        }
    }
}

/// One read of `shard` from `from` (a wall-clock time, or a sequence number or an
/// iterator): a GetShardIterator when it starts anew, then a GetRecords.
async fn read_shard(
    transport: &dyn Transport,
    stream: &StreamId,
    shard: &ShardId,
    from: Result<ReadFrom, std::time::SystemTime>,
) -> Result<RecordsPage, TransportError> {
    let position = match from {
        Ok(ReadFrom::Iterator(iterator)) => {
            return transport
                .get_records(stream, &iterator, Some(READ_LIMIT))
                .await;
        }
        Ok(ReadFrom::After(seq)) => ShardPosition::AfterSequenceNumber(seq.to_string()),
        Ok(ReadFrom::At(_)) => ShardPosition::TrimHorizon,
        Err(at) => ShardPosition::AtTimestamp(at),
    };
    let iterator = transport
        .shard_iterator(stream, shard.as_str(), position)
        .await?;
    transport
        .get_records(stream, &iterator, Some(READ_LIMIT))
        .await
}

/// Returns `Pending` once (waking itself at once), so that the executor runs its
/// other ready tasks before this one goes on: a yield that works on any runtime.
fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    poll_fn(move |cx| {
        if std::mem::replace(&mut yielded, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

/// Every page of a stream's shards (open ones only, or its history), each with
/// whether it is closed.
pub(crate) async fn list_all(
    transport: &dyn Transport,
    stream: StreamId,
    open_only: bool,
) -> Result<Vec<(ShardInfo, bool)>, TransportError> {
    let mut shards = Vec::new();
    let mut request = ListShardsRequest::First {
        stream,
        open_only,
        max_results: Some(1000),
    };
    loop {
        let page = transport.list_shards(request).await?;
        shards.extend(page.shards.into_iter().map(|s| {
            let closed = s.closed;
            (
                ShardInfo::new(s.shard_id, s.starting_hash_key, s.ending_hash_key),
                closed,
            )
        }));
        match page.next_token {
            Some(token) => {
                request = ListShardsRequest::Next {
                    token,
                    max_results: Some(1000),
                }
            }
            None => return Ok(shards),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake, Waker};

    use kpl_runtime::Simulation;
    use kpl_sim::Simulator;

    use super::*;
    use crate::accounting::Accounting;
    use crate::config::Config;
    use crate::pipeline::Epoch;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A caller that keeps the driver's channel full must not keep the driver from
    /// yielding: the runtime's other tasks (the transport's answers, the first
    /// shard listing) run between two backlogs of commands. On a runtime with one
    /// thread, a driver that took every command queued in one poll kept its
    /// stream's records waiting for a map whose answer could not be read.
    #[test]
    fn the_driver_yields_between_backlogs_of_commands() {
        let sim = Simulation::new();
        let kinesis = Simulator::new(sim.runtime().timer().clone(), 1);
        kinesis.create_stream("s", 1).unwrap();
        let runtime = sim.runtime();
        let shared = Arc::new(Shared {
            config: Config::default(),
            epoch: Epoch::new(runtime.now()),
            runtime,
            transport: Arc::new(kinesis),
            events: None,
            accounting: Mutex::new(Accounting::default()),
            verify: Mutex::default(),
        });
        let (tx, rx) = mpsc::unbounded();
        for _ in 0..200 {
            tx.unbounded_send(Command::Flush).unwrap();
        }
        let (report, mut reported) = mpsc::unbounded();
        tx.unbounded_send(Command::Shutdown(report)).unwrap();
        let mut run = Box::pin(Worker::new(StreamId::parse("s"), shared, rx).run());
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert!(
            reported.try_recv().is_err(),
            "one poll took all 201 commands: the driver did not yield"
        );
        assert!(
            count.0.load(Ordering::SeqCst) > 0,
            "a yield wakes the task at once"
        );
        // It goes on where it stopped, a backlog at a time, and takes them all.
        for _ in 0..10 {
            if let Ok(failed) = reported.try_recv() {
                assert_eq!(failed, 0);
                return;
            }
            let _ = run.as_mut().poll(&mut cx);
        }
        panic!("the shutdown command was never taken");
    }
}
