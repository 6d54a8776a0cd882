//! MD5 as the format needs it, in two shapes the general-purpose `md-5` digest does
//! not offer: one padded block compressed directly (a partition key), and four
//! messages at once, lane by lane (four keys, or the aggregates of one request),
//! written so that the compiler runs each operation on the four lanes as one SIMD
//! instruction (this crate forbids `unsafe`, so no intrinsics): see [`compress4`].

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

/// The sixteen little-endian words of a 64-byte block.
#[inline(always)]
fn words(block: &[u8]) -> [u32; 16] {
    let mut m = [0u32; 16];
    for (word, bytes) in m.iter_mut().zip(block[..64].chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    m
}

/// Pads into `blocks` (one or two 64-byte blocks, zeroed) the end of a message of
/// `len` bytes whose last `tail.len()` bytes are `tail`: those bytes, the 0x80
/// marker, zeros and the length in bits in the last 8 bytes.
#[inline(always)]
fn pad_into(blocks: &mut [u8], tail: &[u8], len: usize) {
    blocks[..tail.len()].copy_from_slice(tail);
    blocks[tail.len()] = 0x80;
    let end = blocks.len();
    blocks[end - 8..].copy_from_slice(&((len as u64).wrapping_mul(8)).to_le_bytes());
}

/// The last one or two blocks of a message of `len` bytes whose last `tail.len()`
/// (< 64) bytes are `tail` ([`pad_into`]). Returns the buffer and how many blocks
/// of it are used.
fn padding(tail: &[u8], len: usize) -> ([u8; 128], usize) {
    let mut buf = [0u8; 128];
    let blocks = if tail.len() < 56 { 1 } else { 2 };
    pad_into(&mut buf[..blocks * 64], tail, len);
    (buf, blocks)
}

/// The words of the one padded block of a message of at most 55 bytes
/// ([`pad_into`]; 64 bytes where [`padding`] makes 128), or `None` if it is
/// longer.
#[inline(always)]
fn one_block_words(input: &[u8]) -> Option<[u32; 16]> {
    if input.len() > 55 {
        return None;
    }
    let mut block = [0u8; 64];
    pad_into(&mut block, input, input.len());
    Some(words(&block))
}

/// The digest of a final state.
fn digest_of(state: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// MD5's 64 steps over one block from `state`, reading the block's words through
/// `word` (one message's block, or one lane of four): the new state.
#[inline(always)]
fn rounds(state: [u32; 4], word: impl Fn(usize) -> u32) -> [u32; 4] {
    let [mut a, mut b, mut c, mut d] = state;
    // One step: the round's function `f` of b, c, d, then the rotation.
    macro_rules! step {
        (F, $i:expr, $g:expr, $s:expr) => { step!(@ d ^ (b & (c ^ d)), $i, $g, $s) };
        (G, $i:expr, $g:expr, $s:expr) => { step!(@ c ^ (d & (b ^ c)), $i, $g, $s) };
        (H, $i:expr, $g:expr, $s:expr) => { step!(@ b ^ c ^ d, $i, $g, $s) };
        (I, $i:expr, $g:expr, $s:expr) => { step!(@ c ^ (b | !d), $i, $g, $s) };
        (@ $f:expr, $i:expr, $g:expr, $s:expr) => {{
            let f: u32 = $f;
            let sum = a
                .wrapping_add(f)
                .wrapping_add(MD5_K[$i])
                .wrapping_add(word($g));
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(sum.rotate_left($s));
        }};
    }
    md5_steps!(step);
    let mut out = state;
    for (s, v) in out.iter_mut().zip([a, b, c, d]) {
        *s = s.wrapping_add(v);
    }
    out
}

/// One block into the state.
#[inline(always)]
fn compress(state: &mut [u32; 4], m: &[u32; 16]) {
    *state = rounds(*state, |g| m[g]);
}

/// MD5 of any input alone (`md-5`'s, a little faster than [`compress`] block by
/// block).
pub(crate) fn digest(input: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(input).into()
}

/// MD5 of at most 55 bytes (most partition keys): the padded message is one block,
/// compressed here directly. A general-purpose digest spends about a fifth of
/// the time of hashing a short key on buffering and padding. `None` for longer
/// input.
pub(crate) fn one_block(input: &[u8]) -> Option<[u8; 16]> {
    let m = one_block_words(input)?;
    let mut state = MD5_INIT;
    compress(&mut state, &m);
    Some(digest_of(state))
}

/// Four messages' states, word by word: `state[word][lane]`, lane `i` being
/// message `i`.
type States4 = [[u32; 4]; 4];

/// One block of each of four messages, word by word: `m[word][lane]`.
type Blocks4 = [[u32; 4]; 16];

/// One block of each of four messages into their states. Written as a loop over
/// the lanes, each lane the scalar [`rounds`], with every word of the four lanes
/// side by side in memory: the compiler's loop vectorizer then runs the four
/// lanes as one SIMD instruction per operation (SSE2 on x86-64, about three
/// times the speed of one message at a time; the same steps written on a lane
/// type of four words were left scalar). Nothing but speed depends on it: a
/// compiler that left this loop scalar would run the lanes one after another,
/// which `cargo bench -p kpl-codec -- checksums` shows as a ratio to `md-5` near 1×
/// instead of about 2.7×.
#[inline(never)]
fn compress4(state: &mut States4, m: &Blocks4) {
    for lane in 0..4 {
        // Written out: `state.map(|w| w[lane])` here left the loop scalar.
        let old = [
            state[0][lane],
            state[1][lane],
            state[2][lane],
            state[3][lane],
        ];
        let new = rounds(old, |g| m[g][lane]);
        for (word, value) in state.iter_mut().zip(new) {
            word[lane] = value;
        }
    }
}

/// The four lanes' states, split back into one state per message.
fn unlanes(state: States4) -> [[u32; 4]; 4] {
    std::array::from_fn(|lane| state.map(|w| w[lane]))
}

/// MD5 of four messages of at most 55 bytes each at once (four lanes of the same
/// one-block computation as [`one_block`]). `None` if one is longer.
pub(crate) fn one_block_x4(inputs: [&[u8]; 4]) -> Option<[[u8; 16]; 4]> {
    // The padded blocks' words, lane by lane.
    let mut m: Blocks4 = [[0; 4]; 16];
    for (lane, input) in inputs.iter().enumerate() {
        for (word, value) in m.iter_mut().zip(one_block_words(input)?) {
            word[lane] = value;
        }
    }
    let mut state: States4 = MD5_INIT.map(|w| [w; 4]);
    compress4(&mut state, &m);
    Some(unlanes(state).map(digest_of))
}

/// MD5 of two to four messages of any lengths at once, into `out`: the blocks
/// compressed lane by lane while at least two messages have blocks left (an idle
/// lane computes on zeros), then the longest message's last blocks alone.
/// Messages of similar lengths (the aggregates of one request) gain the most.
fn digest_group(inputs: &[&[u8]], out: &mut [[u8; 16]]) {
    let input = |lane: usize| inputs.get(lane).copied().unwrap_or_default();
    // Each message as its full blocks, then one or two padded blocks; none for an
    // idle lane.
    let full: [usize; 4] = std::array::from_fn(|lane| input(lane).len() / 64);
    let tails: [([u8; 128], usize); 4] = std::array::from_fn(|lane| match inputs.get(lane) {
        Some(i) => padding(&i[full[lane] * 64..], i.len()),
        None => ([0; 128], 0),
    });
    let total: [usize; 4] = std::array::from_fn(|lane| full[lane] + tails[lane].1);
    let block = |lane: usize, b: usize| -> &[u8] {
        if b < full[lane] {
            &input(lane)[b * 64..b * 64 + 64]
        } else {
            let t = b - full[lane];
            &tails[lane].0[t * 64..t * 64 + 64]
        }
    };
    // Lane by lane up to the second-longest message's end: first the blocks
    // every lane has, then with idle lanes.
    let mut sorted = total;
    sorted.sort_unstable();
    let (all, shared) = (sorted[0], sorted[2]);
    let mut state: States4 = MD5_INIT.map(|w| [w; 4]);
    let mut m: Blocks4 = [[0; 4]; 16];
    for b in 0..all {
        for lane in 0..4 {
            for (word, value) in m.iter_mut().zip(words(block(lane, b))) {
                word[lane] = value;
            }
        }
        compress4(&mut state, &m);
    }
    let mut finals = unlanes(state);
    for b in all..shared {
        for (lane, &blocks) in total.iter().enumerate() {
            let w = if b < blocks {
                words(block(lane, b))
            } else {
                [0; 16]
            };
            for (word, value) in m.iter_mut().zip(w) {
                word[lane] = value;
            }
        }
        compress4(&mut state, &m);
        for (lane, state) in unlanes(state).into_iter().enumerate() {
            if b < total[lane] {
                finals[lane] = state;
            }
        }
    }
    // The rest of the longest one alone.
    for (lane, digest) in out.iter_mut().enumerate() {
        for b in shared..total[lane] {
            compress(&mut finals[lane], &words(block(lane, b)));
        }
        *digest = digest_of(finals[lane]);
    }
}

/// MD5 of each of many messages, four at a time: messages of close lengths are
/// put in the same group of four.
pub(crate) fn digests(inputs: &[&[u8]]) -> Vec<[u8; 16]> {
    let mut out = vec![[0u8; 16]; inputs.len()];
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_unstable_by_key(|&i| inputs[i].len());
    for group in order.chunks(4) {
        if let [only] = group {
            out[*only] = digest(inputs[*only]);
            continue;
        }
        let mut group_inputs: [&[u8]; 4] = [&[]; 4];
        for (slot, &i) in group_inputs.iter_mut().zip(group) {
            *slot = inputs[i];
        }
        let mut got = [[0u8; 16]; 4];
        digest_group(&group_inputs[..group.len()], &mut got[..group.len()]);
        for (&i, digest) in group.iter().zip(got) {
            out[i] = digest;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use md5::{Digest, Md5};
    use proptest::prelude::*;

    use super::*;

    fn reference(input: &[u8]) -> [u8; 16] {
        Md5::digest(input).into()
    }

    #[test]
    fn the_md5_constants_are_the_sines() {
        for (i, &k) in MD5_K.iter().enumerate() {
            let sine = ((i + 1) as f64).sin().abs() * 4_294_967_296.0;
            assert_eq!(k, sine as u32, "K[{i}]");
        }
    }

    /// Input of `len` bytes that differs from the inputs of other lengths.
    fn input(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 37 + len) as u8).collect()
    }

    #[test]
    fn one_block_agrees_with_md5_at_every_length() {
        // Every length a single block takes, and the first ones that do not.
        for len in 0..=64 {
            let input = input(len);
            match one_block(&input) {
                Some(digest) => assert_eq!(digest, reference(&input), "length {len}"),
                None => assert!(len > 55, "length {len} fits one block"),
            }
        }
    }

    #[test]
    fn four_one_block_lanes_agree_with_md5_at_every_length() {
        let inputs: Vec<Vec<u8>> = (0..=55).map(input).collect();
        for w in inputs.windows(4) {
            let got = one_block_x4([&w[0], &w[1], &w[2], &w[3]]).unwrap();
            for (input, digest) in w.iter().zip(got) {
                assert_eq!(digest, reference(input), "length {}", input.len());
            }
        }
        assert!(one_block_x4([b"", b"", b"", &[0; 56]]).is_none());
        assert!(one_block_x4([&[0; 56], b"", b"", b""]).is_none());
        assert!(one_block_x4([b"", &[0; 64], b"", b""]).is_none());
    }

    #[test]
    fn four_lanes_agree_with_md5_across_block_edges() {
        // Lengths around the one- and two-block paddings, and multi-block messages.
        let lens = [
            0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 51_200,
        ];
        let inputs: Vec<Vec<u8>> = lens.iter().map(|&l| input(l)).collect();
        // Groups of four, three and two (one or two lanes idle), in every order.
        for n in 2..=4 {
            for w in inputs.windows(n) {
                for reversed in [false, true] {
                    let mut group: Vec<&[u8]> = w.iter().map(Vec::as_slice).collect();
                    if reversed {
                        group.reverse();
                    }
                    let mut got = [[0u8; 16]; 4];
                    digest_group(&group, &mut got[..n]);
                    for (input, digest) in group.iter().zip(got) {
                        assert_eq!(digest, reference(input), "length {}", input.len());
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn many_digests_are_each_alone(
            inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..11),
        ) {
            let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
            let got = digests(&refs);
            let want: Vec<[u8; 16]> = inputs.iter().map(|i| reference(i)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
