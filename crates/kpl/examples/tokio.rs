//! Producing on tokio (kpl's default features).
//!
//! ```sh
//! KPL_ENDPOINT=http://127.0.0.1:4567 KPL_STREAM=my-stream cargo run -p kpl --example tokio
//! ```
//!
//! Without `KPL_ENDPOINT`, it sends to the region's Kinesis; credentials and region
//! come from the AWS chain (environment, profile, container or instance role).

use std::time::Duration;

use kpl::{Config, Producer, PutRecord};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stream = std::env::var("KPL_STREAM").unwrap_or_else(|_| "my-stream".into());
    let mut config = Config::builder()
        .region(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()));
    if let Ok(endpoint) = std::env::var("KPL_ENDPOINT") {
        config = config.kinesis_endpoint(endpoint);
    }
    let producer = Producer::from_config(config.build()?).await?;
    let records = (0..100)
        .map(|i| PutRecord::new(format!("user-{i}"), format!("event {i}")))
        .collect();
    let mut stored = 0;
    for pending in producer.put_records(&stream, records).await? {
        let outcome = pending?.await;
        if outcome.is_success() {
            stored += 1;
        } else {
            eprintln!("failed: {:?}", outcome.error_code());
        }
    }
    println!("{stored} of 100 records stored in {stream}");
    producer.shutdown(Duration::from_secs(30)).await;
    Ok(())
}
