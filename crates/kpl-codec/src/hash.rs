//! Hash keys: where a record lands on a stream.

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

/// MD5's per-step constants (RFC 1321): `floor(|sin(i + 1)| * 2^32)`.
const MD5_K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// MD5's 64 steps, written out so that every index and rotation is a constant:
/// `$step!(round, constant index, message word, rotation)` for each, where the round
/// (`F`, `G`, `H`, `I`) names the function of b, c and d.
macro_rules! md5_steps {
    ($step:ident) => {{
        $step!(F, 0, 0, 7);
        $step!(F, 1, 1, 12);
        $step!(F, 2, 2, 17);
        $step!(F, 3, 3, 22);
        $step!(F, 4, 4, 7);
        $step!(F, 5, 5, 12);
        $step!(F, 6, 6, 17);
        $step!(F, 7, 7, 22);
        $step!(F, 8, 8, 7);
        $step!(F, 9, 9, 12);
        $step!(F, 10, 10, 17);
        $step!(F, 11, 11, 22);
        $step!(F, 12, 12, 7);
        $step!(F, 13, 13, 12);
        $step!(F, 14, 14, 17);
        $step!(F, 15, 15, 22);
        $step!(G, 16, 1, 5);
        $step!(G, 17, 6, 9);
        $step!(G, 18, 11, 14);
        $step!(G, 19, 0, 20);
        $step!(G, 20, 5, 5);
        $step!(G, 21, 10, 9);
        $step!(G, 22, 15, 14);
        $step!(G, 23, 4, 20);
        $step!(G, 24, 9, 5);
        $step!(G, 25, 14, 9);
        $step!(G, 26, 3, 14);
        $step!(G, 27, 8, 20);
        $step!(G, 28, 13, 5);
        $step!(G, 29, 2, 9);
        $step!(G, 30, 7, 14);
        $step!(G, 31, 12, 20);
        $step!(H, 32, 5, 4);
        $step!(H, 33, 8, 11);
        $step!(H, 34, 11, 16);
        $step!(H, 35, 14, 23);
        $step!(H, 36, 1, 4);
        $step!(H, 37, 4, 11);
        $step!(H, 38, 7, 16);
        $step!(H, 39, 10, 23);
        $step!(H, 40, 13, 4);
        $step!(H, 41, 0, 11);
        $step!(H, 42, 3, 16);
        $step!(H, 43, 6, 23);
        $step!(H, 44, 9, 4);
        $step!(H, 45, 12, 11);
        $step!(H, 46, 15, 16);
        $step!(H, 47, 2, 23);
        $step!(I, 48, 0, 6);
        $step!(I, 49, 7, 10);
        $step!(I, 50, 14, 15);
        $step!(I, 51, 5, 21);
        $step!(I, 52, 12, 6);
        $step!(I, 53, 3, 10);
        $step!(I, 54, 10, 15);
        $step!(I, 55, 1, 21);
        $step!(I, 56, 8, 6);
        $step!(I, 57, 15, 10);
        $step!(I, 58, 6, 15);
        $step!(I, 59, 13, 21);
        $step!(I, 60, 4, 6);
        $step!(I, 61, 11, 10);
        $step!(I, 62, 2, 15);
        $step!(I, 63, 9, 21);
    }};
}

/// MD5's initial state.
const MD5_INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The words of the one padded block of `input` (at most 55 bytes).
fn padded_words(input: &[u8]) -> [u32; 16] {
    let mut block = [0u8; 64];
    block[..input.len()].copy_from_slice(input);
    block[input.len()] = 0x80;
    block[56..].copy_from_slice(&((input.len() as u64) * 8).to_le_bytes());
    let mut m = [0u32; 16];
    for (word, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    m
}

/// MD5 of at most 55 bytes (most partition keys): the padded message is one block,
/// compressed here directly. A general-purpose digest spends about a fifth of
/// the time of hashing a short key on buffering and padding. `None` for longer
/// input.
fn one_block_md5(input: &[u8]) -> Option<[u8; 16]> {
    if input.len() > 55 {
        return None;
    }
    let m = padded_words(input);
    let init = MD5_INIT;
    let [mut a, mut b, mut c, mut d] = init;
    // One step: the round's function `f` of b, c, d, then the rotation.
    macro_rules! step {
        (F, $i:expr, $g:expr, $s:expr) => { step!(@ (b & c) | (!b & d), $i, $g, $s) };
        (G, $i:expr, $g:expr, $s:expr) => { step!(@ (d & b) | (!d & c), $i, $g, $s) };
        (H, $i:expr, $g:expr, $s:expr) => { step!(@ b ^ c ^ d, $i, $g, $s) };
        (I, $i:expr, $g:expr, $s:expr) => { step!(@ c ^ (b | !d), $i, $g, $s) };
        (@ $f:expr, $i:expr, $g:expr, $s:expr) => {{
            let f: u32 = $f;
            let sum = a
                .wrapping_add(f)
                .wrapping_add(MD5_K[$i])
                .wrapping_add(m[$g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(sum.rotate_left($s));
        }};
    }
    md5_steps!(step);
    let mut out = [0u8; 16];
    for (chunk, (word, start)) in out
        .chunks_exact_mut(4)
        .zip([a, b, c, d].into_iter().zip(init))
    {
        chunk.copy_from_slice(&word.wrapping_add(start).to_le_bytes());
    }
    Some(out)
}

/// Four lanes of 32-bit words, one per message: written lane by lane, so that
/// the compiler turns each operation into one SIMD instruction (SSE2 on x86-64).
#[derive(Clone, Copy)]
struct Lanes([u32; 4]);

impl Lanes {
    #[inline(always)]
    fn splat(v: u32) -> Self {
        Self([v; 4])
    }
    #[inline(always)]
    fn map2(self, o: Self, f: impl Fn(u32, u32) -> u32) -> Self {
        let (a, b) = (self.0, o.0);
        Self([f(a[0], b[0]), f(a[1], b[1]), f(a[2], b[2]), f(a[3], b[3])])
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.map2(o, u32::wrapping_add)
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        self.map2(o, |a, b| a & b)
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        self.map2(o, |a, b| a | b)
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        self.map2(o, |a, b| a ^ b)
    }
    #[inline(always)]
    fn not(self) -> Self {
        let a = self.0;
        Self([!a[0], !a[1], !a[2], !a[3]])
    }
    #[inline(always)]
    fn rotl<const S: u32>(self) -> Self {
        let a = self.0;
        Self([
            a[0].rotate_left(S),
            a[1].rotate_left(S),
            a[2].rotate_left(S),
            a[3].rotate_left(S),
        ])
    }
}

/// MD5 of four messages of at most 55 bytes each at once (four lanes of the same
/// one-block computation as [`one_block_md5`]). `None` if one is longer.
fn one_block_md5_x4(inputs: [&[u8]; 4]) -> Option<[[u8; 16]; 4]> {
    if inputs.iter().any(|i| i.len() > 55) {
        return None;
    }
    // The padded blocks' words, lane by lane.
    let mut m = [Lanes::splat(0); 16];
    for (lane, input) in inputs.iter().enumerate() {
        for (word, value) in m.iter_mut().zip(padded_words(input)) {
            word.0[lane] = value;
        }
    }
    let init = MD5_INIT;
    let (mut a, mut b, mut c, mut d) = (
        Lanes::splat(init[0]),
        Lanes::splat(init[1]),
        Lanes::splat(init[2]),
        Lanes::splat(init[3]),
    );
    macro_rules! step4 {
        (F, $i:expr, $g:expr, $s:expr) => { step4!(@ b.and(c).or(b.not().and(d)), $i, $g, $s) };
        (G, $i:expr, $g:expr, $s:expr) => { step4!(@ d.and(b).or(d.not().and(c)), $i, $g, $s) };
        (H, $i:expr, $g:expr, $s:expr) => { step4!(@ b.xor(c).xor(d), $i, $g, $s) };
        (I, $i:expr, $g:expr, $s:expr) => { step4!(@ c.xor(b.or(d.not())), $i, $g, $s) };
        (@ $f:expr, $i:expr, $g:expr, $s:expr) => {{
            let f: Lanes = $f;
            let sum = a.add(f).add(Lanes::splat(MD5_K[$i])).add(m[$g]);
            a = d;
            d = c;
            c = b;
            b = b.add(sum.rotl::<$s>());
        }};
    }
    md5_steps!(step4);
    let mut out = [[0u8; 16]; 4];
    for (lane, digest) in out.iter_mut().enumerate() {
        for (chunk, (word, start)) in digest.chunks_exact_mut(4).zip(
            [a.0[lane], b.0[lane], c.0[lane], d.0[lane]]
                .into_iter()
                .zip(init),
        ) {
            chunk.copy_from_slice(&word.wrapping_add(start).to_le_bytes());
        }
    }
    Some(out)
}

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
        let digest: [u8; 16] = match one_block_md5(bytes) {
            Some(digest) => digest,
            None => Md5::digest(bytes).into(),
        };
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
                let digests =
                    one_block_md5_x4(group.map(|(k, _)| k)).expect("keys of at most 55 bytes");
                for ((_, at), digest) in group.iter().zip(digests) {
                    out[*at] = Self(u128::from_be_bytes(digest));
                }
                waiting = 0;
            }
        }
        for (key, at) in &group[..waiting] {
            let digest = one_block_md5(key).expect("a key of at most 55 bytes");
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
            return Err(ParseHashKeyError::Empty);
        }
        let mut value: u128 = 0;
        for (position, ch) in input.char_indices() {
            let Some(digit) = ch.to_digit(10).filter(|_| ch.is_ascii_digit()) else {
                return Err(ParseHashKeyError::InvalidCharacter {
                    input: input.to_owned(),
                    position,
                    found: ch,
                });
            };
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(digit)))
                .ok_or_else(|| ParseHashKeyError::OutOfRange {
                    input: input.to_owned(),
                })?;
        }
        if bytes.len() > 1 && bytes[0] == b'0' {
            return Err(ParseHashKeyError::LeadingZero {
                input: input.to_owned(),
            });
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
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseHashKeyError {
    /// The string is empty.
    Empty,
    /// The string holds something other than an ASCII digit.
    InvalidCharacter {
        /// The whole input.
        input: String,
        /// Byte offset of the first offending character.
        position: usize,
        /// The offending character.
        found: char,
    },
    /// The string starts with `0` but is not `0` itself; Kinesis refuses such keys.
    LeadingZero {
        /// The whole input.
        input: String,
    },
    /// The value is larger than `2^128 − 1` (340282366920938463463374607431768211455).
    OutOfRange {
        /// The whole input.
        input: String,
    },
}

impl fmt::Display for ParseHashKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str(
                "explicit hash key is empty: give a decimal integer from 0 to 2^128-1, or none",
            ),
            Self::InvalidCharacter {
                input,
                position,
                found,
            } => write!(
                f,
                "explicit hash key {input:?} has {found:?} at byte {position}: use only the digits 0-9"
            ),
            Self::LeadingZero { input } => write!(
                f,
                "explicit hash key {input:?} has a leading zero, which Kinesis refuses: drop the leading zeros"
            ),
            Self::OutOfRange { input } => write!(
                f,
                "explicit hash key {input:?} is above 2^128-1 (340282366920938463463374607431768211455)"
            ),
        }
    }
}

impl std::error::Error for ParseHashKeyError {}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_md5_constants_are_the_sines() {
        for (i, &k) in MD5_K.iter().enumerate() {
            let sine = ((i + 1) as f64).sin().abs() * 4_294_967_296.0;
            assert_eq!(k, sine as u32, "K[{i}]");
        }
    }

    #[test]
    fn one_block_md5_agrees_with_md5_at_every_length() {
        // Every length a single block takes, and the first ones that do not.
        for len in 0..=64 {
            let input: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let expected: [u8; 16] = Md5::digest(&input).into();
            match one_block_md5(&input) {
                Some(digest) => assert_eq!(digest, expected, "length {len}"),
                None => assert!(len > 55, "length {len} fits one block"),
            }
        }
    }

    proptest! {
        #[test]
        fn hash_keys_of_any_key_are_md5(key in ".{0,80}") {
            let expected: [u8; 16] = Md5::digest(key.as_bytes()).into();
            prop_assert_eq!(HashKey::from_partition_key(&key).get(), u128::from_be_bytes(expected));
        }
    }

    #[test]
    fn four_lanes_agree_with_md5_at_every_length() {
        let inputs: Vec<Vec<u8>> = (0..=55u8)
            .map(|n| (0..n).map(|i| i.wrapping_mul(37) ^ n).collect())
            .collect();
        for w in inputs.windows(4) {
            let got = one_block_md5_x4([&w[0], &w[1], &w[2], &w[3]]).unwrap();
            for (input, digest) in w.iter().zip(got) {
                let expected: [u8; 16] = Md5::digest(input).into();
                assert_eq!(digest, expected, "length {}", input.len());
            }
        }
        assert!(one_block_md5_x4([b"", b"", b"", &[0; 56]]).is_none());
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
        assert!(matches!(
            HashKey::from_decimal("340282366920938463463374607431768211456"),
            Err(ParseHashKeyError::OutOfRange { .. })
        ));
        assert!(matches!(
            HashKey::from_decimal("99999999999999999999999999999999999999999999"),
            Err(ParseHashKeyError::OutOfRange { .. })
        ));
        assert_eq!(HashKey::from_decimal(""), Err(ParseHashKeyError::Empty));
        assert_eq!(
            HashKey::from_decimal("12a"),
            Err(ParseHashKeyError::InvalidCharacter {
                input: "12a".into(),
                position: 2,
                found: 'a'
            })
        );
        for bad in ["-1", "+1", " 1", "1 ", "1_0", "١٢", "1.0"] {
            assert!(
                matches!(
                    HashKey::from_decimal(bad),
                    Err(ParseHashKeyError::InvalidCharacter { .. })
                ),
                "{bad:?} must be refused"
            );
        }
        assert!(matches!(
            HashKey::from_decimal("007"),
            Err(ParseHashKeyError::LeadingZero { .. })
        ));
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
