//! `cargo xtask` refuses what it does not know with a usage error, and its help
//! names every command.

use std::process::{Command, Output};

/// Runs the xtask binary with `args`; a `cargo` that fails at once stands in for the
/// real one, so a command that wrongly starts work stops in milliseconds.
fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("CARGO", "false")
        .output()
        .unwrap()
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let out = xtask(&["faults", "--shrot"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--shrot"), "{err}");
    assert!(err.contains("Usage"), "{err}");
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let out = xtask(&["fautls"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fautls"), "{err}");
}

#[test]
fn a_flag_of_another_command_is_a_usage_error() {
    let out = xtask(&["chaos", "--cases", "5"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_lists_every_command_with_one_line() {
    let out = xtask(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "ci",
        "features",
        "audit",
        "conformance",
        "fuzz",
        "faults",
        "signals",
        "chaos",
        "kinesis-mock",
        "kinesalite",
    ] {
        assert!(
            help.lines().any(|l| {
                let mut words = l.split_whitespace();
                words.next() == Some(command) && words.next().is_some()
            }),
            "{command} has no line of its own in:\n{help}"
        );
    }
}
