//! What every record ends with: its outcome and every attempt.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::written::{Written, WrittenIter};

/// The codes of the producer's own failures, as strings (the
/// [`as_str`](ErrorCode::as_str) of [`ErrorCode::Expired`], [`ErrorCode::WrongShard`],
/// [`ErrorCode::RecordCountMismatch`], [`ErrorCode::Shutdown`], [`ErrorCode::Internal`]
/// and [`ErrorCode::RecordTooLarge`]).
pub mod codes {
    /// The record's time to live passed before it was stored.
    pub const EXPIRED: &str = "Expired";
    /// It was stored on a shard whose range does not hold its hash key (a KCL consumer
    /// would drop it from the aggregate); it was sent again.
    pub const WRONG_SHARD: &str = "Wrong Shard";
    /// The response did not have one result per entry.
    pub const RECORD_COUNT_MISMATCH: &str = "Record Count Mismatch";
    /// The producer shut down before the record had an outcome.
    pub const SHUTDOWN: &str = "Shutdown";
    /// The producer could not read the record back from an aggregate it made, to
    /// send it again (a bug: please report it). The record may have been stored.
    pub const INTERNAL: &str = "Internal Error";
    /// The record is larger than its stream's maximum record size (read from the
    /// stream); it was not sent.
    pub const RECORD_TOO_LARGE: &str = "Record Too Large";
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $text:expr,)*) => {
        /// Why an attempt failed: the service's error codes (per record or for the
        /// whole request), the transport's kinds of failure where the service gave
        /// no code, and the producer's own; any other code as [`Other`](Self::Other).
        ///
        /// ```
        /// use kpl_producer::ErrorCode;
        ///
        /// let code = ErrorCode::from("ProvisionedThroughputExceededException");
        /// assert_eq!(code, ErrorCode::ProvisionedThroughputExceeded);
        /// assert_eq!(code.to_string(), "ProvisionedThroughputExceededException");
        /// assert_eq!(ErrorCode::from("Teapot"), ErrorCode::Other("Teapot".into()));
        /// assert_eq!("Shutdown".parse::<ErrorCode>(), Ok(ErrorCode::Shutdown));
        /// ```
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// Any other code, as it came.
            Other(String),
        }

        impl ErrorCode {
            /// The code as the service (or the producer) spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(code) => code,
                }
            }
        }

        impl From<&str> for ErrorCode {
            fn from(code: &str) -> Self {
                match code {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }
    };
}

error_codes! {
    /// The shard's (or the stream's) write limit was exceeded: retried.
    ProvisionedThroughputExceeded => "ProvisionedThroughputExceededException",
    /// The service failed to store the record: retried.
    InternalFailure => "InternalFailure",
    /// The service was unavailable (HTTP 503).
    ServiceUnavailable => "ServiceUnavailable",
    /// The request was throttled (by the service's API limits).
    Throttling => "ThrottlingException",
    /// The stream's KMS key is disabled.
    KmsDisabled => "KMSDisabledException",
    /// The stream's KMS key is not in a state that allows its use.
    KmsInvalidState => "KMSInvalidStateException",
    /// The caller may not use the stream's KMS key.
    KmsAccessDenied => "KMSAccessDeniedException",
    /// The stream's KMS key was not found.
    KmsNotFound => "KMSNotFoundException",
    /// The account is not subscribed to KMS.
    KmsOptInRequired => "KMSOptInRequired",
    /// KMS throttled the request.
    KmsThrottling => "KMSThrottlingException",
    /// The stream does not exist (or is not active).
    ResourceNotFound => "ResourceNotFoundException",
    /// The caller may not write to the stream.
    AccessDenied => "AccessDeniedException",
    /// The credentials have expired.
    ExpiredToken => "ExpiredTokenException",
    /// The request was invalid.
    InvalidArgument => "InvalidArgumentException",
    /// The request did not validate.
    Validation => "ValidationException",
    /// An account or stream limit was exceeded.
    LimitExceeded => "LimitExceededException",
    /// The transport's kind, with no code from the service: throttled.
    Throttled => "Throttled",
    /// The transport's kind, with no code from the service: a transient failure
    /// (a timeout, a broken connection, a 5xx).
    Transient => "TransientError",
    /// The transport's kind, with no code from the service: not found.
    NotFound => "NotFound",
    /// The transport's kind, with no code from the service: access denied.
    AccessDeniedKind => "AccessDenied",
    /// The transport's kind, with no code from the service: an invalid request.
    InvalidRequest => "InvalidRequest",
    /// The transport's kind: the endpoint could not be resolved or reached.
    Endpoint => "EndpointError",
    /// The transport's kind: TLS failed.
    Tls => "TlsError",
    /// The transport's kind: any other failure.
    Error => "Error",
    /// The record's time to live passed before it was stored.
    Expired => "Expired",
    /// It was stored on a shard whose range does not hold its hash key (a KCL
    /// consumer would drop it from the aggregate); it was sent again.
    WrongShard => "Wrong Shard",
    /// The response did not have one result per entry; the record may have been
    /// stored.
    RecordCountMismatch => "Record Count Mismatch",
    /// The producer shut down before the record had an outcome.
    Shutdown => "Shutdown",
    /// The producer could not read the record back from an aggregate it made, to
    /// send it again (a bug: please report it). The record may have been stored.
    Internal => "Internal Error",
    /// The record is larger than its stream's maximum record size (read from the
    /// stream); it was not sent.
    RecordTooLarge => "Record Too Large",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ErrorCode {
    type Err = std::convert::Infallible;
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(code))
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One try at storing a record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// When the attempt's request started (or, for an attempt that never reached
    /// the service, such as an expiry, when it was decided).
    pub started: Instant,
    /// Time from the record's arrival (first attempt) or the previous attempt's end.
    pub delay: Duration,
    /// How long the request took.
    pub duration: Duration,
    /// The shard the record landed on or was refused by, if known.
    pub shard_id: Option<Arc<str>>,
    /// Stored by this attempt, or why not (boxed: an attempt that stored its record
    /// stays small).
    pub outcome: Result<(), Box<AttemptError>>,
}

/// Why an attempt did not store its record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptError {
    /// The error code.
    pub code: ErrorCode,
    /// The error message.
    pub message: String,
    /// Whether this failed attempt may have stored the record all the same: its
    /// request was sent and no answer came (a timeout, a connection broken
    /// mid-way). Kinesis has no idempotency key, so a later attempt may store it
    /// again.
    pub may_have_been_stored: bool,
}

impl AttemptError {
    /// An error with this code and message.
    pub(crate) fn new(
        code: ErrorCode,
        message: impl Into<String>,
        may_have_been_stored: bool,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            may_have_been_stored,
        }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AttemptError {}

impl Attempt {
    /// Whether the record was stored by this attempt.
    pub fn is_success(&self) -> bool {
        self.outcome.is_ok()
    }

    /// Why the attempt failed, for a failed attempt.
    pub fn error(&self) -> Option<&AttemptError> {
        self.outcome.as_ref().err().map(|e| &**e)
    }

    /// The error code, for a failed attempt.
    pub fn error_code(&self) -> Option<&ErrorCode> {
        self.error().map(|e| &e.code)
    }

    /// Whether this attempt failed in a way that may have stored the record all the
    /// same (see [`AttemptError::may_have_been_stored`]).
    pub fn may_have_been_stored(&self) -> bool {
        self.error().is_some_and(|e| e.may_have_been_stored)
    }
}

/// The outcome of one user record, with every attempt.
///
/// Failures are data: a record that could not be stored resolves with
/// [`is_success`](Self::is_success) false and its attempts say why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordResult {
    /// Whether the record was stored ([`is_success`](Self::is_success)).
    pub(crate) success: bool,
    /// The shard it was stored on (shared by the user records of one aggregate).
    pub shard_id: Option<Arc<str>>,
    /// Its sequence number there (an aggregate's user records share the aggregate's).
    pub sequence_number: Option<Arc<str>>,
    /// Every attempt, in order; the last one decided the outcome.
    pub attempts: Attempts,
}

/// A record's attempts, in order: a slice of [`Attempt`]s (it derefs to one).
///
/// Most records need one attempt, which is held inline: an outcome costs no
/// allocation of its own.
///
/// ```
/// # use kpl_producer::Attempts;
/// let attempts = Attempts::default();
/// assert!(attempts.is_empty());
/// assert_eq!(attempts.iter().count(), 0);
/// ```
#[derive(Clone, Default)]
pub struct Attempts(AttemptsRepr);

/// Equal when they hold equal attempts, however each holds them.
impl PartialEq for Attempts {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Attempts {}

#[derive(Clone)]
enum AttemptsRepr {
    One(Attempt),
    Many(Vec<Attempt>),
}

impl Default for AttemptsRepr {
    fn default() -> Self {
        Self::Many(Vec::new())
    }
}

impl Attempts {
    /// One attempt.
    pub(crate) fn one(attempt: Attempt) -> Self {
        Self(AttemptsRepr::One(attempt))
    }

    /// The attempts, as a vector.
    pub fn into_vec(self) -> Vec<Attempt> {
        match self.0 {
            AttemptsRepr::One(a) => vec![a],
            AttemptsRepr::Many(v) => v,
        }
    }
}

impl From<Vec<Attempt>> for Attempts {
    fn from(attempts: Vec<Attempt>) -> Self {
        Self(AttemptsRepr::Many(attempts))
    }
}

impl std::ops::Deref for Attempts {
    type Target = [Attempt];
    fn deref(&self) -> &[Attempt] {
        match &self.0 {
            AttemptsRepr::One(a) => std::slice::from_ref(a),
            AttemptsRepr::Many(v) => v,
        }
    }
}

impl<'a> IntoIterator for &'a Attempts {
    type Item = &'a Attempt;
    type IntoIter = std::slice::Iter<'a, Attempt>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl IntoIterator for Attempts {
    type Item = Attempt;
    type IntoIter = std::vec::IntoIter<Attempt>;
    fn into_iter(self) -> Self::IntoIter {
        self.into_vec().into_iter()
    }
}

impl std::fmt::Debug for Attempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl RecordResult {
    /// Whether the record was stored.
    pub fn is_success(&self) -> bool {
        self.success
    }

    /// The last attempt's error, for a failed record.
    pub fn error(&self) -> Option<&AttemptError> {
        self.attempts.last().and_then(Attempt::error)
    }

    /// The last attempt's error code, for a failed record.
    pub fn error_code(&self) -> Option<&ErrorCode> {
        self.error().map(|e| &e.code)
    }

    /// The last attempt's error message, for a failed record.
    pub fn error_message(&self) -> Option<&str> {
        self.error().map(|e| e.message.as_str())
    }

    /// For a stored record: whether an earlier attempt may have stored it too, so
    /// that it may be in the stream more than once (a consumer that must see it once
    /// deduplicates it, by its data). Always false for a failed record: see
    /// [`may_have_been_stored`](Self::may_have_been_stored).
    pub fn may_be_duplicated(&self) -> bool {
        self.success && self.attempts.iter().any(Attempt::may_have_been_stored)
    }

    /// For a failed record: whether it may have been stored all the same (an
    /// attempt timed out, or its connection broke, after the request was sent).
    /// Always false for a stored record.
    pub fn may_have_been_stored(&self) -> bool {
        !self.success && self.attempts.iter().any(Attempt::may_have_been_stored)
    }
}

struct SlotState {
    /// Boxed: a waiting record's slot stays small.
    result: Option<Box<RecordResult>>,
    /// Whether the outcome came (it may have been taken by the future since).
    resolved: bool,
    waker: Option<Waker>,
    /// Threads blocked in `wait`: only then is the condvar signalled (a signal is a
    /// system call).
    waiting: usize,
}

pub(crate) struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
    /// When the record was put (the time of the attempt of a record the producer
    /// stopped before it had an outcome).
    pub(crate) arrival: Instant,
}

/// Outcomes taken from an [`Outcomes`] queue, in the order they settled: an
/// iterator of (id, outcome) that makes each as it goes, from the driver's batches
/// as written (never copied into one; see `written.rs`).
pub struct OutcomeBatch {
    batches: std::vec::IntoIter<Written>,
    current: WrittenIter,
    left: usize,
}

impl std::fmt::Debug for OutcomeBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeBatch")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl OutcomeBatch {
    fn of(state: &mut QueueState) -> Self {
        let left = std::mem::take(&mut state.count);
        state.pending -= left;
        Self {
            batches: std::mem::take(&mut state.outcomes).into_iter(),
            current: WrittenIter::default(),
            left,
        }
    }

    /// Whether it holds no outcome.
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }
}

impl Iterator for OutcomeBatch {
    type Item = (RecordId, RecordResult);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                self.left -= 1;
                return Some(item);
            }
            self.current = self.batches.next()?.into_iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for OutcomeBatch {}

/// A record put with [`Producer::try_put_records_to`](crate::Producer::try_put_records_to):
/// its outcome comes out of the [`Outcomes`] queue under this id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(pub u64);

/// A queue of outcomes, delivered in batches: for records nobody awaits one by one
/// (no result slot, no waker and no lock per record).
///
/// Records put with [`Producer::try_put_records_to`](crate::Producer::try_put_records_to)
/// get a [`RecordId`] each; their outcomes arrive here as the pipeline settles them,
/// each exactly once, also when the producer shuts down.
///
/// ```
/// # async fn example(producer: kpl_producer::Producer) -> Result<(), kpl_producer::PutError> {
/// use kpl_producer::{Outcomes, PutRecord};
///
/// let outcomes = Outcomes::new();
/// let records = vec![PutRecord::new("key", b"data".to_vec())];
/// let admitted = producer.try_put_records_to("my-stream", records, &outcomes)?;
/// assert!(admitted.rest.is_empty());
/// let id = admitted.results[0].clone()?;
/// while outcomes.pending() > 0 {
///     for (done, result) in outcomes.next().await {
///         assert_eq!(done, id);
///         println!("{}", result.is_success());
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Outcomes {
    queue: Arc<Queue>,
}

impl std::fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcomes")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    /// When the queue was made (the time of the attempt of a record the producer
    /// stopped before it had an outcome).
    pub(crate) made: Instant,
}

struct QueueState {
    /// Batches as the driver delivered them (not copied into one).
    outcomes: Vec<Written>,
    /// Outcomes in `outcomes`.
    count: usize,
    /// Records admitted whose outcome was not taken yet.
    pending: usize,
    waker: Option<Waker>,
}

impl Queue {
    pub(crate) fn push(&self, batch: Written) {
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.count += batch.len();
            state.outcomes.push(batch);
            self.ready.notify_all();
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Default for Outcomes {
    fn default() -> Self {
        Self::new()
    }
}

impl Outcomes {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            queue: Arc::new(Queue {
                state: Mutex::new(QueueState {
                    outcomes: Vec::new(),
                    count: 0,
                    pending: 0,
                    waker: None,
                }),
                ready: Condvar::new(),
                made: Instant::now(),
            }),
        }
    }

    /// Records put to this queue whose outcome has not been taken yet.
    pub fn pending(&self) -> usize {
        self.lock().pending
    }

    /// The outcomes that came so far (maybe none), in the order they settled.
    pub fn take(&self) -> OutcomeBatch {
        OutcomeBatch::of(&mut self.lock())
    }

    /// The next outcomes: waits until at least one came, unless none is pending
    /// (then it returns an empty batch at once).
    pub async fn next(&self) -> OutcomeBatch {
        std::future::poll_fn(|cx| {
            let mut state = self.lock();
            if state.count > 0 || state.pending == 0 {
                return Poll::Ready(OutcomeBatch::of(&mut state));
            }
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Blocks the thread until at least one outcome came or `timeout` passed; returns
    /// what came (empty at once when none is pending).
    pub fn wait(&self, timeout: Duration) -> OutcomeBatch {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while state.count == 0 && state.pending > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .queue
                .ready
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        OutcomeBatch::of(&mut state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.queue
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `n` records admitted to this queue (under the producer's lock, before
    /// any of them can settle).
    pub(crate) fn admitted(&self, n: usize) {
        self.lock().pending += n;
    }

    /// The queue outcomes go to.
    pub(crate) fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }
}

/// Gives `slot` its outcome (once: a second one is ignored) and wakes whoever waits.
pub(crate) fn fill(slot: &Slot, result: RecordResult) {
    let waker = {
        let mut state = slot.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.resolved {
            return;
        }
        state.result = Some(Box::new(result));
        state.resolved = true;
        if state.waiting > 0 {
            slot.ready.notify_all();
        }
        state.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

/// A record's outcome, to `.await` (any runtime) or to [`wait`](Self::wait) for from
/// blocking code.
#[must_use = "the outcome tells whether the record was stored"]
pub struct RecordFuture {
    slot: Arc<Slot>,
}

impl std::fmt::Debug for RecordFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordFuture")
            .field("resolved", &self.is_resolved())
            .finish()
    }
}

/// A new slot for a record put at `arrival`, and the future that reads it.
pub(crate) fn slot(arrival: Instant) -> (Arc<Slot>, RecordFuture) {
    let slot = Arc::new(Slot {
        state: Mutex::new(SlotState {
            result: None,
            resolved: false,
            waker: None,
            waiting: 0,
        }),
        ready: Condvar::new(),
        arrival,
    });
    (slot.clone(), RecordFuture { slot })
}

impl RecordFuture {
    /// Whether the outcome is there.
    pub fn is_resolved(&self) -> bool {
        self.slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .resolved
    }

    /// Blocks the thread until the outcome is there or `timeout` passes (then
    /// `None`; the record is still being worked on). Returns a copy: it can be called
    /// again. Awaiting the future instead moves the outcome out (and `wait` on a
    /// future that was polled to its outcome returns `None`).
    pub fn wait(&self, timeout: Duration) -> Option<RecordResult> {
        let deadline = Instant::now() + timeout;
        let mut state = self
            .slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(result) = &state.result {
                return Some(RecordResult::clone(result));
            }
            if state.resolved {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state.waiting += 1;
            state = self
                .slot
                .ready
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiting -= 1;
        }
    }
}

impl Future for RecordFuture {
    type Output = RecordResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RecordResult> {
        let mut state = self
            .slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match state.result.take() {
            Some(result) => Poll::Ready(*result),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(code: Option<&str>) -> Attempt {
        Attempt {
            started: Instant::now(),
            delay: Duration::ZERO,
            duration: Duration::from_millis(5),
            shard_id: None,
            outcome: match code {
                None => Ok(()),
                Some(c) => Err(Box::new(AttemptError::new(c.into(), "", false))),
            },
        }
    }

    #[test]
    fn error_codes_read_back_as_they_are_spelt() {
        for code in [
            "ProvisionedThroughputExceededException",
            "InternalFailure",
            "KMSThrottlingException",
            "KMSOptInRequired",
            "ResourceNotFoundException",
            "TransientError",
            codes::EXPIRED,
            codes::WRONG_SHARD,
            codes::RECORD_COUNT_MISMATCH,
            codes::SHUTDOWN,
            codes::INTERNAL,
            codes::RECORD_TOO_LARGE,
            "Teapot",
        ] {
            let c = ErrorCode::from(code);
            assert_eq!(c.as_str(), code);
            assert_eq!(c.to_string(), code);
            assert_eq!(code.parse::<ErrorCode>(), Ok(c.clone()));
            assert_eq!(c, code);
        }
        assert_eq!(ErrorCode::from(codes::SHUTDOWN), ErrorCode::Shutdown);
        assert_eq!(ErrorCode::from(codes::WRONG_SHARD), ErrorCode::WrongShard);
        assert_eq!(
            ErrorCode::from("ProvisionedThroughputExceededException"),
            ErrorCode::ProvisionedThroughputExceeded
        );
        assert_eq!(
            ErrorCode::from("Teapot"),
            ErrorCode::Other("Teapot".to_owned())
        );
    }

    #[test]
    fn an_attempt_is_stored_or_says_why_not() {
        let ok = attempt(None);
        assert!(ok.is_success());
        assert_eq!(ok.error(), None);
        assert!(!ok.may_have_been_stored());
        let mut failed = attempt(Some("InternalFailure"));
        assert!(!failed.is_success());
        assert_eq!(failed.error_code(), Some(&ErrorCode::InternalFailure));
        assert!(!failed.may_have_been_stored());
        failed.outcome = Err(Box::new(AttemptError::new(
            ErrorCode::Transient,
            "timed out",
            true,
        )));
        assert!(failed.may_have_been_stored());
        assert_eq!(
            failed.error().unwrap().to_string(),
            "TransientError: timed out"
        );
        // A stored attempt carries no error: it stays as small as before the error
        // moved into its outcome.
        assert!(size_of::<Attempt>() <= 72, "{}", size_of::<Attempt>());
    }

    #[test]
    fn one_attempt_reads_as_a_slice_of_one() {
        let a = attempt(None);
        let one = Attempts::one(a.clone());
        assert_eq!(one.len(), 1);
        assert_eq!(one[0], a);
        assert_eq!(one.last(), Some(&a));
        assert_eq!(format!("{one:?}"), format!("{:?}", vec![a.clone()]));
        assert_eq!(one.clone().into_vec(), vec![a.clone()]);
        let many = Attempts::from(vec![attempt(Some("InternalFailure")), a.clone()]);
        assert_eq!(many.len(), 2);
        assert_eq!((&many).into_iter().filter(|x| x.is_success()).count(), 1);
        assert_ne!(one, many);
    }

    #[test]
    fn the_future_moves_the_outcome_out_and_wait_copies_it() {
        let (slot, future) = slot(Instant::now());
        assert!(!future.is_resolved());
        assert_eq!(future.wait(Duration::from_millis(1)), None);
        fill(
            &slot,
            RecordResult {
                success: true,
                shard_id: Some("shardId-000000000000".into()),
                sequence_number: Some("1".into()),
                attempts: Attempts::one(attempt(None)),
            },
        );
        assert!(future.is_resolved());
        let copy = future.wait(Duration::ZERO).expect("resolved");
        assert!(copy.is_success());
        assert_eq!(future.wait(Duration::ZERO), Some(copy.clone()));
        let moved = futures::executor::block_on(future);
        assert_eq!(moved, copy);
    }

    fn ok() -> RecordResult {
        RecordResult {
            success: true,
            shard_id: None,
            sequence_number: None,
            attempts: Attempts::one(attempt(None)),
        }
    }

    #[test]
    fn an_outcome_queue_hands_out_batches_in_order_and_counts_what_is_pending() {
        let outcomes = Outcomes::new();
        outcomes.admitted(5);
        let queue = outcomes.queue();
        queue.push(
            vec![(RecordId(0), ok()), (RecordId(4), ok())]
                .into_iter()
                .collect(),
        );
        queue.push(vec![(RecordId(1), ok())].into_iter().collect());
        assert_eq!(outcomes.pending(), 5);
        let batch = outcomes.take();
        assert_eq!(batch.len(), 3);
        let ids: Vec<u64> = batch.map(|(id, _)| id.0).collect();
        assert_eq!(ids, vec![0, 4, 1]);
        assert_eq!(outcomes.pending(), 2);
        assert!(outcomes.take().is_empty());
        queue.push(vec![(RecordId(3), ok())].into_iter().collect());
        let rest: Vec<_> = outcomes.wait(Duration::from_secs(1)).collect();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].0, RecordId(3));
        assert_eq!(outcomes.pending(), 1);
    }

    #[test]
    fn a_slot_takes_its_first_outcome_only() {
        let (slot, future) = slot(Instant::now());
        fill(&slot, ok());
        let mut failed = ok();
        failed.success = false;
        fill(&slot, failed);
        assert!(futures::executor::block_on(future).is_success());
    }
}
