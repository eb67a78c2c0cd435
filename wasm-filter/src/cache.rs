//! A small bounded map for what is read once per connection, endpoint or cluster: oldest
//! entries leave first, and entries may expire so a reused address is read again.
//!
//! Keys are `u64`: a connection id as it is, a name by its hash with the name kept in the
//! value to confirm a hit. One key type keeps one copy of the map's code in the `.wasm`.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a: keys here are connection ids and short names, never chosen to collide (a collision
/// only costs a re-read), so a hash without a random seed or SipHash's rounds is enough.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// The FNV-1a hash of a name, as a cache key.
pub fn key(name: &str) -> u64 {
    let mut h = Fnv::default();
    h.write(name.as_bytes());
    h.finish()
}

#[derive(Debug)]
pub struct Bounded<V> {
    map: HashMap<u64, (V, u64, u64), BuildHasherDefault<Fnv>>,
    /// Keys in insertion order with the generation they were inserted at; a key inserted
    /// again leaves a stale entry here, skipped on eviction.
    order: VecDeque<(u64, u64)>,
    capacity: usize,
    /// `None`: entries never expire (connection ids are never reused).
    ttl_ms: Option<u64>,
    generation: u64,
}

impl<V> Bounded<V> {
    pub fn new(capacity: usize, ttl_ms: Option<u64>) -> Self {
        Self {
            map: HashMap::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl_ms,
            generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The live entry for `key` at `now_ms`.
    pub fn get(&self, key: u64, now_ms: u64) -> Option<&V> {
        let (v, at, _) = self.map.get(&key)?;
        match self.ttl_ms {
            Some(ttl) if now_ms.saturating_sub(*at) >= ttl => None,
            _ => Some(v),
        }
    }

    /// Inserts or replaces `key`, evicting the oldest entries past the capacity.
    pub fn insert(&mut self, key: u64, value: V, now_ms: u64) {
        self.generation += 1;
        let generation = self.generation;
        self.order.push_back((key, generation));
        self.map.insert(key, (value, now_ms, generation));
        while self.map.len() > self.capacity || self.order.len() > 2 * self.capacity {
            let Some((old, g)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.2 == g) {
                self.map.remove(&old);
            }
        }
    }

    /// The live entry for `key` that `is` accepts, made by `make` (and kept) when there is none.
    pub fn get_or_insert_with(
        &mut self,
        key: u64,
        now_ms: u64,
        is: impl Fn(&V) -> bool,
        make: impl FnOnce() -> V,
    ) -> Option<&V> {
        if !self.get(key, now_ms).is_some_and(&is) {
            self.insert(key, make(), now_ms);
        }
        // Just inserted (or live), and the newest entry is never the one evicted.
        self.map.get(&key).map(|e| &e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_past_capacity() {
        let mut c = Bounded::new(2, None);
        c.insert(1, "a", 0);
        c.insert(2, "b", 0);
        c.insert(3, "c", 0);
        assert_eq!(c.get(1, 0), None);
        assert_eq!((c.get(2, 0), c.get(3, 0)), (Some(&"b"), Some(&"c")));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn reinserting_refreshes_and_is_not_evicted_by_its_old_slot() {
        let mut c = Bounded::new(2, Some(10));
        c.insert(key("x"), 1, 0);
        c.insert(key("y"), 2, 5);
        assert_eq!(c.get(key("x"), 10), None, "expired");
        assert_eq!(c.get(key("y"), 10), Some(&2));
        c.insert(key("x"), 3, 10);
        c.insert(key("z"), 4, 11);
        assert_eq!(
            c.get(key("x"), 11),
            Some(&3),
            "x's old slot went first, not x"
        );
        assert_eq!(c.get(key("y"), 11), None, "y is now the oldest");
        assert!(c.order.len() <= 4);
    }

    #[test]
    fn a_rejected_entry_is_replaced() {
        let mut c = Bounded::new(4, None);
        c.insert(7, "old", 0);
        assert_eq!(
            c.get_or_insert_with(7, 0, |v| *v == "new", || "new"),
            Some(&"new")
        );
        assert_eq!(
            c.get_or_insert_with(7, 0, |_| true, || "unused"),
            Some(&"new")
        );
    }

    #[test]
    fn stays_bounded_under_churn() {
        let mut c = Bounded::new(8, Some(1));
        for i in 0..10_000u64 {
            c.insert(i % 13, i, i);
            assert!(c.len() <= 8 && c.order.len() <= 16);
        }
    }

    #[test]
    fn fnv_matches_its_reference_values() {
        assert_eq!(key(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key("foobar"), 0x8594_4171_f739_67e8);
    }
}
