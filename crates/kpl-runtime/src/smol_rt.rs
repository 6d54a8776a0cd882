//! smol adapters: smol's global executor and async-io's timers.

use std::time::Instant;

use crate::{BoxFuture, Executor, Sleep, Timer};

/// Spawns on smol's global executor (its own threads; no runtime needed).
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolExecutor;

impl Executor for SmolExecutor {
    fn spawn(&self, future: BoxFuture) {
        smol::spawn(future).detach();
    }
}

/// async-io's timers, driven by async-io's own reactor: they work under smol,
/// async-std, or a plain `block_on`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolTimer;

impl Timer for SmolTimer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let timer = async_io::Timer::at(deadline);
        Box::pin(async move {
            timer.await;
        })
    }
}
