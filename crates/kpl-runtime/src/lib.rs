//! The runtime boundary of kpl-rs.
//!
//! The producer's pipeline never names an async runtime: it spawns tasks through an
//! [`Executor`] and waits through a [`Timer`], both object-safe traits carried
//! together by a [`Runtime`] handle. Adapters ship for tokio (feature `tokio`) and
//! smol (feature `smol`, whose async-io timers also work under async-std and plain
//! threads); [`VirtualClock`] and [`Simulation`] run a pipeline on virtual time, so a
//! test covers minutes of traffic in milliseconds and runs the same way every time.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use kpl_runtime::{Runtime, Simulation};
//!
//! let sim = Simulation::new();
//! let rt: Runtime = sim.runtime();
//! let (tx, rx) = std::sync::mpsc::channel();
//! let timer = rt.clone();
//! rt.spawn(Box::pin(async move {
//!     timer.sleep(Duration::from_secs(60)).await;
//!     tx.send(()).unwrap();
//! }));
//! sim.run_for(Duration::from_secs(59));
//! assert!(rx.try_recv().is_err());
//! sim.run_for(Duration::from_secs(1));
//! assert!(rx.try_recv().is_ok()); // a minute passed, virtually
//! ```
//!
//! # Features
//!
//! - `tokio`: [`Runtime::tokio`] (spawns on the current tokio runtime, tokio timers).
//! - `smol`: [`Runtime::smol`] (smol's global executor, async-io timers).
//!
//! # Cancel safety
//!
//! The futures returned by [`Timer::sleep_until`] can be dropped at any time; a
//! dropped sleep leaves nothing behind.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod sim;
#[cfg(feature = "smol")]
mod smol_rt;
#[cfg(feature = "tokio")]
mod tokio_rt;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The project's seeded generator, kept in `kpl-codec` so that the sans-IO cores share
/// it without depending on this crate.
pub use kpl_codec::SplitMix64;
pub use sim::{Simulation, VirtualClock};
#[cfg(feature = "smol")]
pub use smol_rt::{SmolExecutor, SmolTimer};
#[cfg(feature = "tokio")]
pub use tokio_rt::{TokioExecutor, TokioTimer};

/// A boxed future the runtime can run: what the pipeline spawns.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A boxed sleep returned by a [`Timer`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs tasks in the background.
pub trait Executor: Send + Sync + 'static {
    /// Starts `future` and lets it run to completion on its own.
    fn spawn(&self, future: BoxFuture);
}

/// The source of time: what `now` is and how to wait until a moment.
pub trait Timer: Send + Sync + 'static {
    /// The current time, as this timer sees it (virtual in tests).
    fn now(&self) -> Instant;
    /// A future that completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> Sleep;
}

/// The executor and the timer a pipeline runs on, cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    executor: Arc<dyn Executor>,
    timer: Arc<dyn Timer>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime from any executor and timer.
    pub fn new(executor: Arc<dyn Executor>, timer: Arc<dyn Timer>) -> Self {
        Self { executor, timer }
    }

    /// Spawns on the tokio runtime current at this call, with tokio's timers.
    ///
    /// # Panics
    /// Outside a tokio runtime, as `tokio::runtime::Handle::current` does.
    #[cfg(feature = "tokio")]
    pub fn tokio() -> Self {
        Self::new(Arc::new(TokioExecutor::current()), Arc::new(TokioTimer))
    }

    /// Spawns on smol's global executor, with async-io's timers. Works from any
    /// thread, inside or outside an async runtime.
    #[cfg(feature = "smol")]
    pub fn smol() -> Self {
        Self::new(Arc::new(SmolExecutor), Arc::new(SmolTimer))
    }

    /// Starts `future` in the background.
    pub fn spawn(&self, future: BoxFuture) {
        self.executor.spawn(future);
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.timer.now()
    }

    /// Completes at `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        self.timer.sleep_until(deadline)
    }

    /// Completes after `duration`.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.timer.sleep_until(self.timer.now() + duration)
    }

    /// The executor.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.executor
    }

    /// The timer.
    pub fn timer(&self) -> &Arc<dyn Timer> {
        &self.timer
    }
}
