//! Producing from code without an async runtime: `SyncProducer` runs the producer
//! on a background thread of its own.
//!
//! ```sh
//! KPL_ENDPOINT=http://127.0.0.1:4567 KPL_STREAM=my-stream cargo run -p kpl --example blocking
//! ```

use std::time::Duration;

use kpl::{Config, PutRecord, SyncProducer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stream = std::env::var("KPL_STREAM").unwrap_or_else(|_| "my-stream".into());
    let mut config = Config::builder()
        .region(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()));
    if let Ok(endpoint) = std::env::var("KPL_ENDPOINT") {
        config = config.kinesis_endpoint(endpoint);
    }
    let producer = SyncProducer::from_config(config.build()?)?;
    let pending: Vec<_> = (0..10)
        .map(|i| producer.put_record(&stream, PutRecord::new(format!("k{i}"), format!("v{i}"))))
        .collect::<Result<_, _>>()?;
    producer.flush_timeout(Duration::from_secs(30));
    let stored = pending
        .iter()
        .filter(|p| p.wait(Duration::ZERO).is_some_and(|r| r.is_success()))
        .count();
    println!("{stored} of 10 records stored");
    producer.shutdown(Duration::from_secs(30));
    Ok(())
}
