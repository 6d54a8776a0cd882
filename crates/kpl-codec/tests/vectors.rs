//! The golden vectors of `data/aggregation-vectors.json`: every one encodes to the
//! same bytes and decodes back; every malformed one fails as it says.

use kpl_codec::{
    AggregateBuilder, DecodeErrorKind, HashKey, KeyTable, MAGIC, Tag, TagRef, UserRecord,
    deaggregate, decode_aggregated,
};
use md5::{Digest, Md5};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/aggregation-vectors.json")).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn wrap(body: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&Md5::digest(body));
    out
}

fn records_of(vector: &Value) -> Vec<UserRecord> {
    vector["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut rec = UserRecord::new(
                r["partition_key"].as_str().unwrap(),
                r["data"].as_str().unwrap().as_bytes().to_vec(),
            );
            if let Some(ehk) = r["explicit_hash_key"].as_str() {
                rec = rec.with_explicit_hash_key(ehk.parse().unwrap());
            }
            if let Some(tags) = r["tags"].as_array() {
                for t in tags {
                    rec = rec.with_tag(t[0].as_str().unwrap(), t[1].as_str().map(String::from));
                }
            }
            rec
        })
        .collect()
}

#[test]
fn hash_keys() {
    let v = vectors();
    let keys = v["hash_keys"].as_object().unwrap();
    assert_eq!(keys.len(), 5);
    for (pk, expected) in keys {
        assert_eq!(
            HashKey::from_partition_key(pk).to_string(),
            expected.as_str().unwrap(),
            "{pk}"
        );
    }
}

#[test]
fn every_vector_encodes_byte_exact_with_exact_sizes() {
    let v = vectors();
    let all = v["vectors"].as_array().unwrap();
    assert_eq!(all.len(), 6);
    for vector in all {
        let name = vector["name"].as_str().unwrap();
        let expected = unhex(vector["aggregate_hex"].as_str().unwrap());
        assert_eq!(expected.len() as u64, vector["length"].as_u64().unwrap());
        let mut builder = AggregateBuilder::new();
        for record in records_of(vector) {
            let predicted = builder.size_with(&record);
            assert_eq!(builder.add(record), predicted, "{name}");
        }
        assert_eq!(builder.size(), expected.len(), "{name}: exact size");
        let mut out = Vec::new();
        builder.encode_aggregate_into(&mut out);
        assert_eq!(out, expected, "{name}: bytes");
        let encoded = builder.encode().unwrap();
        assert!(encoded.aggregated);
        assert_eq!(encoded.data, expected);
    }
}

#[test]
fn every_vector_decodes_to_its_records() {
    let v = vectors();
    for vector in v["vectors"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        let bytes = unhex(vector["aggregate_hex"].as_str().unwrap());
        let decoded = deaggregate("a", Some("1"), &bytes).unwrap();
        let expected = records_of(vector);
        assert_eq!(decoded.len(), expected.len(), "{name}");
        for (i, (got, want)) in decoded.iter().zip(&expected).enumerate() {
            assert_eq!(got.partition_key, want.partition_key, "{name}");
            assert_eq!(got.data, want.data.as_slice(), "{name}");
            assert_eq!(got.sub_sequence_number, Some(i as u64), "{name}");
            assert_eq!(
                got.explicit_hash_key.map(|k| k.parse::<HashKey>().unwrap()),
                want.explicit_hash_key,
                "{name}: an explicit hash key only where the record has an index"
            );
            let want_tags: Vec<TagRef<'_>> = want
                .tags
                .iter()
                .map(|Tag { key, value }| TagRef {
                    key,
                    value: value.as_deref(),
                })
                .collect();
            assert_eq!(got.tags, want_tags, "{name}");
        }
    }
}

#[test]
fn malformed_vectors_fail_as_described() {
    let v = vectors();
    let malformed = v["malformed"].as_array().unwrap();
    let find = |name: &str| {
        malformed
            .iter()
            .find(|m| m["name"].as_str().unwrap().starts_with(name))
            .unwrap()
    };

    let bad_md5 = unhex(find("bad md5")["aggregate_hex"].as_str().unwrap());
    assert_eq!(
        deaggregate("a", None, &bad_md5)
            .map(drop)
            .unwrap_err()
            .kind(),
        DecodeErrorKind::ChecksumMismatch
    );

    let index = wrap(&unhex(
        find("partition key index")["protobuf_hex"]
            .as_str()
            .unwrap(),
    ));
    let e = decode_aggregated(&index).unwrap_err();
    assert!(e.is_index_out_of_range(), "{e:?}");
    assert_eq!(
        (e.record(), e.table(), e.index(), e.table_len()),
        (Some(0), Some(KeyTable::PartitionKey), Some(5), Some(1))
    );

    let truncated = wrap(&unhex(find("truncated")["protobuf_hex"].as_str().unwrap()));
    assert!(decode_aggregated(&truncated).unwrap_err().is_truncated());

    let unknown = wrap(&unhex(
        find("unknown field")["protobuf_hex"].as_str().unwrap(),
    ));
    let records = decode_aggregated(&unknown).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].partition_key, "a");
    assert_eq!(records[0].data, b"x");
}
