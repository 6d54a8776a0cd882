//! Each defect of an aggregated record is its own typed error, never a panic.

use kpl_codec::{
    DecodeError, DecodeErrorKind, KeyTable, MAGIC, deaggregate, decode_aggregated, is_aggregated,
};
use md5::{Digest, Md5};

/// Why `data` does not decode.
fn err(data: &[u8]) -> DecodeError {
    decode_aggregated(data).unwrap_err()
}

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
    let e = err(&data);
    assert_eq!(e.kind(), DecodeErrorKind::NotAggregated);
    assert_eq!(e.data_len(), Some(data.len()));
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
    let e = err(&wrap(&body));
    assert!(e.is_varint_overflow(), "{e:?}");
    assert_eq!(e.offset(), Some(5));
    // Ten bytes whose last carries more than the 64th bit.
    let mut body = vec![0x1a, 0x0b, 0x08];
    body.extend([0xff; 9]);
    body.push(0x02);
    let e = err(&wrap(&body));
    assert!(e.is_varint_overflow(), "{e:?}");
    assert_eq!(e.offset(), Some(7));
}

#[test]
fn invalid_utf8_in_a_key_table() {
    let body = [0x0a, 0x02, 0xff, 0xfe];
    let e = err(&wrap(&body));
    assert!(e.is_invalid_utf8(), "{e:?}");
    assert_eq!(
        (e.offset(), e.field()),
        (Some(5), Some("partition_key_table"))
    );
}

#[test]
fn missing_required_fields() {
    // A record with data but no partition key index.
    let body = [0x0a, 0x01, b'a', 0x1a, 0x03, 0x1a, 0x01, b'x'];
    let e = err(&wrap(&body));
    assert!(e.is_missing_field(), "{e:?}");
    assert_eq!(
        (e.record(), e.field()),
        (Some(0), Some("partition_key_index"))
    );
    // A record with an index but no data.
    let body = [0x0a, 0x01, b'a', 0x1a, 0x02, 0x08, 0x00];
    let e = err(&wrap(&body));
    assert!(e.is_missing_field(), "{e:?}");
    assert_eq!((e.record(), e.field()), (Some(0), Some("data")));
    // A tag without a key.
    let body = [
        0x0a, 0x01, b'a', 0x1a, 0x09, 0x08, 0x00, 0x1a, 0x01, b'x', 0x22, 0x02, 0x12, 0x00,
    ];
    let e = err(&wrap(&body));
    assert!(e.is_missing_field(), "{e:?}");
    assert_eq!((e.record(), e.field()), (Some(0), Some("tag key")));
}

#[test]
fn explicit_hash_key_index_out_of_range() {
    let body = [
        0x0a, 0x01, b'a', 0x1a, 0x07, 0x08, 0x00, 0x10, 0x00, 0x1a, 0x01, b'x',
    ];
    let e = err(&wrap(&body));
    assert!(e.is_index_out_of_range(), "{e:?}");
    assert_eq!(
        (e.record(), e.table(), e.index(), e.table_len()),
        (Some(0), Some(KeyTable::ExplicitHashKey), Some(0), Some(0))
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
    let e = err(&wrap(&[0x08, 0x01]));
    assert!(e.is_invalid_tag(), "{e:?}");
    assert_eq!(e.tag(), Some(8));
    // An unknown group field.
    assert_eq!(err(&wrap(&[0x7b])).kind(), DecodeErrorKind::InvalidTag);
    // Field number zero.
    let e = err(&wrap(&[0x00]));
    assert!(e.is_invalid_tag(), "{e:?}");
    assert_eq!((e.offset(), e.tag()), (Some(4), Some(0)));
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
    assert!(err(&wrap(&[0x79, 1, 2])).is_truncated());
    // A length far past the end.
    assert!(err(&wrap(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])).is_truncated());
    // A varint cut off by the end of its sub-message.
    assert!(err(&wrap(&[0x1a, 0x02, 0x08, 0x80, 0x00])).is_truncated());
}

#[test]
fn error_messages_say_what_is_wrong() {
    let e = err(&wrap(&[0x0a, 0x02, 0xff, 0xfe]));
    let text = e.to_string();
    assert!(text.contains("UTF-8") && text.contains("byte 5"), "{text}");
    // No error value is behind a defect of the bytes.
    assert!(std::error::Error::source(&e).is_none());
    let body = [0x0a, 0x01, b'a'];
    let mut data = wrap(&body);
    let last = data.len() - 1;
    data[last] ^= 1;
    let e = err(&data);
    assert!(e.is_checksum_mismatch());
    let (expected, actual) = (e.expected_digest().unwrap(), e.actual_digest().unwrap());
    assert_eq!(expected[15] ^ 1, actual[15]);
    assert!(
        e.to_string()
            .starts_with("aggregated record is damaged: stored MD5")
    );
}
