//! Each defect of an aggregated record is its own typed error, never a panic.

use kpl_codec::{DecodeError, KeyTable, MAGIC, deaggregate, decode_aggregated, is_aggregated};
use md5::{Digest, Md5};

fn wrap(body: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&Md5::digest(body));
    out
}

#[test]
fn bad_magic_is_a_plain_record() {
    let mut data = wrap(&[0x0a, 0x01, b'a']);
    data[0] ^= 1;
    assert!(!is_aggregated(&data));
    let records = deaggregate("pk", Some("7"), &data).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].partition_key, "pk");
    assert_eq!(records[0].explicit_hash_key, Some("7"));
    assert_eq!(records[0].data, data.as_slice());
    assert_eq!(records[0].sub_sequence_number, None);
    assert_eq!(
        decode_aggregated(&data),
        Err(DecodeError::NotAggregated { len: data.len() })
    );
    // Magic but too short to hold a digest: a plain record as well.
    assert_eq!(deaggregate("pk", None, &MAGIC).unwrap()[0].data, MAGIC);
}

#[test]
fn empty_aggregate_has_no_records() {
    assert_eq!(decode_aggregated(&wrap(&[])).unwrap(), vec![]);
}

#[test]
fn varint_overflow() {
    // Eleven continuation bytes.
    let mut body = vec![0x0a];
    body.extend([0xff; 11]);
    assert_eq!(
        decode_aggregated(&wrap(&body)),
        Err(DecodeError::VarintOverflow { offset: 5 })
    );
    // Ten bytes whose last carries more than the 64th bit.
    let mut body = vec![0x1a, 0x0b, 0x08];
    body.extend([0xff; 9]);
    body.push(0x02);
    assert_eq!(
        decode_aggregated(&wrap(&body)),
        Err(DecodeError::VarintOverflow { offset: 7 })
    );
}

#[test]
fn invalid_utf8_in_a_key_table() {
    let body = [0x0a, 0x02, 0xff, 0xfe];
    assert_eq!(
        decode_aggregated(&wrap(&body)),
        Err(DecodeError::InvalidUtf8 {
            offset: 5,
            field: "partition_key_table"
        })
    );
}

#[test]
fn missing_required_fields() {
    // A record with data but no partition key index.
    let body = [0x0a, 0x01, b'a', 0x1a, 0x03, 0x1a, 0x01, b'x'];
    assert_eq!(
        decode_aggregated(&wrap(&body)),
        Err(DecodeError::MissingField {
            record: 0,
            field: "partition_key_index"
        })
    );
    // A record with an index but no data.
    let body = [0x0a, 0x01, b'a', 0x1a, 0x02, 0x08, 0x00];
    assert_eq!(
        decode_aggregated(&wrap(&body)),
        Err(DecodeError::MissingField {
            record: 0,
            field: "data"
        })
    );
    // A tag without a key.
    let body = [
        0x0a, 0x01, b'a', 0x1a, 0x09, 0x08, 0x00, 0x1a, 0x01, b'x', 0x22, 0x02, 0x12, 0x00,
    ];
    assert_eq!(
        decode_aggregated(&wrap(&body)),
        Err(DecodeError::MissingField {
            record: 0,
            field: "tag key"
        })
    );
}

#[test]
fn explicit_hash_key_index_out_of_range() {
    let body = [
        0x0a, 0x01, b'a', 0x1a, 0x07, 0x08, 0x00, 0x10, 0x00, 0x1a, 0x01, b'x',
    ];
    assert_eq!(
        decode_aggregated(&wrap(&body)),
        Err(DecodeError::IndexOutOfRange {
            record: 0,
            table: KeyTable::ExplicitHashKey,
            index: 0,
            table_len: 0
        })
    );
}

#[test]
fn records_before_tables_still_resolve() {
    // Field order is not guaranteed by protobuf: a record may precede the tables.
    let body = [0x1a, 0x05, 0x08, 0x00, 0x1a, 0x01, b'x', 0x0a, 0x01, b'k'];
    let data = wrap(&body);
    let records = decode_aggregated(&data).unwrap();
    assert_eq!(records[0].partition_key, "k");
}

#[test]
fn wrong_wire_type_and_groups_are_invalid_tags() {
    // partition_key_table as a varint.
    assert!(matches!(
        decode_aggregated(&wrap(&[0x08, 0x01])),
        Err(DecodeError::InvalidTag { tag: 8, .. })
    ));
    // An unknown group field.
    assert!(matches!(
        decode_aggregated(&wrap(&[0x7b])),
        Err(DecodeError::InvalidTag { .. })
    ));
    // Field number zero.
    assert!(matches!(
        decode_aggregated(&wrap(&[0x00])),
        Err(DecodeError::InvalidTag { offset: 4, tag: 0 })
    ));
}

#[test]
fn unknown_fields_of_every_wire_type_are_skipped() {
    let body = [
        0x0a, 0x01, b'a', // pk table
        0x79, 1, 2, 3, 4, 5, 6, 7, 8, // field 15, fixed64
        0x7d, 1, 2, 3, 4, // field 15, fixed32
        0x7a, 0x02, 9, 9, // field 15, length-delimited
        0x1a, 0x07, 0x08, 0x00, 0x1a, 0x01, b'x', 0x28, 0x05, // record with unknown field 5
    ];
    let data = wrap(&body);
    let records = decode_aggregated(&data).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].data, b"x");
}

#[test]
fn truncated_fixed_and_lengths() {
    assert!(matches!(
        decode_aggregated(&wrap(&[0x79, 1, 2])),
        Err(DecodeError::Truncated { .. })
    ));
    // A length far past the end.
    assert!(matches!(
        decode_aggregated(&wrap(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])),
        Err(DecodeError::Truncated { .. })
    ));
    // A varint cut off by the end of its sub-message.
    assert!(matches!(
        decode_aggregated(&wrap(&[0x1a, 0x02, 0x08, 0x80, 0x00])),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn error_messages_say_what_is_wrong() {
    let text = decode_aggregated(&wrap(&[0x0a, 0x02, 0xff, 0xfe]))
        .unwrap_err()
        .to_string();
    assert!(text.contains("UTF-8") && text.contains("byte 5"), "{text}");
}
