//! An awsJson 1.1 client for the Kinesis emulators (they do not check signatures,
//! so a signed-looking header does), and the stream read back as a KCL consumer
//! reads it.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kpl_codec::{HashKey, deaggregate};
use serde_json::{Value, json};

use crate::Error;
use crate::http::read_message;

/// A Kinesis endpoint spoken to over plain HTTP/1.1, one connection a call.
#[derive(Clone, Debug)]
pub struct Kinesis {
    /// `host:port`.
    authority: String,
    timeout: Duration,
}

/// Every user record of a stream as a KCL consumer reads it.
#[derive(Clone, Debug, Default)]
pub struct ReadBack {
    /// The data of each user record kept, shard by shard in the order stored, a
    /// shard after its parents (shards by id: a child's id is higher than its
    /// parents'), as a KCL consumer reads them.
    pub records: Vec<Vec<u8>>,
    /// The partition key of each of `records`.
    pub partition_keys: Vec<String>,
    /// Copies dropped because their hash key lies outside the range of the shard
    /// they were read from.
    pub outside: u64,
}

impl Kinesis {
    /// A client of `endpoint` (`http://host:port`).
    pub fn new(endpoint: &str) -> Self {
        Self {
            authority: endpoint
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
            timeout: Duration::from_secs(60),
        }
    }

    /// The same client with another read timeout per call (60 s unless set).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// One call of `target` (`ListShards`, …) with `body`; the answer's JSON
    /// (`Null` for an empty one). An answer other than 200 is an error.
    pub fn call(&self, target: &str, body: &Value) -> Result<Value, Error> {
        let io = |e| Error::caused(format!("{target} to {}", self.authority), e);
        let mut stream = TcpStream::connect(&self.authority).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        let body = body.to_string();
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-amz-json-1.1\r\n\
             X-Amz-Target: Kinesis_20131202.{target}\r\nX-Amz-Date: 20260101T000000Z\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.authority,
            body.len()
        )
        .map_err(io)?;
        let mut reader = BufReader::new(stream);
        let (head, answer) = read_message(&mut reader, true)
            .map_err(io)?
            .ok_or_else(|| Error::new(format!("{target}: no answer from {}", self.authority)))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(Error::new(format!(
                "{target}: {} {}",
                head.lines().next().unwrap_or_default(),
                String::from_utf8_lossy(&answer)
            )));
        }
        if answer.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer)
            .map_err(|e| Error::caused(format!("{target}: an answer not JSON"), e))
    }

    /// Whether the endpoint answers a ListStreams with a 200 within 2 s (a
    /// readiness probe).
    pub fn answers(&self) -> bool {
        self.clone()
            .with_timeout(Duration::from_secs(2))
            .call("ListStreams", &json!({}))
            .is_ok()
    }

    /// Creates `name` with `shards` shards and waits until it is active.
    pub fn create_stream(&self, name: &str, shards: u32) -> Result<(), Error> {
        self.call(
            "CreateStream",
            &json!({"StreamName": name, "ShardCount": shards}),
        )?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let d = self.call("DescribeStreamSummary", &json!({"StreamName": name}))?;
            if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::new(format!("{name} did not become active in 30 s")))
    }

    /// Every shard of `stream` (open and closed), as ListShards gives them.
    pub fn shards(&self, stream: &str) -> Result<Vec<Value>, Error> {
        let mut all = Vec::new();
        let mut page = self.call("ListShards", &json!({"StreamName": stream}))?;
        loop {
            all.extend(page["Shards"].as_array().cloned().unwrap_or_default());
            match page["NextToken"].as_str() {
                Some(token) => page = self.call("ListShards", &json!({"NextToken": token}))?,
                None => return Ok(all),
            }
        }
    }

    /// The open shards of `stream`, by starting hash key.
    pub fn open_shards(&self, stream: &str) -> Result<Vec<Value>, Error> {
        let mut open: Vec<Value> = self
            .shards(stream)?
            .into_iter()
            .filter(|s| s["SequenceNumberRange"]["EndingSequenceNumber"].is_null())
            .collect();
        open.sort_by_key(|s| hash_key(&s["HashKeyRange"]["StartingHashKey"]).ok());
        Ok(open)
    }

    /// Reads `stream` as a KCL consumer does: GetRecords from every shard from its
    /// start, each record de-aggregated, user records outside their shard's range
    /// dropped (and counted).
    pub fn read_back(&self, stream: &str) -> Result<ReadBack, Error> {
        let mut out = ReadBack::default();
        let mut shards = self.shards(stream)?;
        shards.sort_by(|a, b| a["ShardId"].as_str().cmp(&b["ShardId"].as_str()));
        for shard in shards {
            let range = &shard["HashKeyRange"];
            let (start, end) = (
                hash_key(&range["StartingHashKey"])?,
                hash_key(&range["EndingHashKey"])?,
            );
            let it = self.call(
                "GetShardIterator",
                &json!({"StreamName": stream, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON"}),
            )?;
            let mut iterator = it["ShardIterator"].as_str().map(str::to_owned);
            while let Some(it) = iterator {
                let page =
                    self.call("GetRecords", &json!({"ShardIterator": it, "Limit": 10000}))?;
                let records = page["Records"].as_array().cloned().unwrap_or_default();
                for r in &records {
                    let data = STANDARD
                        .decode(r["Data"].as_str().unwrap_or_default())
                        .map_err(|e| Error::caused("a record's Data is not base64", e))?;
                    let pk = r["PartitionKey"].as_str().unwrap_or_default();
                    let ehk = r["ExplicitHashKey"].as_str();
                    let users = deaggregate(pk, ehk, &data)
                        .map_err(|e| Error::caused("a record that does not decode", e))?;
                    for u in users {
                        let k = u
                            .hash_key()
                            .map_err(|e| Error::caused("a user record's hash key", e))?;
                        if k < start || k > end {
                            out.outside += 1;
                        } else {
                            out.records.push(u.data.to_vec());
                            out.partition_keys.push(u.partition_key.to_owned());
                        }
                    }
                }
                iterator = if records.is_empty() {
                    None
                } else {
                    page["NextShardIterator"].as_str().map(str::to_owned)
                };
            }
        }
        Ok(out)
    }

    /// The data of every user record of `stream` read back as text, sorted.
    pub fn stored_lines(&self, stream: &str) -> Result<Vec<String>, Error> {
        let mut lines: Vec<String> = self
            .read_back(stream)?
            .records
            .into_iter()
            .map(|d| String::from_utf8_lossy(&d).into_owned())
            .collect();
        lines.sort();
        Ok(lines)
    }
}

/// A hash key written in decimal in a JSON string.
pub fn hash_key(v: &Value) -> Result<HashKey, Error> {
    HashKey::from_decimal(v.as_str().unwrap_or_default())
        .map_err(|e| Error::caused(format!("bad hash key {v}"), e))
}

/// ListShards' answer for a stream of one shard over every hash key, as a loopback
/// Kinesis gives it.
pub fn one_shard_answer() -> String {
    format!(
        "{{\"Shards\":[{{\"ShardId\":\"shardId-000000000000\",\"HashKeyRange\":{{\"StartingHashKey\":\"0\",\"EndingHashKey\":\"{}\"}},\"SequenceNumberRange\":{{\"StartingSequenceNumber\":\"1\"}}}}]}}",
        HashKey::MAX
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_spans_every_hash_key() {
        let v: Value = serde_json::from_str(&one_shard_answer()).unwrap();
        let shards = v["Shards"].as_array().unwrap();
        assert_eq!(shards.len(), 1);
        let range = &shards[0]["HashKeyRange"];
        assert_eq!(hash_key(&range["StartingHashKey"]).unwrap(), HashKey::MIN);
        assert_eq!(hash_key(&range["EndingHashKey"]).unwrap(), HashKey::MAX);
        assert_eq!(
            range["EndingHashKey"],
            "340282366920938463463374607431768211455"
        );
    }
}
