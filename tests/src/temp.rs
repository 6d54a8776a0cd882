//! Temporary directories of a test's own, removed when the test ends, whether it
//! passed or failed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The environment variable that keeps test directories: `KPL_KEEP_TEST_DIRS=1`.
pub const KEEP_TEST_DIRS_VAR: &str = "KPL_KEEP_TEST_DIRS";

/// Directories made by this process so far (so two with one name do not meet).
static MADE: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory of the test's own under the system's temporary directory,
/// named by the test's `name`, the process and a count. Dropping it removes it
/// with all it holds, also when the test panics; with `KPL_KEEP_TEST_DIRS=1` it
/// is kept, and where it is goes to standard error (in a failed test's output).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Makes the directory; panics, naming it, when it cannot.
    pub fn new(name: &str) -> Self {
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("kpl-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// Whether `value` of `KPL_KEEP_TEST_DIRS` asks to keep the directories.
fn keeps(value: Option<&str>) -> bool {
    matches!(value.map(str::trim), Some(v) if !v.is_empty() && v != "0")
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let path = self.path.display();
        if keeps(std::env::var(KEEP_TEST_DIRS_VAR).ok().as_deref()) {
            eprintln!("the test's files are kept in {path} ({KEEP_TEST_DIRS_VAR} is set)");
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cannot remove the test's directory {path}: {e}");
        } else if failed {
            eprintln!(
                "the test's files in {path} are removed; run it with {KEEP_TEST_DIRS_VAR}=1 to keep them"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_removed_when_dropped_with_what_it_holds() {
        let dir = TempDir::new("removed");
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub").join("file"), "x").unwrap();
        let path = dir.path().to_owned();
        assert!(path.is_dir());
        if keeps(std::env::var(KEEP_TEST_DIRS_VAR).ok().as_deref()) {
            return;
        }
        drop(dir);
        assert!(!path.exists(), "{}", path.display());
    }

    #[test]
    fn a_directory_is_removed_when_its_test_panics() {
        if keeps(std::env::var(KEEP_TEST_DIRS_VAR).ok().as_deref()) {
            return;
        }
        let made = std::thread::spawn(|| {
            let dir = TempDir::new("panicked");
            std::fs::write(dir.join("file"), "x").unwrap();
            let path = dir.path().to_owned();
            std::panic::panic_any(path);
        })
        .join()
        .unwrap_err();
        let path = made.downcast::<PathBuf>().unwrap();
        assert!(!path.exists(), "{}", path.display());
    }

    #[test]
    fn two_directories_of_one_name_are_two() {
        let (a, b) = (TempDir::new("same"), TempDir::new("same"));
        assert_ne!(a.path(), b.path());
    }

    #[test]
    fn only_a_value_other_than_zero_keeps_them() {
        assert!(keeps(Some("1")) && keeps(Some("yes")));
        assert!(!keeps(None) && !keeps(Some("")) && !keeps(Some("0")));
    }
}
