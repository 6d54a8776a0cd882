//! Producing on smol, with no tokio runtime in the build:
//!
//! ```sh
//! KPL_ENDPOINT=http://127.0.0.1:4567 KPL_STREAM=my-stream \
//!     cargo run -p kpl --no-default-features --features smol,aws --example smol
//! ```

use std::time::Duration;

use kpl::{Config, Producer, PutRecord};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let stream = std::env::var("KPL_STREAM").unwrap_or_else(|_| "my-stream".into());
        let mut config = Config::builder()
            .region(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()));
        if let Ok(endpoint) = std::env::var("KPL_ENDPOINT") {
            config = config.kinesis_endpoint(endpoint);
        }
        let producer = Producer::from_config(config.build()?).await?;
        let outcome = producer
            .put_record(&stream, PutRecord::new("pk-1", b"hello from smol".to_vec()))
            .await?
            .await;
        println!(
            "stored: {} (shard {:?}, sequence number {:?})",
            outcome.is_success(),
            outcome.shard_id,
            outcome.sequence_number
        );
        producer.shutdown(Duration::from_secs(30)).await;
        Ok(())
    })
}
