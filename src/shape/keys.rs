//! Key functions: the `group_by` / `conflate_by` key policy and the hashing
//! of keys into group indexes.

use core::fmt;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc as StdArc;

use crate::GroupLimits;
use crate::error::PanicMessage;

/// A key function made object-safe: a hash to look keys up by, and an
/// equality check so that two keys with the same hash are never merged.
pub(crate) struct KeyPolicy<T> {
    pub(crate) hash: Box<dyn Fn(&T) -> u64 + Send>,
    pub(crate) eq: KeyEq<T>,
}

pub(crate) type KeyEq<T> = Box<dyn Fn(&T, &T) -> bool + Send>;

impl<T: 'static> KeyPolicy<T> {
    pub(crate) fn new<K, F>(key: F) -> Self
    where
        K: Hash + Eq,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        let key = StdArc::new(key);
        let for_eq = StdArc::clone(&key);
        Self {
            hash: Box::new(move |item| group_key_hash(&key(item))),
            eq: Box::new(move |a, b| for_eq(a) == for_eq(b)),
        }
    }
}

impl<T> KeyPolicy<T> {
    /// The hash of `item`'s key; `Err` if the key function panicked
    /// (contained).
    pub(crate) fn key_hash(&self, item: &T) -> Result<u64, PanicMessage> {
        crate::contain::call(|| (self.hash)(item))
    }

    /// Whether `a` and `b` have the same key; `Err` if the key function
    /// panicked (contained).
    pub(crate) fn same_key(&self, a: &T, b: &T) -> Result<bool, PanicMessage> {
        crate::contain::call(|| (self.eq)(a, b))
    }
}

/// The hash the batcher files a key group under: [`GroupStats::key_hash`](crate::GroupStats::key_hash)
/// of the group whose [`group_by`](crate::BatcherBuilder::group_by) key is
/// `key`, and the `group` field of the `tracing` spans. The same key gives
/// the same hash in every process and version of this major release.
///
/// ```
/// use ringbatch::group_key_hash;
///
/// assert_eq!(group_key_hash(&"orders"), group_key_hash(&"orders"));
/// assert_ne!(group_key_hash(&1u32), group_key_hash(&2u32));
/// ```
pub fn group_key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = KeyHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

/// A fast, non-cryptographic hasher for keys (multiply-rotate per word, a
/// final mix): keys come from the user's own items, and two keys with one
/// hash are still told apart by the key's equality, so a collision costs
/// an early dispatch, never a wrong merge.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

pub(crate) const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

impl KeyHasher {
    #[inline]
    pub(crate) fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(MIX);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(MIX) ^ (h >> 32)
    }
}

/// Maps already-hashed keys: the hash is the key.
#[derive(Default, Clone, Copy)]
pub(crate) struct PreHashed(u64);

impl Hasher for PreHashed {
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed");
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type HashIndex = HashMap<u64, usize, std::hash::BuildHasherDefault<PreHashed>>;

impl<T> fmt::Debug for KeyPolicy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPolicy(..)")
    }
}

pub(crate) type Weigher<T> = Box<dyn Fn(&T) -> usize + Send>;
pub(crate) type LimitsFn<T> = Box<dyn Fn(&T) -> GroupLimits + Send>;
