//! Workspace-wide tests of kpl-rs, and stand-ins of services that tests of other
//! crates use.

#![forbid(unsafe_code)]

pub mod cloudwatch;
