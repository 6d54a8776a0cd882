//! Running the `kpl` binary as a user runs it (with `kpl_tests::kpl`).

use std::process::Output;

/// Runs `kpl` with `args` and `stdin`, with the test environment (credentials in it,
/// so the AWS chain never looks further; no instance metadata).
pub(crate) fn kpl(args: &[&str], stdin: &str) -> Output {
    kpl_tests::kpl::run(
        kpl_tests::kpl::command(env!("CARGO_BIN_EXE_kpl")).args(args),
        stdin,
    )
}
