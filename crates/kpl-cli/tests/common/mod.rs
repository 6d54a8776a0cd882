//! Running the `kpl` binary as a user runs it.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `kpl` with `args` and `stdin`, with credentials in the environment so the AWS
/// chain never looks further (no instance metadata).
pub(crate) fn kpl(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpl"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Feed standard input from another thread, so a child writing a lot of output
    // while it reads cannot block on a full pipe.
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_owned();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    // A child that stops early (bad input) may close its input: not an error here.
    let _ = writer.join().unwrap();
    output
}
