//! Running the `kpl` binary as a user runs it (with `kpl_tests::kpl`).

#![allow(dead_code, reason = "each test file uses some of these")]

use std::process::{Child, Command, Output, Stdio};

/// The `kpl` under test: this build's, or the one `KPL_TEST_BIN` names (to show
/// that a test fails on the build before a fix).
pub(crate) fn kpl_bin() -> String {
    std::env::var("KPL_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kpl").to_owned())
}

/// `kpl` with `args` and the test environment (credentials in it, so the AWS
/// chain never looks further; no instance metadata): standard input empty,
/// standard output and error piped.
pub(crate) fn command(args: &[&str]) -> Command {
    let mut c = kpl_tests::kpl::command(kpl_bin());
    c.args(args);
    c
}

/// Runs `kpl` with `args` and `stdin` to its end.
pub(crate) fn kpl(args: &[&str], stdin: &str) -> Output {
    kpl_tests::kpl::run(&mut command(args), stdin)
}

/// `kpl` with `args` started: standard input from `stdin`, standard output to
/// nothing, standard error to `stderr`.
pub(crate) fn spawn(args: &[&str], stdin: Stdio, stderr: Stdio) -> Child {
    command(args)
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", kpl_bin()))
}
