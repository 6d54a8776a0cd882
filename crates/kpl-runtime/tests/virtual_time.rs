//! The virtual clock and the simulation executor.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kpl_runtime::{Simulation, Timer, VirtualClock};

#[test]
fn timers_fire_in_deadline_order_only_when_time_moves() {
    let sim = Simulation::new();
    let rt = sim.runtime();
    let log = Arc::new(Mutex::new(Vec::new()));
    for (name, secs) in [("c", 30), ("a", 10), ("b", 20), ("a2", 10)] {
        let rt2 = rt.clone();
        let log = log.clone();
        rt.spawn(Box::pin(async move {
            rt2.sleep(Duration::from_secs(secs)).await;
            log.lock().unwrap().push((name, rt2.now()));
        }));
    }
    sim.run_until_stalled();
    assert!(
        log.lock().unwrap().is_empty(),
        "no time passed, nothing fired"
    );
    let start = sim.clock().now();
    sim.run_for(Duration::from_secs(25));
    let fired: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .map(|&(n, t)| (n, (t - start).as_secs()))
        .collect();
    assert_eq!(fired, [("a", 10), ("a2", 10), ("b", 20)]);
    sim.run_for(Duration::from_secs(10));
    assert_eq!(log.lock().unwrap().len(), 4);
    assert_eq!(sim.clock().pending_sleeps(), 0);
}

#[test]
fn dropped_sleeps_leave_nothing_behind() {
    let clock = VirtualClock::new();
    let sleep = clock.sleep_until(clock.now() + Duration::from_secs(5));
    let waker = futures::task::noop_waker();
    let mut sleep = sleep;
    assert!(
        sleep
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
            .is_pending()
    );
    assert_eq!(clock.pending_sleeps(), 1);
    drop(sleep);
    assert_eq!(clock.pending_sleeps(), 0);
    assert_eq!(clock.next_deadline(), None);
}

#[test]
fn a_day_of_virtual_time_runs_at_once() {
    let sim = Simulation::new();
    let rt = sim.runtime();
    let ticks = Arc::new(Mutex::new(0u32));
    let t = ticks.clone();
    let rt2 = rt.clone();
    rt.spawn(Box::pin(async move {
        for _ in 0..86_400 {
            rt2.sleep(Duration::from_secs(1)).await;
            *t.lock().unwrap() += 1;
        }
    }));
    let wall = std::time::Instant::now();
    sim.run_for(Duration::from_secs(86_400));
    assert_eq!(*ticks.lock().unwrap(), 86_400);
    assert_eq!(sim.clock().elapsed(), Duration::from_secs(86_400));
    // Not a speed threshold: a day of sleeping cannot have slept for real.
    assert!(wall.elapsed() < Duration::from_secs(3600));
}

#[test]
fn block_on_returns_the_output_or_none_when_stuck() {
    let sim = Simulation::new();
    let rt = sim.runtime();
    let rt2 = rt.clone();
    let value = sim.block_on(async move {
        rt2.sleep(Duration::from_millis(250)).await;
        7
    });
    assert_eq!(value, Some(7));
    assert_eq!(sim.clock().elapsed(), Duration::from_millis(250));
    let never = sim.block_on(futures::future::pending::<()>());
    assert_eq!(never, None);
}

#[test]
fn sleeping_into_the_past_completes_at_once() {
    let sim = Simulation::new();
    let rt = sim.runtime();
    let past = rt.now();
    sim.run_for(Duration::from_secs(1));
    let rt2 = rt.clone();
    assert_eq!(
        sim.block_on(async move { rt2.sleep_until(past).await }),
        Some(())
    );
    assert_eq!(sim.clock().elapsed(), Duration::from_secs(1));
}

#[test]
fn dropping_the_simulation_drops_its_unfinished_tasks() {
    struct Flag(Arc<Mutex<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = true;
        }
    }
    let sim = Simulation::new();
    let rt = sim.runtime();
    let dropped = Arc::new(Mutex::new(false));
    let flag = Flag(dropped.clone());
    let rt2 = rt.clone();
    rt.spawn(Box::pin(async move {
        let _flag = flag;
        rt2.sleep(Duration::from_secs(3600)).await;
    }));
    sim.run_for(Duration::from_secs(1));
    assert!(!*dropped.lock().unwrap());
    drop(rt);
    drop(sim);
    assert!(
        *dropped.lock().unwrap(),
        "the pending task was dropped with the simulation"
    );
}
