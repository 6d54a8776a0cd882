//! Virtual time: a clock whose timers fire only when a test moves it, and a
//! single-threaded executor that runs everything between two moves.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::task::{ArcWake, waker_ref};

use crate::{BoxFuture, Executor, Runtime, Sleep, Timer};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere (a failed test assertion) must not hide the first failure.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct ClockState {
    start: Instant,
    now: Instant,
    next_id: u64,
    /// Pending sleeps in deadline order (ties in creation order).
    timers: BTreeMap<(Instant, u64), Option<Waker>>,
}

/// A clock that moves only when told to.
///
/// [`now`](Timer::now) starts at the moment the clock is made and advances only
/// through [`advance`](Self::advance) and [`advance_to`](Self::advance_to), which fire
/// the sleeps they pass in deadline order (creation order on ties), setting `now` to
/// each deadline as it fires.
///
/// ```
/// use std::time::Duration;
/// use kpl_runtime::{Timer, VirtualClock};
///
/// let clock = VirtualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(3600));
/// assert_eq!(clock.now() - start, Duration::from_secs(3600));
/// ```
#[derive(Clone)]
pub struct VirtualClock {
    state: Arc<Mutex<ClockState>>,
}

impl std::fmt::Debug for VirtualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("VirtualClock")
            .field("elapsed", &(state.now - state.start))
            .field("pending_sleeps", &state.timers.len())
            .finish()
    }
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualClock {
    /// A clock reading the real time once, now, and never again.
    pub fn new() -> Self {
        let start = Instant::now();
        Self {
            state: Arc::new(Mutex::new(ClockState {
                start,
                now: start,
                next_id: 0,
                timers: BTreeMap::new(),
            })),
        }
    }

    /// Virtual time elapsed since the clock was made.
    pub fn elapsed(&self) -> Duration {
        let state = lock(&self.state);
        state.now - state.start
    }

    /// The earliest pending sleep's deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        lock(&self.state).timers.keys().next().map(|&(d, _)| d)
    }

    /// Number of pending sleeps.
    pub fn pending_sleeps(&self) -> usize {
        lock(&self.state).timers.len()
    }

    /// Moves time forward by `duration`, firing every sleep it passes.
    pub fn advance(&self, duration: Duration) {
        let target = lock(&self.state).now + duration;
        self.advance_to(target);
    }

    /// Moves time forward to `target` (never back), firing every sleep due by then
    /// in deadline order.
    pub fn advance_to(&self, target: Instant) {
        loop {
            let waker = {
                let mut state = lock(&self.state);
                match state.timers.first_key_value() {
                    Some((&(deadline, id), _)) if deadline <= target => {
                        if deadline > state.now {
                            state.now = deadline;
                        }
                        state.timers.remove(&(deadline, id)).flatten()
                    }
                    _ => {
                        if target > state.now {
                            state.now = target;
                        }
                        return;
                    }
                }
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl Timer for VirtualClock {
    fn now(&self) -> Instant {
        lock(&self.state).now
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(VirtualSleep {
            state: self.state.clone(),
            deadline,
            id: None,
        })
    }
}

struct VirtualSleep {
    state: Arc<Mutex<ClockState>>,
    deadline: Instant,
    id: Option<u64>,
}

impl Future for VirtualSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut state = lock(&this.state);
        if state.now >= this.deadline {
            if let Some(id) = this.id.take() {
                state.timers.remove(&(this.deadline, id));
            }
            return Poll::Ready(());
        }
        let id = match this.id {
            Some(id) => id,
            None => {
                let id = state.next_id;
                state.next_id += 1;
                this.id = Some(id);
                id
            }
        };
        state
            .timers
            .insert((this.deadline, id), Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for VirtualSleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock(&self.state).timers.remove(&(self.deadline, id));
        }
    }
}

struct Task {
    id: u64,
    future: Mutex<Option<BoxFuture>>,
    queue: Arc<Mutex<VecDeque<Arc<Task>>>>,
}

impl ArcWake for Task {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        lock(&arc_self.queue).push_back(arc_self.clone());
    }
}

/// Every unfinished task, by id: the simulation owns them, as a runtime does, so
/// dropping the simulation drops their futures (a pending task is otherwise only
/// held by wakers, which can form cycles).
#[derive(Default)]
struct Tasks {
    next_id: u64,
    live: HashMap<u64, Arc<Task>>,
}

/// The simulation's executor: tasks run on the thread that drives the simulation.
#[derive(Clone, Default)]
struct SimExecutor {
    queue: Arc<Mutex<VecDeque<Arc<Task>>>>,
    tasks: Arc<Mutex<Tasks>>,
}

impl Executor for SimExecutor {
    fn spawn(&self, future: BoxFuture) {
        let task = {
            let mut tasks = lock(&self.tasks);
            let id = tasks.next_id;
            tasks.next_id += 1;
            let task = Arc::new(Task {
                id,
                future: Mutex::new(Some(future)),
                queue: self.queue.clone(),
            });
            tasks.live.insert(id, task.clone());
            task
        };
        lock(&self.queue).push_back(task);
    }
}

impl SimExecutor {
    /// Polls ready tasks until none is left; returns how many polls it made.
    fn run_until_stalled(&self) -> usize {
        let mut polls = 0;
        loop {
            let Some(task) = lock(&self.queue).pop_front() else {
                return polls;
            };
            let mut slot = lock(&task.future);
            if let Some(future) = slot.as_mut() {
                polls += 1;
                let waker = waker_ref(&task);
                if future
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_ready()
                {
                    *slot = None;
                    lock(&self.tasks).live.remove(&task.id);
                }
            }
        }
    }
}

/// Drops every unfinished task's future when the last `Simulation` handle goes.
#[derive(Default)]
struct Owner {
    executor: SimExecutor,
    clock: VirtualClock,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let tasks: Vec<Arc<Task>> = lock(&self.executor.tasks)
            .live
            .drain()
            .map(|(_, t)| t)
            .collect();
        lock(&self.executor.queue).clear();
        lock(&self.clock.state).timers.clear();
        for task in tasks {
            // Dropping a future may wake or drop others: never under a lock.
            let future = lock(&task.future).take();
            drop(future);
        }
    }
}

/// A virtual clock and an executor that runs on it: the whole of a test's async
/// world, deterministic and as fast as the CPU allows.
///
/// Tasks spawned through [`runtime`](Self::runtime) run only inside
/// [`run_for`](Self::run_for), [`run_until`](Self::run_until) and
/// [`block_on`](Self::block_on), on the calling thread: everything ready runs, then
/// time jumps to the next sleep's deadline, and so on. When the last handle of the
/// simulation is dropped, every unfinished task is dropped with it, as a runtime
/// does at shutdown.
#[derive(Clone)]
pub struct Simulation {
    clock: VirtualClock,
    executor: SimExecutor,
    _owner: Arc<OwnerCell>,
}

/// Builds the [`Owner`] lazily from the simulation's own parts.
#[derive(Default)]
struct OwnerCell(Mutex<Option<Owner>>);

impl Drop for OwnerCell {
    fn drop(&mut self) {
        let owner = self
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(owner);
    }
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Default for Simulation {
    fn default() -> Self {
        Self::new()
    }
}

impl Simulation {
    /// A new simulation at virtual time zero.
    pub fn new() -> Self {
        let sim = Self {
            clock: VirtualClock::new(),
            executor: SimExecutor::default(),
            _owner: Arc::default(),
        };
        *lock(&sim._owner.0) = Some(Owner {
            executor: sim.executor.clone(),
            clock: sim.clock.clone(),
        });
        sim
    }

    /// The [`Runtime`] to hand to the code under test.
    pub fn runtime(&self) -> Runtime {
        Runtime::new(
            Arc::new(self.executor.clone()),
            Arc::new(self.clock.clone()),
        )
    }

    /// The clock.
    pub fn clock(&self) -> &VirtualClock {
        &self.clock
    }

    /// Runs every ready task, without moving time; returns the number of polls.
    pub fn run_until_stalled(&self) -> usize {
        self.executor.run_until_stalled()
    }

    /// Runs tasks and moves time up to `now + duration`.
    pub fn run_for(&self, duration: Duration) {
        let target = self.clock.now() + duration;
        self.run_until(target);
    }

    /// Runs tasks, jumping from one sleep's deadline to the next, until `target`.
    pub fn run_until(&self, target: Instant) {
        loop {
            self.executor.run_until_stalled();
            match self.clock.next_deadline() {
                Some(deadline) if deadline <= target => self.clock.advance_to(deadline),
                _ => break,
            }
        }
        self.clock.advance_to(target);
        self.executor.run_until_stalled();
    }

    /// Runs `future` to completion on virtual time, with everything it spawned.
    ///
    /// Returns `None` if it can never complete: nothing is ready and no sleep is
    /// pending.
    pub fn block_on<F>(&self, future: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let slot = Arc::new(Mutex::new(None));
        let out = slot.clone();
        self.executor.spawn(Box::pin(async move {
            let value = future.await;
            *lock(&out) = Some(value);
        }));
        loop {
            self.executor.run_until_stalled();
            if let Some(value) = lock(&slot).take() {
                return Some(value);
            }
            let deadline = self.clock.next_deadline()?;
            self.clock.advance_to(deadline);
        }
    }
}
