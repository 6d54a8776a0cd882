//! Workspace-wide tests of kpl-rs, and the helpers the tests of every crate and
//! `cargo xtask` share, at the HTTP and process level (so no crate's tests see a
//! second copy of that crate's own types):
//!
//! - [`kinesis`]: an awsJson 1.1 client for the emulators (kinesis-mock,
//!   kinesalite), and the stream read back as a KCL consumer reads it;
//! - [`proxy`]: a loopback HTTP proxy that forwards, tunnels and injects faults;
//! - [`kpl`]: running the `kpl` command with the test environment;
//! - [`peers`]: where the emulators the gate starts are, and what they need;
//! - [`cloudwatch`]: a CloudWatch stand-in.

#![forbid(unsafe_code)]

pub mod cloudwatch;
pub mod kinesis;
pub mod kpl;
pub mod peers;
pub mod proxy;

mod error;

pub use error::Error;
