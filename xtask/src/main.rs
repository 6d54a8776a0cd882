//! The project's tasks: `cargo xtask <command>` (`cargo xtask --help` for the
//! flags; an unknown command or flag is a usage error).
//!
//! - `ci`: the whole gate (format, lints, docs, tests with the suites against
//!   kinesis-mock, the facade's contract on smol and async-std, its examples, every
//!   crate with each feature alone, MSRV, licenses and yanked versions, fault
//!   scenarios (short), the signal matrix, fuzz target build, conformance, the
//!   Python package).
//! - `features`: every crate checked with no features and with each feature alone.
//! - `audit`: declared minimum Rust versions, dependency licenses, no yanked version.
//! - `conformance [--cases N] [--seed S]`: kpl-codec against aws-kinesis-agg.
//! - `fuzz [--seconds N]`: runs the decoder's fuzz target (not part of the gate).
//! - `faults [--short] [--scenario NAME] [--repeat N] [--http-client C] [--ordered | --keyed]
//!   [--verify-before-resend]`:
//!   fault scenarios over real HTTP (the gate runs the short set).
//! - `signals [--seed S] [--runs-per-cell N] [--cell NAME] [--kpl PATH]`: the signal
//!   and output matrix for `kpl put` (the gate runs it once, on the debug build).
//! - `chaos [--seeds N] [--from S] [--ordered] [--verify-before-resend]`: the chaos runner
//!   (the gate runs 200 seeds; `--ordered`, `--verify-before-resend`: every seed so).
//! - `kinesis-mock -- COMMAND...`: COMMAND with kinesis-mock up on loopback.
//! - `python`: the Python package kpl_rs installed with pip into a venv under
//!   `target/python`, its pytest suite against kinesis-mock, stubtest and mypy.
//! - `kinesalite [--shards K] -- COMMAND...`: COMMAND with kinesalite up on loopback
//!   and a stream `bench` of K shards.

mod conformance;
mod faults;
mod gate;
mod matrix;
mod peer;
mod python;
mod util;

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::util::{cargo, project_root, run};

/// The project's tasks.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

/// One task.
#[derive(Subcommand, Debug)]
enum Task {
    /// The whole gate: fmt, clippy, docs, tests (chaos sample, the suites against
    /// kinesis-mock, the facade's contract on tokio, smol and async-std), features,
    /// MSRV, licenses, fault scenarios (short), the signal matrix, fuzz build,
    /// conformance
    Ci,
    /// cargo check of every crate with no features and with each feature alone
    Features,
    /// Declared rust-version against the dependencies', licenses, no yanked version
    Audit,
    /// Check kpl-codec byte for byte against the Python aws-kinesis-agg
    Conformance {
        /// Random cases to compare.
        #[arg(long, default_value_t = conformance::DEFAULT_CASES)]
        cases: u64,
        /// Seed of the cases.
        #[arg(long, default_value_t = conformance::DEFAULT_SEED)]
        seed: u64,
    },
    /// Fuzz the decoder with cargo-fuzz (not part of the gate)
    Fuzz {
        /// How long to fuzz.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// kpl put over real HTTP through a fault-injecting proxy into kinesis-mock and
    /// kinesalite; each stream read back as a consumer reads it
    Faults {
        /// The gate's smaller set, on the debug build.
        #[arg(long)]
        short: bool,
        /// One scenario only, by name.
        #[arg(long, value_name = "NAME")]
        scenario: Option<String>,
        /// Run each scenario this many times.
        #[arg(long, default_value_t = 1, value_name = "N")]
        repeat: usize,
        /// The HTTP client kpl put sends with.
        #[arg(long, value_enum, value_name = "CLIENT")]
        http_client: Option<HttpClient>,
        /// kpl put --ordered over 40 partition keys: every scenario must show no
        /// line read after a later line of its key.
        #[arg(long)]
        ordered: bool,
        /// The same 40 partition keys without --ordered: the out-of-order count
        /// shows what ordered mode prevents.
        #[arg(long, conflicts_with = "ordered")]
        keyed: bool,
        /// kpl put --verify-before-resend: resets and 500s and held answers must
        /// store no line twice.
        #[arg(long)]
        verify_before_resend: bool,
    },
    /// The signal and output matrix for kpl put: SIGINT, SIGTERM, SIGHUP while
    /// reading and while draining, stderr and stdout closed or full; every line
    /// accounted for
    Signals {
        /// The seed of every moment (from the clock unless given).
        #[arg(long)]
        seed: Option<u64>,
        /// Runs of each cell.
        #[arg(long, default_value_t = 1, value_name = "N")]
        runs_per_cell: u32,
        /// One cell only, by name.
        #[arg(long, value_name = "NAME")]
        cell: Option<String>,
        /// The kpl binary to run (a release build is made unless given).
        #[arg(long, value_name = "PATH")]
        kpl: Option<PathBuf>,
    },
    /// The chaos runner over kpl-sim on virtual time (release build); a failing seed
    /// prints the line that reproduces it
    Chaos {
        /// How many seeds.
        #[arg(long, default_value_t = 10_000, value_name = "N")]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0, value_name = "S")]
        from: u64,
        /// Every seed in ordered mode (else 30 % of them).
        #[arg(long)]
        ordered: bool,
        /// Every seed verifying before resending (else 30 % of them).
        #[arg(long)]
        verify_before_resend: bool,
    },
    /// The Python package kpl_rs: pip install into a venv under target/python, pytest
    /// against kinesis-mock, mypy's stubtest and mypy --strict
    Python,
    /// Run COMMAND with kinesis-mock up on loopback, its endpoint in
    /// KPL_KINESIS_MOCK_ENDPOINT and test credentials in the environment
    #[command(name = "kinesis-mock")]
    KinesisMock {
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Run COMMAND with kinesalite up on loopback, a stream `bench` of K shards, its
    /// endpoint in KPL_KINESALITE_ENDPOINT
    Kinesalite {
        /// Shards of the stream `bench`.
        #[arg(long, default_value_t = 4, value_name = "K")]
        shards: u32,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
}

/// The HTTP clients `kpl put` can send with.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum HttpClient {
    Tokio,
    AsyncIo,
}

impl HttpClient {
    /// The value of `kpl put --http-client`.
    fn as_str(self) -> &'static str {
        match self {
            HttpClient::Tokio => "tokio",
            HttpClient::AsyncIo => "async-io",
        }
    }
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Ci => ci(),
        Task::Features => gate::features(),
        Task::Audit => {
            gate::msrv()?;
            gate::licenses()?;
            gate::yanked()
        }
        Task::Conformance { cases, seed } => conformance::verify(cases, seed),
        Task::Fuzz { seconds } => fuzz(seconds),
        Task::Faults {
            short,
            scenario,
            repeat,
            http_client,
            ordered,
            keyed,
            verify_before_resend,
        } => faults::run_all(
            short,
            scenario.as_deref(),
            repeat,
            http_client.map(HttpClient::as_str),
            faults::Mode {
                input: match (ordered, keyed) {
                    (true, _) => faults::Input::Ordered,
                    (false, true) => faults::Input::Keyed,
                    (false, false) => faults::Input::Lines,
                },
                verify: verify_before_resend,
            },
        ),
        Task::Signals {
            seed,
            runs_per_cell,
            cell,
            kpl,
        } => matrix::run(&matrix::Options {
            seed,
            runs_per_cell,
            cell,
            kpl,
        }),
        Task::Chaos {
            seeds,
            from,
            ordered,
            verify_before_resend,
        } => {
            util::step(&format!("chaos: seeds {from}..{}", from + seeds));
            let mut command = cargo();
            command
                .args(["test", "--release", "--locked", "-p", "kpl-producer"])
                .args(["--test", "chaos", "--", "--nocapture"])
                .env("KPL_CHAOS_SEEDS", seeds.to_string())
                .env("KPL_CHAOS_FROM", from.to_string());
            if ordered {
                command.env("KPL_CHAOS_ORDERED", "1");
            }
            if verify_before_resend {
                command.env("KPL_CHAOS_VERIFY", "1");
            }
            run(&mut command)
        }
        Task::Python => python::run_all(),
        Task::Kinesalite { shards, command } => {
            let Some((program, args)) = command.split_first() else {
                bail!("kinesalite needs a command to run after `--`");
            };
            let peer = peer::start_kinesalite("bench", shards)?;
            run(std::process::Command::new(program)
                .args(args)
                .env("KPL_KINESALITE_ENDPOINT", &peer.endpoint))
        }
        Task::KinesisMock { command } => {
            let Some((program, args)) = command.split_first() else {
                bail!("kinesis-mock needs a command to run after `--`");
            };
            let mock = peer::start_kinesis_mock()?;
            run(std::process::Command::new(program)
                .args(args)
                .env(peer::ENDPOINT_VAR, &mock.endpoint)
                .envs(peer::MOCK_CREDENTIALS))
        }
    }
}

fn ci() -> Result<()> {
    let started = std::time::Instant::now();
    util::step("cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    util::step("cargo clippy (warnings denied)");
    run(cargo().args([
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    util::step("cargo doc (warnings denied)");
    run(cargo()
        .args([
            "doc",
            "--locked",
            "--workspace",
            "--all-features",
            "--no-deps",
        ])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    let (tests, contract) = {
        // The suites against kinesis-mock are #[ignore]d in a plain `cargo test`;
        // here the mock runs on loopback and they are included. The facade's
        // contract takes credentials from the AWS chain: any will do for the mock.
        let mock = peer::start_kinesis_mock()?;
        util::step("cargo test --workspace, with the suites against kinesis-mock");
        let tests = util::run_tests(
            cargo()
                .args(["test", "--locked", "--workspace", "--all-features"])
                .args(["--", "--include-ignored"])
                .env(peer::ENDPOINT_VAR, &mock.endpoint)
                .envs(peer::MOCK_CREDENTIALS),
        )?;
        util::step("the facade's contract on smol and async-std, with no tokio runtime built");
        gate::no_tokio_runtime_on_smol()?;
        let contract = util::run_tests(
            cargo()
                .args(["test", "--locked", "-p", "kpl", "--no-default-features"])
                .args(["--features", "smol,aws", "--test", "contract"])
                .args(["--", "--include-ignored"])
                .env(peer::ENDPOINT_VAR, &mock.endpoint)
                .envs(peer::MOCK_CREDENTIALS),
        )?;
        util::step("the facade's examples against kinesis-mock");
        gate::examples(&mock)?;
        (tests, contract)
    };
    util::step("every crate with no features and with each feature alone");
    gate::features()?;
    util::step("declared minimum Rust versions against the dependencies'");
    gate::msrv()?;
    util::step("dependency licenses, and no yanked version locked");
    gate::licenses()?;
    gate::yanked()?;
    util::step("fault scenarios over real HTTP (the short set)");
    faults::run_all(true, None, 1, None, faults::Mode::of(faults::Input::Lines))?;
    util::step("fault scenario with resets and 500s over the async-io HTTP client");
    faults::run_all(
        true,
        Some("resets-and-500s"),
        1,
        Some("async-io"),
        faults::Mode::of(faults::Input::Lines),
    )?;
    util::step(
        "fault scenarios in ordered mode (kpl put --ordered, 40 keys): resets and 500s, held answers",
    );
    faults::run_all(
        true,
        Some("resets-and-500s"),
        1,
        None,
        faults::Mode::of(faults::Input::Ordered),
    )?;
    faults::run_all(
        true,
        Some("held-answers-8s"),
        1,
        None,
        faults::Mode::of(faults::Input::Ordered),
    )?;
    util::step(
        "fault scenario with resets and 500s, verifying before resending: no line stored twice",
    );
    faults::run_all(
        true,
        Some("resets-and-500s"),
        1,
        None,
        faults::Mode {
            input: faults::Input::Lines,
            verify: true,
        },
    )?;
    util::step("the signal and output matrix for kpl put (debug build, as above)");
    matrix::run(&matrix::Options {
        seed: None,
        runs_per_cell: 1,
        cell: None,
        kpl: Some(faults::build_kpl(false)?),
    })?;
    util::step("fuzz target builds");
    run(cargo().args([
        "check",
        "--locked",
        "--manifest-path",
        project_root()
            .join("fuzz/Cargo.toml")
            .to_str()
            .unwrap_or("fuzz/Cargo.toml"),
        "--bins",
    ]))?;
    util::step("conformance against aws-kinesis-agg");
    conformance::verify(conformance::DEFAULT_CASES, conformance::DEFAULT_SEED)?;
    util::step("the Python package kpl_rs (pip install, pytest against kinesis-mock, stubtest)");
    python::run_all()?;
    println!(
        "\nxtask ci: every step passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // The closing line CI reads: tests run by cargo test, plus the fault scenarios,
    // the signal matrix, the conformance run and the Python package's step.
    println!(
        "{} passed, {} failed",
        tests.passed + contract.passed + 4,
        tests.failed + contract.failed
    );
    Ok(())
}

fn fuzz(seconds: u64) -> Result<()> {
    let installed = cargo()
        .args(["fuzz", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        util::step("installing cargo-fuzz");
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    util::step(&format!("fuzzing the decoder for {seconds} s"));
    // cargo-fuzz passes -Z flags: let the stable toolchain accept them.
    run(cargo()
        .current_dir(project_root().join("fuzz"))
        .env("RUSTC_BOOTSTRAP", "1")
        .args([
            "fuzz",
            "run",
            "decode",
            "--",
            &format!("-max_total_time={seconds}"),
        ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_as_before() {
        let cli = Cli::try_parse_from([
            "xtask",
            "faults",
            "--short",
            "--scenario",
            "baseline",
            "--http-client",
            "async-io",
            "--ordered",
        ])
        .unwrap();
        let Task::Faults {
            short: true,
            scenario: Some(name),
            repeat: 1,
            http_client: Some(HttpClient::AsyncIo),
            ordered: true,
            keyed: false,
            verify_before_resend: false,
        } = cli.command
        else {
            panic!("{cli:?}");
        };
        assert_eq!(name, "baseline");
        let cli =
            Cli::try_parse_from(["xtask", "kinesis-mock", "--", "cargo", "test", "--x"]).unwrap();
        let Task::KinesisMock { command } = cli.command else {
            panic!("{cli:?}");
        };
        assert_eq!(command, ["cargo", "test", "--x"]);
    }

    #[test]
    fn unknown_flags_are_refused() {
        for args in [
            &["xtask", "faults", "--shrot"][..],
            &["xtask", "conformance", "--case", "3"],
            &["xtask", "kinesalite", "--shard", "2", "--", "true"],
            &["xtask", "faults", "--http-client", "curl"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
