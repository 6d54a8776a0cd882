//! Every error of the transport that has a cause returns it from `source()` and
//! does not print it in its own Display (an error chain would print it twice).

#![cfg(feature = "aws")]

use std::error::Error;

use kpl_tests::chain::says_only_its_own_level;
use kpl_transport::{AwsTransport, BuildErrorKind};

#[test]
fn an_unreadable_ca_file_keeps_the_system_error_and_names_the_file() {
    let path = std::env::temp_dir().join("kpl-transport-errors-no-such-ca.pem");
    let err = AwsTransport::builder()
        .ca_certificates_path(&path)
        .unwrap_err();
    assert_eq!(err.kind(), BuildErrorKind::HttpClient, "{err:?}");
    says_only_its_own_level(&err);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    let io = err
        .source()
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .expect("the system's error");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}
