//! The project's tasks: `cargo xtask <command>`.
//!
//! - `ci`: the whole gate (format, lints, docs, tests, fuzz target build,
//!   conformance against the Python reference aggregator).
//! - `conformance [--cases N] [--seed S]`: kpl-codec against aws-kinesis-agg.
//! - `fuzz [--seconds N]`: runs the decoder's fuzz target (not part of the gate).
//! - `chaos [--seeds N] [--from S]`: the chaos runner (the gate runs 200 seeds).
//! - `faults [--short] [--scenario NAME]`: fault scenarios over real HTTP (the gate
//!   runs the short set).
//! - `signals [--seed S] [--runs-per-cell N] [--cell NAME] [--kpl PATH]`: the signal
//!   and output matrix for `kpl put` (the gate runs it once, on the debug build).

mod conformance;
mod faults;
mod gate;
mod matrix;
mod peer;
mod proxy;
mod util;

use anyhow::{Result, bail};

use crate::util::{cargo, project_root, run};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci                               the whole gate: fmt, clippy, docs, tests (chaos sample
                                   included; the facade's contract on tokio, smol and
                                   async-std), fault scenarios (short), the signal and
                                   output matrix, every crate with
                                   each feature alone, MSRV and license audit, fuzz build,
                                   conformance
  features                         cargo check of every crate with no features and with
                                   each feature alone
  audit                            declared rust-version against the dependencies', every
                                   dependency's license against the allowed list, and no
                                   locked version yanked from crates.io
  conformance [--cases N] [--seed S]
                                   check kpl-codec byte for byte against the Python aws-kinesis-agg
  fuzz [--seconds N]               fuzz the decoder with cargo-fuzz (default 60 s)
  faults [--short] [--scenario NAME] [--repeat N] [--http-client tokio|async-io]
                                   kpl put over real HTTP through a fault-injecting proxy
                                   into kinesis-mock and kinesalite; each stream read back
                                   as a consumer reads it (--short: the gate's sample)
  signals [--seed S] [--runs-per-cell N] [--cell NAME] [--kpl PATH]
                                   the signal and output matrix for kpl put: SIGINT,
                                   SIGTERM, SIGHUP while reading and while draining, on
                                   kinesalite and kinesis-mock; stderr closed, stdout
                                   closed, stderr on /dev/full; every line accounted for
                                   (seed from the clock unless given; release build
                                   unless --kpl names a binary)
  chaos [--seeds N] [--from S]     the chaos runner over kpl-sim on virtual time, N seeds
                                   from S (default 10,000 from 0), release build; a failing
                                   seed prints the line that reproduces it
  kinesis-mock -- COMMAND...       run COMMAND with kinesis-mock up on loopback and its
                                   endpoint in KPL_KINESIS_MOCK_ENDPOINT (and test
                                   credentials in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
  kinesalite [--shards K] -- COMMAND...
                                   run COMMAND with kinesalite up on loopback, a stream
                                   `bench` of K shards, endpoint in KPL_KINESALITE_ENDPOINT
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        bail!("no command given");
    };
    let rest = &args[1..];
    match command.as_str() {
        "ci" => ci(),
        "conformance" => {
            let cases = util::flag(rest, "--cases")?.unwrap_or(conformance::DEFAULT_CASES);
            let seed = util::flag(rest, "--seed")?.unwrap_or(conformance::DEFAULT_SEED);
            conformance::verify(cases, seed)
        }
        "fuzz" => fuzz(util::flag(rest, "--seconds")?.unwrap_or(60)),
        "faults" => {
            let short = rest.iter().any(|a| a == "--short");
            let only: Option<String> = util::flag(rest, "--scenario")?;
            let repeat: usize = util::flag(rest, "--repeat")?.unwrap_or(1);
            let client: Option<String> = util::flag(rest, "--http-client")?;
            faults::run_all(short, only.as_deref(), repeat, client.as_deref())
        }
        "signals" => matrix::run(&matrix::Options {
            seed: util::flag(rest, "--seed")?,
            runs_per_cell: util::flag(rest, "--runs-per-cell")?.unwrap_or(1),
            cell: util::flag(rest, "--cell")?,
            kpl: util::flag(rest, "--kpl")?,
        }),
        "chaos" => {
            let seeds: u64 = util::flag(rest, "--seeds")?.unwrap_or(10_000);
            let from: u64 = util::flag(rest, "--from")?.unwrap_or(0);
            util::step(&format!("chaos: seeds {from}..{}", from + seeds));
            run(cargo()
                .args(["test", "--release", "--locked", "-p", "kpl-producer"])
                .args(["--test", "chaos", "--", "--nocapture"])
                .env("KPL_CHAOS_SEEDS", seeds.to_string())
                .env("KPL_CHAOS_FROM", from.to_string()))
        }
        "kinesalite" => {
            let shards: u32 = util::flag(rest, "--shards")?.unwrap_or(4);
            let command: Vec<&String> = rest.iter().skip_while(|a| *a != "--").skip(1).collect();
            let Some((program, args)) = command.split_first() else {
                bail!(
                    "kinesalite needs a command to run, e.g. `cargo xtask kinesalite --shards 4 -- kpl bench ...`"
                );
            };
            let peer = peer::start_kinesalite("bench", shards)?;
            run(std::process::Command::new(program)
                .args(args)
                .env("KPL_KINESALITE_ENDPOINT", &peer.endpoint))
        }
        "kinesis-mock" => {
            let command: Vec<&String> = rest.iter().skip_while(|a| *a == "--").collect();
            let Some((program, args)) = command.split_first() else {
                bail!(
                    "kinesis-mock needs a command to run, e.g. `cargo xtask kinesis-mock -- cargo test`"
                );
            };
            let mock = peer::start_kinesis_mock()?;
            run(std::process::Command::new(program)
                .args(args)
                .env(peer::ENDPOINT_VAR, &mock.endpoint)
                .envs(peer::MOCK_CREDENTIALS))
        }
        "features" => gate::features(),
        "audit" => {
            gate::msrv()?;
            gate::licenses()?;
            gate::yanked()
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command {other:?}")
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
    faults::run_all(true, None, 1, None)?;
    util::step("fault scenario with resets and 500s over the async-io HTTP client");
    faults::run_all(true, Some("resets-and-500s"), 1, Some("async-io"))?;
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
    println!(
        "\nxtask ci: every step passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // The closing line CI reads: tests run by cargo test, plus the fault scenarios,
    // the signal matrix and the conformance run.
    println!(
        "{} passed, {} failed",
        tests.passed + contract.passed + 3,
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
