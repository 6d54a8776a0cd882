//! Every error of the codec that has a cause returns it from `source()` and does
//! not print it in its own Display (an error chain would print it twice).

use kpl_codec::RecordLimits;
use kpl_tests::chain::says_only_its_own_level;

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
