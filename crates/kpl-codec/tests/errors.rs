//! Every error of the codec that has a cause returns it from `source()` and does
//! not print it in its own Display (an error chain would print it twice).

use std::error::Error;

use kpl_codec::{HashKey, PartitionKeyError, RecordError};

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
    says_only_its_own_level(&RecordError::PartitionKey(PartitionKeyError::Empty));
    says_only_its_own_level(&RecordError::PartitionKey(PartitionKeyError::TooLong {
        chars: 300,
        prefix: "k".repeat(16),
    }));
    let hash = "not a number".parse::<HashKey>().unwrap_err();
    says_only_its_own_level(&RecordError::ExplicitHashKey(hash));
}
