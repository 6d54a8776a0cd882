//! `cargo xtask faults`: `kpl put` over real HTTP, through the fault-injecting proxy
//! (`kpl_tests::proxy`), into kinesis-mock and kinesalite; each scenario's stream is
//! then read back as a consumer reads it (`kpl_tests::kinesis`: GetRecords from every
//! shard, de-aggregated, user records outside their shard's range dropped as the KCL
//! drops them) and compared with what `kpl put` reported in its `--summary-json`.
//!
//! [`mod@scenarios`] says what each scenario does and allows, [`runner`] runs one and
//! judges it, [`reader`] reads what a run left.

mod reader;
mod runner;
mod scenarios;

use anyhow::{Result, bail};

use crate::peer;
use crate::util::{cargo, run, step, target_dir};
use scenarios::{Peer, Scenario, scenarios};

/// What `kpl put` is given, and in which mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    /// Plain lines under random partition keys.
    Lines,
    /// JSON lines over 40 partition keys, unordered: the out-of-order count shows
    /// what ordered mode prevents.
    Keyed,
    /// The same lines with `kpl put --ordered`: no line may be read after a later
    /// line of its key.
    Ordered,
}

/// How `kpl put` runs: its input, and whether it verifies before resending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mode {
    pub(crate) input: Input,
    /// `kpl put --verify-before-resend`: no line may be stored twice where the
    /// scenario allows none with it.
    pub(crate) verify: bool,
}

impl Mode {
    /// `input`, without verifying.
    pub(crate) fn of(input: Input) -> Self {
        Self {
            input,
            verify: false,
        }
    }

    /// How the report names the mode.
    fn label(self) -> String {
        let verify = if self.verify { " (verify)" } else { "" };
        format!("{}{verify}", self.input.label())
    }
}

impl Input {
    /// Whether the lines are JSON under a few partition keys.
    fn keyed(self) -> bool {
        self != Self::Lines
    }

    /// How the report names the mode.
    fn label(self) -> &'static str {
        match self {
            Self::Lines => "",
            Self::Keyed => " (keyed)",
            Self::Ordered => " (ordered)",
        }
    }
}

/// One scenario's run, as the table shows it.
pub(crate) struct Report {
    name: &'static str,
    peer: Peer,
    lines: usize,
    seconds: f64,
    acknowledged: u64,
    failed: u64,
    flagged: u64,
    stored: u64,
    duplicated: u64,
    failed_but_stored: u64,
    lost: u64,
    outside: u64,
    /// Lines read after a later line of their key (as a KCL consumer reads).
    out_of_order: u64,
    /// What `kpl put` was given, and how it ran.
    mode: Mode,
    /// Verify before resend's reads (GetRecords).
    reads: u64,
    link_seconds: Option<f64>,
    /// What the proxy did.
    proxy: String,
    problems: Vec<String>,
}

/// Builds the `kpl` command (release, or debug as the gate's short set uses) and
/// returns its path.
pub(crate) fn build_kpl(release: bool) -> Result<std::path::PathBuf> {
    if release {
        step("building kpl (release)");
        run(cargo().args(["build", "--locked", "--release", "-p", "kpl-cli"]))?;
        Ok(target_dir().join("release/kpl"))
    } else {
        step("building kpl (debug)");
        run(cargo().args(["build", "--locked", "-p", "kpl-cli"]))?;
        Ok(target_dir().join("debug/kpl"))
    }
}

/// Runs the scenario set (`short`: the gate's smaller set) and prints a table; fails
/// if any scenario broke its expectations.
pub(crate) fn run_all(
    short: bool,
    only: Option<&str>,
    repeat: usize,
    http_client: Option<&str>,
    mode: Mode,
) -> Result<()> {
    let dir = target_dir().join("faults");
    std::fs::create_dir_all(&dir)?;
    let kpl = build_kpl(!short)?;
    let all: Vec<Scenario> = scenarios(short)
        .into_iter()
        .filter(|s| only.is_none_or(|o| s.name == o))
        .collect();
    if all.is_empty() {
        bail!("no scenario named {only:?}");
    }
    let mut reports = Vec::new();
    for kind in [Peer::KinesisMock, Peer::Kinesalite] {
        let these: Vec<&Scenario> = all.iter().filter(|s| s.peer == kind).collect();
        if these.is_empty() {
            continue;
        }
        let peer = match kind {
            Peer::KinesisMock => peer::start_kinesis_mock()?,
            Peer::Kinesalite => peer::start_kinesalite("unused", 1)?,
        };
        for s in these
            .iter()
            .flat_map(|s| std::iter::repeat_n(*s, repeat.max(1)))
        {
            step(&format!(
                "fault scenario {} ({kind:?}, {} lines)",
                s.name, s.lines
            ));
            let r = runner::run_scenario(s, &peer.endpoint, &kpl, &dir, http_client, mode)?;
            println!(
                "{}{}: {:.1} s, {} acknowledged, {} failed, {} stored, {} stored twice ({} reported), {} lost, {} out of order, {} reads; proxy: {}",
                r.name,
                r.mode.label(),
                r.seconds,
                r.acknowledged,
                r.failed,
                r.stored,
                r.duplicated,
                r.flagged,
                r.lost,
                r.out_of_order,
                r.reads,
                r.proxy
            );
            for p in &r.problems {
                println!("  PROBLEM: {p}");
            }
            reports.push(r);
        }
    }
    println!(
        "\n| scenario | peer | lines | seconds | acknowledged | failed | stored (consumer view) | stored twice | reported possibly twice | failed but stored | lost | copies outside range | out of order | reads | link time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {}{} | {:?} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.mode.label(),
            r.peer,
            r.lines,
            r.seconds,
            r.acknowledged,
            r.failed,
            r.stored,
            r.duplicated,
            r.flagged,
            r.failed_but_stored,
            r.lost,
            r.outside,
            r.out_of_order,
            r.reads,
            r.link_seconds.map_or("-".into(), |l| format!("{l:.1} s"))
        );
    }
    let bad: Vec<&Report> = reports.iter().filter(|r| !r.problems.is_empty()).collect();
    if !bad.is_empty() {
        bail!(
            "{} of {} fault scenarios broke their expectations: {}",
            bad.len(),
            reports.len(),
            bad.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
        );
    }
    println!("\nfaults: {} scenarios clean", reports.len());
    Ok(())
}
