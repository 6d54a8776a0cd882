//! Property tests: encode → decode is the identity, and the exact size is exact.

use kpl_codec::{
    AggregateBuilder, AggregateEncoder, HashKey, RecordParts, UserRecord, aggregate_growth_bound,
    deaggregate, deaggregate_all, decode_aggregated,
};
use proptest::prelude::*;

fn key() -> impl Strategy<Value = String> {
    // Few distinct keys so tables de-duplicate; Unicode included.
    prop_oneof![
        "[a-c]{1,2}",
        "\\PC{1,20}",
        Just("鍵🔑".to_owned()),
        Just("k".repeat(256)),
    ]
}

fn hash_key() -> impl Strategy<Value = Option<HashKey>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(HashKey::MIN)),
        1 => Just(Some(HashKey::MAX)),
        1 => (0u128..1000).prop_map(|v| Some(HashKey::new(v))),
        1 => any::<u128>().prop_map(|v| Some(HashKey::new(v))),
    ]
}

fn tags() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    prop::collection::vec(("\\PC{0,6}", prop::option::of("\\PC{0,6}")), 0..3)
}

fn record() -> impl Strategy<Value = UserRecord> {
    (
        key(),
        hash_key(),
        prop_oneof![
            8 => prop::collection::vec(any::<u8>(), 0..300),
            1 => prop::collection::vec(any::<u8>(), 0..20_000),
        ],
        prop_oneof![3 => Just(vec![]), 1 => tags()],
    )
        .prop_map(|(pk, ehk, data, tags)| {
            let mut r = UserRecord::new(pk, data);
            r.explicit_hash_key = ehk;
            for (k, v) in tags {
                r = r.with_tag(k, v);
            }
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn encode_then_decode_is_identity(records in prop::collection::vec(record(), 0..40)) {
        let mut builder = AggregateBuilder::new();
        for r in records.clone() {
            let predicted = builder.size_with(&r);
            prop_assert_eq!(builder.add(r), predicted);
        }
        let mut bytes = Vec::new();
        builder.encode_aggregate_into(&mut bytes);
        prop_assert_eq!(bytes.len(), builder.size());

        let decoded = decode_aggregated(&bytes).unwrap();
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(got.partition_key, want.partition_key.as_str());
            prop_assert_eq!(got.data, want.data.as_slice());
            prop_assert_eq!(got.sub_sequence_number, Some(i as u64));
            prop_assert_eq!(
                got.explicit_hash_key.map(|k| k.parse::<HashKey>().unwrap()),
                want.explicit_hash_key
            );
            prop_assert_eq!(got.hash_key().unwrap(), want.hash_key());
            prop_assert_eq!(got.tags.len(), want.tags.len());
            for (g, w) in got.tags.iter().zip(&want.tags) {
                prop_assert_eq!(g.key, w.key.as_str());
                prop_assert_eq!(g.value, w.value.as_deref());
            }
        }
        // Taking the records back gives them unchanged, in order.
        prop_assert_eq!(builder.take_records(), records);
    }

    /// Keys hashed by the caller (the low 64 bits of their MD5) give the same bytes.
    #[test]
    fn adding_with_key_hashes_gives_the_same_bytes(records in prop::collection::vec(record(), 0..40)) {
        let mut plain = AggregateBuilder::new();
        let mut hashed = AggregateBuilder::new();
        for r in records {
            let hash = HashKey::from_partition_key(&r.partition_key).get() as u64;
            let a = plain.add(r.clone());
            prop_assert_eq!(hashed.add_with_key_hash(r, hash), a);
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        plain.encode_aggregate_into(&mut a);
        hashed.encode_aggregate_into(&mut b);
        prop_assert_eq!(a, b);
    }

    /// The encoder of records its caller keeps writes the builder's bytes, with its
    /// own hashes of the keys or the caller's, one encoder reused for many aggregates.
    #[test]
    fn the_encoder_writes_the_builders_bytes(
        aggregates in prop::collection::vec(prop::collection::vec(record(), 0..40), 1..4),
        caller_hashes in any::<bool>(),
    ) {
        let mut encoder = AggregateEncoder::new();
        for mut records in aggregates {
            let mut builder = AggregateBuilder::new();
            for r in &mut records {
                r.tags.clear();
                builder.add(r.clone());
            }
            let mut expected = Vec::new();
            builder.encode_aggregate_into(&mut expected);
            let unfinished = encoder.encode_unfinished(
                &records,
                |r| {
                    let p = RecordParts::new(r.partition_key.as_bytes(), &r.data)
                        .with_explicit_hash_key(r.explicit_hash_key);
                    if caller_hashes {
                        p.with_key_hash(HashKey::from_partition_key(&r.partition_key).get() as u64)
                    } else {
                        p
                    }
                },
                Vec::new(),
            );
            let got = unfinished.finish();
            prop_assert_eq!(got, expected);
        }
    }

    /// Many records read at once give each the answer it gets alone: aggregates
    /// (some with a flipped byte), plain records, in any mix.
    #[test]
    fn reading_many_at_once_gives_each_its_own_answer(
        batches in prop::collection::vec(
            (prop::collection::vec(record(), 0..6), any::<bool>(), any::<u16>()), 0..9),
    ) {
        let mut datas: Vec<Vec<u8>> = Vec::new();
        for (records, plain, flip) in &batches {
            if *plain || records.is_empty() {
                datas.push(records.first().map_or(b"plain".to_vec(), |r| r.data.clone()));
                continue;
            }
            let mut builder = AggregateBuilder::new();
            for r in records {
                builder.add(r.clone());
            }
            let mut bytes = Vec::new();
            builder.encode_aggregate_into(&mut bytes);
            if flip % 3 == 0 {
                let at = usize::from(*flip) % bytes.len();
                bytes[at] ^= 0x20;
            }
            datas.push(bytes);
        }
        let inputs: Vec<(&str, Option<&str>, &[u8])> =
            datas.iter().map(|d| ("pk", Some("7"), d.as_slice())).collect();
        let together = deaggregate_all(&inputs);
        prop_assert_eq!(together.len(), inputs.len());
        for ((pk, ehk, data), got) in inputs.iter().zip(together) {
            prop_assert_eq!(got, deaggregate(pk, *ehk, data));
        }
    }

    /// The builder-free bound holds for every record without tags, whatever was
    /// added before.
    #[test]
    fn the_growth_bound_bounds_the_exact_growth(records in prop::collection::vec(record(), 1..40)) {
        let mut builder = AggregateBuilder::new();
        for mut r in records {
            r.tags.clear();
            let bound = aggregate_growth_bound(
                r.partition_key.len(),
                r.data.len(),
                r.explicit_hash_key.is_some(),
            );
            let before = builder.size();
            let after = builder.add(r);
            prop_assert!(after - before <= bound, "{} > {bound}", after - before);
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(body in prop::collection::vec(any::<u8>(), 0..200)) {
        use md5::Digest;
        let mut data = kpl_codec::MAGIC.to_vec();
        data.extend_from_slice(&body);
        data.extend_from_slice(&md5::Md5::digest(&body));
        let _ = decode_aggregated(&data);
    }

    #[test]
    fn hash_key_decimal_round_trips(v in any::<u128>()) {
        let key = HashKey::new(v);
        prop_assert_eq!(key.to_string().parse::<HashKey>().unwrap(), key);
        prop_assert_eq!(key.decimal_len(), key.to_string().len());
    }
}
