//! `CloudWatch::put_metric_data` against the loopback CloudWatch stand-in, on
//! both HTTP clients: what arrives, how requests are split, how failures read.

use std::time::{Duration, SystemTime};

use kpl_tests::cloudwatch::CloudWatchStandIn;
use kpl_transport::{CloudWatch, HttpRuntime, MetricDatum, PutMetricDataErrorKind};

fn datum(i: usize) -> MetricDatum {
    MetricDatum {
        name: if i.is_multiple_of(2) {
            "UserRecordsPut"
        } else {
            "BufferingTime"
        }
        .into(),
        unit: if i.is_multiple_of(2) {
            "Count"
        } else {
            "Milliseconds"
        }
        .into(),
        dimensions: vec![
            ("StreamName".into(), "events & more".into()),
            ("ShardId".into(), format!("shardId-{i:012}")),
        ],
        timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000),
        sample_count: (i + 1) as f64,
        sum: i as f64 * 1.5,
        min: 0.25,
        max: i as f64 + 0.5,
    }
}

async fn client(standin: &CloudWatchStandIn, runtime: HttpRuntime) -> CloudWatch {
    CloudWatch::builder()
        .endpoint_url(standin.url())
        .region("us-east-1")
        .static_credentials("test", "test")
        .http_runtime(runtime)
        .build()
        .await
        .unwrap()
}

/// Runs `case` on tokio with the SDK's client, and under smol with async-io's.
fn both<F: Future<Output = ()>>(case: impl Fn(HttpRuntime) -> F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(case(HttpRuntime::Tokio));
    smol::block_on(case(HttpRuntime::AsyncIo));
}

async fn arrives(runtime: HttpRuntime) {
    let standin = CloudWatchStandIn::start();
    let cw = client(&standin, runtime).await;
    let data: Vec<_> = (0..2500).map(datum).collect();
    cw.put_metric_data("KplRsTest", &data).await.unwrap();
    let requests = standin.requests();
    // Within the service's limits: 1000 data points and 1 MB per request.
    let sizes: Vec<_> = requests
        .iter()
        .map(|r| (r.data.len(), r.body_len))
        .collect();
    assert!(sizes.len() >= 3, "{sizes:?}");
    assert!(
        sizes.iter().all(|&(n, len)| n <= 1000 && len <= 1 << 20),
        "{runtime:?} {sizes:?}"
    );
    // In order, none missing.
    assert_eq!(standin.data().len(), 2500);
    assert!(
        requests
            .iter()
            .all(|r| r.namespace == "KplRsTest" && r.signed)
    );
    // Large bodies are gzipped, as the SDK does.
    assert!(requests.iter().all(|r| r.gzipped), "{runtime:?}");
    let got = standin.data();
    for (i, d) in got.iter().enumerate() {
        let want = datum(i);
        assert_eq!(d.name, want.name);
        assert_eq!(d.unit, want.unit);
        assert_eq!(d.dimension("StreamName"), Some("events & more"));
        assert_eq!(
            d.dimension("ShardId"),
            Some(format!("shardId-{i:012}").as_str())
        );
        assert_eq!(
            (d.sample_count, d.sum, d.min, d.max),
            (want.sample_count, want.sum, want.min, want.max)
        );
        assert_eq!(d.timestamp, "2026-09-21T14:13:20Z");
    }
}

#[test]
fn data_points_arrive_whole_within_the_request_limits() {
    both(arrives);
}

async fn failures(runtime: HttpRuntime) {
    let standin = CloudWatchStandIn::start();
    let cw = client(&standin, runtime).await;
    let few: Vec<_> = (0..3).map(datum).collect();

    // A passing 500 is retried by the SDK (with backoff): stored.
    standin.fail_next(500, "InternalServiceFault");
    cw.put_metric_data("ns", &few).await.unwrap();
    assert_eq!(standin.requests().len(), 1);
    assert_eq!(standin.seen(), 2);

    // Throttled on every attempt: transient, nothing stored.
    for _ in 0..3 {
        standin.fail_next(400, "Throttling");
    }
    let e = cw.put_metric_data("ns", &few).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(e.sent(), 0);
    assert!(e.to_string().contains("Throttling"), "{e}");
    assert_eq!(standin.requests().len(), 1);

    // Refused: not retried, not retryable.
    let seen = standin.seen();
    standin.fail_next(400, "InvalidParameterValue");
    let e = cw.put_metric_data("ns", &few).await.unwrap_err();
    assert_eq!(e.kind(), PutMetricDataErrorKind::Refused, "{e:?}");
    assert_eq!(
        (e.code(), e.sent()),
        (Some("InvalidParameterValue"), 0),
        "{e:?}"
    );
    assert_eq!(standin.seen(), seen + 1);

    // A namespace CloudWatch does not take: nothing sent.
    let seen = standin.seen();
    let e = cw.put_metric_data("AWS/Kinesis", &few).await.unwrap_err();
    assert!(e.is_invalid_namespace(), "{e:?}");
    assert_eq!(e.namespace(), Some("AWS/Kinesis"));
    assert!(e.to_string().contains("MetricsNamespace"), "{e}");
    assert_eq!(standin.seen(), seen);
}

#[test]
fn failures_say_whether_to_try_again_and_what_was_stored() {
    both(failures);
}

async fn partial(runtime: HttpRuntime) {
    // The second of three requests is refused.
    let standin = CloudWatchStandIn::start();
    let cw = client(&standin, runtime).await;
    let many: Vec<_> = (0..2500).map(datum).collect();
    standin.pass_next();
    standin.fail_next(400, "InvalidParameterValue");
    let e = cw.put_metric_data("ns", &many).await.unwrap_err();
    let stored = standin.data().len();
    assert_eq!(standin.requests().len(), 1);
    assert!(stored > 0 && stored < 2500);
    assert_eq!(e.sent(), stored, "{e}");
    assert!(!e.is_retryable());
}

#[test]
fn a_failure_after_a_stored_request_counts_what_was_stored() {
    both(partial);
}
