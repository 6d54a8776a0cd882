//! Every error of the codec that has a cause returns it from `source()` and does
//! not print it in its own Display (an error chain would print it twice).

use std::error::Error;

use kpl_codec::RecordLimits;

/// `err` returns a cause from `source()` whose text its Display does not hold.
fn says_only_its_own_level(err: &(dyn Error + 'static)) {
    let cause = err.source().unwrap_or_else(|| panic!("{err:?}: no source"));
    let own = err.to_string();
    let cause = cause.to_string();
    assert!(!own.is_empty(), "{err:?}: empty Display");
    assert!(
        !own.contains(&cause),
        "{err:?}: Display {own:?} repeats its cause {cause:?}"
    );
}

#[test]
fn a_record_error_keeps_its_cause_and_says_only_its_level() {
    let limits = RecordLimits::default();
    for (key, hash_key) in [
        ("", None),
        (&*"k".repeat(300), None),
        ("k", Some("not a number")),
    ] {
        let err = limits.validate(key, hash_key, 0).unwrap_err();
        says_only_its_own_level(&err);
    }
}
