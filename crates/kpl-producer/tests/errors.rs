//! Every error of the producer that has a cause returns it from `source()` and
//! does not print it in its own Display (an error chain would print it twice).

use std::error::Error;

use std::sync::Arc;

use kpl_codec::RecordErrorKind;
use kpl_producer::{Config, Producer, PutErrorKind, PutRecord};
use kpl_runtime::Simulation;
use kpl_sim::Simulator;
use kpl_tests::chain::says_only_its_own_level;

#[test]
fn a_refused_record_keeps_why_and_says_only_its_level() {
    let sim = Simulation::new();
    let kinesis = Simulator::new(sim.runtime().timer().clone(), 5);
    kinesis.create_stream("a", 1).unwrap();
    let producer =
        Producer::builder(Config::default(), Arc::new(kinesis.clone())).build(sim.runtime());
    let err = producer
        .try_put_records("a", vec![PutRecord::new("", b"x".to_vec())])
        .unwrap()
        .results
        .pop()
        .unwrap()
        .map(drop)
        .unwrap_err();
    assert!(err.is_invalid(), "{err:?}");
    assert_eq!(err.kind(), PutErrorKind::Invalid);
    let record = err.record_error().expect("why the record is invalid");
    assert_eq!(record.kind(), RecordErrorKind::PartitionKey);
    assert!(record.partition_key_error().is_some_and(|e| e.is_empty()));
    says_only_its_own_level(&err);
}

#[cfg(all(feature = "aws", feature = "tokio"))]
#[test]
fn a_producer_that_did_not_start_keeps_why_and_says_only_its_level() {
    let config = Config::builder()
        .region("us-east-1")
        .ca_cert_file("/no/such/kpl-ca.pem")
        .build()
        .unwrap();
    let Err(err) = kpl_producer::SyncProducer::from_config(config) else {
        panic!("built without its CA file");
    };
    assert_eq!(err.kind(), kpl_producer::SyncBuildErrorKind::Transport);
    says_only_its_own_level(&err);
    // The transport's error in turn keeps the system's.
    says_only_its_own_level(err.build_error().expect("the BuildError"));
}

#[test]
fn a_refused_setting_says_its_key_and_value() {
    let err = Config::builder().max_connections(0).build().unwrap_err();
    assert_eq!(err.kind(), kpl_producer::ConfigErrorKind::OutOfRange);
    assert_eq!(
        (err.key(), err.value()),
        (Some("MaxConnections"), Some("0"))
    );
    assert!(err.source().is_none());
    let err = Config::from_kpl_properties_file("/no/such/kpl.properties").unwrap_err();
    assert!(err.is_file());
    says_only_its_own_level(&err);
}

#[test]
fn a_failed_upload_keeps_what_the_destination_said_and_says_only_its_level() {
    let io = std::io::Error::other("connection reset by the destination");
    let err = kpl_producer::UploadError::retryable(io).with_uploaded(3);
    assert!(err.is_retryable());
    assert_eq!(err.uploaded(), 3);
    says_only_its_own_level(&err);
    let refused = kpl_producer::UploadError::refused("AccessDenied: not allowed");
    assert!(!refused.is_retryable());
    assert_eq!(refused.uploaded(), 0);
    says_only_its_own_level(&refused);
}
