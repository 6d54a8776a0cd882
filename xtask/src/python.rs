//! `cargo xtask python`: the Python package `kpl_rs` (crates/kpl-python) built and
//! installed the way a user installs it (`pip install ./crates/kpl-python`, maturin
//! as the PEP 517 backend) into a venv under `target/python`, its tests run with
//! pytest against kinesis-mock (asyncio and trio), its type stubs checked against
//! the built module with mypy's stubtest, and the package with `mypy --strict`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::peer;
use crate::util::{project_root, run, step, target_dir};

/// Set for the tests: a missing peer fails them instead of skipping them.
const REQUIRE_PEER_VAR: &str = "KPL_PYTHON_REQUIRE_PEER";

/// The package's directory.
fn package() -> PathBuf {
    project_root().join("crates/kpl-python")
}

/// A venv under `target/python` (made once); returns its python.
fn venv(dir: &Path) -> Result<PathBuf> {
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    if python.exists() {
        return Ok(python);
    }
    step("making a venv under target/python (python3 -m venv)");
    std::fs::create_dir_all(dir)?;
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .context("python3 -m venv failed: install Python 3 with venv")?;
    Ok(python)
}

/// Builds, installs and tests the package (see the module's docs).
pub(crate) fn run_all() -> Result<()> {
    let dir = target_dir().join("python");
    let python = venv(&dir)?;
    let package = package();
    // `maturin develop` leaves the module beside the sources: a wheel built then
    // would carry that stale copy.
    let sources = package.join("python/kpl_rs");
    for entry in std::fs::read_dir(&sources)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "so" || e == "pyd") {
            bail!(
                "{} was left by `maturin develop`: remove it (the wheel would carry it)",
                path.display()
            );
        }
    }
    let pip = |args: &[&str]| {
        let mut cmd = Command::new(&python);
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(args);
        cmd
    };
    step("pip install ./crates/kpl-python[test] (maturin builds the extension, release)");
    let with_extras = format!("{}[test]", package.display());
    run(&mut pip(&[&with_extras]))?;
    // A path requirement already installed at the same version is kept by pip:
    // reinstall the package itself so that this tree's build is the one tested.
    run(&mut pip(&[
        "--force-reinstall",
        "--no-deps",
        &package.to_string_lossy(),
    ]))?;

    let mock = peer::start_kinesis_mock()?;
    step("pytest against kinesis-mock (asyncio, trio, threads)");
    run(Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(package.join("tests"))
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env(peer::ENDPOINT_VAR, &mock.endpoint)
        .envs(peer::MOCK_CREDENTIALS)
        .env(REQUIRE_PEER_VAR, "1"))?;
    drop(mock);

    let cache = dir.join("mypy-cache");
    step("mypy stubtest: the stubs against the built module");
    run(Command::new(&python)
        .args(["-m", "mypy.stubtest", "kpl_rs"])
        .current_dir(&dir)
        .env("MYPY_CACHE_DIR", &cache))?;
    step("mypy --strict: the package, and an aiokpl program against it");
    let mypy = |target: &[&std::ffi::OsStr]| {
        run(Command::new(&python)
            .args(["-m", "mypy", "--strict", "--cache-dir"])
            .arg(&cache)
            .args(target)
            .current_dir(&dir))
    };
    mypy(&["-p".as_ref(), "kpl_rs".as_ref()])?;
    mypy(&[package.join("tests/aiokpl_program.py").as_os_str()])
}
