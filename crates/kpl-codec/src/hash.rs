//! Hash keys: where a record lands on a stream.

use std::fmt;
use std::str::FromStr;

use crate::md5_lanes;

/// A position in a stream's 128-bit hash key space.
///
/// Kinesis routes every record by its hash key: the explicit hash key when the
/// record has one, otherwise the MD5 digest of the UTF-8 partition key read as a
/// big-endian `u128`. The record goes to the open shard whose
/// `[StartingHashKey, EndingHashKey]` range contains that key.
///
/// ```
/// use kpl_codec::HashKey;
///
/// let key = HashKey::from_partition_key("pk1");
/// assert_eq!(key.to_string(), "329398341438914906102347661116985167824");
///
/// let explicit: HashKey = "42".parse()?;
/// assert_eq!(explicit.get(), 42);
/// # Ok::<(), kpl_codec::ParseHashKeyError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HashKey(u128);

impl HashKey {
    /// The lowest hash key, `0`.
    pub const MIN: Self = Self(0);
    /// The highest hash key, `2^128 − 1`.
    pub const MAX: Self = Self(u128::MAX);

    /// Wraps a raw 128-bit value.
    pub const fn new(value: u128) -> Self {
        Self(value)
    }

    /// The raw 128-bit value.
    pub const fn get(self) -> u128 {
        self.0
    }

    /// The hash key Kinesis computes for a partition key: MD5 of its UTF-8 bytes,
    /// read as a big-endian `u128`.
    pub fn from_partition_key(partition_key: &str) -> Self {
        let bytes = partition_key.as_bytes();
        let digest = md5_lanes::one_block(bytes).unwrap_or_else(|| md5_lanes::digest(bytes));
        Self(u128::from_be_bytes(digest))
    }

    /// The hash keys of many partition keys, in order: as
    /// [`from_partition_key`](Self::from_partition_key) of each, with short keys
    /// (up to 55 bytes) hashed four at a time.
    ///
    /// ```
    /// use kpl_codec::HashKey;
    ///
    /// let keys = ["a", "b", "c", "d", "e"];
    /// let hashed = HashKey::from_partition_keys(keys);
    /// assert_eq!(hashed[4], HashKey::from_partition_key("e"));
    /// ```
    pub fn from_partition_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<Self> {
        let keys = keys.into_iter();
        let mut out = Vec::with_capacity(keys.size_hint().0);
        // Up to four short keys waiting, with the places of their hash keys.
        let mut group: [(&[u8], usize); 4] = [(&[], 0); 4];
        let mut waiting = 0;
        for key in keys {
            let bytes = key.as_bytes();
            if bytes.len() > 55 {
                out.push(Self::from_partition_key(key));
                continue;
            }
            group[waiting] = (bytes, out.len());
            out.push(Self(0));
            waiting += 1;
            if waiting == 4 {
                let digests = md5_lanes::one_block_x4(group.map(|(k, _)| k))
                    .expect("keys of at most 55 bytes");
                for ((_, at), digest) in group.iter().zip(digests) {
                    out[*at] = Self(u128::from_be_bytes(digest));
                }
                waiting = 0;
            }
        }
        for (key, at) in &group[..waiting] {
            let digest = md5_lanes::one_block(key).expect("a key of at most 55 bytes");
            out[*at] = Self(u128::from_be_bytes(digest));
        }
        out
    }

    /// Parses an explicit hash key the way Kinesis accepts it: a non-empty string
    /// of ASCII digits without leading zeros (`0` itself is fine), at most
    /// `2^128 − 1`.
    ///
    /// Signs, spaces, leading zeros and non-ASCII digits are refused, since the
    /// service refuses them too; the error says which rule the input broke.
    pub fn from_decimal(input: &str) -> Result<Self, ParseHashKeyError> {
        let bytes = input.as_bytes();
        if bytes.is_empty() {
            return Err(ParseHashKeyError::new(ParseHashKeyErrorKind::Empty, input));
        }
        let mut value: u128 = 0;
        for (position, ch) in input.char_indices() {
            let Some(digit) = ch.to_digit(10).filter(|_| ch.is_ascii_digit()) else {
                return Err(ParseHashKeyError {
                    at: Some((position, ch)),
                    ..ParseHashKeyError::new(ParseHashKeyErrorKind::InvalidCharacter, input)
                });
            };
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(digit)))
                .ok_or_else(|| ParseHashKeyError::new(ParseHashKeyErrorKind::OutOfRange, input))?;
        }
        if bytes.len() > 1 && bytes[0] == b'0' {
            return Err(ParseHashKeyError::new(
                ParseHashKeyErrorKind::LeadingZero,
                input,
            ));
        }
        Ok(Self(value))
    }

    /// The number of bytes of the decimal form (`1` to `39`), without formatting it.
    pub fn decimal_len(self) -> usize {
        match self.0.checked_ilog10() {
            Some(log) => log as usize + 1,
            None => 1,
        }
    }
}

impl From<u128> for HashKey {
    fn from(value: u128) -> Self {
        Self(value)
    }
}

impl From<HashKey> for u128 {
    fn from(key: HashKey) -> Self {
        key.0
    }
}

impl FromStr for HashKey {
    type Err = ParseHashKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_decimal(s)
    }
}

/// Formats the key in decimal, as Kinesis and the aggregated format spell it.
impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Why a string is not a valid explicit hash key.
///
/// Ask it with [`kind`](Self::kind) or the `is_*` methods; the text given is
/// [`input`](Self::input), and a character that is not a digit is
/// [`found`](Self::found) at byte [`position`](Self::position).
///
/// ```
/// use kpl_codec::{HashKey, ParseHashKeyErrorKind};
///
/// let err = HashKey::from_decimal("12a").unwrap_err();
/// assert_eq!(err.kind(), ParseHashKeyErrorKind::InvalidCharacter);
/// assert_eq!((err.input(), err.position(), err.found()), ("12a", Some(2), Some('a')));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseHashKeyError {
    kind: ParseHashKeyErrorKind,
    input: String,
    /// Where the first character that is not a digit is, and which it is.
    at: Option<(usize, char)>,
}

/// What kind of [`ParseHashKeyError`] it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseHashKeyErrorKind {
    /// The string is empty.
    Empty,
    /// The string holds something other than an ASCII digit.
    InvalidCharacter,
    /// The string starts with `0` but is not `0` itself; Kinesis refuses such keys.
    LeadingZero,
    /// The value is larger than `2^128 − 1` (340282366920938463463374607431768211455).
    OutOfRange,
}

impl ParseHashKeyError {
    fn new(kind: ParseHashKeyErrorKind, input: &str) -> Self {
        Self {
            kind,
            input: input.to_owned(),
            at: None,
        }
    }

    /// What kind of error it is.
    pub fn kind(&self) -> ParseHashKeyErrorKind {
        self.kind
    }

    /// The string is empty.
    pub fn is_empty(&self) -> bool {
        self.kind == ParseHashKeyErrorKind::Empty
    }

    /// The string holds something other than an ASCII digit.
    pub fn is_invalid_character(&self) -> bool {
        self.kind == ParseHashKeyErrorKind::InvalidCharacter
    }

    /// The string has a leading zero.
    pub fn is_leading_zero(&self) -> bool {
        self.kind == ParseHashKeyErrorKind::LeadingZero
    }

    /// The value is larger than `2^128 − 1`.
    pub fn is_out_of_range(&self) -> bool {
        self.kind == ParseHashKeyErrorKind::OutOfRange
    }

    /// The whole string given.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Byte offset of the first character that is not an ASCII digit.
    pub fn position(&self) -> Option<usize> {
        self.at.map(|(position, _)| position)
    }

    /// The first character that is not an ASCII digit.
    pub fn found(&self) -> Option<char> {
        self.at.map(|(_, found)| found)
    }
}

impl fmt::Display for ParseHashKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let input = &self.input;
        match self.kind {
            ParseHashKeyErrorKind::Empty => f.write_str(
                "explicit hash key is empty: give a decimal integer from 0 to 2^128-1, or none",
            ),
            ParseHashKeyErrorKind::InvalidCharacter => {
                let (position, found) = self.at.unwrap_or_default();
                write!(
                    f,
                    "explicit hash key {input:?} has {found:?} at byte {position}: use only the digits 0-9"
                )
            }
            ParseHashKeyErrorKind::LeadingZero => write!(
                f,
                "explicit hash key {input:?} has a leading zero, which Kinesis refuses: drop the leading zeros"
            ),
            ParseHashKeyErrorKind::OutOfRange => write!(
                f,
                "explicit hash key {input:?} is above 2^128-1 (340282366920938463463374607431768211455)"
            ),
        }
    }
}

impl std::error::Error for ParseHashKeyError {}

#[cfg(test)]
mod tests {
    use md5::{Digest, Md5};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn hash_keys_of_any_key_are_md5(key in ".{0,80}") {
            let expected: [u8; 16] = Md5::digest(key.as_bytes()).into();
            prop_assert_eq!(HashKey::from_partition_key(&key).get(), u128::from_be_bytes(expected));
        }
    }

    proptest! {
        #[test]
        fn many_keys_hash_as_each_alone(keys in proptest::collection::vec(".{0,70}", 0..23)) {
            let got = HashKey::from_partition_keys(keys.iter().map(String::as_str));
            let want: Vec<_> = keys.iter().map(|k| HashKey::from_partition_key(k)).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn md5_hash_keys_match_the_worked_values() {
        for (pk, expected) in [
            ("pk1", "329398341438914906102347661116985167824"),
            ("user-123", "250018372642977770877286195909578633128"),
            ("a", "16955237001963240173058271559858726497"),
        ] {
            assert_eq!(HashKey::from_partition_key(pk).to_string(), expected);
        }
    }

    #[test]
    fn decimal_edges() {
        assert_eq!(HashKey::from_decimal("0"), Ok(HashKey::MIN));
        assert_eq!(
            HashKey::from_decimal("340282366920938463463374607431768211455"),
            Ok(HashKey::MAX)
        );
        let kind = |text: &str| HashKey::from_decimal(text).unwrap_err().kind();
        assert_eq!(
            kind("340282366920938463463374607431768211456"),
            ParseHashKeyErrorKind::OutOfRange
        );
        assert_eq!(
            kind("99999999999999999999999999999999999999999999"),
            ParseHashKeyErrorKind::OutOfRange
        );
        assert_eq!(kind(""), ParseHashKeyErrorKind::Empty);
        let err = HashKey::from_decimal("12a").unwrap_err();
        assert!(err.is_invalid_character());
        assert_eq!(
            (err.input(), err.position(), err.found()),
            ("12a", Some(2), Some('a'))
        );
        assert_eq!(
            err.to_string(),
            "explicit hash key \"12a\" has 'a' at byte 2: use only the digits 0-9"
        );
        for bad in ["-1", "+1", " 1", "1 ", "1_0", "١٢", "1.0"] {
            assert_eq!(
                kind(bad),
                ParseHashKeyErrorKind::InvalidCharacter,
                "{bad:?} must be refused"
            );
        }
        let err = HashKey::from_decimal("007").unwrap_err();
        assert!(err.is_leading_zero());
        assert_eq!((err.input(), err.position()), ("007", None));
    }

    #[test]
    fn decimal_len_matches_formatting() {
        let mut v: u128 = 1;
        while let Some(next) = v.checked_mul(10) {
            for x in [v - 1, v, v + 1, next - 1] {
                assert_eq!(HashKey::new(x).decimal_len(), x.to_string().len(), "{x}");
            }
            v = next;
        }
        assert_eq!(HashKey::MAX.decimal_len(), 39);
        assert_eq!(HashKey::MIN.decimal_len(), 1);
    }

    #[test]
    fn errors_name_the_value() {
        let err = HashKey::from_decimal("12x4").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"12x4\"") && text.contains("'x'"), "{text}");
    }
}
