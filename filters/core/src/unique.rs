//! Duplicate-name checks at configure time, all through one map type.
//!
//! Why a type of its own: each distinct map type the filters instantiate costs wasm bytes
//! (insertion, growth, search and drop code are generic over the key and value). The configs'
//! duplicate checks (domains, rule names, counter names, splits, members, guarded clusters)
//! share this one, and it is the very `HashMap<Box<[u8]>, usize>` of the router's exact-domain
//! table, so it adds no map code of its own (a `BTreeMap<String, usize>` was ~4.4 KB).

use std::collections::HashMap;

/// Names seen so far, each with the index (the caller's choice) where it was first seen.
#[derive(Debug, Default, Clone)]
pub struct FirstSeen(HashMap<Box<[u8]>, usize>);

impl FirstSeen {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `name` at `index`, unless it was seen before: then returns where, and keeps the
    /// first index.
    pub fn insert(&mut self, name: &str, index: usize) -> Option<usize> {
        if let Some(&first) = self.0.get(name.as_bytes()) {
            return Some(first);
        }
        self.0.insert(name.as_bytes().into(), index);
        None
    }

    /// Where `name` was first seen, if it was.
    pub fn get(&self, name: &str) -> Option<usize> {
        self.0.get(name.as_bytes()).copied()
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
}
