//! One stream's user records while they wait to be aggregated, held in one slab
//! ([`Slab`]) and moved through the aggregation stage by key: a shard's queue, its
//! closed batches and the aggregate made of them carry a [`Held`] of 48 bytes per
//! record, not the record.
//!
//! Rules: a put's vector of records is adopted whole as one chunk of the slab
//! ([`Slab::adopt`]), so a record is not moved when it is taken in: it stays where
//! the caller wrote it until its batch is sealed, when its member is moved out, its
//! key and data let go of, and a vacant record left in place
//! ([`Slab::take_with`]); a record leaving the stage
//! another way (expired, taken apart, drained, sent alone) is taken out whole
//! ([`Slab::take`]). A key names one record until it is taken, and nothing after,
//! even once its chunk's number is given to another vector (keys carry the chunk's
//! generation). A chunk is freed (its vector dropped, with the vacant records left
//! in it) when its last record is taken, so a backlog's memory is given back as it
//! goes without moving a record that still waits.

use std::time::Instant;

use kpl_reducer::Item;

/// A value a [`Slab`] can hold: one that can be left vacant in place.
pub(super) trait Vacate {
    /// Takes the value out, leaving a vacant one in its place.
    fn vacate(&mut self) -> Self;
    /// Whether it was vacated (or emptied in place by a `take_with` part).
    fn is_vacant(&self) -> bool;
}

/// A value's key in its [`Slab`]: its chunk (the number, and which vector under
/// that number), and its place there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    chunk: u32,
    generation: u32,
    index: u32,
}

/// A slab of values in chunks, each a vector it adopted whole.
pub(super) struct Slab<T> {
    /// The chunks by number; a freed one has no allocation.
    chunks: Vec<Chunk<T>>,
    /// Numbers of freed chunks, reused first.
    vacant: Vec<u32>,
    /// How many values it holds.
    len: usize,
}

/// A vector of values, some of them taken.
struct Chunk<T> {
    entries: Vec<T>,
    /// Values not taken yet.
    live: u32,
    /// How many vectors its number was given before this one (wrapping).
    generation: u32,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            vacant: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Vacate> Slab<T> {
    /// Holds `values` (none vacant) where they are, as one chunk; returns their
    /// keys, in order. A vector with more than twice the room its values take
    /// (a put partly held back) is shrunk first, so a waiting value keeps no more
    /// than its vector's values alive.
    pub(super) fn adopt(&mut self, mut values: Vec<T>) -> impl Iterator<Item = Key> + use<T> {
        debug_assert!(!values.iter().any(T::is_vacant), "a vacant value adopted");
        let n = u32::try_from(values.len()).expect("fewer than 2^32 values in one chunk");
        let (chunk, generation) = if n == 0 {
            (0, 0)
        } else {
            if values.capacity() / 2 > values.len() {
                values.shrink_to_fit();
            }
            self.len += n as usize;
            match self.vacant.pop() {
                Some(c) => {
                    let reused = &mut self.chunks[c as usize];
                    reused.entries = values;
                    reused.live = n;
                    reused.generation = reused.generation.wrapping_add(1);
                    (c, reused.generation)
                }
                None => {
                    let c = u32::try_from(self.chunks.len()).expect("fewer than 2^32 chunks");
                    self.chunks.push(Chunk {
                        entries: values,
                        live: n,
                        generation: 0,
                    });
                    (c, 0)
                }
            }
        };
        (0..n).map(move |index| Key {
            chunk,
            generation,
            index,
        })
    }

    /// The chunk `key` names, if it is still the vector the key was given in.
    #[inline]
    fn chunk(&self, key: Key) -> Option<&Chunk<T>> {
        self.chunks
            .get(key.chunk as usize)
            .filter(|c| c.generation == key.generation)
    }

    /// The value under `key`, if it holds one.
    #[inline]
    pub(super) fn get(&self, key: Key) -> Option<&T> {
        self.chunk(key)?
            .entries
            .get(key.index as usize)
            .filter(|v| !v.is_vacant())
    }

    /// The value under `key`, if it holds one, to change in place (not to vacate).
    #[inline]
    pub(super) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let chunk = self.chunks.get_mut(key.chunk as usize)?;
        if chunk.generation != key.generation {
            return None;
        }
        chunk
            .entries
            .get_mut(key.index as usize)
            .filter(|v| !v.is_vacant())
    }

    /// Takes the value under `key` out, if it holds one; the key names nothing after.
    #[inline]
    pub(super) fn take(&mut self, key: Key) -> Option<T> {
        self.take_with(key, T::vacate)
    }

    /// Hands the value under `key` to `part`, which moves out what it needs and
    /// leaves it vacant (dropped with its chunk): the value itself is
    /// not moved. The key names nothing after. `None` if it holds no value under
    /// `key`.
    #[inline]
    pub(super) fn take_with<R>(&mut self, key: Key, part: impl FnOnce(&mut T) -> R) -> Option<R> {
        let chunk = self.chunks.get_mut(key.chunk as usize)?;
        if chunk.generation != key.generation {
            return None;
        }
        let place = chunk.entries.get_mut(key.index as usize)?;
        if place.is_vacant() {
            return None;
        }
        let taken = part(place);
        assert!(place.is_vacant(), "a part taken leaves its value vacant");
        chunk.live -= 1;
        self.len -= 1;
        if chunk.live == 0 {
            self.free(key.chunk);
        }
        Some(taken)
    }

    /// Frees the emptied chunk `number` (drops what is left of its values).
    fn free(&mut self, number: u32) {
        self.chunks[number as usize].entries = Vec::new();
        self.vacant.push(number);
    }

    /// How many values it holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// How many chunks it keeps allocated.
    #[cfg(test)]
    pub(super) fn chunks(&self) -> usize {
        self.chunks
            .iter()
            .filter(|c| c.entries.capacity() > 0)
            .count()
    }

    /// The values it holds, in no particular order.
    #[cfg(test)]
    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.chunks
            .iter()
            .flat_map(|c| &c.entries)
            .filter(|v| !v.is_vacant())
    }
}

impl<T: Vacate> std::ops::Index<Key> for Slab<T> {
    type Output = T;

    /// The value under `key`; a key that names nothing is a bug of the caller's.
    #[inline]
    fn index(&self, key: Key) -> &T {
        self.get(key).unwrap_or_else(|| missing(key))
    }
}

/// A key that names nothing, used as if it named a value: a bug of the caller's.
#[cold]
#[track_caller]
pub(super) fn missing(key: Key) -> ! {
    panic!("no value under {key:?} in the slab")
}

/// A record held in the slab, as a queue of the aggregation stage holds it: its key,
/// and what the stage asks of it before its batch is sealed (its size toward an
/// aggregate, its deadline, its expiration), so a batch is cut and checked without
/// reading the records.
/// Not `Clone`: a handle is used once, to take its record out.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) key: Key,
    pub(super) deadline: Instant,
    pub(super) expiration: Instant,
    size: u32,
}

impl Held {
    /// The handle of the record under `key`, of `size` bytes toward an aggregate,
    /// due at `deadline`, expiring at `expiration`.
    pub(super) fn new(key: Key, size: usize, deadline: Instant, expiration: Instant) -> Self {
        Self {
            key,
            deadline,
            expiration,
            // A record is at most a few MiB (an aggregate bound of one is under 4 GiB).
            size: u32::try_from(size).unwrap_or(u32::MAX),
        }
    }
}

impl Item for Held {
    fn size(&self) -> usize {
        self.size as usize
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// A value that is vacant at 0.
    impl Vacate for u32 {
        fn vacate(&mut self) -> Self {
            std::mem::take(self)
        }
        fn is_vacant(&self) -> bool {
            *self == 0
        }
    }

    #[test]
    fn a_handle_is_48_bytes() {
        assert_eq!(size_of::<Held>(), 48);
    }

    #[test]
    fn a_key_names_its_value_until_taken() {
        let mut s = Slab::default();
        let keys: Vec<Key> = s.adopt(vec![1, 2]).collect();
        let [a, b] = keys[..] else { panic!("two keys") };
        assert_eq!((s.get(a), s.get(b)), (Some(&1), Some(&2)));
        assert_eq!(s.take(a), Some(1));
        assert_eq!(s.get(a), None);
        assert_eq!(s.take(a), None, "taken once");
        assert_eq!(s[b], 2);
        *s.get_mut(b).expect("held") = 3;
        assert_eq!(s.take_with(b, |v| std::mem::take(v) * 10), Some(30));
        assert_eq!((s.len(), s.chunks()), (0, 0), "emptied, the chunk is freed");
        assert_eq!(
            s.get(Key {
                chunk: 7,
                generation: 0,
                index: 0
            }),
            None
        );
        assert_eq!(s.adopt(Vec::new()).count(), 0);
        // A freed chunk's number is given again, and the old keys name nothing in it.
        let c: Vec<Key> = s.adopt(vec![5, 6]).collect();
        assert_eq!(c[0].chunk, a.chunk);
        assert_eq!((s.get(a), s.get(b)), (None, None));
        assert_eq!(s.take(a), None);
        assert!(s.get_mut(b).is_none());
        assert_eq!(s.take_with(b, std::mem::take), None);
        assert_eq!((s[c[0]], s[c[1]], s.len()), (5, 6, 2));
    }

    #[test]
    fn a_vector_with_room_to_spare_is_shrunk_when_adopted() {
        let mut s = Slab::default();
        let mut held_back = Vec::with_capacity(1000);
        held_back.extend([1, 2, 3]);
        let mut full = Vec::with_capacity(4);
        full.extend([4, 5, 6]);
        let at = full.as_ptr();
        let keys: Vec<Key> = s.adopt(held_back).chain(s.adopt(full)).collect();
        assert!(s.chunks[0].entries.capacity() < 1000);
        assert!(
            std::ptr::eq(&s[keys[3]], at),
            "a vector nearly full is not moved"
        );
    }

    #[test]
    #[should_panic(expected = "leaves its value vacant")]
    fn a_part_that_leaves_its_value_is_a_bug() {
        let mut s = Slab::default();
        let k: Vec<Key> = s.adopt(vec![1]).collect();
        s.take_with(k[0], |v| *v);
    }

    #[test]
    fn a_chunk_is_kept_while_any_of_its_values_waits() {
        let mut s = Slab::default();
        let one: Vec<Key> = s.adopt((1..=100).collect()).collect();
        let two: Vec<Key> = s.adopt((101..=200).collect()).collect();
        assert_eq!(s.chunks(), 2);
        for &k in &one[1..] {
            s.take(k);
        }
        for &k in &two {
            s.take(k);
        }
        assert_eq!((s.len(), s.chunks()), (1, 1));
        assert_eq!(s[one[0]], 1);
        s.take(one[0]);
        assert_eq!((s.len(), s.chunks()), (0, 0));
    }

    proptest! {
        /// Any sequence of adoptions and takes (whole or in part) holds exactly
        /// what a map would, keeps chunks only for what it holds, and a key taken
        /// names nothing after, whatever its chunk's number was given to since.
        #[test]
        fn it_holds_what_a_map_holds(ops in proptest::collection::vec((0u8..4, 1u32..1000), 0..2000)) {
            let mut s = Slab::default();
            let mut model: BTreeMap<Key, u32> = BTreeMap::new();
            let mut taken: Vec<Key> = Vec::new();
            for (op, v) in ops {
                if op == 0 || model.is_empty() {
                    let values: Vec<u32> = (0..v % 7).map(|i| v + i).collect();
                    for (k, value) in s.adopt(values.clone()).zip(values) {
                        prop_assert!(model.insert(k, value).is_none(), "a key given twice");
                    }
                } else {
                    // Take one of the held keys, picked by `v`: whole, or its
                    // value moved out in place.
                    let k = *model.keys().nth(v as usize % model.len()).expect("held");
                    let got = if op == 1 { s.take(k) } else { s.take_with(k, std::mem::take) };
                    prop_assert_eq!(got, model.remove(&k));
                    taken.push(k);
                }
                prop_assert_eq!(s.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(s.get(*k), Some(v));
            }
            for k in taken {
                prop_assert_eq!(s.get(k), None);
                prop_assert_eq!(s.take(k), None);
            }
            let holding: std::collections::BTreeSet<u32> = model.keys().map(|k| k.chunk).collect();
            prop_assert_eq!(s.chunks(), holding.len());
        }
    }
}
