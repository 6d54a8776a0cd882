//! The tokio and smol adapters run the same code; smol's also under async-std.

#![cfg(all(feature = "tokio", feature = "smol"))]

use std::time::Duration;

use futures::channel::oneshot;
use kpl_runtime::Runtime;

/// Spawns a task that sleeps through the runtime and reports how long it slept.
async fn sleep_in_a_spawned_task(rt: Runtime) -> Duration {
    let (tx, rx) = oneshot::channel();
    let rt2 = rt.clone();
    rt.spawn(Box::pin(async move {
        let start = rt2.now();
        rt2.sleep(Duration::from_millis(30)).await;
        let _ = tx.send(rt2.now() - start);
    }));
    rx.await.expect("the task ran")
}

#[test]
fn tokio_adapter() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let slept = runtime.block_on(async { sleep_in_a_spawned_task(Runtime::tokio()).await });
    assert!(slept >= Duration::from_millis(30), "{slept:?}");
}

#[test]
fn smol_adapter() {
    let slept = smol::block_on(sleep_in_a_spawned_task(Runtime::smol()));
    assert!(slept >= Duration::from_millis(30), "{slept:?}");
}

#[test]
fn smol_adapter_inside_async_std() {
    let slept = async_std::task::block_on(sleep_in_a_spawned_task(Runtime::smol()));
    assert!(slept >= Duration::from_millis(30), "{slept:?}");
}
