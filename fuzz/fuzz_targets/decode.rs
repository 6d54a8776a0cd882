//! Fuzzes the de-aggregator: arbitrary bytes, as sent and wrapped in a valid magic
//! and checksum (so the protobuf parser is reached), must never panic; whatever
//! decodes must re-encode and decode to the same user records.

#![no_main]

use kpl_codec::{AggregateBuilder, HashKey, MAGIC, UserRecord, decode_aggregated, deaggregate};
use libfuzzer_sys::fuzz_target;
use md5::{Digest, Md5};

fuzz_target!(|data: &[u8]| {
    let _ = deaggregate("pk", None, data);

    let mut wrapped = MAGIC.to_vec();
    wrapped.extend_from_slice(data);
    wrapped.extend_from_slice(&Md5::digest(data));
    let Ok(records) = decode_aggregated(&wrapped) else {
        return;
    };

    let mut builder = AggregateBuilder::new();
    for r in &records {
        let mut record = UserRecord::new(r.partition_key, r.data);
        match r.explicit_hash_key.map(HashKey::from_decimal) {
            None => {}
            Some(Ok(key)) if key.to_string() == r.explicit_hash_key.unwrap_or_default() => {
                record = record.with_explicit_hash_key(key)
            }
            // Not a key the encoder can write back byte-for-byte: stop here.
            Some(_) => return,
        }
        for tag in &r.tags {
            record = record.with_tag(tag.key, tag.value.map(str::to_owned));
        }
        builder.add(record);
    }
    let mut again = Vec::new();
    builder.encode_aggregate_into(&mut again);
    assert_eq!(again.len(), builder.size());
    let reread = decode_aggregated(&again).expect("our own encoding decodes");
    assert_eq!(reread.len(), records.len());
    for (a, b) in reread.iter().zip(&records) {
        assert_eq!(a.partition_key, b.partition_key);
        assert_eq!(a.explicit_hash_key, b.explicit_hash_key);
        assert_eq!(a.data, b.data);
        assert_eq!(a.tags, b.tags);
    }
});
