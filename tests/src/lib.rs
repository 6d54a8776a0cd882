//! Workspace-wide tests of kpl-rs, and the helpers the tests of every crate and
//! `cargo xtask` share, at the HTTP and process level (so no crate's tests see a
//! second copy of that crate's own types):
//!
//! - [`kinesis`]: an awsJson 1.1 client for the emulators (kinesis-mock,
//!   kinesalite), and the stream read back as a KCL consumer reads it;
//! - [`http`]: reading HTTP/1.1 messages, and loopback servers that answer what
//!   the test makes of each request (over TCP, or TLS with [`tls`]'s CA);
//! - [`proxy`]: a loopback HTTP proxy that forwards, tunnels and injects faults;
//! - [`kpl`]: running the `kpl` command with the test environment;
//! - [`peers`]: where the emulators the gate starts are, and what they need;
//! - [`cloudwatch`]: a CloudWatch stand-in;
//! - [`credentials`]: AWS credential providers that fail as a chain does;
//! - [`TempDir`]: a test's own directory, removed when the test ends, pass or
//!   fail (kept with `KPL_KEEP_TEST_DIRS=1`);
//! - [`chain`]: what every crate's tests check of an error's chain.

#![forbid(unsafe_code)]

pub mod chain;
pub mod cloudwatch;
pub mod credentials;
pub mod http;
pub mod kinesis;
pub mod kpl;
pub mod peers;
pub mod proxy;
pub mod tls;

mod error;
mod temp;

pub use error::Error;
pub use temp::{KEEP_TEST_DIRS_VAR, TempDir};
