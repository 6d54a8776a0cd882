//! What every crate's tests check of an error's chain: the cause comes from
//! `source()`, and Display says only the error's own level (a `{:#}` chain would
//! print the cause twice otherwise).

use std::error::Error;

/// Panics unless `err` returns a cause from `source()` whose text its own
/// (non-empty) Display does not hold.
pub fn says_only_its_own_level(err: &(dyn Error + 'static)) {
    let cause = err.source().unwrap_or_else(|| panic!("{err:?}: no source"));
    let own = err.to_string();
    let cause = cause.to_string();
    assert!(!own.is_empty(), "{err:?}: empty Display");
    assert!(
        !own.contains(&cause),
        "{err:?}: Display {own:?} repeats its cause {cause:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Outer(&'static str, Option<std::io::Error>);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_ref().map(|e| e as &(dyn Error + 'static))
        }
    }

    fn fails(err: Outer) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            says_only_its_own_level(&err)
        }))
        .is_err()
    }

    #[test]
    fn an_error_passes_only_with_a_cause_it_does_not_repeat() {
        let cause = || Some(std::io::Error::other("disk on fire"));
        says_only_its_own_level(&Outer("cannot write", cause()));
        assert!(fails(Outer("cannot write: disk on fire", cause())));
        assert!(fails(Outer("cannot write", None)));
        assert!(fails(Outer("", cause())));
    }
}
