//! The one seeded generator of the project. It lives here, in the lowest crate, so
//! the sans-IO cores (which depend on this crate alone) and `kpl-runtime` (which
//! re-exports it) share one copy.

/// SplitMix64: a small, fast, seeded generator of 64-bit values (Vigna's
/// constants), for jitter, fault injection and test data. The same seed gives the
/// same sequence on every platform, so a run on virtual time is reproduced by its
/// seed. Not for secrets. `Default` starts from seed 0.
///
/// ```
/// use kpl_codec::SplitMix64;
///
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let x = a.unit();
/// assert!((0.0..1.0).contains(&x));
/// assert!(!a.hit(0.0) && a.hit(1.0));
/// ```
#[derive(Clone, Debug, Default)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        Self::mix(self.0)
    }

    /// A uniform value in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `rate` (none at 0 or below, always at 1 or above).
    pub fn hit(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.unit() < rate
    }

    /// SplitMix64's output function alone: a well-spread 64-bit value for each `x`
    /// (the `n`-th value of a generator seeded `s` is `mix(s + n × γ)`).
    pub fn mix(x: u64) -> u64 {
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    /// The sequence is the reference SplitMix64's (Vigna's splitmix64.c, seed 0):
    /// runs on virtual time are reproduced by their seed on every platform.
    #[test]
    fn the_sequence_is_the_reference_one() {
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }
}
