//! The Kinesis emulators the gate starts on loopback (`cargo xtask kinesis-mock`,
//! `cargo xtask kinesalite`), as tests find them.

/// The environment variable with kinesis-mock's endpoint.
pub const KINESIS_MOCK_ENDPOINT_VAR: &str = "KPL_KINESIS_MOCK_ENDPOINT";

/// The environment variable with kinesalite's endpoint (a stream `bench` there).
pub const KINESALITE_ENDPOINT_VAR: &str = "KPL_KINESALITE_ENDPOINT";

/// Credentials for the AWS chain of a run against an emulator (which takes any),
/// and no instance-metadata look-ups.
pub const TEST_CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// kinesis-mock's endpoint; panics, saying how to start it, when it is not set
/// (the tests that call this are `#[ignore]`d in a plain `cargo test`).
pub fn kinesis_mock_endpoint() -> String {
    std::env::var(KINESIS_MOCK_ENDPOINT_VAR).unwrap_or_else(|_| {
        panic!(
            "{KINESIS_MOCK_ENDPOINT_VAR} is not set: run through `cargo xtask ci` or \
             `cargo xtask kinesis-mock -- cargo test -p CRATE -- --include-ignored`"
        )
    })
}

/// kinesalite's endpoint, when `cargo xtask kinesalite` runs the test.
pub fn kinesalite_endpoint() -> Option<String> {
    std::env::var(KINESALITE_ENDPOINT_VAR).ok()
}

/// A loopback port free a moment ago (bound, then let go), for a server to be
/// started on.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A loopback endpoint where nothing listens (a port just freed): every
/// connection is refused.
pub fn dead_endpoint() -> String {
    format!("http://127.0.0.1:{}", free_port().unwrap_or(9))
}
