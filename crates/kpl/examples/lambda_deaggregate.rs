//! A consumer that needs only the codec: the user records inside a Lambda Kinesis
//! event (JSON on standard input, as Lambda hands it to a function), aggregated by
//! a KPL or not.
//!
//! ```sh
//! cargo run -p kpl --no-default-features --example lambda_deaggregate < event.json
//! ```
//!
//! With no input it reads an example event of its own.

use std::io::Read;

use base64::Engine;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    if text.trim().is_empty() {
        text = example_event();
    }
    let event: serde_json::Value = serde_json::from_str(&text)?;
    let records = event["Records"]
        .as_array()
        .ok_or("the event has no Records array")?;
    for (i, record) in records.iter().enumerate() {
        let kinesis = &record["kinesis"];
        let partition_key = kinesis["partitionKey"]
            .as_str()
            .ok_or_else(|| format!("record {i}: no kinesis.partitionKey"))?;
        let explicit = kinesis["explicitHashKey"].as_str();
        let data = base64::engine::general_purpose::STANDARD
            .decode(kinesis["data"].as_str().unwrap_or_default())
            .map_err(|e| format!("record {i}: kinesis.data is not base64: {e}"))?;
        for user in kpl::deaggregate(partition_key, explicit, &data)
            .map_err(|e| format!("record {i}: {e}"))?
        {
            println!(
                "{}\t{}",
                user.partition_key,
                String::from_utf8_lossy(user.data)
            );
        }
    }
    Ok(())
}

/// An event with one aggregated record of two user records.
fn example_event() -> String {
    let mut builder = kpl::codec::AggregateBuilder::new();
    builder.add(kpl::codec::UserRecord::new(
        "user-1".to_owned(),
        b"first".to_vec(),
    ));
    builder.add(kpl::codec::UserRecord::new(
        "user-2".to_owned(),
        b"second".to_vec(),
    ));
    let mut data = Vec::new();
    builder.encode_aggregate_into(&mut data);
    serde_json::json!({
        "Records": [{
            "kinesis": {
                "partitionKey": "a",
                "data": base64::engine::general_purpose::STANDARD.encode(data),
            },
            "eventSource": "aws:kinesis",
        }]
    })
    .to_string()
}
