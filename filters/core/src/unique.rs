//! Duplicate-name checks at configure time, and the router's exact-domain table, all through
//! one map type, [`ByteMap`].
//!
//! Why a type of its own: each distinct map type the filters instantiate costs wasm bytes
//! (insertion, growth, search and drop code are generic over the key and value). A sorted
//! vector searched by bisection is the smallest map there is: std's `HashMap` (which this was)
//! brings SipHash, its random keys (a thread-local seeded through WASI) and the hash table's
//! growth code, some 5 KB of the suite module, and a `BTreeMap<String, usize>` was ~4.4 KB.
//! Lookups cost `log2(n)` byte-string comparisons and no hashing; an insertion moves the
//! entries after it (a few bytes each), which for the thousands of names of a large config is
//! still milliseconds, once per configuration.

/// Byte-string keys, each with an index, sorted by key.
#[derive(Debug, Default, Clone)]
pub struct ByteMap(Vec<(Box<[u8]>, usize)>);

impl ByteMap {
    /// The value of `key`, if present.
    pub fn get(&self, key: &[u8]) -> Option<usize> {
        let at = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        self.0.get(at).map(|&(_, value)| value)
    }

    /// Sets `key` to `value`; returns the value it had, if any.
    pub fn insert(&mut self, key: &[u8], value: usize) -> Option<usize> {
        match self.0.binary_search_by(|(k, _)| (**k).cmp(key)) {
            Ok(at) => self
                .0
                .get_mut(at)
                .map(|slot| std::mem::replace(&mut slot.1, value)),
            Err(at) => {
                self.0.insert(at, (key.into(), value));
                None
            }
        }
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Names seen so far, each with the index (the caller's choice) where it was first seen.
#[derive(Debug, Default, Clone)]
pub struct FirstSeen(ByteMap);

impl FirstSeen {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `name` at `index`, unless it was seen before: then returns where, and keeps the
    /// first index.
    pub fn insert(&mut self, name: &str, index: usize) -> Option<usize> {
        if let Some(first) = self.0.get(name.as_bytes()) {
            return Some(first);
        }
        self.0.insert(name.as_bytes(), index);
        None
    }

    /// Where `name` was first seen, if it was.
    pub fn get(&self, name: &str) -> Option<usize> {
        self.0.get(name.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::FirstSeen;

    #[test]
    fn keeps_the_first_index_and_reports_it() {
        let mut seen = FirstSeen::new();
        assert_eq!(seen.insert("a", 0), None);
        assert_eq!(seen.insert("b", 1), None);
        assert_eq!(seen.insert("a", 2), Some(0));
        assert_eq!(seen.get("a"), Some(0));
        assert_eq!(seen.get("b"), Some(1));
        assert_eq!(seen.get("c"), None);
    }

    #[test]
    fn byte_map_keeps_keys_sorted_and_replaces() {
        let mut map = super::ByteMap::default();
        assert!(map.is_empty());
        for (i, key) in ["m", "a", "z", "b", "y"].iter().enumerate() {
            assert_eq!(map.insert(key.as_bytes(), i), None);
        }
        assert_eq!(map.insert(b"a", 9), Some(1));
        assert_eq!(map.get(b"a"), Some(9));
        assert_eq!(map.get(b"y"), Some(4));
        assert_eq!(map.get(b"c"), None);
        assert!(!map.is_empty());
    }
}
